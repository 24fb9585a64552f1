//! CubeCL kernels that read llama.cpp's q8_0 and q4_0 blocks (`blocks.rs`) straight from
//! `u32` words: a block starts on an even byte, so its f16 scale is one half of a word,
//! and its quants are taken out of words by multiplications and masks (core WGSL has no
//! 8- or 16-bit loads; no shifts, see [`field_at_top`]). Blocks go in pairs, which are
//! whole words (rows hold an even number of blocks), each word loaded once. `q4` selects
//! q4_0 (18-byte blocks) over q8_0 (34-byte blocks). The products take x rounded to q8_0
//! blocks (`rounded_x.rs`), its quants four to a word, as the CPU backend and llama.cpp do.

use cubecl::prelude::*;

use crate::kernels::{global_index, high_half_to_f32, low_half_to_f32, row_or_last, write_tile, zeros};

/// Words of quants in one block: 16 bytes in q4_0, 32 in q8_0. A pair of blocks is
/// `2 · quant_words + 1` words (two 2-byte scales fill the odd one).
const fn quant_words(q4: bool) -> usize {
    if q4 { 4 } else { 8 }
}

/// Field `k` of `bits`-bit fields (bits `k·bits ..`) of `word`, moved to the top of the
/// word by a multiplication, masked, and read as a signed (two's complement) number
/// times 2^(32 − bits): exact in f32. No shifts: SwiftShader's JIT splits a shift by a
/// constant into per-lane scalar code, where multiplications, masks and i32 conversions
/// stay 4-wide (docs/design.md §9, "Kernels for SwiftShader").
#[cube]
pub(crate) fn field_at_top(word: u32, #[comptime] k: usize, #[comptime] bits: usize) -> f32 {
    let top_shift = comptime!(32 - bits - k * bits);
    let mask = comptime!(((1u64 << bits) - 1) << (32 - bits)) as u32;
    let at_top = if comptime!(top_shift == 0) { word } else { word * comptime!(1u32 << top_shift) };
    f32::cast_from(i32::cast_from(at_top & mask))
}

/// q4_0 nibbles `n` (0..15) flipped to `n ^ 8`, whose two's complement reading is `n − 8`
/// (the value the nibble stands for) as [`field_at_top`] reads it.
const Q4_FLIP: u32 = 0x8888_8888;

/// 2^(bits − 32), undoing [`field_at_top`]'s scale: q4_0's 2⁻²⁸, q8_0's 2⁻²⁴.
#[cube]
pub(crate) fn field_unscale(#[comptime] q4: bool) -> f32 {
    f32::reinterpret(comptime!(if q4 { 0x3180_0000u32 } else { 0x3380_0000u32 }))
}

/// 2^(bits − 32) · 2⁻²⁴, undoing [`field_at_top`]'s scales of a weight's quant and an
/// x quant in their product: q4_0's 2⁻⁵², q8_0's 2⁻⁴⁸.
#[cube]
fn product_unscale(#[comptime] q4: bool) -> f32 {
    f32::reinterpret(comptime!(if q4 { 0x2580_0000u32 } else { 0x2780_0000u32 }))
}

/// One unit's rows of x rounded to q8_0 (`rounded_x.rs`): row `first + i` (or the last
/// row, see `row_or_last`) of xq [rows, words] (quants four to a word) and xd
/// [rows, blocks] (a scale per block, `blocks = words / 8`).
#[derive(CubeType, Clone, Copy)]
struct XRows {
    first: usize,
    n_rows: usize,
    words: usize,
    blocks: usize,
}

#[cube]
impl XRows {
    /// The index in xq of word `m` of the unit's row `i`.
    fn word(&self, i: usize, m: usize) -> usize {
        row_or_last(self.first, i, self.n_rows) * self.words + m
    }

    /// The index in xd of block `k`'s scale in the unit's row `i`.
    fn block(&self, i: usize, k: usize) -> usize {
        row_or_last(self.first, i, self.n_rows) * self.blocks + k
    }
}

