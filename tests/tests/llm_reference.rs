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
use sphinx_core::weights::WeightDtype;
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
    let reference = Reference::load(name);
    let backend = format!("{backend} {dtype}");
    let prompt = reference.ids("prompt_tokens");
    let chunks: Vec<usize> =
        reference.meta["prefill_chunks"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as usize).collect();
    let want_tokens = reference.ids("greedy_tokens");
    {
        let model = load_model_as(&model_dir(name), device, dtype);
        let llm = &model.llm;

        let mut cache = llm.new_cache();
        let full = pollster::block_on(async { read_f32(llm.forward(&prompt, &mut cache).await.unwrap()).await.unwrap() });
        let e = rel_max_err(&full, &reference.f32("logits_full_prefill"));
        eprintln!("{name} [{backend}] full prefill: max err {e:.2e} × max|logit|");
        assert!(e <= tol, "{name} [{backend}] full prefill error {e}");

        let mut cache = llm.new_cache();
        let mut pos = 0;
        let mut logits = Vec::new();
        for c in &chunks {
            logits = pollster::block_on(async {
                read_f32(llm.forward(&prompt[pos..pos + c], &mut cache).await.unwrap()).await.unwrap()
            });
            pos += c;
        }
        let e = rel_max_err(&logits, &reference.f32("logits_chunked_prefill"));
        eprintln!("{name} [{backend}] chunked prefill {chunks:?}: max err {e:.2e}");
        assert!(e <= tol, "{name} [{backend}] chunked prefill error {e}");

        let mut greedy = Sampler::new(0.0, 1.0, 0);
        let mut tokens = Vec::new();
        let mut worst = 0f32;
        for step in 0..want_tokens.len() {
            let t = greedy.sample(&logits);
            tokens.push(t);
            if step + 1 == want_tokens.len() {
                break;
            }
            // Feed the reference token so one early mismatch cannot cascade.
            let fed = want_tokens[step];
            logits = pollster::block_on(async { read_f32(llm.forward(&[fed], &mut cache).await.unwrap()).await.unwrap() });
            let key = format!("logits_step_{step}");
            if reference.has(&key) {
                let e = rel_max_err(&logits, &reference.f32(&key));
                worst = worst.max(e);
                assert!(e <= tol, "{name} [{backend}] step {step} error {e}");
            }
        }
        eprintln!("{name} [{backend}] cached steps: max err {worst:.2e}");
        assert_eq!(tokens, want_tokens, "{name} [{backend}] greedy tokens");
    }
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
