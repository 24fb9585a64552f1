//! One answer being generated, as a state machine: its input is prefilled a chunk at a
//! time, then [`step`] gives it one token per call. [`generate`](super::generate) drives a
//! single sequence this way; a server drives many at once, feeding every decoding
//! sequence's last token in one forward pass (continuous batching, docs/design.md §11).
//! Either way each sequence gets the same numbers, so the same answer.

use std::sync::atomic::Ordering;

use burn::tensor::Tensor;
use web_time::Instant;

use super::conversation::END_OF_TURN;
use super::generator::{Generation, GenerationOptions, StopReason};
use super::sampler::Sampler;
use super::stop::StopSequences;
use crate::error::{GenerateError, Result};
use crate::llm::{cat_parts, read_argmax_rows, read_f32, KvCache, Llm};
use crate::tokenizer::{StreamDecoder, Tokenizer};

pub struct Sequence {
    cache: KvCache,
    /// What is still to prefill ([1, n, D]: BOS, the image block, the prompt's text) and
    /// how many of its positions are already in the cache.
    input: Option<Tensor<3>>,
    input_fed: usize,
    /// Logits the next token will be chosen from ([1, vocab], after the prefill).
    logits: Option<Tensor<2>>,
    opts: GenerationOptions,
    sampler: Sampler,
    stops: StopSequences,
    prompt_tokens: usize,
    /// Generated ids (the stop sequence removed once matched).
    tokens: Vec<u32>,
    stream: StreamDecoder,
    /// Tokens whose text is in `text` or was taken.
    streamed: usize,
    /// Answer text not yet taken ([`Sequence::take_text`]).
    text: String,
    stop: Option<StopReason>,
    started: Instant,
    first_token_at: Option<Instant>,
    prefill_secs: f64,
    decode_secs: f64,
}

impl Sequence {
    /// Checks that `prompt` (ids, BOS included) fits `cache` with the image block and
    /// `opts.max_gen_len` answer tokens, and that the options are valid.
    pub fn check(cache: &KvCache, prompt_len: usize, image_len: usize, opts: &GenerationOptions) -> Result<()> {
        opts.validate()?;
        let max_seq_len = cache.max_seq_len();
        let reserved = opts.max_gen_len.saturating_add(image_len);
        let budget = max_seq_len.saturating_sub(reserved).saturating_sub(cache.pos());
        if prompt_len == 0 || prompt_len > budget {
            return Err(GenerateError::PromptTooLong {
                prompt: prompt_len.saturating_add(cache.pos()),
                max: max_seq_len.saturating_sub(reserved),
                max_seq_len,
                max_gen_len: opts.max_gen_len,
                image: image_len,
            }
            .into());
        }
        Ok(())
    }

    /// A sequence answering `prompt` (ids, BOS included), continuing `cache`. With
    /// `image` ([1, N, D] from the vision tower), the image block goes right after the
    /// prompt's first token (BOS), as `llama_ens*.py` `forward_inference` does.
    pub fn new(llm: &Llm, tokenizer: &Tokenizer, cache: KvCache, prompt: &[u32], image: Option<Tensor<3>>, opts: &GenerationOptions) -> Result<Self> {
        Self::check(&cache, prompt.len(), image.as_ref().map_or(0, |t| t.dims()[1]), opts)?;
        Ok(Self::checked(llm, tokenizer, cache, prompt, image, opts))
    }

    /// [`Sequence::new`] for input [`Sequence::check`] has passed.
    pub(super) fn checked(llm: &Llm, tokenizer: &Tokenizer, cache: KvCache, prompt: &[u32], image: Option<Tensor<3>>, opts: &GenerationOptions) -> Self {
        let emb = llm.embed(prompt); // [1, P, D]
        let input = match image {
            Some(image) => {
                let mut parts = vec![emb.clone().narrow(1, 0, 1), image];
                if prompt.len() > 1 {
                    parts.push(emb.narrow(1, 1, prompt.len() - 1));
                }
                Tensor::cat(parts, 1) // [1, 1 + image + P − 1, D]
            }
            None => emb,
        };
        Self {
            cache,
            input: Some(input),
            input_fed: 0,
            logits: None,
            opts: opts.clone(),
            sampler: Sampler::new(opts.temperature, opts.top_p, opts.seed),
            stops: StopSequences::new(tokenizer, &[END_OF_TURN]),
            prompt_tokens: prompt.len(),
            tokens: Vec::new(),
            stream: StreamDecoder::new(),
            streamed: 0,
            text: String::new(),
            stop: None,
            started: Instant::now(),
            first_token_at: None,
            prefill_secs: 0.0,
            decode_secs: 0.0,
        }
    }

    /// Whether its input is still being fed.
    pub fn is_prefilling(&self) -> bool {
        self.input.is_some()
    }

    pub fn is_finished(&self) -> bool {
        self.stop.is_some()
    }

    /// Answer tokens so far.
    pub fn generated(&self) -> usize {
        self.tokens.len()
    }

