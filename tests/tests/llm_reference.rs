//! The LLM against the PyTorch transcription of LLaMA2-Accessory's forward
//! (fixtures/gen/llm_reference.py): full prefill, chunked prefill, then 32 cached
//! greedy steps, on every backend. Tolerance: max |Δlogit| ≤ 1e-3 · max |logit|.
//!
//! Each fixture runs with its matrices as stored (f16/bf16 fixtures: packed halves read
//! by the project's kernels, on the CPU and on wgpu) and widened to f32 (the reference
//! path, on the CPU); rounded to the other 16-bit format, the greedy tokens must not change.

use sphinx_core::llm::read_f32;
use sphinx_core::generate::Sampler;
use burn::tensor::Device;
use sphinx_core::weights::{BlockFormat, EncoderWeights, WeightDtype};
use sphinx_native::quantize::quantize_model_dir;
use sphinx_tests::{devices, load_model, load_model_as, model_dir, rel_max_err, Reference};

const TOL: f32 = 1e-3;

fn check_fixture(name: &str) {
    for (backend, device) in devices() {
        check(name, backend, &device, WeightDtype::Auto, TOL);
    }
    check(name, "cpu", &Device::flex(), WeightDtype::F32, TOL);
}

/// Greedy tokens must stay; logits within a bound that covers rounding every weight
/// to f16 (11 significant bits) or bf16 (8).
fn check_rounded(name: &str) {
    check(name, "cpu", &Device::flex(), WeightDtype::F16, 2e-2);
    check(name, "cpu", &Device::flex(), WeightDtype::Bf16, 5e-2);
}

fn check(name: &str, backend: &str, device: &Device, dtype: WeightDtype, tol: f32) {
    let model = load_model_as(&model_dir(name), device, dtype);
    let m = measure(name, &format!("{backend} {dtype}"), &model.llm);
    assert!(m.worst() <= tol, "{name} [{backend} {dtype}] logits error {:.2e} > {tol:.0e}", m.worst());
    assert_eq!(m.tokens, m.want_tokens, "{name} [{backend} {dtype}] greedy tokens");
}

/// How far a model's logits are from the fixture's, each as max |Δlogit| / max |logit|.
struct Measured {
    full: f32,
    chunked: f32,
    /// The worst over the cached steps the fixture holds logits for.
    steps: f32,
    /// Greedy tokens, each step fed the reference's token (so one early mismatch cannot
    /// cascade), and the reference's.
    tokens: Vec<u32>,
    want_tokens: Vec<u32>,
}

impl Measured {
    fn worst(&self) -> f32 {
        self.full.max(self.chunked).max(self.steps)
    }

    fn tokens_equal(&self) -> usize {
        self.tokens.iter().zip(&self.want_tokens).filter(|(a, b)| a == b).count()
    }
}

