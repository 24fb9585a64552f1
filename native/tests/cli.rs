//! The `sphinx` binary end to end, on the default model (SPHINX-Micro) and the fixtures.

use std::process::Command;

fn sphinx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sphinx")).args(args).output().expect("sphinx runs")
}

#[test]
fn generate_streams_the_reference_greedy_answer() {
    // fixtures/reference/tiny-llama-mp2.* hold the PyTorch greedy continuation of exactly
    // this chat prompt; its decoded text is what must be printed.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let model = format!("{fixtures}/models/tiny-llama-mp2");
    let out = sphinx(&["generate", "--model", &model, "--prompt", "What's in the image?", "--temperature", "0", "--max-tokens", "33", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = std::fs::read(format!("{fixtures}/tokenizer/llama2-tokenizer.model")).unwrap();
    let tok = sphinx_core::tokenizer::Tokenizer::from_model_bytes(&tok).unwrap();
    let refs = std::fs::read(format!("{fixtures}/reference/tiny-llama-mp2.safetensors")).unwrap();
    let refs = sphinx_core::weights::SafetensorsFile::open(sphinx_core::weights::MemoryBytes::new("ref", refs)).unwrap();
    use sphinx_core::weights::WeightSource;
    let ids = pollster::block_on(refs.read("greedy_tokens")).unwrap().to_i64().unwrap();
    let ids: Vec<u32> = ids.into_iter().map(|i| i as u32).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\n", tok.decode(&ids)));
    assert!(String::from_utf8_lossy(&out.stderr).contains("50 prompt tokens"));
}

#[test]
fn info_describes_the_model() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/tiny-llama-mp2");
    let out = sphinx(&["info", "--model", model]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("llama_type   llama"), "{text}");
    assert!(text.contains("dim 32 · 2 layers · 4 heads · 4 kv heads"), "{text}");
    assert!(text.contains("2 file(s)") && text.contains("BF16"), "{text}");
}

#[test]
fn bad_model_directory_is_a_clear_error() {
    let out = sphinx(&["generate", "--model", "/nonexistent/model", "--prompt", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("model directory /nonexistent/model does not exist"));
}

#[test]
fn bad_sampling_option_is_a_clear_error() {
    let out = sphinx(&["generate", "--prompt", "hi", "--top-p", "1.5", "--device", "cpu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("top_p must be in (0, 1]"));
}

#[test]
fn views_writes_what_each_encoder_sees() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let out = std::env::temp_dir().join(format!("sphinx-views-{}", std::process::id()));
    // Pillow's own decoded pixels of the example photo (lossless PNG), so the padded
    // square can be compared with Pillow's exactly.
    let photo = format!("{fixtures}/reference/images/pillow-decoded/sphinx-example-1.png");
    let o = sphinx(&["views", &photo, "--variant", "sphinx-1k", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let open = |f: &str| image::open(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")).to_rgb8();
    // The padded square is exactly Pillow's (its hash is in the fixtures).
    let padded = open("padded.png");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/reference/images/padded.json")).unwrap()).unwrap();
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(padded.as_raw()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hash, want["sphinx-example-1.jpg"]["448"].as_str().unwrap());
    for (i, name) in ["global", "r0c0", "r0c1", "r1c0", "r1c1"].iter().enumerate() {
        assert_eq!(open(&format!("vit-{i}-{name}.png")).dimensions(), (224, 224));
        assert_eq!(open(&format!("convnext-{i}-{name}.png")).dimensions(), (256, 256));
    }
    // The top-left sub-image is the top-left quarter of the padded square (± rounding).
    let tl = open("vit-1-r0c0.png");
    for (x, y) in [(0, 0), (100, 150), (223, 223)] {
        let (a, b) = (tl.get_pixel(x, y).0, padded.get_pixel(x, y).0);
        assert!(a.iter().zip(b).all(|(p, q)| (*p as i32 - q as i32).abs() <= 1), "({x},{y}) {a:?} vs {b:?}");
    }
    let _ = std::fs::remove_dir_all(&out);
    let bad = sphinx(&["views", &photo, "--variant", "sphinx-9k"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown variant 'sphinx-9k'"));
}

#[test]
fn generate_about_an_image_matches_the_reference() {
    // Pillow's decoded pixels of the example photo: the exact input of the PyTorch reference.
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let image = format!("{fixtures}/reference/images/pillow-decoded/sphinx-example-1.png");
    let model = format!("{fixtures}/models/tiny-sphinx-1k");
    let out = sphinx(&["generate", "--model", &model, "--image", &image, "--prompt", "What's in the image?", "--temperature", "0", "--max-tokens", "33", "--device", "cpu"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = std::fs::read(format!("{fixtures}/tokenizer/llama2-tokenizer.model")).unwrap();
    let tok = sphinx_core::tokenizer::Tokenizer::from_model_bytes(&tok).unwrap();
    let refs = std::fs::read(format!("{fixtures}/reference/tiny-sphinx-1k.safetensors")).unwrap();
    let refs = sphinx_core::weights::SafetensorsFile::open(sphinx_core::weights::MemoryBytes::new("ref", refs)).unwrap();
    use sphinx_core::weights::WeightSource;
    let ids: Vec<u32> = pollster::block_on(refs.read("greedy_tokens")).unwrap().to_i64().unwrap().into_iter().map(|i| i as u32).collect();
    // Generation stops early if the reference continuation contains a stop sequence.
    let stdout = String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string();
    assert!(tok.decode(&ids).starts_with(&stdout) && !stdout.is_empty(), "{stdout:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[image: 1455 tokens"));

    let text_model = format!("{fixtures}/models/tiny-llama-mp2");
    let text_only = sphinx(&["generate", "--model", &text_model, "--image", &image, "--prompt", "hi", "--device", "cpu"]);
    assert_eq!(text_only.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&text_only.stderr).contains("text-only model"));
}

#[test]
fn tasks_lists_the_official_instructions() {
    let out = sphinx(&["tasks"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Please provide the bounding box coordinate of the region this sentence describes: {query}."), "{text}");
    assert!(text.contains("Detect the key points of the person in the region [0.10, 0.20, 0.50, 0.90]."));
}

#[test]
fn grounding_task_with_json_and_annotation() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let image = format!("{fixtures}/images/caption1.jpg");
    let model = format!("{fixtures}/models/tiny-sphinx-1k");
    let png = std::env::temp_dir().join(format!("sphinx-annotate-{}.png", std::process::id()));
    let out = sphinx(&[
        "generate", "--model", &model, "--image", &image, "--task", "ground", "--query", "the blue backpack",
        "--temperature", "0", "--max-tokens", "8", "--device", "cpu", "--json", "--annotate", png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(result["text"].is_string() && result["answer"]["entities"].is_array() && result["drawing"].is_array());
    assert!(result["generatedTokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)), "{result}");
    // Ids, so answers can be compared token for token.
    assert_eq!(result["token_ids"].as_array().unwrap().len() as u64, result["generatedTokens"].as_u64().unwrap());
    assert_eq!(result["prompt_ids"][0], 1, "BOS first");
    assert_eq!(image::open(&png).unwrap().to_rgb8().dimensions(), (337, 224));
    let _ = std::fs::remove_file(&png);
    let bad = sphinx(&["generate", "--model", &model, "--image", &image, "--task", "keypoints", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid request: task 'keypoints' needs a region"));
    let bad = sphinx(&["generate", "--model", &model, "--image", &image, "--task", "keypoints", "--region", "nan,1,2,3", "--device", "cpu"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("finite"));
}

#[test]
fn draw_writes_an_annotated_image_and_its_json() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let image = format!("{fixtures}/images/sphinx-example-1.jpg");
    // Kept in target/ so it can be looked at after the run.
    let png = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("annotated-example.png");
    let answer = "<p>zebra</p>[0.30,0.38,0.52,0.62] drinking beside <p>an eland</p>[0.02,0.35,0.22,0.62]; \
                  <p>left eye</p> [0.60,0.30] <p>left shoulder</p> [0.62,0.36] <p>left elbow</p> [0.63,0.45]";
    let out = sphinx(&["draw", &image, "--answer", answer, "-o", png.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 1280×720 padded to 1280²: y0 = 280. The zebra box is x 384..665.6, y 206.4..513.6.
    let px: Vec<f64> = json["entities"][0]["boxes"][0]["pixels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (a, b) in px.iter().zip([384.0, 206.4, 665.6, 513.6]) {
        assert!((a - b).abs() < 1e-9, "{px:?}");
    }
    let img = image::open(&png).unwrap().to_rgb8();
    let orig = image::open(&image).unwrap().to_rgb8();
    let color = |name: &str| json["entities"].as_array().unwrap().iter().find(|e| e["label"] == name).unwrap()["color"].clone();
    assert_eq!(color("zebra"), "orange");
    assert_eq!(img.get_pixel(384, 300).0, [255, 165, 0], "left edge of the zebra box in orange");
    assert_eq!(img.get_pixel(500, 400).0, orig.get_pixel(500, 400).0, "inside the box: the photo");
    eprintln!("annotated image: {}\n{}", png.display(), serde_json::to_string_pretty(&json).unwrap());
}

#[test]
fn offline_mix_equals_torch_and_loading_time_mix_gives_the_same_answer() {
    use sphinx_core::weights::{MemoryBytes, SafetensorsFile, WeightSource};
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let (real, synthetic) = (format!("{fixtures}/models/tiny-mix-real"), format!("{fixtures}/models/tiny-mix-synthetic"));
    let out = std::env::temp_dir().join(format!("sphinx-mix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = sphinx(&["mix", "--real", &real, "--synthetic", &synthetic, "--beta", "0.3", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(report.contains("peak resident memory"), "{report}");
    eprintln!("{report}");
    for f in ["model.safetensors", "config.json", "meta.json", "tokenizer.model"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // Bit-exact against torch's `(0.3 * a.float() + 0.7 * b.float()).to(bfloat16)`.
    let open = |p: std::path::PathBuf| SafetensorsFile::open(MemoryBytes::new("x", std::fs::read(p).unwrap())).unwrap();
    let (ours, torch) = (open(out.join("model.safetensors")), open(format!("{fixtures}/reference/mix-beta-0.3.safetensors").into()));
    assert_eq!(ours.names(), torch.names());
    for n in ours.names() {
        assert_eq!(pollster::block_on(ours.read(&n)).unwrap().bytes, pollster::block_on(torch.read(&n)).unwrap().bytes, "{n}");
    }
    // Greedy answers: the offline mix and the mix made on the device while loading.
    let run = |model: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--model", model, "--prompt", "Hello", "--temperature", "0", "--max-tokens", "16", "--device", "cpu"];
        args.extend_from_slice(extra);
        let o = sphinx(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let offline = run(out.to_str().unwrap(), &[]);
    let online = run(&real, &["--mix-with", &synthetic, "--beta", "0.3"]);
    assert_eq!(offline, online);
    assert_ne!(offline, run(&real, &[]), "the mix differs from the real model alone");
    let _ = std::fs::remove_dir_all(&out);

    let bad = sphinx(&["mix", "--real", &real, "--synthetic", &synthetic, "--beta", "1.2", "-o", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("pass --extrapolate"));
    let gqa = format!("{fixtures}/models/tiny-llama-gqa");
    let bad = sphinx(&["mix", "--real", &real, "--synthetic", &gqa, "--beta", "0.5", "-o", out.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("different architectures"));
    assert!(!out.exists());
}

#[test]
fn an_interrupted_mix_leaves_nothing_that_looks_complete() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let tmp = std::env::temp_dir().join(format!("sphinx-mix-broken-{}", std::process::id()));
    let broken = tmp.join("synthetic");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "meta.json", "tokenizer.model"] {
        std::fs::copy(format!("{fixtures}/models/tiny-mix-synthetic/{f}"), broken.join(f)).unwrap();
    }
    // The synthetic model's last tensor holds an Inf: with --check-finite the mix fails
    // after every other tensor has been written.
    use sphinx_core::weights::WeightSource;
    let src = sphinx_core::model::open_checkpoint(vec![sphinx_core::weights::MemoryBytes::new(
        "consolidated.00-of-01.model.pth",
        std::fs::read(format!("{fixtures}/models/tiny-mix-synthetic/consolidated.00-of-01.model.pth")).unwrap(),
    )])
    .unwrap();
    let mut tensors: Vec<_> = src.names().into_iter().map(|n| { let t = pollster::block_on(src.read(&n)).unwrap(); (n, t) }).collect();
    let last = tensors.iter_mut().find(|(n, _)| n == "llma.tok_embeddings.weight").unwrap();
    last.1.bytes[0..2].copy_from_slice(&[0x80, 0x7f]); // bf16 +Inf
    std::fs::write(broken.join("model.safetensors"), sphinx_core::weights::write_safetensors(&tensors, &Default::default()).unwrap()).unwrap();
    let out = tmp.join("mixed");
    let o = sphinx(&["mix", "--real", &format!("{fixtures}/models/tiny-mix-real"), "--synthetic", broken.to_str().unwrap(), "--beta", "0.5", "--check-finite", "-o", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("the mix of 'llma.tok_embeddings.weight' contains NaN or Inf"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "no output directory");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the synthetic input is left, no staging directory: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn chat_keeps_the_image_between_turns() {
    use std::io::Write;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["chat", "--model", &format!("{fixtures}/models/tiny-sphinx-1k"), "--image", &format!("{fixtures}/images/caption1.jpg")])
        .args(["--max-tokens", "6", "--temperature", "0", "--device", "cpu"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"What's in the image?\nAnd then?\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("[image: 1455 tokens").count(), 1, "encoded once: {err}");
    let positions: Vec<usize> = err
        .lines()
        .filter_map(|l| l.split("; ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(positions.len(), 2, "{err}");
    assert!(positions[0] > 1455 && positions[1] > positions[0], "{positions:?}");
}

#[test]
fn convert_for_the_web_and_load_it_back() {
    use sha2::Digest;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let model = format!("{fixtures}/models/tiny-sphinx-1k");
    let out = std::env::temp_dir().join(format!("sphinx-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let o = sphinx(&["convert", "--web", &model, out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["format"], "sphinx-web/1");
    let mut total = 0;
    for s in m["shards"].as_array().unwrap() {
        let bytes = std::fs::read(out.join(s["file"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, s["bytes"].as_u64().unwrap());
        assert!(bytes.len() as u64 <= 32 << 20);
        let hash: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, s["sha256"].as_str().unwrap());
        total += bytes.len() as u64;
    }
    let components: u64 = m["components"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(components, total);
    assert!(m["components"]["dinov2"].as_u64().unwrap() > 0 && m["requirements"]["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
    // The device total counts the weights as held, the KV cache and the activations.
    assert!(m["requirements"]["device_bytes"].as_u64().unwrap() > components, "{}", m["requirements"]);

    // The converted model answers exactly as the original.
    let image = format!("{fixtures}/reference/images/pillow-decoded/sphinx-example-1.png");
    let ask = |dir: &str| {
        let o = sphinx(&["generate", "--model", dir, "--image", &image, "--prompt", "What's in the image?", "--temperature", "0", "--max-tokens", "12", "--device", "cpu"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert_eq!(ask(out.to_str().unwrap()), ask(&model));

    // A damaged shard is refused by its hash.
    let shard = out.join("shard-0000.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&shard, bytes).unwrap();
    let o = sphinx(&["generate", "--model", out.to_str().unwrap(), "--prompt", "hi", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("SHA-256 does not match the manifest"));
    // So is a truncated one, by its size, before it is hashed.
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len - 1).unwrap();
    let o = sphinx(&["generate", "--model", out.to_str().unwrap(), "--prompt", "hi", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{} bytes, but the manifest says {len}", len - 1)), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&out);
}

/// README's first command: the default model (SPHINX-Micro, trained in training/) on
/// its bundled example image gives real answers.
#[test]
fn the_default_model_answers_about_its_example_image() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sphinx-micro");
    let example = format!("{dir}/example.png");
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/example.json")).unwrap()).unwrap();
    let objects = truth["objects"].as_array().unwrap();
    let circle = objects.iter().find(|o| o["shape"] == "circle" && o["colour"] == "red").unwrap();
    let want: Vec<f64> = serde_json::from_value(circle["normalized"].clone()).unwrap();

    let out = sphinx(&["generate", "--image", &example, "--task", "ground", "--query", "the red circle", "--temperature", "0", "--device", "cpu", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<f64> = serde_json::from_value(result["answer"]["entities"][0]["boxes"][0]["normalized"].clone()).expect("a box in the answer");
    let (ix, iy) = ((got[2].min(want[2]) - got[0].max(want[0])).max(0.0), (got[3].min(want[3]) - got[1].max(want[1])).max(0.0));
    let union = (got[2] - got[0]) * (got[3] - got[1]) + (want[2] - want[0]) * (want[3] - want[1]) - ix * iy;
    assert!(ix * iy / union >= 0.5, "box {got:?} vs {want:?}: {}", result["text"]);

    // The example has one object of each shape, so "the square" names one object.
    let other = objects.iter().find(|o| o["shape"] != "circle").unwrap();
    let question = format!("What colour is the {}?", other["shape"].as_str().unwrap());
    let out = sphinx(&["generate", "--image", &example, "--task", "vqa", "--query", &question, "--temperature", "0", "--device", "cpu"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), other["colour"].as_str().unwrap(), "{question}");
}

/// A scratch directory for one test, removed at the end.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sphinx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[cfg(unix)]
#[test]
fn files_outside_the_model_directory_fifos_and_devices_are_never_read() {
    use std::os::unix::fs::symlink;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let tmp = Scratch::new("outside");
    let web = tmp.path("web");
    assert!(sphinx(&["convert", "--web", &format!("{fixtures}/models/tiny-llama-gqa"), &web]).status.success());
    let ask = |dir: &str| sphinx(&["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "2", "--device", "cpu"]);
    assert!(ask(&web).status.success(), "{}", stderr_of(&ask(&web)));

    // A shard that is a symlink to /etc/passwd, and a tokenizer that is /dev/zero or a FIFO.
    let shard = std::path::Path::new(&web).join("shard-0000.bin");
    std::fs::remove_file(&shard).unwrap();
    symlink("/etc/passwd", &shard).unwrap();
    let o = ask(&web);
    assert!(!o.status.success() && stderr_of(&o).contains("leads outside the model directory"), "{}", stderr_of(&o));
    let tokenizer = std::path::Path::new(&web).join("tokenizer.model");
    std::fs::remove_file(&tokenizer).unwrap();
    symlink("/dev/zero", &tokenizer).unwrap();
    let o = ask(&web);
    assert!(!o.status.success() && stderr_of(&o).contains("leads outside the model directory"), "{}", stderr_of(&o));
    std::fs::remove_file(&tokenizer).unwrap();
    assert!(Command::new("mkfifo").arg(&tokenizer).status().unwrap().success());
    let o = ask(&web);
    assert!(!o.status.success() && stderr_of(&o).contains("is not a regular file"), "{}", stderr_of(&o));

    // The same for a checkpoint directory's own files.
    let dir = tmp.path("ckpt");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "meta.json", "consolidated.00-of-01.model.pth"] {
        std::fs::copy(format!("{fixtures}/models/tiny-llama-gqa/{f}"), format!("{dir}/{f}")).unwrap();
    }
    symlink("/etc/passwd", format!("{dir}/tokenizer.model")).unwrap();
    let o = ask(&dir);
    assert!(!o.status.success() && stderr_of(&o).contains("leads outside the model directory"), "{}", stderr_of(&o));
}

#[test]
fn mixes_never_delete_what_they_did_not_create_and_never_share_a_temporary_directory() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let (real, synthetic) = (format!("{fixtures}/models/tiny-mix-real"), format!("{fixtures}/models/tiny-mix-synthetic"));
    let tmp = Scratch::new("mix-safety");
    let mix = |beta: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_sphinx")).args(["mix", "--real", &real, "--synthetic", &synthetic, "--beta", beta, "-o", out]).spawn().unwrap()
    };
    // `-o victim.v2` once removed an unrelated `victim.partial/`.
    std::fs::create_dir(tmp.path("victim.partial")).unwrap();
    std::fs::write(tmp.path("victim.partial/keep.txt"), "mine").unwrap();
    assert!(mix("0.5", &tmp.path("victim.v2")).wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(tmp.path("victim.partial/keep.txt")).unwrap(), "mine");

    // Two mixes at once into b0.3 and b0.5 each get their own β.
    let (mut a, mut b) = (mix("0.3", &tmp.path("b0.3")), mix("0.5", &tmp.path("b0.5")));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    for (dir, beta) in [("b0.3", 0.3), ("b0.5", 0.5)] {
        let st = std::fs::read(tmp.path(&format!("{dir}/model.safetensors"))).unwrap();
        let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
        let note: serde_json::Value = serde_json::from_str(header["__metadata__"]["mix"].as_str().unwrap()).unwrap();
        assert_eq!(note["beta"], beta, "{dir}");
        // The inputs by name, not the paths of the machine that mixed them.
        assert_eq!((note["real"].as_str().unwrap(), note["synthetic"].as_str().unwrap()), ("tiny-mix-real", "tiny-mix-synthetic"));
    }
    // An existing output is refused, and nothing is left beside it.
    let o = sphinx(&["mix", "--real", &real, "--synthetic", &synthetic, "--beta", "0.5", "-o", &tmp.path("b0.3")]);
    assert!(!o.status.success() && stderr_of(&o).contains("already exists"));
    let mut left: Vec<String> = std::fs::read_dir(&tmp.0).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["b0.3", "b0.5", "victim.partial", "victim.v2"]);

    // β = 1e308 with --extrapolate overflows: refused, not written as Inf.
    let o = sphinx(&["mix", "--real", &real, "--synthetic", &synthetic, "--beta", "1e308", "--extrapolate", "-o", &tmp.path("huge")]);
    assert!(!o.status.success() && stderr_of(&o).contains("NaN or Inf"), "{}", stderr_of(&o));
    assert!(!std::path::Path::new(&tmp.path("huge")).exists());
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .arg("variants")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `sphinx variants | head -0`
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(101), "{}", stderr_of(&o));
    assert!(!stderr_of(&o).contains("panicked"), "{}", stderr_of(&o));
}

#[test]
fn output_stays_clean_without_a_display_session() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let o = Command::new(env!("CARGO_BIN_EXE_sphinx"))
        .args(["generate", "--model", &format!("{fixtures}/models/tiny-llama-gqa"), "--prompt", "hi", "--max-tokens", "1"])
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(!stderr_of(&o).contains("XDG_RUNTIME_DIR"), "{}", stderr_of(&o));
}

#[test]
fn bench_measures_the_default_model_and_its_encoders() {
    let image = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sphinx-micro/example.png");
    let o = sphinx(&["bench", "--device", "cpu", "--prompt-tokens", "20", "--decode-tokens", "5", "--image", image, "--bandwidth", "--json"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["llama_type"], "llama_ens");
    assert_eq!(r["parameters"], 9_377_464);
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    let llm = &r["llm"];
    assert_eq!(llm["prompt_tokens"], 20);
    assert_eq!(llm["decode_step_s"].as_array().unwrap().len(), 5);
    assert!(llm["prefill_tok_s"].as_f64().unwrap() > 0.0 && llm["decode_tok_s"].as_f64().unwrap() > 0.0);
    // A decoding step reads every weight but the token embedding (32000 × 128 bf16 values),
    // and the memory's read speed is measured beside it (--bandwidth).
    let (read, weights) = (r["decode_read_bytes"].as_u64().unwrap(), r["weights_bytes"].as_u64().unwrap());
    assert_eq!(read, weights - 32_000 * 128 * 2, "{read} of {weights} bytes");
    let per_s = r["decode_read_bytes_per_s"].as_f64().unwrap();
    assert!((per_s - read as f64 * llm["decode_tok_s"].as_f64().unwrap()).abs() <= 1e-9 * per_s);
    assert!(r["memory_read_bytes_per_s"].as_f64().unwrap() > 1e8);
    let image = &r["image"];
    assert_eq!(image["image_tokens"], 267);
    let encoders: Vec<&str> = image["encoders"].as_array().unwrap().iter().map(|e| e["encoder"].as_str().unwrap()).collect();
    assert_eq!(encoders, ["clip", "convnext", "dinov2", "qformer"]);
    assert!(image["time_to_first_token_s"].as_f64().unwrap() > 0.0 && image["time_to_first_token_cold_s"].as_f64().unwrap() > 0.0);

    // The readable table, and a benchmark longer than the context is refused up front.
    let o = sphinx(&["bench", "--device", "cpu", "--prompt-tokens", "4", "--decode-tokens", "2"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("decode "), "{}", stderr_of(&o));
    let o = sphinx(&["bench", "--device", "cpu", "--max-seq-len", "64", "--prompt-tokens", "60", "--decode-tokens", "8"]);
    assert!(!o.status.success() && stderr_of(&o).contains("exceed the context of 64"), "{}", stderr_of(&o));
}

#[test]
fn quantize_writes_blocks_that_load_natively_and_for_the_web() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sphinx-micro");
    let image = format!("{model}/example.png");
    let tmp = std::env::temp_dir().join(format!("sphinx-quantize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ground = |dir: &str| {
        let o = sphinx(&["generate", "--model", dir, "--image", &image, "--task", "ground", "--query", "the green triangle", "--temperature", "0", "--max-tokens", "24", "--device", "cpu"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    for format in ["q8_0", "q4_0"] {
        let out = tmp.join(format);
        let o = sphinx(&["quantize", model, "--to", format, "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(report.contains("peak resident memory") && report.contains("tensors kept"), "{report}");
        let smaller = std::fs::metadata(out.join("model.safetensors")).unwrap().len() < std::fs::metadata(format!("{model}/model.safetensors")).unwrap().len();
        assert!(smaller, "{format}: the quantized model is smaller");
        // Its web conversion carries the block dtypes and answers the same.
        let web = tmp.join(format!("{format}-web"));
        let o = sphinx(&["convert", "--web", out.to_str().unwrap(), web.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let manifest = std::fs::read_to_string(web.join("manifest.json")).unwrap();
        assert!(manifest.contains(&format!("\"{}\"", format.to_uppercase())), "the manifest names the {format} tensors");
        let answer = ground(out.to_str().unwrap());
        assert!(answer.contains('['), "{format}: a box: {answer}");
        assert_eq!(ground(web.to_str().unwrap()), answer, "{format}: the web conversion answers the same");
        // A quantized model is not quantized again, and nothing existing is overwritten.
        let again = sphinx(&["quantize", out.to_str().unwrap(), "--to", "q4_0", "-o", tmp.join("again").to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&again.stderr).contains("is already quantized"), "{}", String::from_utf8_lossy(&again.stderr));
        let over = sphinx(&["quantize", model, "--to", format, "-o", out.to_str().unwrap()]);
        assert!(String::from_utf8_lossy(&over.stderr).contains("already exists"));
    }
    let bad = sphinx(&["quantize", model, "--to", "q5_k", "-o", tmp.join("bad").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected q8_0 or q4_0"));
    // The encoders' dense layers too, when asked: more matrices in blocks, still a box.
    let enc = tmp.join("encoders");
    let o = sphinx(&["quantize", model, "--to", "q4_0", "--encoders", "q8_0", "-o", enc.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let q8_count = |report: &str| report.split(" matrices q8_0").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse::<usize>().ok());
    assert!(q8_count(&String::from_utf8_lossy(&o.stderr)).is_some_and(|n| n > 1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ground(enc.to_str().unwrap()).contains('['));
    // Or rounded to f16 (SPHINX-Micro stores them in bf16).
    let enc16 = tmp.join("encoders-f16");
    let o = sphinx(&["quantize", model, "--to", "q4_0", "--encoders", "f16", "-o", enc16.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f16_count = |report: &str| report.split(" f16,").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse::<usize>().ok());
    assert!(f16_count(&String::from_utf8_lossy(&o.stderr)).is_some_and(|n| n > 1), "{}", String::from_utf8_lossy(&o.stderr));
    let info = sphinx(&["info", "--model", enc16.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("F16"), "{}", String::from_utf8_lossy(&info.stdout));
    assert!(ground(enc16.to_str().unwrap()).contains('['));
    // The output head in q4_0 too, when asked (llama.cpp's --pure): no q8_0 matrix left.
    let pure = tmp.join("pure");
    let o = sphinx(&["quantize", model, "--to", "q4_0", "--head", "q4_0", "-o", pure.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(q8_count(&String::from_utf8_lossy(&o.stderr)), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(q8_count(&String::from_utf8_lossy(&sphinx(&["quantize", model, "--to", "q4_0", "-o", tmp.join("q4-default").to_str().unwrap()]).stderr)), Some(1), "the head stays q8_0 by default");
    assert!(ground(pure.to_str().unwrap()).contains('['));
    // Mixing while loading refuses quantized inputs.
    let q8 = tmp.join("q8_0");
    let mix = sphinx(&["generate", "--model", q8.to_str().unwrap(), "--mix-with", q8.to_str().unwrap(), "--prompt", "hi", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&mix.stderr).contains("then quantize"), "{}", String::from_utf8_lossy(&mix.stderr));
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left.len(), 8, "the outputs and nothing else: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
