//! llama.cpp's block-quantized formats q8_0 and q4_0, bit for bit (docs/design.md §10).
//!
//! A row of `cols` values (a multiple of [`BLOCK`]) is cut into blocks of 32; each block
//! is stored as its scale `d` (an f16, little-endian) followed by its quants:
//! - **q8_0** (34 bytes a block): 32 signed bytes `q`, value `q · d`, with
//!   `d = max|x| / 127` and `q = round(x / d)` (halves away from zero);
//! - **q4_0** (18 bytes a block): 16 bytes of nibbles, byte `j` holding value `j` in its
//!   low nibble and value `j + 16` in its high nibble, value `(nibble − 8) · d`, with
//!   `d = m / −8` for `m` the block's value of largest magnitude (the first one on ties),
//!   and `nibble = min(15, trunc(x / d + 8.5))`.
//!
//! The quants are computed with the f32 reciprocal of the unrounded scale and the scale is
//! then rounded to f16, as llama.cpp's reference quantizers (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref` in ggml-quants.c) do, so a row quantized here is byte for byte
//! the row llama.cpp writes into a GGUF file.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use half::f16;

/// Values per block.
pub const BLOCK: usize = 32;

/// Whether rows of `cols` values are whole `u32` words of blocks in every format (an even
/// number of blocks), as [`BlockMatrix`] needs.
pub fn rows_of_whole_words(cols: usize) -> bool {
    cols % (2 * BLOCK) == 0
}

/// A block-quantized format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    Q8_0,
    Q4_0,
}

impl BlockFormat {
    pub const ALL: [BlockFormat; 2] = [BlockFormat::Q8_0, BlockFormat::Q4_0];

    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "q8_0",
            BlockFormat::Q4_0 => "q4_0",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Bytes of one block: the f16 scale and the quants.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 2 + BLOCK,
            BlockFormat::Q4_0 => 2 + BLOCK / 2,
        }
    }

    /// Bytes of a row of `cols` values, `None` unless `cols` is a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        (cols % BLOCK == 0).then(|| cols / BLOCK * self.block_bytes())
    }

    /// q4_0 when `q4`, else q8_0 (the kernels' comptime flag).
    pub fn of_q4(q4: bool) -> Self {
        if q4 {
            BlockFormat::Q4_0
        } else {
            BlockFormat::Q8_0
        }
    }

    /// Values in a row of `row_bytes` bytes of blocks, `None` unless whole blocks.
    pub fn cols_in(self, row_bytes: usize) -> Option<usize> {
        (row_bytes % self.block_bytes() == 0).then(|| row_bytes / self.block_bytes() * BLOCK)
    }

    /// Appends the blocks of `values` (a whole number of blocks) to `out`.
    pub fn quantize(self, values: &[f32], out: &mut Vec<u8>) {
        assert_eq!(values.len() % BLOCK, 0, "{} quantizes whole blocks of {BLOCK} values", self.name());
        for block in values.chunks_exact(BLOCK) {
            match self {
                BlockFormat::Q8_0 => quantize_q8_0(block, out),
                BlockFormat::Q4_0 => quantize_q4_0(block, out),
            }
        }
    }

    /// The values of whole blocks: `bytes` holds `out.len() / 32` blocks.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(out.len() % BLOCK, 0);
        assert_eq!(bytes.len(), out.len() / BLOCK * self.block_bytes(), "{}: block bytes and values disagree", self.name());
        for (block, values) in bytes.chunks_exact(self.block_bytes()).zip(out.chunks_exact_mut(BLOCK)) {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            let quants = &block[2..];
            match self {
                BlockFormat::Q8_0 => {
                    for (v, &q) in values.iter_mut().zip(quants) {
                        *v = f32::from(q as i8) * d;
                    }
                }
                BlockFormat::Q4_0 => {
                    for (j, &q) in quants.iter().enumerate() {
                        values[j] = (i32::from(q & 0x0f) - 8) as f32 * d;
                        values[j + BLOCK / 2] = (i32::from(q >> 4) - 8) as f32 * d;
                    }
                }
            }
        }
    }
}

