//! A bias-free linear layer, `y = x · Wᵀ`. Kept as its own type so a quantized
//! weight can later replace the dense one without touching the model code.

use burn::tensor::Tensor;

use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
pub struct Linear {
    /// weight: [out, in]
    pub weight: Tensor<2>,
}

impl Linear {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, out: usize, inp: usize) -> Result<Self, WeightError> {
        Ok(Self { weight: l.tensor(name, [out, inp]).await? })
    }

    /// x: [..., in] → [..., out]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let inp = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let y = x.reshape([rows, inp]).matmul(self.weight.clone().transpose());
        let mut out = dims;
        out[D - 1] = self.weight.dims()[0];
        y.reshape(out)
    }
}
