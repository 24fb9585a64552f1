//! Regression tests for crafted files (issue 13): each input that once crashed, hung or
//! exhausted memory, or was silently accepted, is now a clean, typed error naming the
//! problem. The files are built here by `sphinx_tests::craft`, so the tests need no
//! binary fixtures; command-line cases (symlinks, FIFOs, staging directories, pipes)
//! are in `native/tests/cli.rs`.

use burn::tensor::Device;
use sphinx_core::config::{ConfigOverrides, LlmConfig};
use sphinx_core::error::{ConfigError, SphinxError, TokenizerError, WeightError};
use sphinx_core::generate::{generate, GenerationOptions};
use sphinx_core::model::SphinxModel;
use sphinx_core::preprocess::{decode_image, DecodeOptions, ImageError};
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{MemoryBytes, PthFile, SafetensorsFile, WeightDtype, WeightSource, WebManifest};
use sphinx_tests::craft::{jpeg_header, pickle_bytes, png_header, pth_bytes, safetensors_raw, state_dict_ops, zip_bytes, Op, TensorSpec, ZipEntry, MARK};
use sphinx_tests::{fixtures, load_model, model_dir};

fn open_pth(bytes: Vec<u8>) -> Result<PthFile<MemoryBytes>, WeightError> {
    PthFile::open(MemoryBytes::new("crafted.pth", bytes))
}

fn open_pickle(pickle: Vec<u8>) -> Result<PthFile<MemoryBytes>, WeightError> {
    open_pth(pth_bytes(pickle, &[("0", vec![0; 64])]))
}

fn err_text<T>(r: Result<T, WeightError>) -> String {
    match r {
        Ok(_) => panic!("a crafted file was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_crafted_checkpoint_loads() {
    // The builders make real checkpoints: the crafted variants below differ in one field.
    let data: Vec<u8> = (0..24u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let ops = state_dict_ops(&[TensorSpec::f32("w", "0", &[2, 3]), TensorSpec { offset: 6, ..TensorSpec::f32("v", "0", &[3]) }]);
    let f = open_pth(pth_bytes(pickle_bytes(&ops), &[("0", data)])).unwrap();
    let w = pollster::block_on(f.read("w")).unwrap().to_f32().unwrap();
    let v = pollster::block_on(f.read("v")).unwrap().to_f32().unwrap();
    assert_eq!((w, v), (vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], vec![6.0, 7.0, 8.0]));
}

#[test]
fn a_pickle_nested_a_million_levels_is_refused() {
    let n = 1_000_000;
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b'(', n));
    p.extend(std::iter::repeat_n(b'l', n));
    p.push(b'.');
    assert!(err_text(open_pickle(p)).contains("nested deeper than"));
}

#[test]
fn a_pickle_nested_with_memo_stores_is_refused() {
    let n = 100_000;
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b'(', n));
    for _ in 0..n {
        p.extend_from_slice(b"lq\x00");
    }
    p.push(b'.');
    assert!(err_text(open_pickle(p)).contains("nested deeper than"));
}

