//! Continuous batching (`Batch`, docs/design.md §11): sequences that join a running
//! batch at different steps, prefill in interleaved chunks and decode together get
//! exactly the tokens each gets alone through `generate` — whatever else is in the
//! batch — for every weight form (f32, packed halves, q4_0 blocks), the MoE, images,
//! and a sampled sequence beside greedy ones.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use sphinx_core::llm::read_f32;
use sphinx_core::generate::{generate, Batch, Conversation, GenerationOptions, Role, Sequence, StopReason};
use sphinx_core::model::{NoSource, SphinxModel};
use sphinx_core::preprocess::DecodeOptions;
use sphinx_core::weights::{BlockFormat, EncoderWeights, WeightDtype};
use sphinx_native::quantize::quantize_model_dir;
use sphinx_tests::{devices, load_model_as, model_dir};

/// One request: prompt ids, an optional image block, options, and the step it joins at.
struct Request {
    prompt: Vec<u32>,
    image: Option<Tensor<3>>,
    opts: GenerationOptions,
    joins_at: usize,
}

/// Each request alone: (tokens, text, stop).
fn alone(model: &SphinxModel, r: &Request) -> (Vec<u32>, String, StopReason) {
    let mut cache = model.llm.new_cache();
    let mut streamed = String::new();
    let g = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &r.prompt, r.image.clone(), &r.opts, &mut |t| streamed.push_str(t)))
        .expect("generates alone");
    assert_eq!(streamed, g.text);
    (g.tokens, g.text, g.stop)
}

/// All requests through one batch, each joining at its step → (tokens, text, stop) in
/// request order. Returns the largest number of sequences that ran at once too.
fn batched(model: &SphinxModel, requests: &[Request]) -> (Vec<(Vec<u32>, String, StopReason)>, usize) {
    let mut batch = Batch::default();
    let mut out: Vec<Option<(Vec<u32>, String, StopReason)>> = requests.iter().map(|_| None).collect();
    let mut streamed = vec![String::new(); requests.len()];
    let (mut steps, mut widest) = (0, 0);
    while out.iter().any(Option::is_none) {
        for (i, r) in requests.iter().enumerate().filter(|(_, r)| r.joins_at == steps) {
            let seq = Sequence::new(&model.llm, &model.tokenizer, model.llm.new_cache(), &r.prompt, r.image.clone(), &r.opts).expect("fits");
            batch.join(i, seq);
        }
        widest = widest.max(batch.len());
        pollster::block_on(batch.advance(&model.llm, &model.tokenizer)).expect("advances");
        for (&mut i, seq) in batch.iter_mut() {
            streamed[i].push_str(&seq.take_text());
        }
        for (i, seq) in batch.take_finished() {
            let (g, _) = seq.into_generation(&model.tokenizer);
            assert_eq!(streamed[i], g.text, "request {i}: streamed text");
            out[i] = Some((g.tokens, g.text, g.stop));
        }
        steps += 1;
        assert!(steps < 10_000, "the batch never finished");
    }
    (out.into_iter().map(Option::unwrap).collect(), widest)
}

fn check(label: &str, model: &SphinxModel, requests: &[Request]) {
    let (together, widest) = batched(model, requests);
    assert!(widest >= 3, "{label}: at most {widest} sequences ran at once");
    for (i, (r, got)) in requests.iter().zip(&together).enumerate() {
        let want = alone(model, r);
        assert_eq!(got, &want, "{label}: request {i} differs in a batch from alone");
    }
    eprintln!("{label}: {} requests, up to {widest} at once, each as alone", requests.len());
}

/// Text prompts of different lengths, joining at steps 0, 0, 2, 5 (the last while the
/// others decode), with a prefill chunk smaller than the prompts so prefills interleave;
/// one sampled.
fn text_requests(model: &SphinxModel) -> Vec<Request> {
    let prompts = ["Hello", "The quick brown fox jumps over the lazy dog", "1 2 3 4 5 6 7", "Once upon a time, in a land far away, there lived"];
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            prompt: model.tokenizer.encode(p, true, false),
            image: None,
            opts: GenerationOptions {
                max_gen_len: 6 + 3 * i,
                temperature: if i == 2 { 0.9 } else { 0.0 },
                seed: 11,
                prefill_chunk: 4,
                ..Default::default()
            },
            joins_at: [0, 0, 2, 5][i],
        })
        .collect()
}

