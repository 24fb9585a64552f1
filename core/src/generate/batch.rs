//! Continuous batching (docs/design.md §11): sequences join a running batch at any
//! step and leave when they finish. Each [`Batch::advance`] feeds one prefill chunk of
//! the oldest sequence still prefilling, then gives every decoding sequence its next
//! token in one forward pass ([`step`]); so a long prompt delays the others by one chunk
//! per token, never by its whole prefill.

use super::sequence::{step, Sequence};
use crate::error::Result;
use crate::llm::Llm;
use crate::tokenizer::Tokenizer;

/// Running sequences, each with the caller's key (a request id, an index).
pub struct Batch<K> {
    running: Vec<(K, Sequence)>,
}

impl<K> Default for Batch<K> {
    fn default() -> Self {
        Self { running: Vec::new() }
    }
}

impl<K> Batch<K> {
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Adds a sequence; it starts prefilling at the next [`Batch::advance`].
    pub fn join(&mut self, key: K, seq: Sequence) {
        self.running.push((key, seq));
    }

    /// The running sequences, oldest first.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&mut K, &mut Sequence)> {
        self.running.iter_mut().map(|(k, s)| (k, s))
    }

    /// One prefill chunk (of the oldest sequence still prefilling), then one token for
    /// every sequence past its prefill.
    pub async fn advance(&mut self, llm: &Llm, tokenizer: &Tokenizer) -> Result<()> {
        if let Some((_, seq)) = self.running.iter_mut().find(|(_, s)| s.is_prefilling()) {
            seq.prefill(llm).await?;
        }
        let mut decoding: Vec<&mut Sequence> = self.running.iter_mut().map(|(_, s)| s).filter(|s| !s.is_prefilling()).collect();
        if !decoding.is_empty() {
            step(llm, tokenizer, &mut decoding).await?;
        }
        Ok(())
    }

    /// Removes and returns the finished sequences.
    pub fn take_finished(&mut self) -> Vec<(K, Sequence)> {
        self.take_if(|_, s| s.is_finished())
    }

    /// Removes and returns the sequences `leave` picks (finished ones, abandoned ones).
    pub fn take_if(&mut self, leave: impl Fn(&K, &Sequence) -> bool) -> Vec<(K, Sequence)> {
        let (gone, running) = std::mem::take(&mut self.running).into_iter().partition(|(k, s)| leave(k, s));
        self.running = running;
        gone
    }

    /// Removes and returns every sequence (after an error, say).
    pub fn take_all(&mut self) -> Vec<(K, Sequence)> {
        std::mem::take(&mut self.running)
    }
}
