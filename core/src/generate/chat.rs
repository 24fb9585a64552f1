//! Multi-turn conversations that keep the image and the KV cache: each turn re-renders
//! the whole conversation template (docs/spec.md §5.1), keeps the longest prefix of tokens the
//! cache already holds, and feeds only the rest. The image block, spliced after BOS on
//! the first turn, stays in the cache and is never encoded again.

use burn::tensor::Tensor;

use super::conversation::{Conversation, Role};
use super::generator::{generate, Generation, GenerationOptions};
use crate::error::Result;
use crate::llm::{KvCache, Llm};
use crate::tokenizer::Tokenizer;

pub struct ChatSession {
    conversation: Conversation,
    cache: KvCache,
    /// Token ids whose keys and values are in the cache, in order (BOS first).
    cached: Vec<u32>,
    /// Image positions right after BOS.
    image_tokens: usize,
    /// The image block until the first turn has put it in the cache.
    pending_image: Option<Tensor<3>>,
}

impl ChatSession {
    /// A new conversation, optionally about an image ([1, N, D] from the vision tower).
    pub fn new(llm: &Llm, image: Option<Tensor<3>>) -> Self {
        Self {
            conversation: Conversation::new(),
            cache: llm.new_cache(),
            cached: Vec::new(),
            image_tokens: image.as_ref().map_or(0, |t| t.dims()[1]),
            pending_image: image,
        }
    }

    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Positions in the KV cache (BOS + image + text).
    pub fn cached_positions(&self) -> usize {
        self.cache.pos()
    }

    /// Asks `question`; the answer streams through `on_text` and joins the conversation.
    pub async fn ask(
        &mut self,
        llm: &Llm,
        tokenizer: &Tokenizer,
        question: &str,
        opts: &GenerationOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let mut next = self.conversation.clone();
        next.push(Role::Human, question);
        let ids = tokenizer.encode(&next.prompt(), true, false);
        // Keep what the cache already holds; BOS anchors the image, so it is always kept.
        let keep = if self.pending_image.is_some() || self.cached.is_empty() {
            0
        } else {
            self.cached.iter().zip(&ids).take_while(|(a, b)| a == b).count().clamp(1, ids.len() - 1)
        };
        let offset = if keep > 0 { self.image_tokens } else { 0 };
        self.cache.rewind(keep + offset);
        self.cached.truncate(keep);
        let image = self.pending_image.clone();
        let g = generate(llm, tokenizer, &mut self.cache, &ids[keep..], image, opts, on_text).await?;
        self.pending_image = None;
        // The cache now holds the prompt and the answer tokens that were fed back.
        let fed = (self.cache.pos() - self.image_tokens - ids.len()).min(g.tokens.len());
        self.cache.rewind(self.image_tokens + ids.len() + fed);
        self.cached = ids;
        self.cached.extend_from_slice(&g.tokens[..fed]);
        next.push(Role::Assistant, &g.text);
        self.conversation = next;
        Ok(g)
    }
}
