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

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W as packed halves.
/// One cube per (output o, row r): o = CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X (so more
/// than 65535 outputs fit the grid), r = CUBE_POS_Z. The cube's units stride over the
/// row's words and the partial sums are added in shared memory.
#[cube(launch_unchecked)]
pub fn matvec_packed_kernel(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] block: usize, #[comptime] bf16: bool) {
    let n_out = w.shape(0);
    let words = w.shape(1);
    let o = CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize;
    // Uniform over the cube: a whole cube past the end leaves before any barrier.
    if o >= n_out {
        terminate!();
    }
    let r = CUBE_POS_Z as usize;
    let x_row = r * words * 2;
    let w_row = o * words;
    let mut acc = 0.0f32;
    let mut c = UNIT_POS as usize;
    while c < words {
        let word = w[w_row + c];
        acc += x[x_row + 2 * c] * half_to_f32(word & 0xFFFFu32, bf16);
        acc += x[x_row + 2 * c + 1] * half_to_f32(word >> 16u32, bf16);
        c += block;
    }
    let total = block_sum(acc, block);
    if UNIT_POS == 0u32 {
        out[r * n_out + o] = total;
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
