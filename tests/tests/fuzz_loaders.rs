//! Structure-aware fuzzing of every loader of untrusted input, bounded in time so it
//! runs in CI. Each generator builds a *valid* file (a `torch.save` zip with its
//! pickle, a safetensors header, a web manifest, a config, a tokenizer, PNG and JPEG
//! headers), then mutates its fields — sizes, offsets, opcodes, nesting, names — rather
//! than only flipping bytes. A loader may accept or refuse a case; it must never panic,
//! and (since each case runs in this process) never abort on an allocation or
//! overflow its stack. Runs are deterministic: `SPHINX_FUZZ_SEED` picks another seed,
//! `SPHINX_FUZZ_SECS` the time per loader (default 6 s).

use std::time::{Duration, Instant};

use sphinx_core::config::{ConfigOverrides, LlmConfig};
use sphinx_core::preprocess::{decode_image, DecodeOptions};
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::vision::VisionConfig;
use sphinx_core::weights::{HostTensor, ManifestSource, MemoryBytes, PthFile, SafetensorsFile, ShardFetch, WeightSource, WebManifest};
use sphinx_tests::craft::{jpeg_header, mutate_ops, pickle_bytes, png_header, pth_bytes, safetensors_raw, state_dict_ops, zip_bytes, Rng, TensorSpec, ZipEntry};
use sphinx_tests::fixtures;

/// Runs `case` with fresh random numbers until the time budget is spent; returns the count.
fn fuzz(name: &str, mut case: impl FnMut(&mut Rng)) -> u64 {
    let seed: u64 = std::env::var("SPHINX_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(13);
    let secs: u64 = std::env::var("SPHINX_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    let mut rng = Rng::new(seed ^ name.len() as u64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut n = 0;
    while Instant::now() < deadline || n < 100 {
        case(&mut rng);
        n += 1;
    }
    eprintln!("fuzz {name}: {n} cases, 0 crashes (seed {seed})");
    n
}

/// Reads every tensor of a source whose open succeeded.
fn read_all(source: &impl WeightSource) {
    for n in source.names() {
        let _ = pollster::block_on(source.read(&n));
    }
}

fn random_spec(rng: &mut Rng, i: usize) -> TensorSpec {
    let rank = rng.below(4);
    let shape: Vec<i64> = (0..rank).map(|_| if rng.chance(0.8) { 1 + rng.below(6) as i64 } else { rng.boundary() as i64 }).collect();
    let mut spec = TensorSpec::f32(&format!("t{i}"), &rng.below(3).to_string(), &shape);
    if rng.chance(0.3) {
        spec.offset = if rng.chance(0.5) { rng.below(16) as i64 } else { rng.boundary() as i64 };
    }
    if rng.chance(0.2) {
        spec.stride = spec.stride.iter().map(|_| rng.boundary() as i64).collect();
    }
    if rng.chance(0.1) {
        spec.storage_type = rng.pick(&["HalfStorage", "BFloat16Storage", "LongStorage", "ComplexStorage"]).to_string();
    }
    spec
}

#[test]
fn fuzz_pth_checkpoints() {
    fuzz("pth", |rng| {
        let specs: Vec<TensorSpec> = (0..1 + rng.below(3)).map(|i| random_spec(rng, i)).collect();
        let mut ops = state_dict_ops(&specs);
        for _ in 0..rng.below(4) {
            mutate_ops(rng, &mut ops);
        }
        let storages: Vec<(String, Vec<u8>)> = (0..3).map(|k| (k.to_string(), vec![0u8; 4 * rng.below(40)])).collect();
        let mut entries = vec![ZipEntry::new("archive/data.pkl", pickle_bytes(&ops))];
        entries.extend(storages.iter().map(|(k, d)| ZipEntry::new(&format!("archive/data/{k}"), d.clone())));
        if rng.chance(0.2) {
            let i = rng.below(entries.len());
            entries[i].declared_size = Some(rng.boundary());
        }
        let mut bytes = zip_bytes(&entries);
        // Some cases also get raw damage in the directory or a local header.
        for _ in 0..if rng.chance(0.2) { 1 + rng.below(4) } else { 0 } {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        if let Ok(f) = PthFile::open(MemoryBytes::new("fuzz.pth", bytes)) {
            read_all(&f);
        }
    });
}

#[test]
fn fuzz_pickles_alone() {
    fuzz("pickle", |rng| {
        let mut ops = state_dict_ops(&[random_spec(rng, 0)]);
        for _ in 0..1 + rng.below(12) {
            mutate_ops(rng, &mut ops);
        }
        let pickle = pickle_bytes(&ops);
        if let Ok(f) = PthFile::open(MemoryBytes::new("fuzz.pth", pth_bytes(pickle, &[("0", vec![0; 64])]))) {
            read_all(&f);
        }
    });
}

#[test]
fn fuzz_safetensors_headers() {
    let dtypes = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X", ""];
    fuzz("safetensors", |rng| {
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        let n = rng.below(4);
        for i in 0..n {
            let shape: Vec<serde_json::Value> = (0..rng.below(3)).map(|_| (1 + rng.below(4)).into()).collect();
            let numel: u64 = shape.iter().map(|d| d.as_u64().unwrap()).product();
            let dtype = *rng.pick(&dtypes[..3]);
            let len = numel * if dtype == "F32" { 4 } else { 2 };
            let mut t = serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len]});
            match rng.below(8) {
                0 => t["data_offsets"][rng.below(2)] = serde_json::json!(rng.boundary()),
                1 => t["shape"] = serde_json::json!([rng.boundary(), -1, 2.5]),
                2 => t["dtype"] = serde_json::json!(rng.pick(&dtypes)),
                3 => t["shape"] = serde_json::json!([rng.boundary(), rng.boundary()]),
                _ => {}
            }
            header.insert(format!("t{}", if rng.chance(0.1) { 0 } else { i }), t);
            offset += len;
        }
        let mut text = serde_json::Value::Object(header).to_string();
        if rng.chance(0.1) && text.len() > 2 {
            // A duplicate key, which a JSON map would hide.
            text = format!("{{\"t0\":{{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}},{}", &text[1..]);
        }
        let data = vec![0u8; (offset as usize).min(1 << 16) + if rng.chance(0.2) { rng.below(8) } else { 0 }];
        let mut bytes = safetensors_raw(&text, &data);
        if rng.chance(0.1) {
            bytes[..8].copy_from_slice(&rng.boundary().to_le_bytes());
        }
        if let Ok(f) = SafetensorsFile::open(MemoryBytes::new("fuzz.safetensors", bytes)) {
            read_all(&f);
        }
    });
}

