//! DINOv2 ViT-g/14 (docs/spec.md §3.3; facebookresearch/dinov2 `vision_transformer.py`,
//! `layers/swiglu_ffn.py`): class token + patches + interpolated positions, 40 pre-norm
//! blocks with LayerScale and a SwiGLU FFN (`w12` split, first half gated), LN eps 1e-6,
//! and the final `norm` over all tokens (`x_norm_clstoken` + `x_norm_patchtokens`).
//!
//! The 37×37 position grid (trained at 518 px) is resized once at load with torch's
//! bicubic and DINOv2's `scale_factor = (w0 + 0.1) / 37` semantics: the output is
//! floor(37 · scale) = 16 wide, but source coordinates use the given scale, 37 / 16.1.

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use super::config::{Dinov2Config, PATCH, VIT_IMAGE};
use super::layers::{multi_head_attention, patches, split_qkv, Conv2d, Dense, LayerNorm};
use crate::error::WeightError;
use crate::preprocess::{torch_bicubic_scaled, Planar};
use crate::weights::{WeightLoader, WeightSource};

const EPS: f64 = 1e-6;
/// `interpolate_offset` of the DINOv2 repository.
const INTERPOLATE_OFFSET: f64 = 0.1;

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Dense,
    proj: Dense,
    /// ls1, ls2: [D] (LayerScale)
    ls1: Tensor<1>,
    norm2: LayerNorm,
    w12: Dense,
    w3: Dense,
    ls2: Tensor<1>,
}

#[derive(Debug, Clone)]
pub struct Dinov2 {
    patch_embed: Conv2d,
    /// cls_token: [1, 1, D]
    cls_token: Tensor<3>,
    /// Position embeddings for a 224-px input, already interpolated: [1, 257, D]
    pos_embed: Tensor<3>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    cfg: Dinov2Config,
}

/// `interpolate_pos_encoding` for a `VIT_IMAGE` input: pos [1 + M², D] → [1 + g², D].
fn interpolate_pos(pos: &[f32], m: usize, dim: usize, device: &Device) -> Tensor<3> {
    let w0 = VIT_IMAGE / PATCH;
    if w0 == m {
        return Tensor::from_data(TensorData::new(pos.to_vec(), [1, 1 + m * m, dim]), device);
    }
    let scale_factor = (w0 as f64 + INTERPOLATE_OFFSET) / m as f64;
    let out = (m as f64 * scale_factor).floor() as usize;
    // [M·M, D] → planar [D, M, M]
    let mut planes = vec![0f32; dim * m * m];
    for t in 0..m * m {
        for c in 0..dim {
            planes[c * m * m + t] = pos[(1 + t) * dim + c];
        }
    }
    let grid = Planar { channels: dim, height: m, width: m, data: planes };
    let scale = (1.0 / scale_factor) as f32;
    let r = torch_bicubic_scaled(&grid, out, out, scale, scale);
    let mut data = Vec::with_capacity((1 + out * out) * dim);
    data.extend_from_slice(&pos[..dim]);
    for t in 0..out * out {
        for c in 0..dim {
            data.push(r.data[c * out * out + t]);
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 1 + out * out, dim]), device)
}

impl Dinov2 {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, cfg: Dinov2Config) -> Result<Self, WeightError> {
        let d = cfg.dim;
        let m = cfg.pos_grid;
        let pos = l.host_f32(&format!("{p}.pos_embed"), &[1, 1 + m * m, d]).await?;
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let b = format!("{p}.blocks.{i}");
            blocks.push(Block {
                norm1: LayerNorm::load(l, &format!("{b}.norm1"), d, EPS).await?,
                qkv: Dense::load(l, &format!("{b}.attn.qkv"), 3 * d, d).await?,
                proj: Dense::load(l, &format!("{b}.attn.proj"), d, d).await?,
                ls1: l.tensor(&format!("{b}.ls1.gamma"), [d]).await?,
                norm2: LayerNorm::load(l, &format!("{b}.norm2"), d, EPS).await?,
                w12: Dense::load(l, &format!("{b}.mlp.w12"), 2 * cfg.ffn_hidden, d).await?,
                w3: Dense::load(l, &format!("{b}.mlp.w3"), d, cfg.ffn_hidden).await?,
                ls2: l.tensor(&format!("{b}.ls2.gamma"), [d]).await?,
            });
        }
        Ok(Self {
            patch_embed: Conv2d::load(l, &format!("{p}.patch_embed.proj"), 3, d, PATCH, PATCH, 0, 1, true).await?,
            cls_token: l.tensor(&format!("{p}.cls_token"), [1, 1, d]).await?,
            pos_embed: interpolate_pos(&pos, m, d, l.device()),
            blocks,
            norm: LayerNorm::load(l, &format!("{p}.norm"), d, EPS).await?,
            cfg,
        })
    }

    /// x: [B, 3, 224, 224], ImageNet-normalised → [B, 257, D]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<3> {
        let p = patches(&self.patch_embed, x);
        let b = p.dims()[0];
        let mut x = Tensor::cat(vec![self.cls_token.clone().repeat_dim(0, b), p], 1).add(self.pos_embed.clone());
        for blk in &self.blocks {
            let (q, k, v) = split_qkv(blk.qkv.forward(blk.norm1.forward(x.clone())));
            let a = blk.proj.forward(multi_head_attention(q, k, v, self.cfg.heads));
            x = x.add(a.mul(blk.ls1.clone().reshape([1, 1, -1])));
            let h = blk.w12.forward(blk.norm2.forward(x.clone()));
            let mut halves = h.chunk(2, 2).into_iter();
            let (x1, x2) = match (halves.next(), halves.next()) {
                (Some(a), Some(b)) => (a, b),
                _ => unreachable!("chunk(2) yields two halves"),
            };
            let f = blk.w3.forward(silu(x1).mul(x2));
            x = x.add(f.mul(blk.ls2.clone().reshape([1, 1, -1])));
        }
        self.norm.forward(x)
    }
}