#[test]
fn a_pickle_doubling_a_list_at_every_level_stays_small() {
    // 326 bytes: level k+1 = [level k, level k], 40 levels deep (2^40 leaves if copied).
    let mut ops = vec![Op::Code(b']'), Op::Put(0)];
    for _ in 0..40 {
        ops.extend([Op::Code(MARK), Op::Get(0), Op::Get(0), Op::Code(b'l'), Op::Put(0)]);
    }
    let p = pickle_bytes(&ops);
    assert!(p.len() < 400);
    let t = std::time::Instant::now();
    assert!(err_text(open_pickle(p)).contains("not a dict"));
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn a_zip_declaring_a_huge_data_pkl_is_refused_before_allocating() {
    for size in [1u64 << 40, u64::MAX - 1] {
        let entries = [ZipEntry { declared_size: Some(size), ..ZipEntry::new("archive/data.pkl", vec![0x80, 2, b'}', b'.']) }];
        let e = err_text(open_pth(zip_bytes(&entries)));
        assert!(e.contains("crafted.pth"), "{e}");
    }
}

#[test]
fn storage_offsets_and_strides_that_overflow_are_refused() {
    let cases = [
        TensorSpec { offset: i64::MAX, ..TensorSpec::f32("w", "0", &[2]) },
        TensorSpec { stride: vec![1 << 62, 1], ..TensorSpec::f32("w", "0", &[2, 2]) },
        TensorSpec { stride: vec![(1 << 62) + 1, 1], ..TensorSpec::f32("w", "0", &[4, 2]) },
        TensorSpec { shape: vec![1 << 31, 1 << 31, 1 << 31], stride: vec![0, 0, 0], ..TensorSpec::f32("w", "0", &[1]) },
        // A storage shorter than its tensor.
        TensorSpec::f32("w", "0", &[100]),
    ];
    for spec in cases {
        let f = open_pth(pth_bytes(pickle_bytes(&state_dict_ops(std::slice::from_ref(&spec))), &[("0", vec![0; 64])]));
        let e = match f {
            Err(e) => e.to_string(),
            Ok(f) => err_text(pollster::block_on(f.read("w"))),
        };
        assert!(e.contains("tensor w") || e.contains("crafted.pth"), "{spec:?}: {e}");
    }
}

#[test]
fn negative_or_non_integer_dims_in_a_pickle_are_refused() {
    let spec = TensorSpec { shape: vec![-1, 4], ..TensorSpec::f32("w", "0", &[1, 4]) };
    let e = err_text(open_pickle(pickle_bytes(&state_dict_ops(&[spec]))));
    assert!(e.contains("negative or non-integer dim"), "{e}");
}

fn open_st(header: &str, data: &[u8]) -> Result<SafetensorsFile<MemoryBytes>, WeightError> {
    SafetensorsFile::open(MemoryBytes::new("crafted.safetensors", safetensors_raw(header, data)))
}

#[test]
fn safetensors_headers_that_lie_are_refused() {
    let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(open_st(ok, &[0; 8]).is_ok());
    let bad = [
        // Offsets wrapping past 2^64 onto the header.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,0]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
        // Overlapping tensors.
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        // Negative and non-integer dims (once silently dropped).
        r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}}"#,
        // Duplicate names.
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        // Size inconsistent with dtype × shape, and a data area longer than the tensors.
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
    ];
    for h in bad {
        let e = err_text(open_st(h, &[0; 8]));
        assert!(e.contains("crafted.safetensors"), "{h}: {e}");
    }
    // A header length past the file.
    let mut f = safetensors_raw(ok, &[0; 8]);
    f[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(SafetensorsFile::open(MemoryBytes::new("crafted.safetensors", f)).is_err());
}

