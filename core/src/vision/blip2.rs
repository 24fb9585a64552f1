//! BLIP-2's visual branch (docs/spec.md §3.4; transformers `modeling_blip_2.py`): the EVA
//! ViT-g/14 vision tower (no pre-LN, qkv bias laid out [q, 0, v], `post_layernorm` over
//! all tokens) and the Q-Former: 32 layer-normed query tokens through BERT-style
//! post-LN layers, with cross-attention to the image in every second layer.

use burn::tensor::activation::gelu;
use burn::tensor::{Tensor, TensorData};

use super::config::{Blip2Config, LOCAL_TOKENS, PATCH};
use super::layers::{multi_head_attention, patches, split_qkv, Conv2d, Dense, LayerNorm};
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

const VISION_EPS: f64 = 1e-6;
const QFORMER_EPS: f64 = 1e-12;
const CROSS_ATTENTION_FREQUENCY: usize = 2;

#[derive(Debug, Clone)]
struct EvaLayer {
    layer_norm1: LayerNorm,
    qkv: Dense,
    projection: Dense,
    layer_norm2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

/// `h = LayerNorm(dense(attention(h, kv)) + h)` (BertSelfAttention + BertSelfOutput).
#[derive(Debug, Clone)]
struct BertAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    dense: Dense,
    layer_norm: LayerNorm,
}

impl BertAttention {
    async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, d: usize, kv: usize) -> Result<Self, WeightError> {
        Ok(Self {
            query: Dense::load(l, &format!("{p}.attention.query"), d, d).await?,
            key: Dense::load(l, &format!("{p}.attention.key"), d, kv).await?,
            value: Dense::load(l, &format!("{p}.attention.value"), d, kv).await?,
            dense: Dense::load(l, &format!("{p}.output.dense"), d, d).await?,
            layer_norm: LayerNorm::load(l, &format!("{p}.output.LayerNorm"), d, QFORMER_EPS).await?,
        })
    }

    /// h: [B, Q, d], kv: [B, N, kv] → [B, Q, d]
    fn forward(&self, h: Tensor<3>, kv: Tensor<3>, heads: usize) -> Tensor<3> {
        let a = multi_head_attention(self.query.forward(h.clone()), self.key.forward(kv.clone()), self.value.forward(kv), heads);
        self.layer_norm.forward(self.dense.forward(a).add(h))
    }
}

#[derive(Debug, Clone)]
struct QFormerLayer {
    attention: BertAttention,
    crossattention: Option<BertAttention>,
    intermediate_query: Dense,
    output_query: Dense,
    output_norm: LayerNorm,
}

#[derive(Debug, Clone)]
pub struct Blip2 {
    patch_embedding: Conv2d,
    /// class_embedding: [1, 1, Dv]; position_embedding: [1, 257, Dv]
    class_embedding: Tensor<3>,
    position_embedding: Tensor<3>,
    vision_layers: Vec<EvaLayer>,
    post_layernorm: LayerNorm,
    /// query_tokens: [1, 32, Dq]
    query_tokens: Tensor<3>,
    qformer_layernorm: LayerNorm,
    qformer_layers: Vec<QFormerLayer>,
    cfg: Blip2Config,
}

/// The fused qkv bias: `self_attn.qkv.bias` if stored, else `[q_bias, 0, v_bias]`.
async fn qkv_bias<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, d: usize) -> Result<Tensor<1>, WeightError> {
    if l.has(&format!("{p}.qkv.bias")) {
        return l.tensor(&format!("{p}.qkv.bias"), [3 * d]).await;
    }
    let mut b = l.host_f32(&format!("{p}.q_bias"), &[d]).await?;
    b.extend(std::iter::repeat_n(0.0, d));
    b.extend(l.host_f32(&format!("{p}.v_bias"), &[d]).await?);
    Ok(Tensor::from_data(TensorData::new(b, [3 * d]), l.device()))
}

