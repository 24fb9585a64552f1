//! The visual encoders, their fusion and the multimodal LLM against references made
//! with the upstream libraries (fixtures/gen/make_vision_fixtures.py: open_clip 2.23,
//! timm, transformers' Dinov2Model and BLIP-2) and a transcription of `llama_ens*.py`,
//! for SPHINX, SPHINX-1k, SPHINX-Tiny-1k and SPHINX-MoE, on every backend.
//! Tolerances: encoders and fused tokens max |Δ| ≤ 1e-4; logits ≤ 1e-3 · max |logit|.

use burn::tensor::Tensor;
use sphinx_core::generate::Sampler;
use sphinx_core::llm::read_f32;
use sphinx_core::preprocess::DecodeOptions;
use sphinx_tests::{devices, fixtures, load_model, rel_max_err, Reference};

fn max_abs(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "length");
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
}

/// Per-view rows of a [V, N, C] tensor, compared with `encoder/{name}/{i}`.
fn check_views(reference: &Reference, label: &str, name: &str, t: Tensor<3>) -> f32 {
    let [v, n, c] = t.dims();
    let host = pollster::block_on(read_f32(t)).unwrap();
    let mut worst = 0f32;
    for i in 0..v {
        let want = reference.f32(&format!("encoder/{name}/{i}"));
        let e = max_abs(&host[i * n * c..(i + 1) * n * c], &want);
        assert!(e <= 1e-4, "{label} {name} view {i}: max error {e}");
        worst = worst.max(e);
    }
    worst
}

