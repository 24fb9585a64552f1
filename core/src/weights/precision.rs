//! Which precision the LLM's matrices are held in on the device (docs/design.md §9).

use std::fmt;
use std::str::FromStr;

pub use sphinx_shaders::HalfKind;

use super::{DType, TensorInfo};

/// The precision of the LLM's weight matrices on the device. Activations and
/// accumulation are f32 in every case; 16-bit matrices are widened inside the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// The checkpoint's own: f16 and bf16 stay 16-bit (exact), anything else f32.
    #[default]
    Auto,
    /// Every matrix widened to f32 (the reference path).
    F32,
    /// Every matrix rounded to f16 (nearest even) unless stored so.
    F16,
    /// Every matrix rounded to bf16 (nearest even) unless stored so.
    Bf16,
}

impl WeightDtype {
    /// The 16-bit format a matrix stored as `stored` is held in, or `None` for f32.
    pub fn half_kind(self, stored: DType) -> Option<HalfKind> {
        match (self, stored) {
            (WeightDtype::F32, _) => None,
            (WeightDtype::F16, _) => Some(HalfKind::F16),
            (WeightDtype::Bf16, _) => Some(HalfKind::Bf16),
            (WeightDtype::Auto, DType::F16) => Some(HalfKind::F16),
            (WeightDtype::Auto, DType::BF16) => Some(HalfKind::Bf16),
            (WeightDtype::Auto, _) => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::Auto => "auto",
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::Bf16 => "bf16",
        }
    }
}

/// Bytes per value of the checkpoint tensor `name` (with or without `llma.`) on the
/// device when loaded with `dtype`: the matrices that `Linear` and `Matrix` load — the
/// LLM's 2-D `*.weight` tensors (the projections, the embedding, the output head and the
/// MoE gate) and the encoders' dense layers (2-D `*.weight` other than embeddings, and
/// CLIP's `in_proj_weight`) — in 16 bits where [`WeightDtype::half_kind`] says so,
/// everything else (norms, biases, convolutions, embeddings of the encoders, the
/// projections into the LLM) f32.
pub fn held_value_bytes(name: &str, stored: DType, rank: usize, dtype: WeightDtype) -> u64 {
    if is_held_matrix(name, rank) && dtype.half_kind(stored).is_some() {
        2
    } else {
        4
    }
}

/// Whether the checkpoint tensor `name` of `rank` dimensions is a matrix that `Linear` and
/// `Matrix` load (and so may be held in 16 bits or in blocks): see [`held_value_bytes`].
pub fn is_held_matrix(name: &str, rank: usize) -> bool {
    match super::manifest::component(name) {
        "llm" => rank == 2 && name.ends_with(".weight"),
        "projections" => false,
        _ => rank == 2 && ((name.ends_with(".weight") && !name.contains("embed")) || name.ends_with("in_proj_weight")),
    }
}

/// Bytes the checkpoint tensor `name` occupies on the device when loaded with `dtype`:
/// blocks as stored (with the default precision), else [`held_value_bytes`] per value.
pub fn held_bytes(name: &str, info: &TensorInfo, dtype: WeightDtype) -> u64 {
    if info.dtype.block_format().is_some() && dtype == WeightDtype::Auto {
        return info.byte_len() as u64;
    }
    info.numel() as u64 * held_value_bytes(name, info.dtype, info.shape.len(), dtype)
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(WeightDtype::Auto),
            "f32" | "float32" => Ok(WeightDtype::F32),
            "f16" | "float16" | "half" => Ok(WeightDtype::F16),
            "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
            other => Err(format!("unknown weight dtype {other:?}: expected auto, f32, f16 or bf16")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_stored_half_and_widens_the_rest() {
        assert_eq!(WeightDtype::Auto.half_kind(DType::BF16), Some(HalfKind::Bf16));
        assert_eq!(WeightDtype::Auto.half_kind(DType::F16), Some(HalfKind::F16));
        assert_eq!(WeightDtype::Auto.half_kind(DType::F32), None);
        assert_eq!(WeightDtype::F32.half_kind(DType::BF16), None);
        assert_eq!(WeightDtype::F16.half_kind(DType::F32), Some(HalfKind::F16));
        assert_eq!("BF16".parse::<WeightDtype>(), Ok(WeightDtype::Bf16));
        assert!("f8".parse::<WeightDtype>().unwrap_err().contains("f8"));
    }
}
