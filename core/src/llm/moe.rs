//! The Mixtral sparse mixture-of-experts FFN of SPHINX-MoE (docs/spec.md §2.7,
//! `mixtral_sparse.py` `MoE`): softmax over all experts in f32, the top-k
//! renormalised, and per expert `(silu(x·W1ᵀ) ⊙ x·W3ᵀ) · W2` with `W2` used
//! **un-transposed** (`[E·F, D]`, expert-major rows).
//!
//! A few tokens (decoding) are routed and computed on the device in three kernels
//! (`sphinx_shaders::moe_ffn`): nothing is read back. Longer chunks (prefill) read the
//! gate scores back once per layer and multiply each expert's tokens as one batch,
//! which reads each expert's weights once instead of once per token.

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use sphinx_shaders::{moe_ffn, route_token, swiglu};

use super::linear::Linear;
use super::read_f32;
use crate::config::{LlmConfig, MoeConfig};
use crate::error::{GenerateError, WeightError};
use crate::weights::{WeightLoader, WeightSource};

/// Chunks of at most this many positions per sequence take the device path.
const DEVICE_ROUTING_MAX_TOKENS: usize = 4;

#[derive(Debug, Clone)]
pub struct Moe {
    gate: Linear,
    /// The experts stacked, expert-major: w1, w3: [E·F, D]; w2: [E·F, D] (used as h · w2).
    w1: Tensor<2>,
    w2: Tensor<2>,
    w3: Tensor<2>,
    cfg: MoeConfig,
}

impl Moe {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, c: &LlmConfig, cfg: MoeConfig) -> Result<Self, WeightError> {
        let (d, f, e) = (c.dim, c.ffn_hidden, cfg.num_experts);
        Ok(Self {
            gate: Linear::load(l, &format!("{p}.gate.weight"), e, d).await?,
            w1: l.tensor(&format!("{p}.w1"), [e * f, d]).await?,
            w2: l.tensor(&format!("{p}.w2"), [e * f, d]).await?,
            w3: l.tensor(&format!("{p}.w3"), [e * f, d]).await?,
            cfg,
        })
    }

    /// Bytes of the gate and the experts on the device (the experts are f32).
    pub fn device_bytes(&self) -> usize {
        let experts: usize = [&self.w1, &self.w2, &self.w3].iter().map(|t| t.shape().num_elements() * 4).sum();
        self.gate.device_bytes() + experts
    }

    /// x: [B, S, D] (B sequences of S positions) → [B, S, D]. Every token's experts are
    /// computed on their own on the device path, so a decoding step of B sequences
    /// gives each the numbers it would get alone.
    pub async fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>, GenerateError> {
        let [b, s, d] = x.dims();
        let n = b * s;
        let scores = self.gate.forward_seq(x.clone()).reshape([n, self.cfg.num_experts]); // [N, E]
        let x = x.reshape([n, d]);
        let k = self.cfg.experts_per_token;
        if s <= DEVICE_ROUTING_MAX_TOKENS {
            return Ok(moe_ffn(x, scores, &self.w1, &self.w2, &self.w3, k).reshape([b, s, d]));
        }
        let scores = read_f32(scores).await?;
        let routes = route(&scores, self.cfg.num_experts, k);
        let device = x.device();
        let f = self.w1.dims()[0] / self.cfg.num_experts;
        let expert = |w: &Tensor<2>, e: usize| w.clone().narrow(0, e * f, f); // [F, D]
        let mut out = Tensor::<2>::zeros([n, d], &device);
        for (e, (tokens, weights)) in routes.into_iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let m = tokens.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(tokens, [m]), &device);
            let xe = x.clone().select(0, idx.clone()); // [m, D]
            let h = swiglu(xe.clone().matmul(expert(&self.w1, e).transpose()), xe.matmul(expert(&self.w3, e).transpose()));
            let y = h.matmul(expert(&self.w2, e)); // [m, D]
            let w = Tensor::<2>::from_data(TensorData::new(weights, [m, 1]), &device);
            out = out.select_assign(0, idx, y.mul(w), IndexingUpdateOp::Add);
        }
        Ok(out.reshape([b, s, d]))
    }
}

/// For each expert, the tokens routed to it and their mixing weights
/// (`sphinx_shaders::route_token`: softmax, top-k, renormalised over the k, in f32).
pub fn route(scores: &[f32], n_experts: usize, k: usize) -> Vec<(Vec<i64>, Vec<f32>)> {
    let mut routes = vec![(Vec::new(), Vec::new()); n_experts];
    for (t, row) in scores.chunks_exact(n_experts).enumerate() {
        for (e, weight) in route_token(row, k) {
            routes[e].0.push(t as i64);
            routes[e].1.push(weight);
        }
    }
    routes
}
