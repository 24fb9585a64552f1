//! The plain references the kernels are tested against: the same results from Burn's
//! own operations and host-side conversions, with nothing of the kernels' code.

use burn::tensor::Tensor;

use crate::PackedHalves;

/// The packed matrix widened to f32 on the host, uploaded as a dense tensor.
pub async fn unpack_halves(w: &PackedHalves) -> Tensor<2> {
    let [rows, cols] = w.dims();
    let data = w.words.clone().into_data_async().await.expect("packed words read back");
    let words: Vec<u32> = data.try_into_vec().expect("packed words are u32");
    let values: Vec<f32> = words
        .iter()
        .flat_map(|&word| [w.kind.value_of(word as u16), w.kind.value_of((word >> 16) as u16)])
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, [rows, cols]), &w.words.device())
}

/// `x · Wᵀ` with Burn's matmul on the widened weight.
pub async fn matvec_packed(x: Tensor<2>, w: &PackedHalves) -> Tensor<2> {
    x.matmul(unpack_halves(w).await.transpose())
}
