//! Dot products over llama.cpp's blocks (`blocks.rs`) for the CPU backend: per block the
//! quants are summed against x in f32 lanes, then scaled once, as llama.cpp's dot
//! products do (its own also round x to 8 bits first; these keep x in f32).

use half::f16;

use crate::blocks::{BlockFormat, BLOCK};

/// Σ x[i] · value_i over one row of blocks (`x.len()` values, `row` its blocks).
pub(crate) fn dot_blocks(x: &[f32], row: &[u8], format: BlockFormat) -> f32 {
    let mut acc = 0f32;
    for (block, xs) in row.chunks_exact(format.block_bytes()).zip(x.chunks_exact(BLOCK)) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let xs: &[f32; BLOCK] = xs.try_into().expect("whole blocks");
        let sum = match format {
            BlockFormat::Q8_0 => dot_signed(xs, block[2..].try_into().expect("a q8_0 block holds 32 quants")),
            BlockFormat::Q4_0 => dot_offset(xs, &widen_nibbles(block[2..].try_into().expect("a q4_0 block holds 16 bytes"))),
        };
        acc += d * sum;
    }
    acc
}

/// Σ x[j] · q[j] with q as signed bytes, over eight lanes (vectorised by the compiler).
#[inline(always)]
fn dot_signed(x: &[f32; BLOCK], q: &[u8; BLOCK]) -> f32 {
    let mut lanes = [0f32; 8];
    for (xc, qc) in x.chunks_exact(8).zip(q.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += xc[l] * f32::from(qc[l] as i8);
        }
    }
    lanes.iter().sum()
}

/// Σ x[j] · (n[j] − 8) with n the nibbles 0..=15.
#[inline(always)]
fn dot_offset(x: &[f32; BLOCK], n: &[u8; BLOCK]) -> f32 {
    let mut lanes = [0f32; 8];
    for (xc, nc) in x.chunks_exact(8).zip(n.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += xc[l] * (f32::from(nc[l]) - 8.0);
        }
    }
    lanes.iter().sum()
}

/// A q4_0 block's 16 bytes as its 32 nibbles in value order (low nibbles are values
/// 0..16, high nibbles 16..32).
#[inline(always)]
fn widen_nibbles(q: &[u8; BLOCK / 2]) -> [u8; BLOCK] {
    let mut n = [0u8; BLOCK];
    for j in 0..BLOCK / 2 {
        n[j] = q[j] & 0x0f;
        n[j + BLOCK / 2] = q[j] >> 4;
    }
    n
}
