//! The Mixtral sparse mixture-of-experts FFN of SPHINX-MoE (docs/spec.md §2.7,
//! `mixtral_sparse.py` `MoE`): softmax over all experts in f32, the top-k
//! renormalised, and per expert `(silu(x·W1ᵀ) ⊙ x·W3ᵀ) · W2` with `W2` used
//! **un-transposed** (`[E·F, D]`, expert-major rows).
//!
//! Routing is decided on the host after one async readback of the gate scores
//! per layer, so only the chosen experts are computed.

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use sphinx_shaders::swiglu;

use super::linear::Linear;
use super::read_f32;
use crate::config::{LlmConfig, MoeConfig};
use crate::error::{GenerateError, WeightError};
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
pub struct Moe {
    gate: Linear,
    /// Per expert: w1, w3: [F, D]; w2: [F, D] (used as h · w2).
    w1: Vec<Tensor<2>>,
    w2: Vec<Tensor<2>>,
    w3: Vec<Tensor<2>>,
    cfg: MoeConfig,
}

impl Moe {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, c: &LlmConfig, cfg: MoeConfig) -> Result<Self, WeightError> {
        let (d, f, e) = (c.dim, c.ffn_hidden, cfg.num_experts);
        let experts = |t: Tensor<2>| t.chunk(e, 0);
        Ok(Self {
            gate: Linear::load(l, &format!("{p}.gate.weight"), e, d).await?,
            w1: experts(l.tensor(&format!("{p}.w1"), [e * f, d]).await?),
            w2: experts(l.tensor(&format!("{p}.w2"), [e * f, d]).await?),
            w3: experts(l.tensor(&format!("{p}.w3"), [e * f, d]).await?),
            cfg,
        })
    }

    /// Bytes of the gate and the experts on the device (the experts are f32).
    pub fn device_bytes(&self) -> usize {
        let experts: usize = [&self.w1, &self.w2, &self.w3].iter().flat_map(|w| w.iter()).map(|t| t.shape().num_elements() * 4).sum();
        self.gate.device_bytes() + experts
    }

    /// x: [B, S, D] → [B, S, D]
    pub async fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>, GenerateError> {
        let [b, s, d] = x.dims();
        let n = b * s;
        let x = x.reshape([n, d]);
        let scores = read_f32(self.gate.forward(x.clone())).await?; // [N, E]
        let routes = route(&scores, self.cfg.num_experts, self.cfg.experts_per_token);
        let device = x.device();
        let mut out = Tensor::<2>::zeros([n, d], &device);
        for (e, (tokens, weights)) in routes.into_iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let m = tokens.len();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(tokens, [m]), &device);
            let xe = x.clone().select(0, idx.clone()); // [m, D]
            let h = swiglu(xe.clone().matmul(self.w1[e].clone().transpose()), xe.matmul(self.w3[e].clone().transpose()));
            let y = h.matmul(self.w2[e].clone()); // [m, D]
            let w = Tensor::<2>::from_data(TensorData::new(weights, [m, 1]), &device);
            out = out.select_assign(0, idx, y.mul(w), IndexingUpdateOp::Add);
        }
        Ok(out.reshape([b, s, d]))
    }
}

/// For each expert, the tokens routed to it and their mixing weights:
/// `softmax(scores)`, top-k, renormalised over the k (all in f32).
pub fn route(scores: &[f32], n_experts: usize, k: usize) -> Vec<(Vec<i64>, Vec<f32>)> {
    let mut routes = vec![(Vec::new(), Vec::new()); n_experts];
    for (t, row) in scores.chunks_exact(n_experts).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let mut order: Vec<usize> = (0..n_experts).collect();
        order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
        let top = &order[..k];
        let total: f32 = top.iter().map(|&e| exp[e] / sum).sum();
        for &e in top {
            routes[e].0.push(t as i64);
            routes[e].1.push(exp[e] / sum / total);
        }
    }
    routes
}
