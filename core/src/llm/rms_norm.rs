//! RMSNorm (`accessory/model/components.py`): `x · rsqrt(mean(x²) + eps) · w`, in f32.

use burn::tensor::Tensor;

use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// weight: [D]
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, dim: usize, eps: f64) -> Result<Self, WeightError> {
        Ok(Self { weight: l.tensor(name, [dim]).await?, eps })
    }

    /// x: [B, S, D] → [B, S, D]
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let ms = x.clone().powi_scalar(2).mean_dim(2); // [B, S, 1]
        let inv = ms.add_scalar(self.eps).sqrt().recip();
        x.mul(inv).mul(self.weight.clone().reshape([1, 1, -1]))
    }
}