/// Shards in memory for manifest fuzzing.
struct Shards(Vec<(String, Vec<u8>)>);

impl ShardFetch for Shards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, sphinx_core::error::WeightError> {
        let data = &self.0.iter().find(|(f, _)| f == file).ok_or_else(|| sphinx_core::error::WeightError::MissingTensor { name: file.into() })?.1;
        Ok(sphinx_core::weights::slice_range(data, offset, len).unwrap_or_default().to_vec())
    }
}

#[test]
fn fuzz_web_manifests() {
    let names = ["shard-0000.bin", "../x", "/etc/passwd", "", ".", "a/b", "C:\\x", "ok.bin"];
    fuzz("manifest", |rng| {
        let sha = "ab".repeat(32);
        let mut m = serde_json::json!({
            "format": "sphinx-web/1", "config_json": "{}", "meta_json": "{}",
            "tokenizer": {"file": "tokenizer.model", "bytes": 10, "sha256": sha},
            "tensors": [{"name": "a", "dtype": "F32", "shape": [2], "shard": 0, "offset": 0, "bytes": 8},
                        {"name": "b", "dtype": "BF16", "shape": [2, 2], "shard": 0, "offset": 8, "bytes": 8}],
            "shards": [{"file": "shard-0000.bin", "bytes": 16, "sha256": sha}],
            "components": {}, "requirements": {"max_storage_buffer_binding_size": 16, "max_buffer_size": 16, "features": []}
        });
        for _ in 0..1 + rng.below(3) {
            let t = rng.below(2);
            match rng.below(8) {
                0 => m["shards"][0]["file"] = (*rng.pick(&names)).into(),
                1 => m["tokenizer"]["file"] = (*rng.pick(&names)).into(),
                2 => m["tensors"][t]["offset"] = rng.boundary().into(),
                3 => m["tensors"][t]["bytes"] = rng.boundary().into(),
                4 => m["tensors"][t]["shard"] = (rng.boundary() % 4).into(),
                5 => m["tensors"][t]["shape"] = serde_json::json!([rng.boundary(), rng.boundary()]),
                6 => m["shards"][0]["bytes"] = rng.boundary().into(),
                _ => m["tensors"][t]["dtype"] = (*rng.pick(&["F32", "I64", "Q4", ""])).into(),
            }
        }
        if let Ok(manifest) = WebManifest::parse(&m.to_string()) {
            let file = manifest.shards[0].file.clone();
            let source = ManifestSource::new(manifest, Shards(vec![(file, vec![0; 16])]));
            read_all(&source);
        }
    });
}

