//! Every bad input gets a typed error that names the problem, never a panic.

use std::path::Path;

use burn::tensor::Device;
use sphinx_core::config::ConfigOverrides;
use sphinx_core::error::{ConfigError, GenerateError, SphinxError, WeightError};
use sphinx_core::generate::{generate, GenerationOptions};
use sphinx_core::model::{open_checkpoint, ModelFiles, SphinxModel};
use sphinx_core::weights::{write_safetensors, MemoryBytes, PthFile, WeightSource};
use sphinx_tests::{load_model, model_dir};

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

/// A model directory's files in memory, with the given checkpoint files.
fn files(name: &str, checkpoints: Vec<MemoryBytes>) -> ModelFiles<MemoryBytes> {
    let dir = model_dir(name);
    ModelFiles {
        config_json: String::from_utf8(read(&dir, "config.json")).unwrap(),
        meta_json: String::from_utf8(read(&dir, "meta.json")).unwrap(),
        tokenizer_model: read(&dir, "tokenizer.model"),
        checkpoints,
    }
}

fn shard(name: &str, file: &str) -> MemoryBytes {
    MemoryBytes::new(file, read(&model_dir(name), file))
}

fn load(files: ModelFiles<MemoryBytes>) -> Result<SphinxModel, SphinxError> {
    pollster::block_on(SphinxModel::load(files, &Device::flex(), &ConfigOverrides::default(), &mut |_| {}))
}

fn mp2() -> Vec<MemoryBytes> {
    vec![shard("tiny-llama-mp2", "consolidated.00-of-02.model.pth"), shard("tiny-llama-mp2", "consolidated.01-of-02.model.pth")]
}

#[test]
fn missing_shard_is_named() {
    let err = load(files("tiny-llama-mp2", vec![shard("tiny-llama-mp2", "consolidated.00-of-02.model.pth")])).err().unwrap();
    assert!(err.to_string().contains("consolidated.01-of-02.model.pth is missing"), "{err}");
}

#[test]
fn truncated_pth_is_a_bad_archive() {
    let mut s = shard("tiny-llama-mp2", "consolidated.00-of-02.model.pth");
    s.bytes.truncate(s.bytes.len() / 2);
    let err = load(files("tiny-llama-mp2", vec![s, mp2().pop().unwrap()])).err().unwrap();
    assert!(matches!(err, SphinxError::Weights(WeightError::BadArchive { .. })), "{err}");
    assert!(err.to_string().contains("consolidated.00-of-02.model.pth"), "{err}");
}

#[test]
fn truncated_safetensors_is_refused_at_open() {
    let mut s = shard("tiny-llama-gqa-safetensors", "model.safetensors");
    s.bytes.truncate(s.bytes.len() - 1000);
    let err = load(files("tiny-llama-gqa-safetensors", vec![s])).err().unwrap();
    assert!(matches!(err, SphinxError::Weights(WeightError::BadSafetensors { .. })), "{err}");
    assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("data area"), "{err}");
}

#[test]
fn corrupted_pth_bytes_never_panic() {
    // Deterministic byte mutations of a real checkpoint: any error is fine, a panic is not.
    let original = shard("tiny-llama-mp2", "consolidated.00-of-02.model.pth").bytes;
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..300 {
        let mut b = original.clone();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        if let Ok(f) = PthFile::open(MemoryBytes::new("mutated.pth", b)) {
            for n in f.names() {
                let _ = pollster::block_on(f.read(&n));
            }
        }
    }
}

#[test]
fn wrong_shape_is_named() {
    let mut f = files("tiny-llama-mp2", mp2());
    f.config_json = f.config_json.replace("\"multiple_of\": 32", "\"multiple_of\": 64");
    let err = load(f).err().unwrap();
    match err {
        SphinxError::Weights(WeightError::ShapeMismatch { name, expected, got }) => {
            assert_eq!(name, "llma.layers.0.feed_forward.w1.weight");
            assert_eq!((expected, got), (vec![128, 32], vec![96, 32]));
        }
        e => panic!("expected a shape mismatch, got {e}"),
    }
}

/// The gqa model's tensors, edited, as an in-memory safetensors file.
fn edited_safetensors(edit: impl FnOnce(&mut Vec<(String, sphinx_core::weights::HostTensor)>)) -> MemoryBytes {
    let src = open_checkpoint(vec![shard("tiny-llama-gqa", "consolidated.00-of-01.model.pth")]).unwrap();
    let mut tensors: Vec<_> =
        src.names().into_iter().map(|n| { let t = pollster::block_on(src.read(&n)).unwrap(); (n, t) }).collect();
    edit(&mut tensors);
    MemoryBytes::new("edited.safetensors", write_safetensors(&tensors, &Default::default()).unwrap())
}

#[test]
fn missing_tensor_is_named() {
    let s = edited_safetensors(|t| t.retain(|(n, _)| n != "llma.layers.1.attention.wk.weight"));
    let err = load(files("tiny-llama-gqa", vec![s])).err().unwrap();
    assert!(matches!(&err, SphinxError::Weights(WeightError::MissingTensor { name }) if name == "llma.layers.1.attention.wk.weight"), "{err}");
}

#[test]
fn unexpected_tensor_is_named() {
    let s = edited_safetensors(|t| {
        let extra = t[0].1.clone();
        t.push(("llma.layers.7.attention.wq.weight".into(), extra));
    });
    let err = load(files("tiny-llama-gqa", vec![s])).err().unwrap();
    assert!(matches!(&err, SphinxError::Weights(WeightError::UnexpectedTensor { name, .. }) if name == "llma.layers.7.attention.wq.weight"), "{err}");
}

#[test]
fn unknown_llama_type() {
    let mut f = files("tiny-llama-mp2", mp2());
    f.meta_json = r#"{"llama_type": "gpt2"}"#.into();
    let err = load(f).err().unwrap();
    assert!(matches!(&err, SphinxError::Config(ConfigError::UnknownLlamaType(t, _)) if t == "gpt2"), "{err}");
}

#[test]
fn malformed_config_json() {
    let mut f = files("tiny-llama-mp2", mp2());
    f.config_json = "{\"dim\": 32,".into();
    let err = load(f).err().unwrap();
    assert!(matches!(&err, SphinxError::Config(ConfigError::Json { file, .. }) if file == "config.json"), "{err}");
}

#[test]
fn corrupt_tokenizer_model() {
    let mut f = files("tiny-llama-mp2", mp2());
    f.tokenizer_model = b"\x0a\xff\xff\xff\xff\x0fnot a model".to_vec();
    let err = load(f).err().unwrap();
    assert!(matches!(err, SphinxError::Tokenizer(_)), "{err}");
}

#[test]
fn prompt_longer_than_the_context() {
    let model = load_model("tiny-llama-mp2", &Device::flex());
    let prompt: Vec<u32> = std::iter::once(1).chain((0..4090).map(|i| 100 + i % 1000)).collect();
    let mut cache = model.llm.new_cache();
    let opts = GenerationOptions { max_gen_len: 16, ..Default::default() };
    let err = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &prompt, None, &opts, &mut |_| {}))
        .err()
        .unwrap();
    match err {
        SphinxError::Generate(GenerateError::PromptTooLong { prompt, max, .. }) => assert_eq!((prompt, max), (4091, 4080)),
        e => panic!("expected PromptTooLong, got {e}"),
    }
    assert!(cache.pos() == 0, "nothing was fed");
}