fn check_variant(name: &str) {
    let reference = Reference::load(name);
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let prompt = reference.ids("prompt_tokens");
    let want_tokens = reference.ids("greedy_tokens");
    for (backend, device) in devices() {
        let label = format!("{name} [{backend}]");
        let model = load_model(name, &device);
        let tower = model.vision.as_ref().expect("a multimodal model");
        assert_eq!(tower.config().image_tokens() as u64, reference.meta["image_tokens"].as_u64().unwrap());
        let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();

        for run in ["cold", "warm"] {
            let t0 = std::time::Instant::now();
            let block = tower.encode(&views).expect("resident encoders");
            let _ = pollster::block_on(read_f32(block)).unwrap();
            eprintln!("{label}: image through the encoders ({run}): {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
        }
        let parts = tower.encode_parts(&views).expect("resident encoders");
        let mut errs = Vec::new();
        if let Some(c) = parts.clip.clone() {
            errs.push(("clip", check_views(&reference, &label, "clip", c)));
        }
        errs.push(("convnext", check_views(&reference, &label, "convnext", parts.convnext.clone())));
        errs.push(("dinov2", check_views(&reference, &label, "dinov2", parts.dinov2.clone())));
        if let Some(q) = parts.qformer.clone() {
            errs.push(("qformer", check_views(&reference, &label, "qformer", q)));
        }
        let block = tower.fuse(parts);
        let host = pollster::block_on(read_f32(block.clone())).unwrap();
        let e = max_abs(&host, &reference.f32("image_block"));
        errs.push(("fused", e));
        assert!(e <= 1e-4, "{label} fused image tokens: max error {e}");
        eprintln!("{label}: max |Δ| {errs:?}");

        // Prefill: BOS, the image block, then the prompt (llama_ens*.py forward_inference).
        let llm = &model.llm;
        let emb = llm.embed(&prompt);
        let h = Tensor::cat(vec![emb.clone().narrow(1, 0, 1), block, emb.narrow(1, 1, prompt.len() - 1)], 1);
        let mut cache = llm.new_cache();
        let mut logits = pollster::block_on(async { read_f32(llm.forward_embeds(h, &mut cache).await.unwrap()).await.unwrap() });
        let e = rel_max_err(&logits, &reference.f32("logits_prefill"));
        assert!(e <= 1e-3, "{label} prefill logits error {e}");
        let mut worst = e;

        let mut greedy = Sampler::new(0.0, 1.0, 0);
        let mut tokens = Vec::new();
        for step in 0..want_tokens.len() {
            tokens.push(greedy.sample(&logits));
            if step + 1 == want_tokens.len() {
                break;
            }
            logits = pollster::block_on(async {
                read_f32(llm.forward(&[want_tokens[step]], &mut cache).await.unwrap()).await.unwrap()
            });
            let key = format!("logits_step_{step}");
            if reference.has(&key) {
                let e = rel_max_err(&logits, &reference.f32(&key));
                assert!(e <= 1e-3, "{label} step {step} logits error {e}");
                worst = worst.max(e);
            }
        }
        eprintln!("{label}: logits max err {worst:.2e} × max|logit|");
        assert_eq!(tokens, want_tokens, "{label} greedy tokens");
    }
}

#[test]
fn sphinx_224_single_view() {
    check_variant("tiny-sphinx");
}

#[test]
fn sphinx_1k_global_and_four_quadrants() {
    check_variant("tiny-sphinx-1k");
}

#[test]
fn sphinx_tiny_1k_without_clip_and_qformer() {
    check_variant("tiny-sphinx-tiny-1k");
}

#[test]
fn sphinx_moe_512() {
    check_variant("tiny-sphinx-moe");
}

#[test]
fn parameter_counts_match_the_loaded_tensors() {
    use sphinx_core::config::{ConfigOverrides, LlmConfig};
    use sphinx_core::llm::Llm;
    use sphinx_core::model::open_checkpoint;
    use sphinx_core::vision::{VisionConfig, VisionTower};
    use sphinx_core::weights::WeightLoader;
    for name in ["tiny-sphinx-1k", "tiny-sphinx-tiny-1k", "tiny-sphinx-moe"] {
        let files = sphinx_native::model_dir::open_model_dir(&sphinx_tests::model_dir(name), None).unwrap();
        let json: serde_json::Value = serde_json::from_str(&files.config_json).unwrap();
        let c = LlmConfig::from_json(&files.config_json, &files.meta_json, 32000, &ConfigOverrides::default()).unwrap();
        let v = VisionConfig::for_llama_type(c.llama_type, &json, c.dim).unwrap().unwrap();
        let source = open_checkpoint(files.checkpoints).unwrap();
        let mut quiet = |_: &sphinx_core::weights::LoadProgress| {};
        let l = WeightLoader::new(&source, &burn::tensor::Device::flex(), &mut quiet);
        pollster::block_on(Llm::load(&c, &l)).unwrap();
        assert_eq!(l.loaded_elements(), c.parameter_count(), "{name}: LLM parameters");
        pollster::block_on(VisionTower::load(&v, &l, false)).unwrap();
        assert_eq!(l.loaded_elements() - c.parameter_count(), v.parameter_count(), "{name}: vision parameters");
    }
}

#[test]
fn streamed_encoders_and_the_image_cache_give_the_same_tokens() {
    use sphinx_core::config::ConfigOverrides;
    use sphinx_core::model::{open_checkpoint, SphinxModel};
    let name = "tiny-sphinx-1k";
    let reference = Reference::load(name);
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let device = burn::tensor::Device::flex();
    let open = || sphinx_native::model_dir::open_model_dir(&sphinx_tests::model_dir(name), None).unwrap();
    let overrides = ConfigOverrides { stream_encoders: true, ..Default::default() };
    let model = pollster::block_on(SphinxModel::load(open(), &device, &overrides, &mut |_| {})).unwrap();
    assert!(model.vision.as_ref().unwrap().is_streaming());
    let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();
    assert!(model.encode_image(&views).is_err(), "streamed encoders need the checkpoint");
    let source = open_checkpoint(open().checkpoints).unwrap();
    let (_, tokens) = pollster::block_on(model.image_tokens(&image, &DecodeOptions::default(), Some(&source))).unwrap();
    let got = pollster::block_on(read_f32(tokens)).unwrap();
    assert!(max_abs(&got, &reference.f32("image_block")) <= 1e-4);
    // The second request for the same bytes is served from the cache, without the checkpoint.
    let (_, again) = pollster::block_on(model.image_tokens::<sphinx_core::model::NoSource>(&image, &DecodeOptions::default(), None)).unwrap();
    assert_eq!(pollster::block_on(read_f32(again)).unwrap(), got);
}

#[test]
fn image_prompts_prefill_in_chunks_and_query_tiles_with_the_same_tokens() {
    use sphinx_core::config::ConfigOverrides;
    use sphinx_core::generate::{generate, GenerationOptions};
    use sphinx_core::model::SphinxModel;
    // [BOS, image block, prompt] goes in as chunks of 7 positions, each attended one
    // query at a time (a 0-byte score tile): the greedy answer must not change.
    let name = "tiny-sphinx-1k";
    let reference = Reference::load(name);
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let (prompt, want) = (reference.ids("prompt_tokens"), reference.ids("greedy_tokens"));
    let device = burn::tensor::Device::flex();
    let files = sphinx_native::model_dir::open_model_dir(&sphinx_tests::model_dir(name), None).unwrap();
    let overrides = ConfigOverrides { score_tile_bytes: Some(0), ..Default::default() };
    let model = pollster::block_on(SphinxModel::load(files, &device, &overrides, &mut |_| {})).unwrap();
    let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();
    let block = model.encode_image(&views).unwrap();
    assert!(block.dims()[1] > 7, "the image block spans several chunks");
    let opts = GenerationOptions { max_gen_len: want.len(), temperature: 0.0, prefill_chunk: 7, ..Default::default() };
    let mut cache = model.llm.new_cache();
    let g = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &prompt, Some(block), &opts, &mut |_| {})).unwrap();
    assert_eq!(g.tokens, want);
}

