//! CubeCL kernels that read llama.cpp's q8_0 and q4_0 blocks (`blocks.rs`) straight from
//! `u32` words: a block starts on an even byte, so its f16 scale is one half of a word,
//! and its quants are bytes taken out of words with shifts (core WGSL has no 8- or
//! 16-bit loads). Blocks go in pairs, which are whole words (rows hold an even number of
//! blocks), each word loaded once. `q4` selects q4_0 (18-byte blocks) over q8_0 (34-byte
//! blocks).

use cubecl::prelude::*;

use crate::kernels::{global_index, half_to_f32, row_or_last, write_tile, zeros};

/// Words of quants in one block: 16 bytes in q4_0, 32 in q8_0. A pair of blocks is
/// `2 · quant_words + 1` words (two 2-byte scales fill the odd one).
const fn quant_words(q4: bool) -> usize {
    if q4 { 4 } else { 8 }
}

/// Byte `i` (0..4) of word `q`.
#[cube]
fn byte_of(q: u32, #[comptime] i: usize) -> u32 {
    (q >> comptime!((i * 8) as u32)) & 0xFFu32
}

/// A q4_0 byte's low value (its value `j`; the high nibble is value `j + 16`), minus 8.
#[cube]
fn low_nibble(b: u32) -> f32 {
    f32::cast_from(b & 0xFu32) - 8.0f32
}

/// A q4_0 byte's high value, minus 8.
#[cube]
fn high_nibble(b: u32) -> f32 {
    f32::cast_from(b >> 4u32) - 8.0f32
}

/// A q8_0 byte as the signed value it holds.
#[cube]
fn signed_byte(b: u32) -> f32 {
    f32::cast_from(b) - select(b > 127u32, 256.0f32, 0.0f32)
}

/// Where x's values for one unit's rows start: row `first + i` of x (or its last row,
/// see `row_or_last`), `inp` values a row.
#[derive(CubeType, Clone, Copy)]
struct XRows {
    first: usize,
    n_rows: usize,
    inp: usize,
}

#[cube]
impl XRows {
    /// The index of x's value `j` in the unit's row `i`.
    fn at(&self, i: usize, j: usize) -> usize {
        row_or_last(self.first, i, self.n_rows) * self.inp + j
    }
}

/// `s[i·outputs + u]` plus row i of x times the values of word `q[u]` of quant bytes,
/// for each of the unit's `rows` rows of x and `outputs` rows of W: byte `b` holds value
/// `j = b` (q8_0: signed) or values `j = b` (low nibble) and `j = b + 16` (high nibble;
/// q4_0, both minus 8), x's value `j` at `xj + j` of its row. Each value of x is loaded
/// once for all the outputs, each quant taken out of its word once for all the rows.
#[cube]
fn word_dots(x: &Tensor<f32>, xr: &XRows, xj: usize, q: &Array<u32>, s: &mut Array<f32>, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let mut low = Array::<f32>::new(rows);
    let mut high = Array::<f32>::new(rows);
    #[unroll]
    for b in 0..4usize {
        #[unroll]
        for i in 0..rows {
            low[i] = x[xr.at(i, xj + b)];
            if comptime!(q4) {
                high[i] = x[xr.at(i, xj + b + 16)];
            }
        }
        #[unroll]
        for u in 0..outputs {
            let byte = byte_of(q[u], b);
            if comptime!(q4) {
                let (lv, hv) = (low_nibble(byte), high_nibble(byte));
                #[unroll]
                for i in 0..rows {
                    s[i * outputs + u] += low[i] * lv;
                    s[i * outputs + u] += high[i] * hv;
                }
            } else {
                let v = signed_byte(byte);
                #[unroll]
                for i in 0..rows {
                    s[i * outputs + u] += low[i] * v;
                }
            }
        }
    }
}

