//! The one generation loop (docs/spec.md §5.3), async so it runs unchanged in the browser:
//! prefill the prompt in chunks, then one token at a time, reading back only the
//! last logits each step, until a stop sequence, `max_gen_len` or the context ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use burn::tensor::Tensor;
use web_time::Instant;

use super::conversation::END_OF_TURN;
use super::sampler::Sampler;
use super::stop::StopSequences;
use crate::error::{GenerateError, Result};
use crate::llm::{read_argmax, read_f32, KvCache, Llm};
use crate::tokenizer::{StreamDecoder, Tokenizer};

#[derive(Debug, Clone)]
pub struct GenerationOptions {
    /// Most new tokens to generate.
    pub max_gen_len: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Prompt tokens fed per forward pass while prefilling.
    pub prefill_chunk: usize,
    /// Set by the caller (e.g. from `on_text`, or when its client leaves) to end the
    /// generation after the current token: it returns what it has, stopped `Cancelled`.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for GenerationOptions {
    /// The official demo's defaults (temperature 0.1, top-p 0.75).
    fn default() -> Self {
        Self { max_gen_len: 512, temperature: 0.1, top_p: 0.75, seed: 0, prefill_chunk: crate::config::DEFAULT_PREFILL_CHUNK, cancel: None }
    }
}

impl GenerationOptions {
    pub fn validate(&self) -> Result<(), GenerateError> {
        let bad = |m: &str| Err(GenerateError::BadOption(m.into()));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature must be a finite number ≥ 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if self.max_gen_len == 0 {
            return bad("max_gen_len must be at least 1");
        }
        if self.prefill_chunk == 0 {
            return bad("prefill_chunk must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model ended its turn (`\n###` or EOS).
    EndOfTurn,
    /// `max_gen_len` tokens were generated.
    MaxTokens,
    /// The caller cancelled it (`GenerationOptions::cancel`).
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// The answer, without the stop sequence.
    pub text: String,
    /// Generated ids, without the stop sequence.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    /// Decoding speed after the first token.
    pub fn tokens_per_sec(&self) -> f64 {
        if self.decode_secs > 0.0 { self.tokens.len().saturating_sub(1) as f64 / self.decode_secs } else { 0.0 }
    }
}

/// Generates an answer to `prompt` (ids, BOS included), continuing `cache`. With
/// `image` ([1, N, D] from the vision tower), the image block goes right after the
/// prompt's first token (BOS), as `llama_ens*.py` `forward_inference` does.
/// `on_text` receives each new piece of answer text as soon as it is certain not to
/// belong to a stop sequence.
pub async fn generate(
    llm: &Llm,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    image: Option<Tensor<3>>,
    opts: &GenerationOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    opts.validate()?;
    let max_seq_len = cache.max_seq_len();
    let image_len = image.as_ref().map_or(0, |t| t.dims()[1]);
    let reserved = opts.max_gen_len.saturating_add(image_len);
    let budget = max_seq_len.saturating_sub(reserved).saturating_sub(cache.pos());
    if prompt.is_empty() || prompt.len() > budget {
        return Err(GenerateError::PromptTooLong {
            prompt: prompt.len().saturating_add(cache.pos()),
            max: max_seq_len.saturating_sub(reserved),
            max_seq_len,
            max_gen_len: opts.max_gen_len,
            image: image_len,
        }
        .into());
    }
    let stops = StopSequences::new(tokenizer, &[END_OF_TURN]);
    let mut sampler = Sampler::new(opts.temperature, opts.top_p, opts.seed);

    let t0 = Instant::now();
    let mut logits = None;
    match image {
        Some(image) => {
            // [BOS] + image block + the prompt's text, fed in chunks like any prompt, so
            // a long image block (SPHINX-2k: ~2.9k positions) never goes in at once.
            let emb = llm.embed(prompt); // [1, P, D]
            let mut parts = vec![emb.clone().narrow(1, 0, 1), image];
            if prompt.len() > 1 {
                parts.push(emb.narrow(1, 1, prompt.len() - 1));
            }
            let all = Tensor::cat(parts, 1); // [1, 1 + image + P − 1, D]
            let n = all.dims()[1];
            for start in (0..n).step_by(opts.prefill_chunk) {
                let len = opts.prefill_chunk.min(n - start);
                logits = Some(llm.forward_embeds(all.clone().narrow(1, start, len), cache).await?);
            }
        }
        None => {
            for chunk in prompt.chunks(opts.prefill_chunk) {
                logits = Some(llm.forward(chunk, cache).await?);
            }
        }
    }
    let mut next_logits = logits.ok_or(GenerateError::BadOption("empty prompt".into()))?;
    let mut prefill_secs = 0.0;
    let mut first_token_at = None;

    let mut tokens: Vec<u32> = Vec::new();
    let mut stream = StreamDecoder::new();
    let mut streamed = 0;
    let mut stop = StopReason::MaxTokens;
    loop {
        // Greedy: the argmax on the device, one id read back; otherwise the logits.
        let token = match sampler.is_greedy() {
            true => read_argmax(next_logits).await?,
            false => sampler.sample(&read_f32(next_logits).await?),
        };
        if first_token_at.is_none() {
            prefill_secs = t0.elapsed().as_secs_f64();
            first_token_at = Some(Instant::now());
        }
        tokens.push(token);
        if let Some(n) = stops.matched(&tokens) {
            tokens.truncate(tokens.len() - n);
            stop = StopReason::EndOfTurn;
            break;
        }
        // Stream what can no longer become part of a stop sequence.
        let safe = tokens.len() - stops.pending(&tokens);
        while streamed < safe {
            let delta = stream.push(tokenizer, tokens[streamed]);
            if !delta.is_empty() {
                on_text(&delta);
            }
            streamed += 1;
        }
        if tokens.len() >= opts.max_gen_len || cache.pos() >= max_seq_len {
            break;
        }
        if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            stop = StopReason::Cancelled;
            break;
        }
        next_logits = llm.forward(&[token], cache).await?;
    }
    while streamed < tokens.len() {
        let delta = stream.push(tokenizer, tokens[streamed]);
        if !delta.is_empty() {
            on_text(&delta);
        }
        streamed += 1;
    }
    let decode_secs = first_token_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(Generation {
        text: tokenizer.decode(&tokens),
        tokens,
        prompt_tokens: prompt.len(),
        stop,
        prefill_secs,
        decode_secs,
    })
}