/// `1 / d`, or 0 for an all-zero block.
fn reciprocal(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

fn quantize_q8_0(block: &[f32], out: &mut Vec<u8>) {
    let mut quants = [0i8; BLOCK];
    let d = q8_0_block(block, &mut quants);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    out.extend(quants.iter().map(|&q| q as u8));
}

/// One block of 32 values as q8_0, as llama.cpp's `quantize_row_q8_0_ref` does: the
/// scale `d = max |v| / 127` (returned in f32; stored as f16) and each quant
/// `roundf(v / d)` into `quants`.
pub(crate) fn q8_0_block(block: &[f32], quants: &mut [i8; BLOCK]) -> f32 {
    // `>` skips NaN, as `f32::max` does.
    let amax = block.iter().fold(0f32, |m, &v| if v.abs() > m { v.abs() } else { m });
    let d = amax / 127.0;
    let id = reciprocal(d);
    for (q, &v) in quants.iter_mut().zip(block) {
        *q = round_half_away(v * id) as i8;
    }
    d
}

/// C's `roundf` (halves away from zero) for |y| < 2²³, as the quants' |v / d| ≤ 127 are,
/// without a library call, so that the loop vectorises: the integer part (truncated
/// toward zero), plus or minus one where the fraction, exact in f32, reaches ±0.5. NaN
/// gives 0, as `NaN as i8` does.
fn round_half_away(y: f32) -> i32 {
    let t = y as i32;
    let fraction = y - t as f32;
    t + i32::from(fraction >= 0.5) - i32::from(fraction <= -0.5)
}

fn quantize_q4_0(block: &[f32], out: &mut Vec<u8>) {
    // The value of largest magnitude, with its sign; the first one on ties.
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in block {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = reciprocal(d);
    out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
    // `as i8` truncates toward zero (and saturates), as C's (int8_t) conversion does here.
    let nibble = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    let half = BLOCK / 2;
    out.extend((0..half).map(|j| nibble(block[j]) | (nibble(block[j + half]) << 4)));
}

/// A [rows, cols] matrix of blocks on the device: each row's blocks as llama.cpp lays
/// them out, read as little-endian `u32` words [rows, row_bytes / 4]. `cols` must be a
/// multiple of 64 (an even number of blocks), so that every row is whole words. On the
/// CPU backend a matrix used for products may instead be `interleaved`: the same bytes
/// of each group of eight rows in the order of `interleaved.rs`.
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    /// [rows, row_bytes / 4], dtype U32.
    pub words: Tensor<2, Int>,
    pub format: BlockFormat,
    /// Rows in the CPU's interleaved groups of eight (only rows of whole groups can be
    /// gathered: use [`crate::dequantize_rows`]).
    pub interleaved: bool,
}

impl BlockMatrix {
    /// From the rows' blocks, row-major (`rows · row_bytes(cols)` bytes). `None` when
    /// `cols` is not a multiple of 64 or the byte count differs.
    pub fn from_blocks(bytes: Vec<u8>, format: BlockFormat, [rows, cols]: [usize; 2], device: &Device) -> Option<Self> {
        if !rows_of_whole_words(cols) || bytes.len() != rows.checked_mul(format.row_bytes(cols)?)? {
            return None;
        }
        let data = TensorData::from_bytes_vec(bytes, [rows, format.row_bytes(cols)? / 4], DType::U32);
        Some(Self { words: Tensor::from_data(data, (device, DType::U32)), format, interleaved: false })
    }

    /// [`Self::from_blocks`] for a matrix used only in products (`x · Wᵀ`), laid out for the
    /// device's kernels: on the CPU backend a matrix of whole groups of eight rows is
    /// interleaved (`interleaved.rs`; its rows cannot be gathered one by one).
    pub fn for_products(bytes: Vec<u8>, format: BlockFormat, [rows, cols]: [usize; 2], device: &Device) -> Option<Self> {
        let on_cpu = crate::is_cpu(device);
        let row_bytes = format.row_bytes(cols).filter(|&r| rows.checked_mul(r) == Some(bytes.len()));
        // Interleaved only where `from_blocks` would take the bytes (whole rows of words).
        match row_bytes.filter(|_| on_cpu && crate::interleaved::fits(rows) && rows_of_whole_words(cols)) {
            Some(row_bytes) => {
                let mixed = crate::interleaved::interleave(&bytes, row_bytes, format);
                Some(Self { interleaved: true, ..Self::from_blocks(mixed, format, [rows, cols], device)? })
            }
            None => Self::from_blocks(bytes, format, [rows, cols], device),
        }
    }

    /// [rows, cols] of the matrix the blocks hold.
    /// Whether [`crate::matvec_blocks`] suits any number of rows of x, not only decoding's
    /// few: interleaved groups on the CPU backend (integer sums, `flex_blocks.rs`) and the
    /// row tiles of a CPU driver's kernel ([`crate::is_cpu_driver`]), both faster there
    /// than widening tiles to f32 for a matmul.
    pub fn multiplies_any_rows(&self) -> bool {
        self.interleaved || crate::is_cpu_driver(&self.words.device())
    }

    pub fn dims(&self) -> [usize; 2] {
        let [rows, words] = self.words.dims();
        [rows, words * 4 / self.format.block_bytes() * BLOCK]
    }

    /// Bytes the matrix occupies on the device.
    pub fn device_bytes(&self) -> usize {
        self.words.shape().num_elements() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `round_half_away` is `f32::round` (C's `roundf`) on the range of quants: every
    /// multiple of 1/8 in ±130 and its neighbours one ulp either side, and NaN.
    #[test]
    fn rounding_without_a_library_call_is_roundf() {
        for k in -1040..=1040 {
            let y = k as f32 / 8.0;
            for v in [y, f32::from_bits(y.to_bits().wrapping_add(1)), f32::from_bits(y.to_bits().wrapping_sub(1)), -y] {
                if v.is_finite() {
                    assert_eq!(round_half_away(v), v.round() as i32, "{v}");
                }
            }
        }
        assert_eq!(round_half_away(f32::NAN) as i8, f32::NAN.round() as i8);
    }

    #[test]
    fn q8_0_rounds_halves_away_from_zero_and_keeps_zero_blocks() {
        let mut block = [0f32; BLOCK];
        block[0] = 127.0; // d = 1
        block[1] = 2.5;
        block[2] = -3.5;
        let mut bytes = Vec::new();
        BlockFormat::Q8_0.quantize(&block, &mut bytes);
        assert_eq!(bytes.len(), 34);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 1.0);
        assert_eq!(&bytes[2..5], &[127u8, 3, (-4i8) as u8]);

        let mut zeros = Vec::new();
        BlockFormat::Q8_0.quantize(&[0.0; BLOCK], &mut zeros);
        assert!(zeros.iter().all(|&b| b == 0));
    }

    #[test]
    fn q4_0_scales_by_the_signed_largest_value() {
        let mut block = [0f32; BLOCK];
        block[3] = -16.0; // the largest magnitude, negative: d = 2, nibble 0
        block[20] = 16.0; // the same magnitude later: +16 / 2 + 8.5 → 16.5 → clamped to 15
        let mut bytes = Vec::new();
        BlockFormat::Q4_0.quantize(&block, &mut bytes);
        assert_eq!(bytes.len(), 18);
        assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32(), 2.0);
        let mut values = [0f32; BLOCK];
        BlockFormat::Q4_0.dequantize(&bytes, &mut values);
        assert_eq!(values[3], -16.0);
        assert_eq!(values[20], 14.0);
        assert_eq!(values[0], 0.0);
    }
}