/// `s[i·outputs + u]` plus row i of x times the values of one word of quant bytes per
/// output u, for each of the unit's `rows` rows of x and `outputs` rows of W, all as
/// integers moved up by [`field_at_top`] (a product's scale is [`product_unscale`]): the
/// word is bytes `skip..skip + 4` of the pair `lo[u]`, `hi[u]` (q4_0 words flipped by
/// [`Q4_FLIP`]); its byte `b` holds value `j = b` (q8_0: signed) or values `j = b` (low
/// nibble) and `j = b + 16` (high nibble; q4_0, both minus 8), x's quant `j` in byte `b`
/// of its word `xw` (and `xw + 4` for `j = b + 16`). Products of such integers and their
/// sums over a block are exact in f32 (at most 15 significant bits). Each word of x is
/// loaded once for all the outputs, each quant taken out of its word once for all the rows.
#[cube]
#[allow(clippy::too_many_arguments)]
fn word_dots(xq: &Tensor<u32>, xr: &XRows, xw: usize, lo: &Array<u32>, hi: &Array<u32>, s: &mut Array<f32>, #[comptime] skip: usize, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let mut low_word = Array::<u32>::new(rows);
    let mut high_word = Array::<u32>::new(rows);
    #[unroll]
    for i in 0..rows {
        low_word[i] = xq[xr.word(i, xw)];
        if comptime!(q4) {
            high_word[i] = xq[xr.word(i, xw + 4)];
        }
    }
    let mut low = Array::<f32>::new(rows);
    let mut high = Array::<f32>::new(rows);
    #[unroll]
    for b in 0..4usize {
        #[unroll]
        for i in 0..rows {
            low[i] = field_at_top(low_word[i], b, 8usize);
            if comptime!(q4) {
                high[i] = field_at_top(high_word[i], b, 8usize);
            }
        }
        // Byte b of the word is byte `at` of lo (or, past its end, of hi).
        let at = comptime!((b + skip) % 4);
        #[unroll]
        for u in 0..outputs {
            let word = if comptime!(b + skip < 4) { lo[u] } else { hi[u] };
            if comptime!(q4) {
                let (lv, hv) = (field_at_top(word, comptime!(2 * at), 4usize), field_at_top(word, comptime!(2 * at + 1), 4usize));
                #[unroll]
                for i in 0..rows {
                    s[i * outputs + u] += low[i] * lv;
                    s[i * outputs + u] += high[i] * hv;
                }
            } else {
                let v = field_at_top(word, at, 8usize);
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
/// is 9 words in q4_0, 17 in q8_0: each block's scale, then its quants), x's blocks `xb`
/// and `xb + 1` of its row. Each block's quants are summed against x's first, exactly,
/// then scaled once by the product of the two blocks' scales (as llama.cpp's dot
/// products do), and the two added to `acc` in order. Every word is loaded once: the
/// first block's quants straddle words (they start at byte 2), the second's are whole.
#[cube]
#[allow(clippy::too_many_arguments)]
fn block_pair_dots(
    xq: &Tensor<u32>,
    xd: &Tensor<f32>,
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
    let flip = comptime!(if q4 { Q4_FLIP } else { 0u32 });
    let mut scales = Array::<u32>::new(outputs);
    let mut lo = Array::<u32>::new(outputs);
    let mut hi = Array::<u32>::new(outputs);
    let mut s = zeros(comptime!(rows * outputs));
    let mut dx = Array::<f32>::new(rows);
    #[unroll]
    for i in 0..rows {
        dx[i] = xd[xr.block(i, xb)];
    }
    #[unroll]
    for u in 0..outputs {
        scales[u] = w[base + u * words];
        hi[u] = scales[u] ^ flip;
    }
    for m in 0..n {
        #[unroll]
        for u in 0..outputs {
            lo[u] = hi[u];
            hi[u] = w[base + u * words + 1 + m] ^ flip;
        }
        word_dots(xq, xr, xb * 8 + m, &lo, &hi, &mut s, 2usize, q4, outputs, rows);
    }
    #[unroll]
    for u in 0..outputs {
        let d = low_half_to_f32(scales[u], false) * product_unscale(q4);
        // `hi[u]` is word n of the pair (flipped back): its high half is the second block's scale.
        scales[u] = hi[u] ^ flip;
        #[unroll]
        for i in 0..rows {
            acc[i * outputs + u] += s[i * outputs + u] * (d * dx[i]);
            s[i * outputs + u] = 0.0f32;
        }
    }
    #[unroll]
    for i in 0..rows {
        dx[i] = xd[xr.block(i, xb + 1)];
    }
    for m in 0..n {
        #[unroll]
        for u in 0..outputs {
            hi[u] = w[base + u * words + n + 1 + m] ^ flip;
        }
        word_dots(xq, xr, (xb + 1) * 8 + m, &hi, &hi, &mut s, 0usize, q4, outputs, rows);
    }
    #[unroll]
    for u in 0..outputs {
        let d = high_half_to_f32(scales[u], false) * product_unscale(q4);
        #[unroll]
        for i in 0..rows {
            acc[i * outputs + u] += s[i * outputs + u] * (d * dx[i]);
        }
    }
}

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W's rows as blocks, w [out, words] (rows of an
/// even number of blocks: whole words, `blocks::rows_of_whole_words`), x rounded to q8_0
/// as xq [rows, in / 4] and xd [rows, in / 32] (`rounded_x.rs`). Each unit computes
/// `outputs` consecutive outputs (n_out a multiple of it; the first o = unit · outputs
/// over the cubes' x and y) for tiles of `rows` consecutive rows of x (as
/// `matvec_packed_kernel`), its W rows' blocks in order, two at a time, so every value is
/// the same whatever `rows` is; without shared memory or barriers.
#[cube(launch_unchecked)]
pub fn matvec_blocks_kernel(xq: &Tensor<u32>, xd: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let o = global_index() * outputs;
    if o < w.shape(0) {
        let mut r = CUBE_POS_Z as usize * rows;
        while r < xq.shape(0) {
            blocks_tile(xq, xd, w, out, o, r, q4, outputs, rows);
            r += CUBE_COUNT_Z as usize * rows;
        }
    }
}

/// [`matvec_blocks_kernel`]'s outputs `o..o + outputs` for rows `r..r + rows` of x.
#[cube]
#[allow(clippy::too_many_arguments)]
fn blocks_tile(xq: &Tensor<u32>, xd: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, o: usize, r: usize, #[comptime] q4: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let words = w.shape(1);
    let n_rows = xq.shape(0);
    let pair_words = comptime!(2 * quant_words(q4) + 1);
    let pairs = words / pair_words;
    let xr = XRows { first: r, n_rows, words: pairs * 16, blocks: pairs * 2 };
    let mut acc = zeros(comptime!(rows * outputs));
    for k in 0..pairs {
        block_pair_dots(xq, xd, &xr, 2 * k, w, o * words + k * pair_words, words, &mut acc, q4, outputs, rows);
    }
    write_tile(out, &acc, o, r, n_rows, outputs, rows);
}

/// The values of one word of a block's quant bytes (the block's scale `d`) into
/// `out[oj..]`, the word taken as [`word_dots`] takes it (bytes `skip..skip + 4` of `lo`,
/// `hi`, q4_0 flipped): byte `b` gives value `b` (q8_0, signed), or values `b` (low
/// nibble) and `b + 16` (high nibble; q4_0, both minus 8).
#[cube]
#[allow(clippy::too_many_arguments)]
fn word_values(lo: u32, hi: u32, d: f32, out: &mut Tensor<f32>, oj: usize, #[comptime] skip: usize, #[comptime] q4: bool) {
    let unscale = field_unscale(q4);
    #[unroll]
    for b in 0..4usize {
        let at = comptime!((b + skip) % 4);
        let word = if comptime!(b + skip < 4) { lo } else { hi };
        if comptime!(q4) {
            out[oj + b] = field_at_top(word, comptime!(2 * at), 4usize) * unscale * d;
            out[oj + b + 16] = field_at_top(word, comptime!(2 * at + 1), 4usize) * unscale * d;
        } else {
            out[oj + b] = field_at_top(word, at, 8usize) * unscale * d;
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
    let flip = comptime!(if q4 { Q4_FLIP } else { 0u32 });
    let pair_words = comptime!(2 * n + 1);
    let per_row = words / pair_words;
    let i = global_index();
    if i < w.shape(0) * per_row {
        let base = (i / per_row) * words + (i % per_row) * pair_words;
        // Pair i's values are out[64·i ..]: rows of out are `per_row` pairs long.
        let o = i * 64;
        let first = w[base];
        let d = low_half_to_f32(first, false);
        let mut prev = first ^ flip;
        #[unroll]
        for m in 0..n {
            let next = w[base + 1 + m] ^ flip;
            word_values(prev, next, d, out, o + 4 * m, 2usize, q4);
            prev = next;
        }
        // `prev` is word n (flipped back): its high half is the second block's scale.
        let d2 = high_half_to_f32(prev ^ flip, false);
        #[unroll]
        for m in 0..n {
            let word = w[base + n + 1 + m] ^ flip;
            word_values(word, word, d2, out, o + 32 + 4 * m, 0usize, q4);
        }
    }
}
