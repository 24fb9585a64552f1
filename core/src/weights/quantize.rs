//! Which tensors of a checkpoint `sphinx quantize` turns into llama.cpp's blocks, and the
//! conversion of one tensor (docs/design.md §10).

use half::f16;
use sphinx_shaders::BlockFormat;

use super::manifest::component;
use super::precision::is_held_matrix;
use super::{DType, HostTensor, TensorInfo};

/// What `sphinx quantize --encoders` does with the visual encoders' dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderWeights {
    /// As the checkpoint stores them.
    Keep,
    /// Rounded to f16 (nearest even), for checkpoints that store them in f32 or bf16.
    F16,
    /// In blocks.
    Blocks(BlockFormat),
}

/// What a checkpoint tensor becomes in a quantized model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Kept,
    Blocks(BlockFormat),
    F16,
}

/// What the checkpoint tensor `name` becomes when a model is quantized to `to` (its
/// output head to `head`, its encoders as `encoders` says). Quantized: the matrices that
/// `Matrix` loads ([`is_held_matrix`]) whose rows are an even number of blocks — the LLM's
/// (attention and FFN projections, MoE gate, token embedding), with the output head in
/// `head`, q8_0 unless the user asks for q4_0, since its errors go straight into the
/// logits (llama.cpp keeps it at 6 bits or more in its mixed formats too; `--pure` and
/// `--output-tensor-type` change that), and, when `encoders` says so, the visual encoders' dense layers
/// (to f16: all of them, whatever their width). Kept: norms, biases, rotary tables,
/// convolutions, embeddings of the encoders and the projections into the LLM.
pub fn stored_form(name: &str, info: &TensorInfo, to: BlockFormat, head: BlockFormat, encoders: EncoderWeights) -> Stored {
    if !info.dtype.is_float() || !is_held_matrix(name, info.shape.len()) {
        return Stored::Kept;
    }
    let blocks = info.shape.len() == 2 && sphinx_shaders::rows_of_whole_words(info.shape[1]);
    match (component(name), encoders) {
        ("llm", _) if !blocks => Stored::Kept,
        ("llm", _) if name.strip_prefix("llma.").unwrap_or(name) == "output.weight" => Stored::Blocks(head),
        ("llm", _) => Stored::Blocks(to),
        (_, EncoderWeights::Blocks(format)) if blocks => Stored::Blocks(format),
        (_, EncoderWeights::F16) if info.dtype != DType::F16 => Stored::F16,
        _ => Stored::Kept,
    }
}

/// `t` (a float tensor) rounded to f16, nearest even; `None` for other dtypes. A finite
/// value beyond f16's range (65504) is an error naming the tensor, never an infinity.
pub fn round_tensor_to_f16(name: &str, t: &HostTensor) -> Result<HostTensor, String> {
    let values = t.to_f32().ok_or_else(|| format!("{name}: {} is not a float tensor", t.dtype))?;
    let mut bytes = Vec::with_capacity(values.len() * 2);
    for v in values {
        let h = f16::from_f32(v);
        if v.is_finite() && !h.is_finite() {
            return Err(format!("{name}: the value {v:e} does not fit in f16 (at most 65504); keep the encoders as stored (--encoders keep)"));
        }
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    Ok(HostTensor { dtype: DType::F16, shape: t.shape.clone(), bytes })
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