fn config_error(config: &str, llama_type: &str) -> ConfigError {
    let meta = format!(r#"{{"llama_type": "{llama_type}"}}"#);
    let c = LlmConfig::from_json(config, &meta, 32000, &ConfigOverrides::default());
    let c = match c {
        Err(e) => return e,
        Ok(c) => c,
    };
    let json: serde_json::Value = serde_json::from_str(config).unwrap();
    sphinx_core::vision::VisionConfig::for_llama_type(c.llama_type, &json, c.dim).err().expect("refused")
}

#[test]
fn absurd_configs_are_refused_before_allocating() {
    for (config, what) in [
        (r#"{"dim": 64, "n_layers": 1000000000, "n_heads": 4}"#, "n_layers"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 0}"#, "multiple_of"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "rope_theta": 0}"#, "rope_theta"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "norm_eps": -0.00001}"#, "norm_eps"),
        (r#"{"dim": 1099511627776, "n_layers": 2, "n_heads": 4}"#, "dim"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 3}"#, "heads"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "vision": {"clip": {"layers": 1000000000}}}"#, "clip.layers"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "vision": {"convnext": {"depths": [3, 3, 1000000000, 3]}}}"#, "convnext.depths"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "vision": {"dinov2": {"dim": 1099511627776}}}"#, "dinov2.dim"),
        (r#"{"dim": 64, "n_layers": 2, "n_heads": 4, "vision": {"clip": {"widht": 8}}}"#, "widht"),
    ] {
        let e = config_error(config, "llama_ens").to_string();
        assert!(e.contains(what), "{config}: {e}");
    }
}

#[test]
fn a_model_too_large_for_the_device_is_refused_with_the_numbers() {
    let dir = model_dir("tiny-llama-gqa");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let files = sphinx_core::model::ModelFiles {
        config_json: String::from_utf8(read("config.json")).unwrap(),
        meta_json: String::from_utf8(read("meta.json")).unwrap(),
        tokenizer_model: read("tokenizer.model"),
        checkpoints: vec![MemoryBytes::new("consolidated.00-of-01.model.pth", read("consolidated.00-of-01.model.pth"))],
    };
    let small = ConfigOverrides { device_memory: Some(1000), ..Default::default() };
    let e = pollster::block_on(SphinxModel::load(files, &Device::flex(), &small, &mut |_| {})).err().unwrap();
    assert!(matches!(e, SphinxError::Config(ConfigError::TooLarge { have: 1000, .. })), "{e}");
    assert!(e.to_string().contains("1000"), "{e}");
}

/// A tensor larger than the device's largest buffer (lavapipe: 128 MiB, less than an f32
/// TinyLlama's embedding) is refused before loading, naming the tensor and the way out;
/// with the limit at the largest buffer the model needs it loads.
#[test]
fn a_tensor_larger_than_the_device_buffers_is_refused_by_name() {
    let dir = model_dir("tiny-llama-gqa");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let files = || sphinx_core::model::ModelFiles {
        config_json: String::from_utf8(read("config.json")).unwrap(),
        meta_json: String::from_utf8(read("meta.json")).unwrap(),
        tokenizer_model: read("tokenizer.model"),
        checkpoints: vec![MemoryBytes::new("consolidated.00-of-01.model.pth", read("consolidated.00-of-01.model.pth"))],
    };
    let pth = PthFile::open(MemoryBytes::new("consolidated.00-of-01.model.pth", read("consolidated.00-of-01.model.pth"))).unwrap();
    // The fixture's matrices are 16-bit: held as stored by default, widened with --dtype f32.
    let (largest, name) = pth.names().into_iter().map(|n| (pth.info(&n).unwrap().byte_len() as u64, n)).max().unwrap();
    let load_as = |limit: u64, weight_dtype: WeightDtype| {
        let overrides = ConfigOverrides { max_buffer_bytes: Some(limit), weight_dtype, ..Default::default() };
        pollster::block_on(SphinxModel::load(files(), &Device::flex(), &overrides, &mut |_| {}))
    };
    let load = |limit: u64| load_as(limit, WeightDtype::Auto);
    let refused = |e: Option<SphinxError>, need: u64, way_out: &str| {
        let e = e.expect("refused");
        assert!(matches!(&e, SphinxError::Config(ConfigError::BufferTooLarge { need: n, .. }) if *n == need), "{e}");
        let message = e.to_string();
        assert!(message.contains(&format!("'{name}'")) && message.contains(way_out), "{message}");
    };
    refused(load(largest - 1).err(), largest, "sphinx quantize");
    // Widened to f32 it needs twice the bytes, and 16 bits would fit.
    refused(load_as(largest, WeightDtype::F32).err(), 2 * largest, "--dtype bf16");
    // At the largest tensor or the largest activation of a prefill chunk, whichever is more, it loads.
    let f = files();
    let config = LlmConfig::from_json(&f.config_json, &f.meta_json, 32000, &ConfigOverrides::default()).unwrap();
    let enough = largest.max(config.largest_activation_bytes(sphinx_core::config::DEFAULT_PREFILL_CHUNK));
    assert!(load(enough).is_ok(), "a limit of {enough} bytes (largest tensor '{name}': {largest}) must load");
    assert!(matches!(load(enough - 1).err(), Some(SphinxError::Config(ConfigError::BufferTooLarge { .. }))));
}

/// The LLaMA tokenizer with a trainer-spec field appended (the last one wins).
fn tokenizer_with(field: u64, value: i64) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut spec = Vec::new();
    varint(field << 3, &mut spec);
    varint(value as u64, &mut spec);
    let mut t = std::fs::read(fixtures().join("tokenizer/llama2-tokenizer.model")).unwrap();
    t.push(0x12);
    varint(spec.len() as u64, &mut t);
    t.extend(spec);
    t
}

#[test]
fn special_ids_outside_the_vocabulary_are_refused() {
    assert!(Tokenizer::from_model_bytes(&tokenizer_with(41, 1)).is_ok());
    for (field, value, name) in [(41, 99999, "bos_id"), (41, -5, "bos_id"), (40, 32000, "unk_id"), (42, -1, "eos_id")] {
        match Tokenizer::from_model_bytes(&tokenizer_with(field, value)) {
            Err(TokenizerError::Corrupt(m)) => assert!(m.contains(name), "{m}"),
            other => panic!("{name} = {value}: {:?}", other.map(|_| ())),
        }
    }
}

fn manifest_with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<WebManifest, WeightError> {
    let sha = "0".repeat(64);
    let mut m = serde_json::json!({
        "format": "sphinx-web/1", "config_json": "{}", "meta_json": "{}",
        "tokenizer": {"file": "tokenizer.model", "bytes": 10, "sha256": sha},
        "tensors": [{"name": "a", "dtype": "F32", "shape": [2], "shard": 0, "offset": 0, "bytes": 8}],
        "shards": [{"file": "shard-0000.bin", "bytes": 8, "sha256": sha}],
        "components": {}, "requirements": {"max_storage_buffer_binding_size": 8, "max_buffer_size": 8, "features": []}
    });
    edit(&mut m);
    WebManifest::parse(&m.to_string())
}

#[test]
fn manifests_naming_files_outside_their_directory_or_lying_about_sizes_are_refused() {
    assert!(manifest_with(|_| {}).is_ok());
    let cases: Vec<(&str, Box<dyn FnOnce(&mut serde_json::Value)>)> = vec![
        ("../../x", Box::new(|m| m["shards"][0]["file"] = "../../x".into())),
        ("/etc/passwd", Box::new(|m| m["shards"][0]["file"] = "/etc/passwd".into())),
        ("/dev/zero", Box::new(|m| m["tokenizer"]["file"] = "/dev/zero".into())),
        ("sha", Box::new(|m| m["shards"][0]["sha256"] = "abc".into())),
        ("outside", Box::new(|m| m["tensors"][0]["offset"] = serde_json::json!(u64::MAX - 3))),
        ("bytes", Box::new(|m| m["tensors"][0]["bytes"] = 12.into())),
        ("not listed", Box::new(|m| m["tensors"][0]["shard"] = 3.into())),
        ("twice", Box::new(|m| {
            let t = m["tensors"][0].clone();
            m["tensors"].as_array_mut().unwrap().push(t);
        })),
    ];
    for (what, edit) in cases {
        let e = err_text(manifest_with(edit));
        assert!(e.contains("manifest"), "{what}: {e}");
    }
}

#[test]
fn a_wide_png_is_refused_before_padding_to_a_square() {
    // 370 bytes that decode to 100000×1 — padded to a square, 30 GB of pixels.
    let png = png_header(100_000, 1, 8, 2);
    assert!(png.len() < 400);
    match decode_image(&png, &DecodeOptions::default()) {
        Err(ImageError::SquareTooLarge { side: 100_000, .. }) => {}
        other => panic!("{:?}", other.map(|i| (i.width, i.height))),
    }
    let jpeg = decode_image(&jpeg_header(65000, 1, 3), &DecodeOptions::default());
    assert!(matches!(jpeg, Err(ImageError::SquareTooLarge { .. })), "{:?}", jpeg.map(|i| (i.width, i.height)));
}

#[test]
fn a_context_of_a_hundred_million_is_refused() {
    let meta = r#"{"llama_type": "llama"}"#;
    let long = ConfigOverrides { max_seq_len: Some(100_000_000), ..Default::default() };
    let e = LlmConfig::from_json(r#"{"dim": 64, "n_layers": 2, "n_heads": 4}"#, meta, 100, &long).err().unwrap();
    assert!(e.to_string().contains("max_seq_len"), "{e}");
}

#[test]
fn tiny_temperatures_are_greedy_and_huge_answer_budgets_are_clean_errors() {
    let model = load_model("tiny-llama-gqa", &Device::flex());
    let prompt = model.tokenizer.encode("Hello", true, false);
    let run = |opts: GenerationOptions| {
        let mut cache = model.llm.new_cache();
        pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &prompt, None, &opts, &mut |_| {}))
    };
    let greedy = run(GenerationOptions { max_gen_len: 6, temperature: 0.0, ..Default::default() }).unwrap();
    for t in [1e-45, 1e-30, 1e-6] {
        let cold = run(GenerationOptions { max_gen_len: 6, temperature: t, ..Default::default() }).unwrap();
        assert_eq!(cold.tokens, greedy.tokens, "temperature {t}");
    }
    let e = run(GenerationOptions { max_gen_len: usize::MAX, ..Default::default() }).err().unwrap();
    assert!(e.to_string().contains("context"), "{e}");
}
