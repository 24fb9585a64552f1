//! Element types of stored tensors and a host-side tensor of raw bytes.

use half::{bf16, f16};
use sphinx_shaders::BlockFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U8,
    Bool,
    /// llama.cpp's q8_0 blocks (docs/design.md §10): a [rows, cols] tensor stored as rows
    /// of `cols / 32` blocks of 34 bytes.
    Q8_0,
    /// llama.cpp's q4_0 blocks: rows of `cols / 32` blocks of 18 bytes.
    Q4_0,
}

impl DType {
    /// The block format of a block-quantized dtype.
    pub fn block_format(self) -> Option<BlockFormat> {
        match self {
            DType::Q8_0 => Some(BlockFormat::Q8_0),
            DType::Q4_0 => Some(BlockFormat::Q4_0),
            _ => None,
        }
    }

    /// The dtype of tensors held in `format`'s blocks.
    pub fn of_blocks(format: BlockFormat) -> Self {
        match format {
            BlockFormat::Q8_0 => DType::Q8_0,
            BlockFormat::Q4_0 => DType::Q4_0,
        }
    }

    /// Bytes per element; for the block formats, bytes per block of 32 elements (their
    /// tensors' sizes come from [`TensorInfo::checked_byte_len`]).
    pub fn size(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 => self.block_format().map_or(1, |f| f.block_bytes()),
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bool => 1,
        }
    }

    /// The name in errors and web manifests: the safetensors name, or `Q8_0` / `Q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            DType::Q8_0 => "Q8_0",
            DType::Q4_0 => "Q4_0",
            other => other.safetensors_name(),
        }
    }

    /// Parses [`DType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "Q8_0" => Some(DType::Q8_0),
            "Q4_0" => Some(DType::Q4_0),
            other => Self::from_safetensors_name(other),
        }
    }

    /// The safetensors name (`F32`, `BF16`, ...); block formats are stored as `U8` rows
    /// (their format is named in the file's metadata, `safetensors.rs`).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::Q8_0 | DType::Q4_0 => "U8",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    pub fn from_safetensors_name(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// The storage class names PyTorch pickles (`torch.BFloat16Storage`, ...).
    pub fn from_torch_storage(s: &str) -> Option<Self> {
        Some(match s {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Element count, saturating: every weight source checks at open that its tensors'
    /// sizes fit the file (use [`TensorInfo::checked_byte_len`] on unchecked shapes).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
    /// Bytes, saturating (see [`TensorInfo::numel`]).
    pub fn byte_len(&self) -> usize {
        if self.dtype.block_format().is_some() {
            return self.checked_byte_len().unwrap_or(usize::MAX);
        }
        self.numel().saturating_mul(self.dtype.size())
    }
    /// Bytes, or `None` when the shape's size overflows — or, for a block format, when the
    /// shape is not [rows, a multiple of 32].
    pub fn checked_byte_len(&self) -> Option<usize> {
        match (self.dtype.block_format(), self.shape.as_slice()) {
            (Some(format), &[rows, cols]) => rows.checked_mul(format.row_bytes(cols)?),
            (Some(_), _) => None,
            (None, shape) => shape.iter().try_fold(self.dtype.size(), |n, &d| n.checked_mul(d)),
        }
    }
}

/// One tensor on the host: row-major, little-endian bytes.
#[derive(Debug, Clone)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl HostTensor {
    pub fn info(&self) -> TensorInfo {
        TensorInfo { dtype: self.dtype, shape: self.shape.clone() }
    }

    /// Elements widened to f32 (`None` for non-float dtypes).
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let b = &self.bytes;
        Some(match self.dtype {
            DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::BF16 => b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::F64 => b
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            DType::Q8_0 | DType::Q4_0 => {
                let format = self.dtype.block_format()?;
                if self.info().checked_byte_len() != Some(b.len()) {
                    return None;
                }
                let mut values = vec![0f32; self.info().numel()];
                format.dequantize(b, &mut values);
                values
            }
            _ => return None,
        })
    }

    /// Elements as i64 (`None` for non-integer dtypes).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        let b = &self.bytes;
        Some(match self.dtype {
            DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect(),
            DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            _ => return None,
        })
    }
}
