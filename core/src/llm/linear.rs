//! The LLM's weight matrices and its bias-free linear layer `y = x · Wᵀ`. A matrix is
//! held in f32, as 16-bit halves packed in u32 words (docs/design.md §9) or as llama.cpp's
//! q8_0 / q4_0 blocks (§10); the layer picks the project's kernels for the packed and
//! block forms and Burn's matmul for f32.

use burn::tensor::{Int, Tensor};
use sphinx_shaders::{dequantize_blocks, dequantize_rows, matvec_blocks, matvec_packed, round_to_q8_0, rows_of_whole_words, unpack_words, BlockMatrix, PackedHalves};

use super::cat_parts;
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

/// At most this many rows (for the LLM: positions per sequence) go through the
/// matrix-vector kernels, which compute each row on its own; longer inputs (prefill)
/// go through [`matmul_widened`], except where the kernels take any number of rows
/// (`multiplies_any_rows`: the CPU backend's bf16 and interleaved blocks, and every
/// packed or block matrix on a CPU driver such as lavapipe or SwiftShader).
const MATVEC_MAX_ROWS: usize = 4;

/// Values of a packed matrix widened to f32 at a time in [`matmul_packed`] (32 MiB): a
/// prefill holds at most one such tile beside the 16-bit model, and tiles this large keep
/// matmul at full speed (4 MiB tiles cost a quarter of the CPU's prefill speed).
pub const WIDEN_TILE_VALUES: usize = 1 << 23;

/// A [rows, cols] weight matrix on the device.
#[derive(Debug, Clone)]
pub enum Matrix {
    /// f32 [rows, cols].
    Dense(Tensor<2>),
    /// f16 or bf16, two per u32 word.
    Packed(PackedHalves),
    /// q8_0 or q4_0 blocks, as stored.
    Blocks(BlockMatrix),
}