#[test]
fn text_only_models_refuse_images() {
    let model = load_model("tiny-llama-mp2", &burn::tensor::Device::flex());
    let image = std::fs::read(fixtures().join("images/caption1.jpg")).unwrap();
    let err = model.preprocess(&image, &DecodeOptions::default()).err().unwrap();
    assert!(err.to_string().contains("text-only model"), "{err}");
}

#[test]
fn clip_with_exact_gelu_on_request() {
    use sphinx_core::config::ConfigOverrides;
    use sphinx_core::model::SphinxModel;
    use sphinx_core::vision::Activation;
    let name = "tiny-sphinx-1k";
    let reference = Reference::load(name);
    let files = sphinx_native::model_dir::open_model_dir(&sphinx_tests::model_dir(name), None).unwrap();
    let overrides = ConfigOverrides { clip_activation: Some(Activation::Gelu), ..Default::default() };
    let model = pollster::block_on(SphinxModel::load(files, &burn::tensor::Device::flex(), &overrides, &mut |_| {})).unwrap();
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();
    let clip = model.vision.as_ref().unwrap().encode_parts(&views).unwrap().clip.unwrap();
    let e = check_views(&reference, "gelu", "clip_gelu", clip);
    // And it is really a different function: QuickGELU's reference is far away.
    let quick = reference.f32("encoder/clip/0");
    let gelu = reference.f32("encoder/clip_gelu/0");
    assert!(max_abs(&quick, &gelu) > 1e-3 && e <= 1e-4);
}

#[test]
fn blip2_separate_q_and_v_biases_are_accepted() {
    // Some BLIP-2 exports store `q_bias` and `v_bias` instead of the fused `qkv.bias`
    // ([q, 0, v]). A key bias only shifts each query's scores by a constant, so the
    // outputs must not change when the checkpoint is rewritten that way.
    use sphinx_core::config::ConfigOverrides;
    use sphinx_core::model::{open_checkpoint, ModelFiles, SphinxModel};
    use sphinx_core::weights::{write_safetensors, HostTensor, MemoryBytes, WeightSource};
    let name = "tiny-sphinx";
    let reference = Reference::load(name);
    let files = sphinx_native::model_dir::open_model_dir(&sphinx_tests::model_dir(name), None).unwrap();
    let (config_json, meta_json, tokenizer_model) = (files.config_json.clone(), files.meta_json.clone(), files.tokenizer_model.clone());
    let src = open_checkpoint(files.checkpoints).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for n in src.names() {
        let t = pollster::block_on(src.read(&n)).unwrap();
        match n.strip_suffix(".qkv.bias") {
            Some(base) if n.contains("qformer.vision_model") => {
                let third = t.bytes.len() / 3;
                let part = |range: std::ops::Range<usize>| HostTensor { dtype: t.dtype, shape: vec![t.shape[0] / 3], bytes: t.bytes[range].to_vec() };
                tensors.push((format!("{base}.q_bias"), part(0..third)));
                tensors.push((format!("{base}.v_bias"), part(2 * third..3 * third)));
            }
            _ => tensors.push((n, t)),
        }
    }
    assert!(tensors.iter().any(|(n, _)| n.ends_with("self_attn.q_bias")));
    let files = ModelFiles {
        config_json,
        meta_json,
        tokenizer_model,
        checkpoints: vec![MemoryBytes::new("model.safetensors", write_safetensors(&tensors, &Default::default()).unwrap())],
    };
    let model = pollster::block_on(SphinxModel::load(files, &burn::tensor::Device::flex(), &ConfigOverrides::default(), &mut |_| {})).unwrap();
    let image = std::fs::read(fixtures().join(reference.meta["image"].as_str().unwrap())).unwrap();
    let (_, views) = model.preprocess(&image, &DecodeOptions::default()).unwrap();
    let q = model.vision.as_ref().unwrap().encode_parts(&views).unwrap().qformer.unwrap();
    check_views(&reference, "q/v biases", "qformer", q);
}
