//! Which tensors of a checkpoint `sphinx quantize` turns into llama.cpp's blocks, and the
//! conversion of one tensor (docs/design.md §10).

use sphinx_shaders::BlockFormat;

use super::manifest::component;
use super::{DType, HostTensor, TensorInfo};

/// The block format the checkpoint tensor `name` is stored in when a model is quantized
/// to `to`, or `None` to keep it as it is. Quantized: the LLM's weight matrices (the
/// attention and FFN projections, the MoE gate, the token embedding) whose rows are an
/// even number of blocks; the output head at most to q8_0, since its errors go straight
/// into the logits (llama.cpp keeps it at 6 bits or more in its mixed formats too).
/// Kept: norms, biases, rotary tables, the visual encoders and the projections.
pub fn quantized_format(name: &str, info: &TensorInfo, to: BlockFormat) -> Option<BlockFormat> {
    let n = name.strip_prefix("llma.").unwrap_or(name);
    let matrix = info.shape.len() == 2 && n.ends_with(".weight") && info.dtype.is_float();
    if component(name) != "llm" || !matrix || info.shape[1] % (2 * sphinx_shaders::BLOCK) != 0 {
        return None;
    }
    Some(if n == "output.weight" { BlockFormat::Q8_0 } else { to })
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
