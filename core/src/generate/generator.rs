//! The one generation loop (docs/spec.md §5.3), async so it runs unchanged in the browser:
//! prefill the prompt in chunks, then one token at a time, reading back only the
//! last logits each step, until a stop sequence, `max_gen_len` or the context ends.
//! The loop's state is a [`Sequence`] (`sequence.rs`) in a [`Batch`] (`batch.rs`), which a
//! server fills with many.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use burn::tensor::Tensor;

use super::batch::Batch;
use super::sequence::Sequence;
use crate::error::{GenerateError, Result};
use crate::llm::{KvCache, Llm};
use crate::tokenizer::Tokenizer;

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
/// belong to a stop sequence. This is a [`Batch`] of one [`Sequence`], the same loop a
/// server runs for many.
pub async fn generate(
    llm: &Llm,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    prompt: &[u32],
    image: Option<Tensor<3>>,
    opts: &GenerationOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    Sequence::check(cache, prompt.len(), image.as_ref().map_or(0, |t| t.dims()[1]), opts)?;
    let taken = std::mem::replace(cache, llm.new_cache());
    let mut batch = Batch::default();
    batch.join((), Sequence::checked(llm, tokenizer, taken, prompt, image, opts));
    let result = run(llm, tokenizer, &mut batch, on_text).await;
    // The cache comes back even after an error, as far as it was filled.
    let ((), seq) = batch.take_all().pop().expect("the batch holds its one sequence");
    let (g, filled) = seq.into_generation(tokenizer);
    *cache = filled;
    result.map(|()| g)
}

async fn run(llm: &Llm, tokenizer: &Tokenizer, batch: &mut Batch<()>, on_text: &mut dyn FnMut(&str)) -> Result<()> {
    loop {
        batch.advance(llm, tokenizer).await?;
        for (_, seq) in batch.iter_mut() {
            let text = seq.take_text();
            if !text.is_empty() {
                on_text(&text);
            }
            if seq.is_finished() {
                return Ok(());
            }
        }
    }
}
