//! The OpenCLIP ConvNeXt-XXLarge trunk (docs/spec.md §3.2; timm `convnext.py` with
//! `head.global_pool` and `head.flatten` removed): stem, four stages of depthwise 7×7
//! blocks with layer scale and erf-GELU, and the channel LayerNorm `head.norm`, giving
//! [B, C, H/32, W/32]. `tokens` turns that into SPHINX's 257 local tokens.

use burn::tensor::activation::gelu;
use burn::tensor::Tensor;

use super::config::ConvNextConfig;
use super::layers::{Conv2d, Dense, LayerNorm};
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

const EPS: f64 = 1e-5;

#[derive(Debug, Clone)]
struct Block {
    conv_dw: Conv2d,
    norm: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    /// gamma: [C] (layer scale)
    gamma: Tensor<1>,
}

#[derive(Debug, Clone)]
struct Stage {
    downsample: Option<(LayerNorm, Conv2d)>,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
pub struct ConvNext {
    stem: (Conv2d, LayerNorm),
    stages: Vec<Stage>,
    head_norm: LayerNorm,
}

impl ConvNext {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, cfg: ConvNextConfig) -> Result<Self, WeightError> {
        let dims = cfg.dims;
        let stem = (
            Conv2d::load(l, &format!("{p}.stem.0"), 3, dims[0], 4, 4, 0, 1, true).await?,
            LayerNorm::load(l, &format!("{p}.stem.1"), dims[0], EPS).await?,
        );
        let mut stages = Vec::with_capacity(4);
        for s in 0..4 {
            let sp = format!("{p}.stages.{s}");
            let c = dims[s];
            let downsample = if s == 0 {
                None
            } else {
                Some((
                    LayerNorm::load(l, &format!("{sp}.downsample.0"), dims[s - 1], EPS).await?,
                    Conv2d::load(l, &format!("{sp}.downsample.1"), dims[s - 1], c, 2, 2, 0, 1, true).await?,
                ))
            };
            let mut blocks = Vec::with_capacity(cfg.depths[s]);
            for b in 0..cfg.depths[s] {
                let bp = format!("{sp}.blocks.{b}");
                blocks.push(Block {
                    conv_dw: Conv2d::load(l, &format!("{bp}.conv_dw"), c, c, 7, 1, 3, c, true).await?,
                    norm: LayerNorm::load(l, &format!("{bp}.norm"), c, EPS).await?,
                    fc1: Dense::load(l, &format!("{bp}.mlp.fc1"), 4 * c, c).await?,
                    fc2: Dense::load(l, &format!("{bp}.mlp.fc2"), c, 4 * c).await?,
                    gamma: l.tensor(&format!("{bp}.gamma"), [c]).await?,
                });
            }
            stages.push(Stage { downsample, blocks });
        }
        Ok(Self { stem, stages, head_norm: LayerNorm::load(l, &format!("{p}.head.norm"), dims[3], EPS).await? })
    }

    /// x: [B, 3, S, S] → [B, C, S/32, S/32]
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.1.forward_channels(self.stem.0.forward(x));
        for stage in &self.stages {
            if let Some((norm, conv)) = &stage.downsample {
                x = conv.forward(norm.forward_channels(x));
            }
            for b in &stage.blocks {
                let h = b.conv_dw.forward(x.clone()).permute([0, 2, 3, 1]); // NHWC
                let h = b.fc2.forward(gelu(b.fc1.forward(b.norm.forward(h))));
                let h = h.mul(b.gamma.clone().reshape([1, 1, 1, -1])).permute([0, 3, 1, 2]);
                x = x.add(h);
            }
        }
        self.head_norm.forward_channels(x)
    }

    /// SPHINX's ConvNeXt tokens: an 8×8 map is repeated to 16×16 (`repeat_interleave(2)` on
    /// both axes), flattened row-major, and the mean token prepended as "cls".
    /// feats: [B, C, h, h] → [B, 1 + 256, C]
    pub fn tokens(feats: Tensor<4>, grid: usize) -> Tensor<3> {
        let [b, c, h, w] = feats.dims();
        let r = grid / h.max(1);
        let feats = if r > 1 {
            feats.reshape([b, c, h, 1, w, 1]).repeat(&[1, 1, 1, r, 1, r]).reshape([b, c, h * r, w * r])
        } else {
            feats
        };
        let t = feats.reshape([b, c, grid * grid]).swap_dims(1, 2); // [B, 256, C]
        let mean = t.clone().mean_dim(1); // [B, 1, C]
        Tensor::cat(vec![mean, t], 1)
    }
}
