//! Meta-style rotary position embedding (docs/spec.md §2.3): dimension pairs `(x[2i], x[2i+1])`
//! rotate by `pos · θ^(−2i/d)`. Tables are built in f32 on the host exactly as
//! `precompute_freqs_cis` does, for `2 · max_seq_len` positions.

use burn::tensor::{Device, Tensor, TensorData};
use sphinx_shaders::rope;

#[derive(Debug, Clone)]
pub struct Rope {
    /// cos, sin: [2 · max_seq_len, head_dim / 2]
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, scaling: Option<f64>, device: &Device) -> Self {
        let half = head_dim / 2;
        let end = 2 * max_seq_len;
        // freqs = 1 / theta^(arange(0, d, 2) / d), in f32 as torch computes it.
        let freqs: Vec<f32> =
            (0..half).map(|i| 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32)).collect();
        let mut cos = Vec::with_capacity(end * half);
        let mut sin = Vec::with_capacity(end * half);
        for t in 0..end {
            let t = match scaling {
                Some(s) => t as f32 * s as f32,
                None => t as f32,
            };
            for f in &freqs {
                let a = t * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [end, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [end, half]), device),
        }
    }

    /// x: [B, S, H, hd] at positions `start..start + S` → rotated [B, S, H, hd], one
    /// fused kernel (`sphinx_shaders::rope`; its reference is the Burn-op version).
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        rope(x, &self.cos, &self.sin, start)
    }
}
