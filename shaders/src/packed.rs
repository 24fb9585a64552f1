//! A half-precision matrix on the device as `u32` words, two halves per word.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use half::{bf16, f16};

/// Which 16-bit float the words hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HalfKind {
    /// IEEE binary16: 5 exponent bits, 10 mantissa bits.
    F16,
    /// bfloat16: f32's 8 exponent bits, 7 mantissa bits (the top half of an f32).
    Bf16,
}

impl HalfKind {
    pub fn name(self) -> &'static str {
        match self {
            HalfKind::F16 => "f16",
            HalfKind::Bf16 => "bf16",
        }
    }

    /// The 16-bit pattern nearest to `v` (round to nearest even, as torch's `.to()` does).
    pub fn bits_of(self, v: f32) -> u16 {
        match self {
            HalfKind::F16 => f16::from_f32(v).to_bits(),
            HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
        }
    }

    /// The value of a 16-bit pattern.
    pub fn value_of(self, bits: u16) -> f32 {
        match self {
            HalfKind::F16 => f16::from_bits(bits).to_f32(),
            HalfKind::Bf16 => bf16::from_bits(bits).to_f32(),
        }
    }
}

/// A [rows, cols] matrix of halves (cols even) stored as [rows, cols/2] `u32` words;
/// word `c` holds column `2c` in its low 16 bits and `2c + 1` in its high 16 bits.
#[derive(Debug, Clone)]
pub struct PackedHalves {
    /// [rows, cols / 2], dtype U32.
    pub words: Tensor<2, Int>,
    pub kind: HalfKind,
    /// bf16 on the CPU backend: multiply by x rounded to bf16, as PyTorch's bf16 and
    /// llama.cpp do (`flex_bf16.rs`), instead of x kept in f32 (`flex_halves.rs`): about
    /// 1.7× the prefill speed on AVX512-BF16 CPUs, answers that may differ from the f32 path's.
    pub round_x: bool,
}

impl PackedHalves {
    /// From the halves' little-endian bytes, row-major (as checkpoints store them).
    /// `None` when `cols` is odd or the byte count is not `rows · cols · 2`.
    pub fn from_le_bytes(bytes: Vec<u8>, kind: HalfKind, [rows, cols]: [usize; 2], device: &Device) -> Option<Self> {
        let expected = rows.checked_mul(cols)?.checked_mul(2)?;
        if cols % 2 != 0 || bytes.len() != expected {
            return None;
        }
        let data = TensorData::from_bytes_vec(bytes, [rows, cols / 2], DType::U32);
        // The dtype must be given: without it Burn converts to its default int (i32).
        Some(Self { words: Tensor::from_data(data, (device, DType::U32)), kind, round_x: false })
    }

    /// From f32 values, each rounded to the nearest half. `None` as for [`Self::from_le_bytes`].
    pub fn from_f32(values: &[f32], kind: HalfKind, shape: [usize; 2], device: &Device) -> Option<Self> {
        let bytes = values.iter().flat_map(|&v| kind.bits_of(v).to_le_bytes()).collect();
        Self::from_le_bytes(bytes, kind, shape, device)
    }

    /// The matrix with [`Self::round_x`] set to `round_x`.
    pub fn with_x_rounded(self, round_x: bool) -> Self {
        Self { round_x, ..self }
    }

    /// [rows, cols] of the matrix the words hold.
    pub fn dims(&self) -> [usize; 2] {
        let [rows, words] = self.words.dims();
        [rows, 2 * words]
    }

    /// Whether [`crate::matvec_packed`] suits any number of rows of x, not only decoding's
    /// few: on the CPU backend, whose products widen each weight in a register
    /// (`flex_halves.rs`) instead of widening tiles to f32 for a matmul, and on a CPU
    /// driver, whose kernel then takes rows in tiles ([`crate::is_cpu_driver`]).
    pub fn multiplies_any_rows(&self) -> bool {
        let device = self.words.device();
        crate::is_cpu(&device) || crate::is_cpu_driver(&device)
    }

    /// Bytes the matrix occupies on the device.
    pub fn device_bytes(&self) -> usize {
        let [rows, cols] = self.dims();
        rows * cols * 2
    }
}
