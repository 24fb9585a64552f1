//! RMSNorm (`accessory/model/components.py`): `x · rsqrt(mean(x²) + eps) · w`, in f32.

use burn::tensor::Tensor;
use sphinx_shaders::rms_norm;

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

    /// Bytes of the weight on the device.
    pub fn device_bytes(&self) -> usize {
        self.weight.shape().num_elements() * 4
    }

    /// x: [B, S, D] → [B, S, D], one fused kernel (`sphinx_shaders::rms_norm`).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        rms_norm(x, &self.weight, self.eps as f32)
    }
}
