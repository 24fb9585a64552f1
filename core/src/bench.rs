//! Measuring a loaded model: prefill and decode speed of the language model, and the
//! time of each visual encoder, with the same code on every target (the CLI's
//! `sphinx bench`, and any page that loads the core). Timings are wall-clock on the
//! host; every measured step ends by reading a result back, so the device's queue is
//! drained and the time is the device's too.
//!
//! Prompts are random token ids (seeded): speed does not depend on what the tokens
//! say, and every system compared by `bench/` can be fed the same ids.

use burn::tensor::Tensor;
use serde::Serialize;
use web_time::Instant;

use crate::error::{GenerateError, Result};
use crate::llm::{read_argmax, read_f32, Llm};
use crate::model::SphinxModel;
use crate::preprocess::DecodeOptions;
use crate::vision::EncoderKind;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Prompt tokens fed in one forward pass (after BOS).
    pub prompt_tokens: usize,
    /// Decoding steps measured.
    pub decode_tokens: usize,
    /// Decoding steps run first and not measured.
    pub warmup_tokens: usize,
    /// Seed of the random prompt ids.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self { prompt_tokens: 128, decode_tokens: 32, warmup_tokens: 2, seed: 0 }
    }
}

/// The language model's speed.
#[derive(Debug, Clone, Serialize)]
pub struct LlmBench {
    pub prompt_tokens: usize,
    /// The first prefill of this call: kernels not compiled yet in this process are
    /// compiled (or read from the platform's pipeline cache) here.
    pub prefill_cold_s: f64,
    /// The same prefill again, on a fresh cache.
    pub prefill_s: f64,
    pub prefill_tok_s: f64,
    /// Each measured decoding step: one token in, its logits back on the host.
    pub decode_step_s: Vec<f64>,
    /// One over the median step.
    pub decode_tok_s: f64,
}

/// Each encoder family's time for one image's views (compiled already).
#[derive(Debug, Clone, Serialize)]
pub struct EncoderBench {
    pub encoder: &'static str,
    pub views: usize,
    pub s: f64,
    pub s_per_view: f64,
}

/// An image question's costs.
#[derive(Debug, Clone, Serialize)]
pub struct ImageBench {
    /// Decoding the file and making the views on the host.
    pub preprocess_s: f64,
    /// Image tokens spliced into the prompt.
    pub image_tokens: usize,
    /// The first image question of this process: from the file's bytes to the first
    /// answer token's logits on the host (decode, encode, fuse, prefill of the image
    /// block and a one-line question), with every kernel on that path compiled or read
    /// from the platform's pipeline cache on the way (docs/design.md §9, warm starts).
    pub time_to_first_token_cold_s: f64,
    /// The same question again in the same process.
    pub time_to_first_token_s: f64,
    /// Resident encoders, one row per family the variant has (empty when streamed).
    pub encoders: Vec<EncoderBench>,
}

/// Random prompt ids in `[3, vocab)` (above BOS/EOS/UNK), BOS first: a splitmix64 stream.
pub fn random_prompt(vocab: usize, len: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let span = vocab.saturating_sub(3).max(1) as u64;
    std::iter::once(1).chain((1..len).map(|_| 3 + (next() % span) as u32)).collect()
}