    /// Feeds the next chunk of the input (`opts.prefill_chunk` positions, so a long image
    /// block never goes in at once); after the last, its logits wait for [`step`].
    pub async fn prefill(&mut self, llm: &Llm) -> Result<()> {
        let Some(input) = &self.input else { return Ok(()) };
        let n = input.dims()[1];
        let len = self.opts.prefill_chunk.min(n - self.input_fed);
        let logits = llm.forward_embeds(input.clone().narrow(1, self.input_fed, len), &mut self.cache).await?;
        self.input_fed += len;
        if self.input_fed == n {
            self.input = None;
            self.logits = Some(logits);
        }
        Ok(())
    }

    /// The answer text produced since the last call, held back while it could still be
    /// the start of a stop sequence.
    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// The finished (or abandoned) answer, and the cache holding its prompt and the
    /// answer tokens that were fed back.
    pub fn into_generation(self, tokenizer: &Tokenizer) -> (Generation, KvCache) {
        let g = Generation {
            text: tokenizer.decode(&self.tokens),
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            stop: self.stop.unwrap_or(StopReason::Cancelled),
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_secs,
        };
        (g, self.cache)
    }

    /// Whether the next step feeds its last token (it is decoding and its logits are spent).
    fn needs_forward(&self) -> bool {
        self.stop.is_none() && self.input.is_none() && self.logits.is_none()
    }

    fn cancelled(&self) -> bool {
        self.opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Takes `token` as the next answer token: ends the answer at a stop sequence,
    /// `max_gen_len` or a full context, and moves the text that can no longer belong to
    /// a stop sequence to `text`.
    fn accept(&mut self, token: u32, tokenizer: &Tokenizer) {
        if self.first_token_at.is_none() {
            self.prefill_secs = self.started.elapsed().as_secs_f64();
            self.first_token_at = Some(Instant::now());
        }
        self.tokens.push(token);
        if let Some(n) = self.stops.matched(&self.tokens) {
            self.tokens.truncate(self.tokens.len() - n);
            self.finish(StopReason::EndOfTurn, tokenizer);
            return;
        }
        self.stream_until(self.tokens.len() - self.stops.pending(&self.tokens), tokenizer);
        if self.tokens.len() >= self.opts.max_gen_len || self.cache.pos() >= self.cache.max_seq_len() {
            self.finish(StopReason::MaxTokens, tokenizer);
        }
    }

    fn finish(&mut self, reason: StopReason, tokenizer: &Tokenizer) {
        self.stream_until(self.tokens.len(), tokenizer);
        self.stop = Some(reason);
        self.decode_secs = self.first_token_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
    }

    fn stream_until(&mut self, end: usize, tokenizer: &Tokenizer) {
        while self.streamed < end {
            let delta = self.stream.push(tokenizer, self.tokens[self.streamed]);
            self.text.push_str(&delta);
            self.streamed += 1;
        }
    }
}

/// One decoding step of every sequence in `seqs` past its prefill and not finished: the
/// last tokens of those that have one to feed go through one forward pass together
/// ([`Llm::forward_batch`]), then each takes its next token — greedy ones from one
/// readback of the device's argmax, the others sampled on the host from their logits.
/// A sequence whose `cancel` flag is set ends here instead of being fed.
pub async fn step(llm: &Llm, tokenizer: &Tokenizer, seqs: &mut [&mut Sequence]) -> Result<()> {
    for s in seqs.iter_mut().filter(|s| s.needs_forward() && s.cancelled()) {
        s.finish(StopReason::Cancelled, tokenizer);
    }
    // Logits to choose from, in `choosing` order: the prefilled ones' own, then the batch's.
    let mut choosing: Vec<usize> = Vec::new();
    let mut logits: Vec<Tensor<2>> = Vec::new();
    for (i, s) in seqs.iter_mut().enumerate() {
        if let Some(l) = s.logits.take().filter(|_| s.stop.is_none()) {
            choosing.push(i);
            logits.push(l);
        }
    }
    let feeding: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].needs_forward() && !choosing.contains(&i)).collect();
    if !feeding.is_empty() {
        let tokens: Vec<u32> = feeding.iter().map(|&i| *seqs[i].tokens.last().expect("a decoding sequence has a token")).collect();
        let mut caches: Vec<&mut KvCache> =
            seqs.iter_mut().enumerate().filter(|(i, _)| feeding.contains(i)).map(|(_, s)| &mut s.cache).collect();
        logits.push(llm.forward_batch(&tokens, &mut caches).await?); // [F, vocab]
        choosing.extend(&feeding);
    }
    if choosing.is_empty() {
        return Ok(());
    }
    let logits = cat_parts(logits, 0); // [choosing, vocab]
    let tokens = if choosing.iter().all(|&i| seqs[i].sampler.is_greedy()) {
        read_argmax_rows(logits).await?
    } else {
        let vocab = logits.dims()[1];
        let values = read_f32(logits).await?;
        choosing.iter().zip(values.chunks_exact(vocab)).map(|(&i, row)| seqs[i].sampler.sample(row)).collect()
    };
    for (&i, token) in choosing.iter().zip(tokens) {
        seqs[i].accept(token, tokenizer);
    }
    Ok(())
}