#[test]
fn fuzz_configs() {
    let types = ["llama", "llama_ens", "llama_ens5_light", "mixtral_sparse_ens"];
    let fields = ["dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "ffn_dim_multiplier", "norm_eps", "rope_theta", "rope_scaling", "hidden_dim"];
    fuzz("config", |rng| {
        let mut c = serde_json::json!({"dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32,
            "vision": {"clip": {"width": 32, "layers": 1, "heads": 2, "mlp": 64}, "dinov2": {"dim": 32, "heads": 2}}});
        for _ in 0..1 + rng.below(3) {
            let v = match rng.below(4) {
                0 => serde_json::json!(rng.boundary()),
                1 => serde_json::json!(-(rng.below(5) as i64)),
                2 => serde_json::json!(*rng.pick(&[0.0, -1.0, 1e308, 1e-320, 0.5])),
                _ => serde_json::Value::Null,
            };
            if rng.chance(0.7) {
                c[*rng.pick(&fields)] = v;
            } else {
                let section = *rng.pick(&["clip", "dinov2", "convnext", "blip2"]);
                let key = *rng.pick(&["width", "layers", "heads", "mlp", "dim", "ffn_hidden", "pos_grid", "queries", "depths", "dims"]);
                c["vision"][section][key] = if key == "depths" || key == "dims" { serde_json::json!([v.clone(), v.clone(), v.clone(), v]) } else { v };
            }
        }
        let meta = format!(r#"{{"llama_type": "{}"}}"#, rng.pick(&types));
        let overrides = ConfigOverrides { max_seq_len: rng.chance(0.2).then(|| rng.boundary() as usize), ..Default::default() };
        if let Ok(cfg) = LlmConfig::from_json(&c.to_string(), &meta, 1 + rng.below(40000), &overrides) {
            let _ = cfg.device_bytes();
            if let Ok(Some(v)) = VisionConfig::for_llama_type(cfg.llama_type, &c, cfg.dim) {
                let _ = (v.parameter_count(), v.image_tokens());
            }
        }
    });
}

#[test]
fn fuzz_tokenizer_models() {
    let original = std::fs::read(fixtures().join("tokenizer/llama2-tokenizer.model")).unwrap();
    fuzz("tokenizer", |rng| {
        let mut t = original.clone();
        for _ in 0..1 + rng.below(6) {
            // Damage a field header or length near a piece, or the trainer spec at the end.
            let i = if rng.chance(0.5) { rng.below(t.len()) } else { t.len() - 1 - rng.below(200.min(t.len())) };
            t[i] = if rng.chance(0.5) { rng.next() as u8 } else { *rng.pick(&[0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12]) };
        }
        if rng.chance(0.2) {
            t.truncate(rng.below(t.len()));
        }
        if let Ok(tok) = Tokenizer::from_model_bytes(&t) {
            let ids = tok.encode("Hello, wörld! 🦀 <0x41>", true, true);
            let _ = tok.decode(&ids);
        }
    });
}

#[test]
fn fuzz_image_headers() {
    fuzz("image", |rng| {
        let dim = |rng: &mut Rng| if rng.chance(0.5) { 1 + rng.below(64) as u64 } else { rng.boundary() };
        let mut bytes = if rng.chance(0.5) {
            png_header(dim(rng) as u32, dim(rng) as u32, *rng.pick(&[1, 2, 4, 8, 16, 3, 0]), *rng.pick(&[0, 2, 3, 4, 6, 7]))
        } else {
            jpeg_header(dim(rng) as u16, dim(rng) as u16, *rng.pick(&[1, 3, 4, 0, 255]))
        };
        for _ in 0..rng.below(3) {
            let i = rng.below(bytes.len());
            bytes[i] = rng.next() as u8;
        }
        let opts = DecodeOptions { apply_exif_orientation: rng.chance(0.5), ..Default::default() };
        let _ = decode_image(&bytes, &opts);
    });
}

#[test]
fn fuzzing_reaches_the_readers() {
    // A mutation-free valid checkpoint loads, so the cases above exercise real parsing,
    // not only an early refusal.
    let specs = [TensorSpec::f32("w", "0", &[2, 2])];
    let bytes = pth_bytes(pickle_bytes(&state_dict_ops(&specs)), &[("0", vec![0; 16])]);
    let f = PthFile::open(MemoryBytes::new("valid.pth", bytes)).map_err(|e| e.to_string()).unwrap();
    let t: HostTensor = pollster::block_on(f.read("w")).unwrap();
    assert_eq!(t.shape, vec![2, 2]);
}
