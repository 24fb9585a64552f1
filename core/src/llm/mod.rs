//! The LLaMA-2 / Mixtral language model of SPHINX (docs/spec.md §2), transcribed from
//! LLaMA2-Accessory `accessory/model/LLM/llama.py` and `mixtral_sparse.py`
//! (commit 3777c439). Activations are f32 on every backend.

mod attention;
mod feed_forward;
mod kv_cache;
mod linear;
mod moe;
mod rms_norm;
mod rope;
mod transformer;

pub use kv_cache::KvCache;
pub use linear::{Linear, Matrix, WIDEN_TILE_VALUES};
pub use transformer::Llm;

/// Reads a float tensor back to the host through the async API (the only one the
/// browser allows).
pub async fn read_f32<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f32>, crate::error::GenerateError> {
    let data = t.into_data_async().await.map_err(|e| crate::error::GenerateError::Readback(format!("{e:?}")))?;
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| crate::error::GenerateError::Readback(format!("{e:?}")))
}

/// The index of the largest logit of `logits` [1, vocab], computed on the device: only
/// the id comes back, not the vocabulary's logits (greedy decoding).
pub async fn read_argmax(logits: burn::tensor::Tensor<2>) -> Result<u32, crate::error::GenerateError> {
    match read_argmax_rows(logits).await?.as_slice() {
        [id] => Ok(*id),
        ids => Err(crate::error::GenerateError::Readback(format!("argmax of one row gave {} ids", ids.len()))),
    }
}

/// [`read_argmax`] of every row of `logits` [rows, vocab]: one readback of `rows` ids.
pub async fn read_argmax_rows(logits: burn::tensor::Tensor<2>) -> Result<Vec<u32>, crate::error::GenerateError> {
    use crate::error::GenerateError::Readback;
    let [rows, _] = logits.dims();
    let data = sphinx_shaders::argmax(logits).into_data_async().await.map_err(|e| Readback(format!("{e:?}")))?;
    let ids = data.convert::<i64>().try_into_vec::<i64>().map_err(|e| Readback(format!("{e:?}")))?;
    if ids.len() != rows {
        return Err(Readback(format!("argmax over {rows} rows gave {} ids", ids.len())));
    }
    ids.into_iter().map(|id| u32::try_from(id).map_err(|_| Readback(format!("argmax gave {id}")))).collect()
}

/// The parts joined along `dim`, without a copy when there is only one.
pub(crate) fn cat_parts<const D: usize>(mut parts: Vec<burn::tensor::Tensor<D>>, dim: usize) -> burn::tensor::Tensor<D> {
    if parts.len() == 1 { parts.remove(0) } else { burn::tensor::Tensor::cat(parts, dim) }
}