impl Matrix {
    /// Loads `name` as `[rows, cols]` in the loader's weight dtype: blocks as stored, else
    /// halves, else f32 (when the columns are odd: halves are packed in pairs; and for
    /// blocks whose rows are not whole words, dequantized). Its rows can be gathered
    /// ([`Self::rows`]).
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, dims: [usize; 2]) -> Result<Self, WeightError> {
        Self::load_as(l, name, dims, false).await
    }

    /// [`Self::load`] for a weight only multiplied with: blocks may take the device
    /// kernels' own layout (on the CPU, interleaved groups of eight rows), whose rows
    /// [`Self::rows`] cannot gather.
    pub async fn load_for_products<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, dims: [usize; 2]) -> Result<Self, WeightError> {
        Self::load_as(l, name, dims, true).await
    }

    async fn load_as<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, [rows, cols]: [usize; 2], for_products: bool) -> Result<Self, WeightError> {
        if let Some(format) = l.block_format_of(name).filter(|_| rows_of_whole_words(cols)) {
            return Ok(Matrix::Blocks(l.blocks(name, [rows, cols], format, for_products).await?));
        }
        match l.half_kind_of(name).filter(|_| cols % 2 == 0) {
            Some(kind) => Ok(Matrix::Packed(l.halves(name, [rows, cols], kind).await?)),
            None => Ok(Matrix::Dense(l.tensor(name, [rows, cols]).await?)),
        }
    }

    pub fn dims(&self) -> [usize; 2] {
        match self {
            Matrix::Dense(w) => w.dims(),
            Matrix::Packed(p) => p.dims(),
            Matrix::Blocks(b) => b.dims(),
        }
    }

    /// Rows `ids` as f32 [ids, cols] (an embedding lookup). Not for a matrix loaded
    /// [`for products`](Self::load_for_products).
    pub fn rows(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        match self {
            Matrix::Dense(w) => w.clone().select(0, ids),
            Matrix::Packed(p) => unpack_words(p.words.clone().select(0, ids), p.kind),
            Matrix::Blocks(b) => {
                assert!(!b.interleaved, "Matrix::rows: a matrix in interleaved groups was loaded for products only");
                dequantize_blocks(b.words.clone().select(0, ids), b.format)
            }
        }
    }

    /// How the values are held: `f32`, `f16`, `bf16`, `q8_0` or `q4_0`.
    pub fn format_name(&self) -> &'static str {
        match self {
            Matrix::Dense(_) => "f32",
            Matrix::Packed(p) => p.kind.name(),
            Matrix::Blocks(b) => b.format.name(),
        }
    }

    /// Bytes on the device.
    pub fn device_bytes(&self) -> usize {
        match self {
            Matrix::Dense(w) => w.shape().num_elements() * 4,
            Matrix::Packed(p) => p.device_bytes(),
            Matrix::Blocks(b) => b.device_bytes(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Linear {
    /// weight: [out, in]
    pub weight: Matrix,
}

impl Linear {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, name: &str, out: usize, inp: usize) -> Result<Self, WeightError> {
        Ok(Self { weight: Matrix::load_for_products(l, name, [out, inp]).await? })
    }

    /// Bytes of the weight on the device.
    pub fn device_bytes(&self) -> usize {
        self.weight.device_bytes()
    }

    /// A layer over an f32 weight [out, in].
    pub fn dense(weight: Tensor<2>) -> Self {
        Self { weight: Matrix::Dense(weight) }
    }

    /// x: [..., in] → [..., out]
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let y = self.rows(x.reshape([rows, dims[D - 1]]), rows <= MATVEC_MAX_ROWS);
        let mut out = dims;
        out[D - 1] = self.weight.dims()[0];
        y.reshape(out)
    }

    /// The LLM's projection of a batch of sequences: x [B, S, in], each of the B
    /// sequences feeding S positions → [B, S, out]. Each sequence's rows are computed
    /// exactly as if it were alone (a decoding step of many sequences gives each the
    /// numbers a single-sequence step gives it, docs/design.md §11): S ≤ 4 positions go
    /// through the matrix-vector kernels, which compute every row on its own, and f32
    /// weights multiply each sequence separately.
    pub fn forward_seq(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, inp] = x.dims();
        let out = self.weight.dims()[0];
        let matvec = s <= MATVEC_MAX_ROWS;
        let y = match &self.weight {
            Matrix::Dense(_) if b > 1 => {
                let parts = (0..b).map(|i| self.rows(x.clone().narrow(0, i, 1).reshape([s, inp]), matvec)).collect();
                cat_parts(parts, 0)
            }
            _ => self.rows(x.reshape([b * s, inp]), matvec),
        };
        y.reshape([b, s, out])
    }

    /// x [rows, in] · Wᵀ → [rows, out]; `matvec`: through the matrix-vector kernels.
    fn rows(&self, x: Tensor<2>, matvec: bool) -> Tensor<2> {
        match &self.weight {
            Matrix::Dense(w) => x.matmul(w.clone().transpose()),
            // bf16 on the CPU: pairs of bf16 products for any number of rows; on a CPU driver
            // (lavapipe, SwiftShader): rows in register tiles (docs/design.md §9).
            Matrix::Packed(w) if matvec || w.multiplies_any_rows() => matvec_packed(x, w),
            Matrix::Packed(w) => matmul_widened(x, w.dims(), |start, len| unpack_words(w.words.clone().narrow(0, start, len), w.kind)),
            // Interleaved blocks (the CPU's layout) sum integers for any number of rows,
            // faster than widening to f32 for a matmul (docs/design.md §10), as do a CPU
            // driver's row tiles (§9).
            Matrix::Blocks(w) if matvec || w.multiplies_any_rows() => matvec_blocks(x, w),
            // x rounded to q8_0 as the block kernels round it (docs/design.md §9).
            Matrix::Blocks(w) => matmul_widened(round_to_q8_0(x), w.dims(), |start, len| dequantize_rows(w, start, len)),
        }
    }
}

/// x [rows, in] · Wᵀ for many rows, W [out, in] packed or in blocks: `widen(start, len)`
/// gives rows `start..start + len` of W in f32, a tile at a time, each multiplied with
/// Burn's matmul, so a prefill never holds more than one tile of f32 weights beside the
/// 16- or fewer-bit model. → [rows, out]
fn matmul_widened(x: Tensor<2>, [out, inp]: [usize; 2], widen: impl Fn(usize, usize) -> Tensor<2>) -> Tensor<2> {
    let tile = (WIDEN_TILE_VALUES / inp.max(1)).clamp(1, out.max(1));
    let parts: Vec<Tensor<2>> = (0..out)
        .step_by(tile)
        .map(|start| {
            let len = tile.min(out - start);
            x.clone().matmul(widen(start, len).transpose()) // [rows, len]
        })
        .collect();
    cat_parts(parts, 1)
}