impl Blip2 {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, cfg: Blip2Config) -> Result<Self, WeightError> {
        let (dv, dq) = (cfg.vision_dim, cfg.qformer_dim);
        let v = format!("{p}.vision_model");
        let mut vision_layers = Vec::with_capacity(cfg.vision_layers);
        for i in 0..cfg.vision_layers {
            let lp = format!("{v}.encoder.layers.{i}");
            vision_layers.push(EvaLayer {
                layer_norm1: LayerNorm::load(l, &format!("{lp}.layer_norm1"), dv, VISION_EPS).await?,
                qkv: Dense::load_with_bias(l, &format!("{lp}.self_attn.qkv.weight"), 3 * dv, dv, qkv_bias(l, &format!("{lp}.self_attn"), dv).await?)
                    .await?,
                projection: Dense::load(l, &format!("{lp}.self_attn.projection"), dv, dv).await?,
                layer_norm2: LayerNorm::load(l, &format!("{lp}.layer_norm2"), dv, VISION_EPS).await?,
                fc1: Dense::load(l, &format!("{lp}.mlp.fc1"), cfg.vision_mlp, dv).await?,
                fc2: Dense::load(l, &format!("{lp}.mlp.fc2"), dv, cfg.vision_mlp).await?,
            });
        }
        let q = format!("{p}.qformer");
        let mut qformer_layers = Vec::with_capacity(cfg.qformer_layers);
        for i in 0..cfg.qformer_layers {
            let lp = format!("{q}.encoder.layer.{i}");
            let crossattention = if i % CROSS_ATTENTION_FREQUENCY == 0 {
                Some(BertAttention::load(l, &format!("{lp}.crossattention"), dq, dv).await?)
            } else {
                None
            };
            qformer_layers.push(QFormerLayer {
                attention: BertAttention::load(l, &format!("{lp}.attention"), dq, dq).await?,
                crossattention,
                intermediate_query: Dense::load(l, &format!("{lp}.intermediate_query.dense"), cfg.qformer_mlp, dq).await?,
                output_query: Dense::load(l, &format!("{lp}.output_query.dense"), dq, cfg.qformer_mlp).await?,
                output_norm: LayerNorm::load(l, &format!("{lp}.output_query.LayerNorm"), dq, QFORMER_EPS).await?,
            });
        }
        // The text half of the Q-Former layers (`intermediate`, `output`) is never used for images.
        let text_prefix = format!("{q}.encoder.layer.");
        l.skip_where(|n| {
            n.strip_prefix(&text_prefix)
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(_, leaf)| leaf.starts_with("intermediate.") || leaf.starts_with("output."))
        });
        Ok(Self {
            patch_embedding: Conv2d::load(l, &format!("{v}.embeddings.patch_embedding"), 3, dv, PATCH, PATCH, 0, 1, true).await?,
            class_embedding: l.tensor(&format!("{v}.embeddings.class_embedding"), [1, 1, dv]).await?,
            position_embedding: l.tensor(&format!("{v}.embeddings.position_embedding"), [1, LOCAL_TOKENS, dv]).await?,
            vision_layers,
            post_layernorm: LayerNorm::load(l, &format!("{v}.post_layernorm"), dv, VISION_EPS).await?,
            query_tokens: l.tensor(&format!("{p}.query_tokens"), [1, cfg.queries, dq]).await?,
            qformer_layernorm: LayerNorm::load(l, &format!("{q}.layernorm"), dq, QFORMER_EPS).await?,
            qformer_layers,
            cfg,
        })
    }

    /// `get_qformer_features(pixel_values).last_hidden_state`:
    /// x: [B, 3, 224, 224] (CLIP-normalised) → [B, 32, Dq]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let p = patches(&self.patch_embedding, x);
        let b = p.dims()[0];
        let mut h = Tensor::cat(vec![self.class_embedding.clone().repeat_dim(0, b), p], 1).add(self.position_embedding.clone());
        for layer in &self.vision_layers {
            let (q, k, v) = split_qkv(layer.qkv.forward(layer.layer_norm1.forward(h.clone())));
            h = h.add(layer.projection.forward(multi_head_attention(q, k, v, self.cfg.vision_heads)));
            let m = layer.fc2.forward(gelu(layer.fc1.forward(layer.layer_norm2.forward(h.clone()))));
            h = h.add(m);
        }
        let image = self.post_layernorm.forward(h);
        let mut q = self.qformer_layernorm.forward(self.query_tokens.clone().repeat_dim(0, b));
        let heads = self.cfg.qformer_heads;
        for layer in &self.qformer_layers {
            let mut a = layer.attention.forward(q.clone(), q, heads);
            if let Some(cross) = &layer.crossattention {
                a = cross.forward(a, image.clone(), heads);
            }
            let f = layer.output_query.forward(gelu(layer.intermediate_query.forward(a.clone())));
            q = layer.output_norm.forward(f.add(a));
        }
        q
    }
}