/// Prefills a random prompt twice (cold, then warm on a fresh cache) and decodes greedily.
pub async fn bench_llm(llm: &Llm, opts: &BenchOptions) -> Result<LlmBench> {
    let c = llm.config();
    let total = opts.prompt_tokens.saturating_add(opts.warmup_tokens).saturating_add(opts.decode_tokens);
    if opts.prompt_tokens == 0 || opts.decode_tokens == 0 {
        return Err(GenerateError::BadOption("the benchmark needs at least one prompt token and one decoding step".into()).into());
    }
    if total > c.max_seq_len {
        return Err(GenerateError::BadOption(format!(
            "{} prompt + {} warm-up + {} measured tokens exceed the context of {} (--max-seq-len)",
            opts.prompt_tokens, opts.warmup_tokens, opts.decode_tokens, c.max_seq_len
        ))
        .into());
    }
    let prompt = random_prompt(c.vocab_size, opts.prompt_tokens, opts.seed);

    let t = Instant::now();
    let mut cache = llm.new_cache();
    read_f32(llm.forward(&prompt, &mut cache).await?).await?;
    let prefill_cold_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut cache = llm.new_cache();
    let mut token = read_argmax(llm.forward(&prompt, &mut cache).await?).await?;
    let prefill_s = t.elapsed().as_secs_f64();

    // A step as greedy generation takes it: forward one token, argmax on the device.
    let mut decode_step_s = Vec::with_capacity(opts.decode_tokens);
    for step in 0..opts.warmup_tokens + opts.decode_tokens {
        let t = Instant::now();
        token = read_argmax(llm.forward(&[token], &mut cache).await?).await?;
        if step >= opts.warmup_tokens {
            decode_step_s.push(t.elapsed().as_secs_f64());
        }
    }
    let median = median(&decode_step_s);
    Ok(LlmBench {
        prompt_tokens: opts.prompt_tokens,
        prefill_cold_s,
        prefill_s,
        prefill_tok_s: per_sec(opts.prompt_tokens, prefill_s),
        decode_tok_s: per_sec(1, median),
        decode_step_s,
    })
}

/// Times an image question twice (the first is this process's cold start), then each
/// resident encoder once.
pub async fn bench_image(model: &SphinxModel, image: &[u8], decode: &DecodeOptions) -> Result<ImageBench> {
    let (time_to_first_token_cold_s, image_tokens) = time_image_question(model, image, decode).await?;
    let (time_to_first_token_s, _) = time_image_question(model, image, decode).await?;

    let t = Instant::now();
    let (_, views) = model.preprocess(image, decode)?;
    let preprocess_s = t.elapsed().as_secs_f64();
    let mut encoders = Vec::new();
    if let Some(tower) = model.vision.as_ref().filter(|t| !t.is_streaming()) {
        let batches = tower.view_batches(&views);
        for kind in EncoderKind::ALL {
            let t = Instant::now();
            let Some(out) = tower.run_encoder(kind, &batches) else { continue };
            read_f32(out.sum()).await?;
            let s = t.elapsed().as_secs_f64();
            let n = views.vit.len();
            encoders.push(EncoderBench { encoder: kind.name(), views: n, s, s_per_view: s / n as f64 });
        }
    }
    Ok(ImageBench { preprocess_s, image_tokens, time_to_first_token_cold_s, time_to_first_token_s, encoders })
}

/// From the image file's bytes to the logits of the first answer token of a one-line
/// question about it: (seconds, image tokens).
async fn time_image_question(model: &SphinxModel, image: &[u8], decode: &DecodeOptions) -> Result<(f64, usize)> {
    let t = Instant::now();
    let (_, views) = model.preprocess(image, decode)?;
    let tokens: Tensor<3> = model.encode_image(&views)?;
    let image_tokens = tokens.dims()[1];
    let question = crate::generate::Conversation::single("Describe the image concisely.").prompt();
    let ids = model.tokenizer.encode(&question, true, false);
    let emb = model.llm.embed(&ids);
    let rest = ids.len() - 1;
    let x = Tensor::cat(vec![emb.clone().narrow(1, 0, 1), tokens, emb.narrow(1, 1, rest)], 1);
    let mut cache = model.llm.new_cache();
    read_f32(model.llm.forward_embeds(x, &mut cache).await?).await?;
    Ok((t.elapsed().as_secs_f64(), image_tokens))
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn per_sec(count: usize, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_prompts_are_seeded_in_range_and_start_with_bos() {
        let a = random_prompt(32000, 100, 7);
        assert_eq!(a, random_prompt(32000, 100, 7));
        assert_ne!(a, random_prompt(32000, 100, 8));
        assert_eq!(a[0], 1);
        assert!(a[1..].iter().all(|&t| (3..32000).contains(&t)));
        assert!(random_prompt(4, 50, 0)[1..].iter().all(|&t| t == 3));
        assert_eq!(random_prompt(32000, 1, 0), [1]);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
