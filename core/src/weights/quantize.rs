//! Which tensors of a checkpoint `sphinx quantize` turns into llama.cpp's blocks, and the
//! conversion of one tensor (docs/design.md §10).

use sphinx_shaders::BlockFormat;

use super::manifest::component;
use super::precision::is_held_matrix;
use super::{DType, HostTensor, TensorInfo};

/// The block format the checkpoint tensor `name` is stored in when a model is quantized
/// to `to` (its encoders to `encoders`), or `None` to keep it as it is. Quantized: the
/// matrices that `Matrix` loads ([`is_held_matrix`]) whose rows are an even number of
/// blocks — the LLM's (attention and FFN projections, MoE gate, token embedding), with
/// the output head at most at q8_0, since its errors go straight into the logits
/// (llama.cpp keeps it at 6 bits or more in its mixed formats too), and, when `encoders`
/// says so, the visual encoders' dense layers. Kept: norms, biases, rotary tables,
/// convolutions, embeddings of the encoders and the projections into the LLM.
pub fn quantized_format(name: &str, info: &TensorInfo, to: BlockFormat, encoders: Option<BlockFormat>) -> Option<BlockFormat> {
    let blocks = info.shape.len() == 2 && sphinx_shaders::rows_of_whole_words(info.shape[1]);
    if !info.dtype.is_float() || !blocks || !is_held_matrix(name, info.shape.len()) {
        return None;
    }
    match component(name) {
        "llm" if name.strip_prefix("llma.").unwrap_or(name) == "output.weight" => Some(BlockFormat::Q8_0),
        "llm" => Some(to),
        _ => encoders,
    }
}

/// `t` (a float [rows, cols] tensor, cols a multiple of 32) as rows of `format`'s blocks;
/// `None` for other dtypes and shapes.
pub fn quantize_tensor(t: &HostTensor, format: BlockFormat) -> Option<HostTensor> {
    let &[rows, cols] = t.shape.as_slice() else { return None };
    let values = t.to_f32()?;
    let mut bytes = Vec::with_capacity(rows.checked_mul(format.row_bytes(cols)?)?);
    format.quantize(&values, &mut bytes);
    let dtype = DType::of_blocks(format);
    debug_assert_eq!(Some(bytes.len()), (TensorInfo { dtype, shape: t.shape.clone() }).checked_byte_len());
    Some(HostTensor { dtype, shape: t.shape.clone(), bytes })
}
