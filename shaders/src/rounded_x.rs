//! x rounded to q8_0 blocks on the GPU, before a product with block-quantized weights
//! (`block_kernels.rs`): the rounding of the CPU backend's block products
//! (`flex_blocks.rs` `RoundedRow`, `blocks::q8_0_block`) and of llama.cpp, so a quantized
//! matrix multiplies the same x on every backend, and the kernels load four of x's
//! quants in one word where they loaded one f32 (docs/design.md §9, "x rounded to 8 bits
//! on the GPU").

use cubecl::prelude::*;

use crate::block_kernels::{field_at_top, field_unscale};
use crate::blocks::BLOCK;
use crate::kernels::global_index;

/// x [rows, cols] (contiguous, cols a multiple of 32) as q8_0 blocks, one unit per block
/// `i` (values `32·i ..` of the flattened x): its quants four to a word into
/// xq [rows, cols / 4] (word `8·i + m`, byte `b` two's complement: value `4m + b`) and its
/// scale, rounded to f16 and widened, into xd [rows, cols / 32]. As `q8_0_block`:
/// `d = max |v| / 127` (NaN skipped), each quant `roundf(v · (1 / d))` (0 where d is 0,
/// and for NaN products), the scale stored as f16.
#[cube(launch_unchecked)]
pub fn round_x_kernel(x: &Tensor<f32>, xq: &mut Tensor<u32>, xd: &mut Tensor<f32>) {
    let i = global_index();
    if i < xd.len() {
        let first = i * BLOCK;
        let mut amax = 0.0f32;
        for j in 0..BLOCK {
            let a = f32::abs(x[first + j]);
            if a > amax {
                amax = a;
            }
        }
        let d = amax / 127.0f32;
        let id = select(d != 0.0f32, 1.0f32 / d, 0.0f32);
        for m in 0..BLOCK / 4 {
            let mut word = 0u32;
            #[unroll]
            for b in 0..4usize {
                let q = round_half_away(x[first + 4 * m + b] * id);
                word |= (u32::cast_from(q) & 0xFFu32) << comptime!(8 * b as u32);
            }
            xq[i * (BLOCK / 4) + m] = word;
        }
        xd[i] = f16_rounded(d);
    }
}

/// The values of x rounded by [`round_x_kernel`]: out [rows, cols] from xq and xd, one
/// unit per word (four values, each `q · d` as the host's q8_0 values are).
#[cube(launch_unchecked)]
pub fn rounded_values_kernel(xq: &Tensor<u32>, xd: &Tensor<f32>, out: &mut Tensor<f32>) {
    let i = global_index();
    if i < xq.len() {
        let word = xq[i];
        let d = xd[i / (BLOCK / 4)];
        #[unroll]
        for b in 0..4usize {
            // q · 2²⁴ · 2⁻²⁴ is q exactly.
            out[4 * i + b] = field_at_top(word, b, 8usize) * field_unscale(false) * d;
        }
    }
}

/// C's `roundf` (halves away from zero) of `y`, |y| ≤ 128 or not finite (then 0, as Rust's
/// `NaN as i32` in `blocks::round_half_away`): the truncated value, plus or minus one
/// where the fraction (exact in f32) reaches ±0.5. Finiteness is tested on the bits: a
/// driver may assume floats are never NaN.
#[cube]
fn round_half_away(y: f32) -> i32 {
    let finite = (u32::reinterpret(y) & 0x7FFF_FFFFu32) < 0x7F80_0000u32;
    let y = select(finite, y, 0.0f32);
    let t = i32::cast_from(y);
    let fraction = y - f32::cast_from(t);
    t + select(fraction >= 0.5f32, 1i32, 0i32) - select(fraction <= -0.5f32, 1i32, 0i32)
}

/// `d ≥ 0` rounded to the nearest f16 (ties to even), as `half::f16::from_f32(d).to_f32()`:
/// at and above 65520 infinity; below 2⁻¹⁴ a multiple of 2⁻²⁴ (f16's subnormals); else
/// the mantissa cut to 10 bits, rounding on the bits (a carry moves into the exponent).
#[cube]
fn f16_rounded(d: f32) -> f32 {
    let bits = u32::reinterpret(d);
    let normal = f32::reinterpret((bits + 0xFFFu32 + ((bits >> 13u32) & 1u32)) & 0xFFFF_E000u32);
    // d · 2²⁴ is exact and below 1024 where it is used.
    let units = d * f32::reinterpret(0x4B80_0000u32);
    let t = u32::cast_from(units);
    let fraction = units - f32::cast_from(t);
    let up = fraction > 0.5f32 || (fraction == 0.5f32 && (t & 1u32) == 1u32);
    let subnormal = f32::cast_from(t + select(up, 1u32, 0u32)) * f32::reinterpret(0x3380_0000u32);
    let infinity = f32::reinterpret(0x7F80_0000u32);
    select(d >= 65520.0f32, infinity, select(d < f32::reinterpret(0x3880_0000u32), subnormal, normal))
}