/// Full prefill, the fixture's chunked prefill, then its cached greedy steps.
fn measure(name: &str, label: &str, llm: &sphinx_core::llm::Llm) -> Measured {
    let reference = Reference::load(name);
    let prompt = reference.ids("prompt_tokens");
    let chunks: Vec<usize> =
        reference.meta["prefill_chunks"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let want_tokens = reference.ids("greedy_tokens");
    let forward = |ids: &[u32], cache: &mut _| pollster::block_on(async { read_f32(llm.forward(ids, cache).await.unwrap()).await.unwrap() });

    let full = rel_max_err(&forward(&prompt, &mut llm.new_cache()), &reference.f32("logits_full_prefill"));
    eprintln!("{name} [{label}] full prefill: max err {full:.2e} × max|logit|");

    let mut cache = llm.new_cache();
    let mut pos = 0;
    let mut logits = Vec::new();
    for c in &chunks {
        logits = forward(&prompt[pos..pos + c], &mut cache);
        pos += c;
    }
    let chunked = rel_max_err(&logits, &reference.f32("logits_chunked_prefill"));
    eprintln!("{name} [{label}] chunked prefill {chunks:?}: max err {chunked:.2e}");

    let mut greedy = Sampler::new(0.0, 1.0, 0);
    let mut tokens = Vec::new();
    let mut steps = 0f32;
    for step in 0..want_tokens.len() {
        tokens.push(greedy.sample(&logits));
        if step + 1 == want_tokens.len() {
            break;
        }
        logits = forward(&[want_tokens[step]], &mut cache);
        let key = format!("logits_step_{step}");
        if reference.has(&key) {
            steps = steps.max(rel_max_err(&logits, &reference.f32(&key)));
        }
    }
    eprintln!("{name} [{label}] cached steps: max err {steps:.2e}");
    Measured { full, chunked, steps, tokens, want_tokens }
}

#[test]
fn llama_two_model_parallel_bf16_shards() {
    check_fixture("tiny-llama-mp2");
}

#[test]
fn weights_rounded_to_f16_or_bf16_keep_the_greedy_tokens() {
    for name in ["tiny-llama-mp2", "tiny-llama-gqa"] {
        check_rounded(name);
    }
}

/// The LLM's matrices quantized by `sphinx quantize` (q8_0; q4_0 with a q8_0 output head):
/// logits within a bound per format, and most greedy tokens kept, on every backend. Of
/// tiny-llama-gqa's matrices only the FFN's `w2` has rows of whole `u32` words of blocks
/// (128 values; the others have 32), so only it is quantized, and read by the block
/// kernels (which blocks.rs tests against Burn's matmul, and micro_eval.rs end to end).
/// The weights are random, their logits closer together than a trained model's (the least
/// greedy margin is 0.5% of max |logit|), so q4_0 flips a few tokens here.
#[test]
fn weights_quantized_to_blocks_stay_near_the_reference() {
    let name = "tiny-llama-gqa";
    for (format, tol, min_equal) in [(BlockFormat::Q8_0, 2e-2, 0.9), (BlockFormat::Q4_0, 1.5e-1, 0.6)] {
        let out = std::env::temp_dir().join(format!("sphinx-{name}-{}-{}", format.name(), std::process::id()));
        quantize_model_dir(&model_dir(name), format, BlockFormat::Q8_0, EncoderWeights::Keep, &out).expect("quantizes");
        for (backend, device) in devices() {
            let model = load_model_as(&out, &device, WeightDtype::Auto);
            let label = format!("{backend} {}", format.name());
            let m = measure(name, &label, &model.llm);
            let equal = m.tokens_equal() as f32 / m.tokens.len() as f32;
            eprintln!("{name} [{label}] greedy tokens equal to the reference's: {}/{}", m.tokens_equal(), m.tokens.len());
            assert!(m.worst() <= tol, "{name} [{label}] logits error {:.2e} > {tol:.0e}", m.worst());
            assert!(equal >= min_equal, "{name} [{label}] {:.0}% of the greedy tokens equal the reference's", 100.0 * equal);
        }
        std::fs::remove_dir_all(&out).expect("the directory this test wrote");
    }
}

#[test]
fn llama_grouped_kv_heads_fp16() {
    check_fixture("tiny-llama-gqa");
}

#[test]
fn mixtral_sparse_moe_two_shards() {
    check_fixture("tiny-mixtral-mp2");
}

#[test]
fn safetensors_checkpoint_gives_the_same_logits() {
    // tiny-llama-gqa-safetensors holds the same tensors as tiny-llama-gqa, written by the
    // Python `safetensors` package.
    let reference = Reference::load("tiny-llama-gqa");
    let prompt = reference.ids("prompt_tokens");
    for (backend, device) in devices() {
        let model = load_model("tiny-llama-gqa-safetensors", &device);
        let mut cache = model.llm.new_cache();
        let got = pollster::block_on(async { read_f32(model.llm.forward(&prompt, &mut cache).await.unwrap()).await.unwrap() });
        let e = rel_max_err(&got, &reference.f32("logits_full_prefill"));
        assert!(e <= TOL, "[{backend}] safetensors prefill error {e}");
    }
}

#[test]
fn attention_in_tiles_of_one_query_gives_the_same_logits() {
    // A tile budget of 0 MiB attends one query at a time: the prefill must not change.
    let name = "tiny-llama-gqa";
    let reference = Reference::load(name);
    let prompt = reference.ids("prompt_tokens");
    for (backend, device) in devices() {
        let mut args = sphinx_native::load::ModelArgs::for_dir(&model_dir(name));
        args.attention_tile_mib = Some(0);
        let model = sphinx_native::load::load_model_on(&args, &device).unwrap();
        let mut cache = model.llm.new_cache();
        let got = pollster::block_on(async { read_f32(model.llm.forward(&prompt, &mut cache).await.unwrap()).await.unwrap() });
        let e = rel_max_err(&got, &reference.f32("logits_full_prefill"));
        eprintln!("{name} [{backend}] prefill in one-query tiles: max err {e:.2e}");
        assert!(e <= TOL, "[{backend}] tiled prefill error {e}");
    }
}
