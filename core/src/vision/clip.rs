//! CLIP ViT-L/14 as SPHINX uses it (docs/spec.md §3.1; `clip_encode_image` in `llama_ens*.py`,
//! open_clip ≤ 2.24 `VisionTransformer`): class token + patches + positions, `ln_pre`,
//! pre-norm residual blocks, and `ln_post` over all 257 tokens, without `proj`.

use burn::tensor::activation::gelu;
use burn::tensor::Tensor;

use super::config::{Activation, ClipConfig, LOCAL_TOKENS, PATCH};
use super::layers::{multi_head_attention, patches, quick_gelu, split_qkv, Conv2d, Dense, LayerNorm};
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
struct ResBlock {
    ln_1: LayerNorm,
    /// `attn.in_proj_weight` [3W, W] (rows: Wq; Wk; Wv) and `in_proj_bias`.
    in_proj: Dense,
    out_proj: Dense,
    ln_2: LayerNorm,
    c_fc: Dense,
    c_proj: Dense,
}

#[derive(Debug, Clone)]
pub struct ClipVision {
    conv1: Conv2d,
    /// class_embedding: [W]
    class_embedding: Tensor<1>,
    /// positional_embedding: [257, W]
    positional_embedding: Tensor<2>,
    ln_pre: LayerNorm,
    resblocks: Vec<ResBlock>,
    ln_post: LayerNorm,
    cfg: ClipConfig,
}

impl ClipVision {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, cfg: ClipConfig) -> Result<Self, WeightError> {
        let w = cfg.width;
        let mut resblocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let b = format!("{p}.transformer.resblocks.{i}");
            resblocks.push(ResBlock {
                ln_1: LayerNorm::load(l, &format!("{b}.ln_1"), w, 1e-5).await?,
                in_proj: Dense::load_with_bias(l, &format!("{b}.attn.in_proj_weight"), 3 * w, w, l.tensor(&format!("{b}.attn.in_proj_bias"), [3 * w]).await?)
                    .await?,
                out_proj: Dense::load(l, &format!("{b}.attn.out_proj"), w, w).await?,
                ln_2: LayerNorm::load(l, &format!("{b}.ln_2"), w, 1e-5).await?,
                c_fc: Dense::load(l, &format!("{b}.mlp.c_fc"), cfg.mlp, w).await?,
                c_proj: Dense::load(l, &format!("{b}.mlp.c_proj"), w, cfg.mlp).await?,
            });
        }
        Ok(Self {
            conv1: Conv2d::load(l, &format!("{p}.conv1"), 3, w, PATCH, PATCH, 0, 1, false).await?,
            class_embedding: l.tensor(&format!("{p}.class_embedding"), [w]).await?,
            positional_embedding: l.tensor(&format!("{p}.positional_embedding"), [LOCAL_TOKENS, w]).await?,
            ln_pre: LayerNorm::load(l, &format!("{p}.ln_pre"), w, 1e-5).await?,
            resblocks,
            ln_post: LayerNorm::load(l, &format!("{p}.ln_post"), w, 1e-5).await?,
            cfg,
        })
    }

    /// x: [B, 3, 224, 224] (CLIP-normalised) → [B, 257, W]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let p = patches(&self.conv1, x);
        let [b, _, w] = p.dims();
        let cls = self.class_embedding.clone().reshape([1, 1, w]).repeat_dim(0, b);
        let mut x = Tensor::cat(vec![cls, p], 1).add(self.positional_embedding.clone().unsqueeze_dim(0));
        x = self.ln_pre.forward(x);
        for blk in &self.resblocks {
            let (q, k, v) = split_qkv(blk.in_proj.forward(blk.ln_1.forward(x.clone())));
            x = x.add(blk.out_proj.forward(multi_head_attention(q, k, v, self.cfg.heads)));
            let h = blk.c_fc.forward(blk.ln_2.forward(x.clone()));
            let h = match self.cfg.act {
                Activation::QuickGelu => quick_gelu(h),
                Activation::Gelu => gelu(h),
            };
            x = x.add(blk.c_proj.forward(h));
        }
        self.ln_post.forward(x)
    }
}
