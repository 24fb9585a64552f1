//! CubeCL kernels (compiled to WGSL for wgpu, and to whatever Burn's cube runtime
//! targets). Only core WGSL features: no f16 or bf16 types, no subgroup operations,
//! workgroups of at most 256 invocations (docs/design.md §9).

use cubecl::prelude::*;

/// The f32 value of a 16-bit pattern (in the low 16 bits of `bits`), with integer
/// operations only. bf16 is the top half of an f32. f16: normal numbers move their
/// exponent from bias 15 to bias 127 (+112 << 23 = 0x3800_0000 after the 13-bit shift);
/// subnormals (exponent 0) are `mantissa · 2⁻²⁴`; infinities and NaN (exponent 31)
/// keep exponent 255.
#[cube]
pub fn half_to_f32(bits: u32, #[comptime] bf16: bool) -> f32 {
    if comptime!(bf16) { f32::reinterpret(bits << 16u32) } else { f16_to_f32(bits) }
}

#[cube]
fn f16_to_f32(bits: u32) -> f32 {
    let sign = (bits & 0x8000u32) << 16u32;
    let exp_mant = bits & 0x7FFFu32;
    let normal = f32::reinterpret(sign | ((exp_mant << 13u32) + 0x3800_0000u32));
    let special = f32::reinterpret(sign | 0x7F80_0000u32 | ((exp_mant & 0x3FFu32) << 13u32));
    let tiny = f32::cast_from(exp_mant) * 5.960_464_5e-8f32;
    let subnormal = select(sign != 0u32, -tiny, tiny);
    select(exp_mant < 0x400u32, subnormal, select(exp_mant >= 0x7C00u32, special, normal))
}

/// The sum of `value` over the cube's `block` units (a power of two); every unit gets it.
#[cube]
fn block_sum(value: f32, #[comptime] block: usize) -> f32 {
    let mut partial = Shared::<[f32]>::new_slice(block);
    let unit = UNIT_POS as usize;
    partial[unit] = value;
    sync_cube();
    let mut stride = 0usize;
    stride += block / 2;
    while stride > 0usize {
        if unit < stride {
            partial[unit] = partial[unit] + partial[unit + stride];
        }
        sync_cube();
        stride /= 2usize;
    }
    partial[0]
}

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W as packed halves. One unit per output
/// (o = cube · CUBE_DIM + UNIT_POS over x and y, r = CUBE_POS_Z), summing its row's words
/// in order: no shared memory and no barriers, which CPU drivers such as lavapipe run
/// as plain loops over the workgroup's units.
#[cube(launch_unchecked)]
pub fn matvec_packed_kernel(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] bf16: bool) {
    let n_out = w.shape(0);
    let words = w.shape(1);
    let cube = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    let o = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if o < n_out {
        let r = CUBE_POS_Z as usize;
        let x_row = r * words * 2;
        let w_row = o * words;
        let mut acc = 0.0f32;
        for c in 0..words {
            let word = w[w_row + c];
            acc += x[x_row + 2 * c] * half_to_f32(word & 0xFFFFu32, bf16);
            acc += x[x_row + 2 * c + 1] * half_to_f32(word >> 16u32, bf16);
        }
        out[r * n_out + o] = acc;
    }
}

/// out[2i], out[2i + 1] = the halves of word i, over the flattened tensor.
/// Position = (CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X) · CUBE_DIM + UNIT_POS.
#[cube(launch_unchecked)]
pub fn unpack_halves_kernel(w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] bf16: bool) {
    let cube = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    let i = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if i < w.len() {
        let word = w[i];
        out[2 * i] = half_to_f32(word & 0xFFFFu32, bf16);
        out[2 * i + 1] = half_to_f32(word >> 16u32, bf16);
    }
}

/// out[r, :] = x[r, :] · (Σ x[r, :]² / d + eps)^(-1/2) · w. One cube per row
/// (r = CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X): the units stride over the row for the
/// sum of squares, add it in shared memory, then write their columns.
#[cube(launch_unchecked)]
pub fn rms_norm_kernel(x: &Tensor<f32>, w: &Tensor<f32>, out: &mut Tensor<f32>, eps: f32, #[comptime] block: usize) {
    let d = x.shape(1);
    let r = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    if r >= x.shape(0) {
        terminate!();
    }
    let base = r * d;
    let mut acc = 0.0f32;
    let mut c = UNIT_POS as usize;
    while c < d {
        let v = x[base + c];
        acc += v * v;
        c += block;
    }
    let total = block_sum(acc, block);
    let inv = 1.0f32 / f32::sqrt(total / f32::cast_from(d as u32) + eps);
    let mut j = UNIT_POS as usize;
    while j < d {
        out[base + j] = x[base + j] * inv * w[j];
        j += block;
    }
}

/// Rotary embedding, one unit per pair: pair i of the flattened x [rows, per_row pairs]
/// is pair k = i % half of its head, in row r = i / per_row at position start + r % seq.
/// (x0, x1) → (x0·cos − x1·sin, x0·sin + x1·cos) with cos, sin [positions, half].
#[cube(launch_unchecked)]
pub fn rope_kernel(x: &Tensor<f32>, cos: &Tensor<f32>, sin: &Tensor<f32>, out: &mut Tensor<f32>, start: u32, seq: u32) {
    let half = cos.shape(1);
    let per_row = x.shape(1) / 2;
    let cube = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    let i = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if i < x.len() / 2 {
        let row = i / per_row;
        let pos = start as usize + row % seq as usize;
        let t = pos * half + i % half;
        let (c, s) = (cos[t], sin[t]);
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        out[2 * i] = x0 * c - x1 * s;
        out[2 * i + 1] = x0 * s + x1 * c;
    }
}
