//! SPHINX-Micro end to end (training/): on the held-out shapes of both domains
//! (tests/fixtures/micro-eval, 200 images each, never seen in training), the shipped
//! model — the β = 0.5 `sphinx mix` of the real- and synthetic-tuned models — must
//! answer VQA exactly and ground boxes with IoU ≥ 0.5 at least 90% of the time, scored
//! with the runtime's own answer parser, and its greedy answers must equal PyTorch's
//! (training/train.py, same bf16 weights) on at least 99% of the items.
//! Runs on the CPU backend only: ~1000 generations on lavapipe would take too long.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::Device;
use sphinx_core::api::{ask, AskOptions};
use sphinx_core::config::ConfigOverrides;
use sphinx_core::generate::ChatSession;
use sphinx_core::model::{NoSource, SphinxModel};
use sphinx_core::preprocess::DecodeOptions;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[derive(Default)]
struct Tally {
    right: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.right += ok as usize;
        self.total += 1;
    }
    fn rate(&self) -> f64 {
        self.right as f64 / self.total.max(1) as f64
    }
}

#[test]
fn micro_model_answers_held_out_shapes_like_pytorch() {
    let fix = root().join("tests/fixtures/micro-eval");
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fix.join("items.json")).unwrap()).unwrap();
    let files = sphinx_native::model_dir::open_model_dir(&root().join(spec["model"].as_str().unwrap()), None).unwrap();
    let model = pollster::block_on(SphinxModel::load(files, &Device::flex(), &ConfigOverrides::default(), &mut |_| {})).unwrap();

    let mut scores: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut same = Tally::default();
    let mut differing = Vec::new();
    let t0 = std::time::Instant::now();
    for item in spec["items"].as_array().unwrap() {
        let (domain, kind) = (item["domain"].as_str().unwrap(), item["kind"].as_str().unwrap());
        let image = std::fs::read(fix.join(item["image"].as_str().unwrap())).unwrap();
        let (geometry, tokens) = pollster::block_on(model.image_tokens(&image, &DecodeOptions::default(), None::<&NoSource>)).unwrap();
        let task = match kind {
            "vqa" => "vqa",
            "ground" => "ground",
            _ => "short-caption",
        };
        let options = AskOptions {
            task: Some(task.into()),
            query: item["query"].as_str().map(str::to_string),
            max_tokens: Some(48),
            temperature: Some(0.0),
            ..Default::default()
        };
        assert_eq!(options.instruction(Some(geometry)).unwrap(), item["instruction"].as_str().unwrap(), "the runtime's task prompt");
        let mut chat = ChatSession::new(&model.llm, Some(tokens));
        let result = pollster::block_on(ask(&model, &mut chat, Some(geometry), &options, &mut |_| {})).unwrap();
        let truth = item["truth"].as_str().unwrap();
        let ok = match kind {
            "vqa" => result.text.trim().eq_ignore_ascii_case(truth),
            "ground" => {
                let want: Vec<f64> = serde_json::from_value(item["box"].clone()).unwrap();
                let got = result.answer.entities.iter().flat_map(|e| &e.boxes).next().map(|b| b.normalized);
                got.is_some_and(|g| iou(g, [want[0], want[1], want[2], want[3]]) >= 0.5)
            }
            _ => result.text.trim() == truth,
        };
        scores.entry((domain.to_string(), kind.to_string())).or_default().add(ok);
        let torch = item["torch_answer"].as_str().unwrap();
        same.add(result.text == torch);
        if result.text != torch {
            differing.push(format!("{}: {:?} vs torch {:?}", item["image"], result.text, torch));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    for ((domain, kind), t) in &scores {
        eprintln!("{domain:>9} {kind:<7} {:.1}% ({}/{})", 100.0 * t.rate(), t.right, t.total);
    }
    eprintln!("greedy answers equal PyTorch's: {}/{} ({:.2}%); {:.1} s for {} items", same.right, same.total, 100.0 * same.rate(), secs, same.total);
    for d in differing.iter().take(10) {
        eprintln!("  differs: {d}");
    }
    for domain in ["real", "synthetic"] {
        let images = spec["items"].as_array().unwrap().iter().filter(|i| i["domain"] == domain && i["kind"] == "vqa").count();
        assert!(images >= 200, "{domain}: {images} held-out images");
        for kind in ["vqa", "ground"] {
            let t = &scores[&(domain.to_string(), kind.to_string())];
            assert!(t.rate() >= 0.9, "{domain} {kind}: {:.1}% < 90%", 100.0 * t.rate());
        }
    }
    assert!(same.rate() >= 0.99, "greedy answers equal PyTorch's on {:.2}% < 99%", 100.0 * same.rate());
}