/// `acc[i·outputs + u]` plus row i of x dotted with two consecutive blocks of row u of
/// the unit's `outputs` rows of W (row u's pair starts at word `base + u · words`; a pair
/// is 9 words in q4_0, 17 in q8_0: each block's scale, then its quants), x's values from
/// `xb` in its row (64 of them). Each block's quants are summed against x first, then
/// scaled once (as llama.cpp's dot products do), and the two added to `acc` in order.
/// Every word is loaded once: the first block's quants straddle words (they start at
/// byte 2), the second's are whole.
#[cube]
fn block_pair_dots(
    x: &Tensor<f32>,
    xr: &XRows,
    xb: usize,
    w: &Tensor<u32>,
    base: usize,
    words: usize,
    acc: &mut Array<f32>,
    #[comptime] q4: bool,
    #[comptime] outputs: usize,
    #[comptime] rows: usize,
) {
    let n = comptime!(quant_words(q4));
    let mut first = Array::<u32>::new(outputs);
    let mut prev = Array::<u32>::new(outputs);
    let mut q = Array::<u32>::new(outputs);
    let mut s = zeros(comptime!(rows * outputs));
    #[unroll]
    for u in 0..outputs {
        first[u] = w[base + u * words];
        prev[u] = first[u];
    }
    for m in 0..n {
        #[unroll]
        for u in 0..outputs {
            let next = w[base + u * words + 1 + m];
            q[u] = (prev[u] >> 16u32) | (next << 16u32);
            prev[u] = next;
        }
        word_dots(x, xr, xb + 4 * m, &q, &mut s, q4, outputs, rows);
    }
    #[unroll]
    for u in 0..outputs {
        let d = half_to_f32(first[u] & 0xFFFFu32, false);
        #[unroll]
        for i in 0..rows {
            acc[i * outputs + u] += s[i * outputs + u] * d;
            s[i * outputs + u] = 0.0f32;
        }
    }
    // `prev[u]` is word n of the pair: its high half is the second block's scale.
    for m in 0..n {
        #[unroll]
        for u in 0..outputs {
            q[u] = w[base + u * words + n + 1 + m];
        }
        word_dots(x, xr, xb + 32 + 4 * m, &q, &mut s, q4, outputs, rows);
    }
    #[unroll]
    for u in 0..outputs {
        let d = half_to_f32(prev[u] >> 16u32, false);
        #[unroll]
        for i in 0..rows {
            acc[i * outputs + u] += s[i * outputs + u] * d;
        }
    }
}

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W's rows as blocks, w [out, words] (rows of an
/// even number of blocks: whole words, `blocks::rows_of_whole_words`). Each unit computes
/// `outputs` consecutive outputs (n_out a multiple of it; the first o = unit · outputs
/// over the cubes' x and y) for tiles of `rows` consecutive rows of x (as
/// `matvec_packed_kernel`), its W rows' blocks in order, two at a time, so every value is
/// the same whatever `rows` is; without shared memory or barriers.
#[cube(launch_unchecked)]
pub fn matvec_blocks_kernel(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let o = global_index() * outputs;
    if o < w.shape(0) {
        let mut r = CUBE_POS_Z as usize * rows;
        while r < x.shape(0) {
            blocks_tile(x, w, out, o, r, q4, outputs, rows);
            r += CUBE_COUNT_Z as usize * rows;
        }
    }
}

/// [`matvec_blocks_kernel`]'s outputs `o..o + outputs` for rows `r..r + rows` of x.
#[cube]
fn blocks_tile(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, o: usize, r: usize, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let words = w.shape(1);
    let n_rows = x.shape(0);
    let pair_words = comptime!(2 * quant_words(q4) + 1);
    let pairs = words / pair_words;
    let xr = XRows { first: r, n_rows, inp: pairs * 64 };
    let mut acc = zeros(comptime!(rows * outputs));
    for k in 0..pairs {
        block_pair_dots(x, &xr, k * 64, w, o * words + k * pair_words, words, &mut acc, q4, outputs, rows);
    }
    write_tile(out, &acc, o, r, n_rows, outputs, rows);
}

/// The values of word `q` of a block's quant bytes (the block's scale `d`) into
/// `out[oj..]`, as [`word_dots`] reads them: byte `i` gives value `i` (q8_0, signed), or
/// values `i` (low nibble) and `i + 16` (high nibble; q4_0, both minus 8).
#[cube]
fn word_values(q: u32, d: f32, out: &mut Tensor<f32>, oj: usize, #[comptime] q4: bool) {
    #[unroll]
    for i in 0..4usize {
        let b = byte_of(q, i);
        if comptime!(q4) {
            out[oj + i] = low_nibble(b) * d;
            out[oj + i + 16] = high_nibble(b) * d;
        } else {
            out[oj + i] = signed_byte(b) * d;
        }
    }
}

/// The blocks' values: w [rows, words] → out [rows, cols], one unit per pair of blocks
/// (over all rows; a pair is whole words, as in [`block_pair_dots`], each loaded once),
/// writing its 64 values.
#[cube(launch_unchecked)]
pub fn dequantize_blocks_kernel(w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] q4: bool) {
    let words = w.shape(1);
    let n = comptime!(quant_words(q4));
    let pair_words = comptime!(2 * n + 1);
    let per_row = words / pair_words;
    let i = global_index();
    if i < w.shape(0) * per_row {
        let base = (i / per_row) * words + (i % per_row) * pair_words;
        // Pair i's values are out[64·i ..]: rows of out are `per_row` pairs long.
        let o = i * 64;
        let first = w[base];
        let d = half_to_f32(first & 0xFFFFu32, false);
        let mut prev = first;
        #[unroll]
        for m in 0..n {
            let next = w[base + 1 + m];
            word_values((prev >> 16u32) | (next << 16u32), d, out, o + 4 * m, q4);
            prev = next;
        }
        // `prev` is word n: its high half is the second block's scale.
        let d2 = half_to_f32(prev >> 16u32, false);
        #[unroll]
        for m in 0..n {
            word_values(w[base + n + 1 + m], d2, out, o + 32 + 4 * m, q4);
        }
    }
}
