//! Building blocks shared by the visual encoders: dense layers with bias, LayerNorm,
//! convolutions, GELU variants and plain multi-head attention.

use burn::tensor::activation::{sigmoid, softmax};
use sphinx_shaders::{attention, MAX_ATTENTION_HEAD_DIM};
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;

use crate::error::WeightError;
use crate::llm::Linear;
use crate::weights::{WeightLoader, WeightSource};

/// `y = x · Wᵀ + b` (`nn.Linear`).
#[derive(Debug, Clone)]
pub struct Dense {
    linear: Linear,
    /// bias: [out]
    bias: Option<Tensor<1>>,
}

impl Dense {
    /// Loads `{p}.weight` [out, in] and `{p}.bias` [out]. The weight is held as the LLM's
    /// matrices are (16 bits when the checkpoint stores it so, `--dtype` otherwise;
    /// docs/design.md §9); the bias in f32.
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, out: usize, inp: usize) -> Result<Self, WeightError> {
        let bias = l.tensor(&format!("{p}.bias"), [out]).await?;
        Self::load_with_bias(l, &format!("{p}.weight"), out, inp, bias).await
    }

    /// A layer over the matrix named `weight` [out, in] (held as in [`Dense::load`]) and `bias`.
    pub async fn load_with_bias<S: WeightSource>(l: &WeightLoader<'_, S>, weight: &str, out: usize, inp: usize, bias: Tensor<1>) -> Result<Self, WeightError> {
        Ok(Self { linear: Linear::load(l, weight, out, inp).await?, bias: Some(bias) })
    }

    /// x: [..., in] → [..., out]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let y = self.linear.forward(x);
        match &self.bias {
            Some(b) => {
                let mut shape = [1i64; D];
                shape[D - 1] = -1;
                y.add(b.clone().reshape(shape))
            }
            None => y,
        }
    }
}

/// LayerNorm over the last dimension, biased variance, in f32.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor<1>,
    bias: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, dim: usize, eps: f64) -> Result<Self, WeightError> {
        Ok(Self { weight: l.tensor(&format!("{p}.weight"), [dim]).await?, bias: l.tensor(&format!("{p}.bias"), [dim]).await?, eps })
    }

    /// x: [..., C] → [..., C]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x.sub(mean);
        let var = centered.clone().powi_scalar(2).mean_dim(D - 1);
        let mut shape = [1i64; D];
        shape[D - 1] = -1;
        centered
            .div(var.add_scalar(self.eps).sqrt())
            .mul(self.weight.clone().reshape(shape))
            .add(self.bias.clone().reshape(shape))
    }

    /// LayerNorm2d: normalises the channels of x: [B, C, H, W] at every position.
    pub fn forward_channels(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
    }
}

/// A 2-D convolution with square kernel, stride, padding and groups.
#[derive(Debug, Clone)]
pub struct Conv2d {
    /// weight: [C_out, C_in / groups, k, k]
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    stride: usize,
    padding: usize,
    groups: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub async fn load<S: WeightSource>(
        l: &WeightLoader<'_, S>,
        p: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self, WeightError> {
        let weight = l.tensor(&format!("{p}.weight"), [c_out, c_in / groups, k, k]).await?;
        let bias = if bias { Some(l.tensor(&format!("{p}.bias"), [c_out]).await?) } else { None };
        Ok(Self { weight, bias, stride, padding, groups })
    }

    /// x: [B, C_in, H, W] → [B, C_out, H', W']
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], self.groups);
        conv2d(x, self.weight.clone(), self.bias.clone(), opts)
    }
}

/// Patch embedding: x [B, 3, H, W] → tokens [B, (H/p)·(W/p), D], row-major.
pub fn patches(conv: &Conv2d, x: Tensor<4>) -> Tensor<3> {
    let y = conv.forward(x);
    let [b, d, h, w] = y.dims();
    y.reshape([b, d, h * w]).swap_dims(1, 2)
}

/// OpenAI CLIP's `QuickGELU`: x · σ(1.702 x).
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().mul(sigmoid(x.mul_scalar(1.702)))
}

/// Scaled dot-product attention without a mask, in the fused kernel (docs/design.md §9):
/// every query sees every key, as the last position of a causal sequence would, so the
/// kernel runs with all queries at position Nk − 1. Heads wider than the kernel takes use
/// Burn's operations. q: [B, Nq, H·hd], k, v: [B, Nk, H·hd] → [B, Nq, H·hd]
pub fn multi_head_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, nq, d] = q.dims();
    let nk = k.dims()[1];
    let hd = d / heads;
    if hd <= MAX_ATTENTION_HEAD_DIM && nk > 0 {
        let groups = |t: Tensor<3>, n: usize| t.reshape([b, n, heads, hd]).swap_dims(1, 2).reshape([b * heads, n, hd]);
        let out = attention(groups(q, nq), groups(k, nk), groups(v, nk), nk, nk - 1, 1, 1.0 / (hd as f32).sqrt()); // [B·H, Nq, hd]
        return out.reshape([b, heads, nq, hd]).swap_dims(1, 2).reshape([b, nq, d]);
    }
    let q = q.reshape([b, nq, heads, hd]).swap_dims(1, 2);
    let k = k.reshape([b, nk, heads, hd]).swap_dims(1, 2);
    let v = v.reshape([b, nk, heads, hd]).swap_dims(1, 2);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt());
    softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, nq, d])
}

/// Splits a fused [B, N, 3·D] projection into q, k, v.
pub fn split_qkv(qkv: Tensor<3>) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let mut parts = qkv.chunk(3, 2).into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(q), Some(k), Some(v)) => (q, k, v),
        _ => unreachable!("chunk(3) always yields three parts"),
    }
}
