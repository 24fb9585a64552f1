//! CubeCL kernels that read llama.cpp's q8_0 and q4_0 blocks (`blocks.rs`) straight from
//! `u32` words: a block starts on an even byte, so its f16 scale is one half of a word,
//! and its quants are bytes taken out of words with shifts (core WGSL has no 8- or
//! 16-bit loads). `q4` selects q4_0 (18-byte blocks) over q8_0 (34-byte blocks).

use cubecl::prelude::*;

use crate::kernels::{global_index, half_to_f32};

/// Bytes of one block.
#[cube]
fn block_bytes(#[comptime] q4: bool) -> usize {
    if comptime!(q4) { 18usize } else { 34usize }
}

/// Byte `b` of the little-endian words starting at word `base`.
#[cube]
fn byte_at(w: &Tensor<u32>, base: usize, b: usize) -> u32 {
    (w[base + b / 4] >> (((b % 4) * 8) as u32)) & 0xFFu32
}

/// The scale of the block starting at (even) byte `b` of the row at word `base`.
#[cube]
fn block_scale(w: &Tensor<u32>, base: usize, b: usize) -> f32 {
    half_to_f32((w[base + b / 4] >> (((b % 4) * 8) as u32)) & 0xFFFFu32, false)
}

/// Quant `j` (0..32) of a q8_0 block at byte `b`, as a signed value.
#[cube]
fn q8_value(w: &Tensor<u32>, base: usize, b: usize, j: usize) -> f32 {
    let q = byte_at(w, base, b + 2 + j);
    f32::cast_from(q) - select(q > 127u32, 256.0f32, 0.0f32)
}

/// Σ_j x[xb + j] · value_j over the block at byte `b` of the row at word `base`: the
/// quants summed against x first, then scaled once (as llama.cpp's dot products do).
#[cube]
fn block_dot(x: &Tensor<f32>, xb: usize, w: &Tensor<u32>, base: usize, b: usize, #[comptime] q4: bool) -> f32 {
    let mut s = 0.0f32;
    if comptime!(q4) {
        for j in 0..16usize {
            let q = byte_at(w, base, b + 2 + j);
            s += x[xb + j] * (f32::cast_from(q & 0xFu32) - 8.0f32);
            s += x[xb + j + 16] * (f32::cast_from(q >> 4u32) - 8.0f32);
        }
    } else {
        for j in 0..32usize {
            s += x[xb + j] * q8_value(w, base, b, j);
        }
    }
    s * block_scale(w, base, b)
}

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W's rows as blocks, w [out, words]. One unit
/// per output (o over the cubes' x and y, r = CUBE_POS_Z), its row's blocks in order,
/// without shared memory or barriers (as `matvec_packed_kernel`).
#[cube(launch_unchecked)]
pub fn matvec_blocks_kernel(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] q4: bool) {
    let n_out = w.shape(0);
    let words = w.shape(1);
    let o = global_index();
    if o < n_out {
        let r = CUBE_POS_Z as usize;
        let bb = block_bytes(q4);
        let blocks = words * 4 / bb;
        let x_row = r * blocks * 32;
        let mut acc = 0.0f32;
        for k in 0..blocks {
            acc += block_dot(x, x_row + k * 32, w, o * words, k * bb, q4);
        }
        out[r * n_out + o] = acc;
    }
}

/// The blocks' values: w [rows, words] → out [rows, cols], one unit per block (over all
/// rows), writing its 32 values.
#[cube(launch_unchecked)]
pub fn dequantize_blocks_kernel(w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] q4: bool) {
    let words = w.shape(1);
    let bb = block_bytes(q4);
    let per_row = words * 4 / bb;
    let i = global_index();
    if i < w.shape(0) * per_row {
        let base = (i / per_row) * words;
        let b = (i % per_row) * bb;
        let d = block_scale(w, base, b);
        // Block i's values are out[32·i ..]: rows of out are `per_row` blocks long.
        let o = i * 32;
        if comptime!(q4) {
            for j in 0..16usize {
                let q = byte_at(w, base, b + 2 + j);
                out[o + j] = (f32::cast_from(q & 0xFu32) - 8.0f32) * d;
                out[o + j + 16] = (f32::cast_from(q >> 4u32) - 8.0f32) * d;
            }
        } else {
            for j in 0..32usize {
                out[o + j] = q8_value(w, base, b, j) * d;
            }
        }
    }
}
