//! The dense SwiGLU feed-forward of llama.py: `w2(silu(w1·x) ⊙ w3·x)`, the gate fused
//! in one kernel (`sphinx_shaders::swiglu`).

use burn::tensor::Tensor;
use sphinx_shaders::swiglu;

use super::linear::Linear;
use crate::config::LlmConfig;
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
pub struct FeedForward {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

impl FeedForward {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, c: &LlmConfig) -> Result<Self, WeightError> {
        let (d, f) = (c.dim, c.ffn_hidden);
        Ok(Self {
            w1: Linear::load(l, &format!("{p}.w1.weight"), f, d).await?,
            w2: Linear::load(l, &format!("{p}.w2.weight"), d, f).await?,
            w3: Linear::load(l, &format!("{p}.w3.weight"), f, d).await?,
        })
    }

    /// Bytes of the three matrices on the device.
    pub fn device_bytes(&self) -> usize {
        [&self.w1, &self.w2, &self.w3].iter().map(|l| l.device_bytes()).sum()
    }

    /// x: [B, S, D] (B sequences of S positions) → [B, S, D]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.w2.forward_seq(swiglu(self.w1.forward_seq(x.clone()), self.w3.forward_seq(x)))
    }
}
