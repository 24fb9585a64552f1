//! The decoder stack (docs/spec.md §2.1): pre-norm blocks, final RMSNorm, and the untied
//! output head applied to the last position only.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::Attention;
use super::feed_forward::FeedForward;
use super::kv_cache::{KvCache, LayerCache};
use super::linear::{Linear, Matrix};
use super::moe::Moe;
use super::rms_norm::RmsNorm;
use super::rope::Rope;
use crate::config::LlmConfig;
use crate::error::{GenerateError, WeightError};
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
enum Ffn {
    Dense(FeedForward),
    Moe(Moe),
}

#[derive(Debug, Clone)]
struct Block {
    attention: Attention,
    feed_forward: Ffn,
    attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
}

/// The language model. Field names follow the checkpoint keys (`llma.<field>...`).
#[derive(Debug, Clone)]
pub struct Llm {
    config: LlmConfig,
    /// tok_embeddings: [vocab, D]
    tok_embeddings: Matrix,
    layers: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: Rope,
    device: Device,
}

impl Llm {
    /// Loads every LLM tensor through `l`, one at a time.
    pub async fn load<S: WeightSource>(config: &LlmConfig, l: &WeightLoader<'_, S>) -> Result<Self, WeightError> {
        let c = config;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = format!("layers.{i}");
            let feed_forward = match c.moe {
                Some(moe) => Ffn::Moe(Moe::load(l, &format!("{p}.feed_forward"), c, moe).await?),
                None => Ffn::Dense(FeedForward::load(l, &format!("{p}.feed_forward"), c).await?),
            };
            layers.push(Block {
                attention: Attention::load(l, &format!("{p}.attention"), c).await?,
                feed_forward,
                attention_norm: RmsNorm::load(l, &format!("{p}.attention_norm.weight"), c.dim, c.norm_eps).await?,
                ffn_norm: RmsNorm::load(l, &format!("{p}.ffn_norm.weight"), c.dim, c.norm_eps).await?,
            });
        }
        let device = l.device().clone();
        Ok(Self {
            tok_embeddings: Matrix::load(l, "tok_embeddings.weight", [c.vocab_size, c.dim]).await?,
            norm: RmsNorm::load(l, "norm.weight", c.dim, c.norm_eps).await?,
            output: Linear::load(l, "output.weight", c.vocab_size, c.dim).await?,
            rope: Rope::new(c.head_dim(), c.max_seq_len, c.rope_theta, c.rope_scaling, &device),
            layers,
            config: c.clone(),
            device,
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of the LLM's weights on the device (16-bit matrices count 2 bytes a value).
    pub fn weight_bytes(&self) -> u64 {
        let layers: usize = self
            .layers
            .iter()
            .map(|b| {
                let ffn = match &b.feed_forward {
                    Ffn::Dense(ff) => ff.device_bytes(),
                    Ffn::Moe(moe) => moe.device_bytes(),
                };
                b.attention.device_bytes() + ffn + b.attention_norm.device_bytes() + b.ffn_norm.device_bytes()
            })
            .sum();
        (self.tok_embeddings.device_bytes() + layers + self.norm.device_bytes() + self.output.device_bytes()) as u64
    }

    /// Bytes of weights a decoding step reads: all but the token embedding (of which it
    /// gathers one row). `None` for a mixture of experts, whose steps read only the
    /// experts they are routed to.
    pub fn decode_read_bytes(&self) -> Option<u64> {
        if self.layers.iter().any(|b| matches!(b.feed_forward, Ffn::Moe(_))) {
            return None;
        }
        Some(self.weight_bytes() - self.tok_embeddings.device_bytes() as u64)
    }

    /// How the weights are held: the decoder layers' format (as their query projection
    /// holds it), then the output head's and the embedding's where they differ, e.g.
    /// `q4_0` or `q4_0, output q8_0`.
    pub fn weight_format(&self) -> String {
        let layers = self.layers.first().map_or("none", |b| b.attention.weight_format());
        let mut out = layers.to_string();
        for (what, m) in [("output", &self.output.weight), ("embedding", &self.tok_embeddings)] {
            if m.format_name() != layers {
                out += &format!(", {what} {}", m.format_name());
            }
        }
        out
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.n_layers, self.config.max_seq_len)
    }

    /// tokens → embeddings [1, S, D]
    pub fn embed(&self, tokens: &[u32]) -> Tensor<3> {
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), &self.device);
        self.tok_embeddings.rows(ids).unsqueeze_dim(0)
    }

    /// Feeds token ids at the cache's position; returns the last position's logits [1, vocab].
    pub async fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor<2>, GenerateError> {
        if tokens.is_empty() {
            return Err(GenerateError::BadOption("nothing to feed: the input has no tokens".into()));
        }
        self.forward_embeds(self.embed(tokens), cache).await
    }

    /// Feeds embeddings h: [1, S, D] (text, or BOS + image tokens + text) at the cache's
    /// position, RoPE positions continuing from it; returns the last logits [1, vocab].
    pub async fn forward_embeds(&self, h: Tensor<3>, cache: &mut KvCache) -> Result<Tensor<2>, GenerateError> {
        if h.dims()[0] != 1 {
            return Err(GenerateError::BadOption(format!("forward_embeds takes one sequence, not {}", h.dims()[0])));
        }
        self.forward_sequences(h, &mut [cache]).await
    }

    /// One decoding step of several sequences (continuous batching, docs/design.md §11):
    /// `tokens[i]` is fed to `caches[i]` at that cache's own position → logits
    /// [N, vocab], row `i` exactly what `forward(&[tokens[i]], caches[i])` gives.
    pub async fn forward_batch(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor<2>, GenerateError> {
        if tokens.len() != caches.len() {
            return Err(GenerateError::BadOption(format!("{} tokens for {} sequences", tokens.len(), caches.len())));
        }
        if tokens.is_empty() {
            return Err(GenerateError::BadOption("nothing to feed: the batch has no sequences".into()));
        }
        let h = self.embed(tokens).reshape([tokens.len(), 1, self.config.dim]); // [N, 1, D]
        self.forward_sequences(h, caches).await
    }

    /// h: [B, S, D], sequence `i` fed to `caches[i]` at its position → the last
    /// position's logits of each, [B, vocab].
    async fn forward_sequences(&self, h: Tensor<3>, caches: &mut [&mut KvCache]) -> Result<Tensor<2>, GenerateError> {
        let [b, s, d] = h.dims();
        if s == 0 {
            return Err(GenerateError::BadOption("nothing to feed: the input has no tokens".into()));
        }
        let max_len = self.config.max_seq_len;
        for cache in caches.iter() {
            if cache.max_seq_len() != max_len || cache.layers.len() != self.layers.len() {
                return Err(GenerateError::BadOption("the KV cache was made for another model (Llm::new_cache makes one)".into()));
            }
            cache.reserve(s)?;
        }
        let starts: Vec<usize> = caches.iter().map(|c| c.pos()).collect();
        let mut h = h;
        for (l, block) in self.layers.iter().enumerate() {
            let mut layer_caches: Vec<&mut LayerCache> = caches.iter_mut().map(|c| &mut c.layers[l]).collect();
            let a = block.attention.forward(block.attention_norm.forward(h.clone()), &starts, &self.rope, &mut layer_caches, max_len);
            h = h.add(a);
            let x = block.ffn_norm.forward(h.clone());
            let f = match &block.feed_forward {
                Ffn::Dense(ff) => ff.forward(x),
                Ffn::Moe(moe) => moe.forward(x).await?,
            };
            h = h.add(f);
        }
        caches.iter_mut().for_each(|c| c.advance(s));
        let last = h.slice([0..b, s - 1..s, 0..d]);
        Ok(self.output.forward_seq(self.norm.forward(last)).reshape([b, self.config.vocab_size]))
    }
}