/// Two decoding steps of sequences at different positions: each row of the batch's
/// logits is bit for bit the logits of that sequence's own step.
fn check_logits(label: &str, model: &SphinxModel) {
    let llm = &model.llm;
    let prompts = ["Hello", "The quick brown fox jumps", "1 2 3 4 5 6 7 8 9", "Once upon a time"];
    let mut alone: Vec<_> = prompts.iter().map(|_| llm.new_cache()).collect();
    for (cache, p) in alone.iter_mut().zip(prompts) {
        pollster::block_on(llm.forward(&model.tokenizer.encode(p, true, false), cache)).expect("prefills");
    }
    let mut together = alone.clone();
    for tokens in [[5u32, 17, 29, 3], [8, 8, 100, 42]] {
        let rows = pollster::block_on(async {
            let mut caches: Vec<_> = together.iter_mut().collect();
            read_f32(llm.forward_batch(&tokens, &mut caches).await.expect("a batch step")).await.unwrap()
        });
        let vocab = rows.len() / tokens.len();
        for (i, (&token, cache)) in tokens.iter().zip(alone.iter_mut()).enumerate() {
            let own = pollster::block_on(async { read_f32(llm.forward(&[token], cache).await.unwrap()).await.unwrap() });
            let row = &rows[i * vocab..(i + 1) * vocab];
            let differing = own.iter().zip(row).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differing, 0, "{label}: sequence {i}'s logits differ in {differing} places in a batch");
        }
    }
}

#[test]
fn a_batch_step_gives_each_sequence_its_own_logits_bit_for_bit() {
    for (backend, device) in devices() {
        check_logits(&format!("tiny-llama-gqa f16 [{backend}]"), &load_model_as(&model_dir("tiny-llama-gqa"), &device, WeightDtype::Auto));
    }
    let cpu = Device::flex();
    check_logits("tiny-llama-gqa f32 [cpu]", &load_model_as(&model_dir("tiny-llama-gqa"), &cpu, WeightDtype::F32));
    check_logits("tiny-mixtral-mp2 [cpu]", &load_model_as(&model_dir("tiny-mixtral-mp2"), &cpu, WeightDtype::Auto));
}

#[test]
fn batched_decoding_gives_each_sequence_its_answer_alone() {
    for (backend, device) in devices() {
        let model = load_model_as(&model_dir("tiny-llama-gqa"), &device, WeightDtype::Auto);
        check(&format!("tiny-llama-gqa f16 [{backend}]"), &model, &text_requests(&model));
    }
    let cpu = Device::flex();
    let model = load_model_as(&model_dir("tiny-llama-gqa"), &cpu, WeightDtype::F32);
    check("tiny-llama-gqa f32 [cpu]", &model, &text_requests(&model));
    let model = load_model_as(&model_dir("tiny-mixtral-mp2"), &cpu, WeightDtype::Auto);
    check("tiny-mixtral-mp2 [cpu]", &model, &text_requests(&model));

    let out = std::env::temp_dir().join(format!("sphinx-batch-q4_0-{}", std::process::id()));
    quantize_model_dir(&model_dir("tiny-llama-gqa"), BlockFormat::Q4_0, BlockFormat::Q8_0, EncoderWeights::Keep, &out).expect("quantizes");
    let model = load_model_as(&out, &cpu, WeightDtype::Auto);
    check("tiny-llama-gqa q4_0 [cpu]", &model, &text_requests(&model));
    check_logits("tiny-llama-gqa q4_0 [cpu]", &model);
    std::fs::remove_dir_all(&out).expect("the directory this test wrote");
}

/// SPHINX-Micro answering held-out images, five questions in one batch.
#[test]
fn batched_image_questions_answer_as_alone() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let fix = root.join("tests/fixtures/micro-eval");
    let items: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fix.join("items.json")).unwrap()).unwrap();
    let model = load_model_as(&root.join(items["model"].as_str().unwrap()), &Device::flex(), WeightDtype::Auto);
    let requests: Vec<Request> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(7)
        .take(5)
        .enumerate()
        .map(|(i, item)| {
            let image = std::fs::read(fix.join(item["image"].as_str().unwrap())).unwrap();
            let (_, tokens) = pollster::block_on(model.image_tokens(&image, &DecodeOptions::default(), None::<&NoSource>)).unwrap();
            let mut conversation = Conversation::new();
            conversation.push(Role::Human, item["instruction"].as_str().unwrap());
            Request {
                prompt: model.tokenizer.encode(&conversation.prompt(), true, false),
                image: Some(tokens),
                opts: GenerationOptions { max_gen_len: 48, temperature: 0.0, prefill_chunk: 64, ..Default::default() },
                joins_at: i,
            }
        })
        .collect();
    check("sphinx-micro [cpu]", &model, &requests);
}
