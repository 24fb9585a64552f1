//! Dot products of x with one interleaved group of eight rows of blocks (`interleaved.rs`)
//! on the CPU backend: per block, the eight rows' integer sums against x's q8_0 block,
//! each in its own lane, then scaled by the eight scales at once (docs/design.md §10).
//!
//! Each 32-bit lane adds four products of an unsigned byte and a signed byte of x
//! (`vpdpbusd`, or `maddubs` + `madd`), so the weights are made unsigned and the offset
//! is taken out once per block:
//! - q4_0: nibbles as stored (0..15), Σ (n − 8)·x = Σ n·x − 8·Σx;
//! - q8_0 with VNNI: bytes with the sign bit flipped (q + 128, 0..255), Σ q·x =
//!   Σ (q + 128)·x − 128·Σx; with AVX2, whose `maddubs` would saturate on pairs of such
//!   products, |q| against x carrying q's sign instead, which gives the same sums.
//!
//! Every integer is exact, and row r's result is `acc = fma(d_w · d_x, sum, acc)` over its
//! blocks in order: the SIMD and the portable paths compute the same f32 numbers, bit for
//! bit.

use crate::blocks::{BlockFormat, BLOCK};
use crate::flex_blocks::RoundedRow;
use crate::interleaved::{group_block_bytes, row_block, GROUP};

/// Rows of x dotted with the eight rows of `group` (one group's bytes of `format` blocks:
/// as many blocks as x has) → `out[i][r]` = x row i · group row r: with AVX-512 VNNI or
/// AVX2 where the CPU has them, else portable loops. Rows of x go through in tiles of
/// [`X_TILE`], so each block's quants are unpacked once for the whole tile; every value
/// is computed as for x alone.
pub(crate) fn dot_group(xs: &[&RoundedRow], group: &[u8], format: BlockFormat, out: &mut [[f32; GROUP]]) {
    assert_eq!(xs.len(), out.len(), "dot_group: rows of x and of out");
    for x in xs {
        assert_eq!(group.len(), x.scales.len() * group_block_bytes(format), "dot_group: group and x disagree");
    }
    for (xs, out) in xs.chunks(X_TILE).zip(out.chunks_mut(X_TILE)) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                let vnni = has!("avx512vnni") && has!("avx512vl");
                // SAFETY: the CPU has the features each function is compiled for, and the
                // group holds as many blocks as every x (asserted above).
                unsafe {
                    match (xs.len(), format) {
                        (1, BlockFormat::Q4_0) => dot_group_simd::<1, true>(vnni, xs.try_into().expect("1"), group, out),
                        (2, BlockFormat::Q4_0) => dot_group_simd::<2, true>(vnni, xs.try_into().expect("2"), group, out),
                        (3, BlockFormat::Q4_0) => dot_group_simd::<3, true>(vnni, xs.try_into().expect("3"), group, out),
                        (_, BlockFormat::Q4_0) => dot_group_simd::<4, true>(vnni, xs.try_into().expect("4"), group, out),
                        (1, BlockFormat::Q8_0) => dot_group_simd::<1, false>(vnni, xs.try_into().expect("1"), group, out),
                        (2, BlockFormat::Q8_0) => dot_group_simd::<2, false>(vnni, xs.try_into().expect("2"), group, out),
                        (3, BlockFormat::Q8_0) => dot_group_simd::<3, false>(vnni, xs.try_into().expect("3"), group, out),
                        (_, BlockFormat::Q8_0) => dot_group_simd::<4, false>(vnni, xs.try_into().expect("4"), group, out),
                    }
                }
                continue;
            }
        }
        for (x, out) in xs.iter().zip(out.iter_mut()) {
            *out = dot_group_portable(x, group, format);
        }
    }
}

/// Rows of x per pass over a group's blocks (registers: a sum and an accumulator each).
const X_TILE: usize = 4;

/// # Safety
/// The CPU has AVX2, FMA and F16C (and AVX-512 VNNI with VL when `vnni`); the group holds
/// as many blocks as every x.
#[cfg(target_arch = "x86_64")]
unsafe fn dot_group_simd<const N: usize, const Q4: bool>(vnni: bool, xs: &[&RoundedRow; N], group: &[u8], out: &mut [[f32; GROUP]]) {
    // SAFETY: as this function's.
    let values = unsafe {
        if vnni {
            dot_group_vnni::<N, Q4>(xs, group)
        } else {
            dot_group_avx2::<N, Q4>(xs, group)
        }
    };
    out.copy_from_slice(&values);
}

/// The SIMD body for N rows of x and `$q4` (else q8_0), for a `dp!(sum, w, x)` that adds
/// to each i32 lane of `sum` the four products of the weight bytes `w` (as this kernel
/// prepares them: unsigned with `$unsigned`, else signed) with the signed bytes of `x`.
#[cfg(target_arch = "x86_64")]
macro_rules! dot_group_simd_body {
    ($xs:expr, $group:expr, $n:expr, $q4:expr, $unsigned:expr, $dp:ident) => {{
        use std::arch::x86_64::*;
        use crate::interleaved::{chunks, CHUNK_BYTES, SCALES_BYTES};
        let format = if $q4 { BlockFormat::Q4_0 } else { BlockFormat::Q8_0 };
        let (xs, group): (&[&RoundedRow; $n], &[u8]) = ($xs, $group);
        let nibbles = _mm256_set1_epi8(0x0f);
        let sign_bits = _mm256_set1_epi8(i8::MIN);
        // What the unsigned weights add to each block's sum, per unit of Σx.
        let offset = if $q4 { -8 } else if $unsigned { -128 } else { 0 };
        let mut acc = [_mm256_setzero_ps(); $n];
        for k in 0..xs[0].scales.len() {
            // SAFETY: block group k is group_block_bytes of `group` and every x holds 32
            // quants for block k (the caller checked the lengths): every load stays inside.
            unsafe {
                let block = group.as_ptr().add(k * group_block_bytes(format));
                let mut sums = [_mm256_setzero_si256(); $n];
                for i in 0..$n {
                    sums[i] = _mm256_set1_epi32(offset * xs[i].sums[k]);
                }
                for c in 0..chunks(format) {
                    // Lane r: row r's quant bytes 4c..4c+4: q4_0 values 4c.. (low nibbles)
                    // and 16 + 4c.. (high); q8_0 values 4c..4c+4.
                    let quants = _mm256_loadu_si256(block.add(SCALES_BYTES + c * CHUNK_BYTES) as *const __m256i);
                    let (w, w_high, x_at) = if $q4 {
                        let high = _mm256_and_si256(_mm256_srli_epi16(quants, 4), nibbles);
                        (_mm256_and_si256(quants, nibbles), high, 4 * c)
                    } else if $unsigned {
                        (_mm256_xor_si256(quants, sign_bits), quants, 4 * c)
                    } else {
                        (quants, quants, 4 * c)
                    };
                    for i in 0..$n {
                        let xq = xs[i].quants.as_ptr().add(k * BLOCK);
                        let x = _mm256_set1_epi32((xq.add(x_at) as *const i32).read_unaligned());
                        sums[i] = $dp!(sums[i], w, x);
                        if $q4 {
                            let x_high = _mm256_set1_epi32((xq.add(BLOCK / 2 + x_at) as *const i32).read_unaligned());
                            sums[i] = $dp!(sums[i], w_high, x_high);
                        }
                    }
                }
                let scales = _mm256_cvtph_ps(_mm_loadu_si128(block as *const __m128i));
                for i in 0..$n {
                    let d = _mm256_mul_ps(scales, _mm256_set1_ps(xs[i].scales[k]));
                    acc[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums[i]), acc[i]);
                }
            }
        }
        let mut out = [[0f32; GROUP]; $n];
        for i in 0..$n {
            // SAFETY: a row of `out` holds eight f32.
            unsafe { _mm256_storeu_ps(out[i].as_mut_ptr(), acc[i]) };
        }
        out
    }};
}

/// With AVX-512 VNNI on 256-bit registers: one `vpdpbusd` per 4 bytes a row (unsigned
/// weights for both formats).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn dot_group_vnni<const N: usize, const Q4: bool>(xs: &[&RoundedRow; N], group: &[u8]) -> [[f32; GROUP]; N] {
    macro_rules! dp {
        ($sum:expr, $u:expr, $s:expr) => {
            _mm256_dpbusd_epi32($sum, $u, $s)
        };
    }
    dot_group_simd_body!(xs, group, N, Q4, true, dp)
}

/// With AVX2: `maddubs` (unsigned times signed, pairs summed in i16) and `madd` by ones
/// give the same four-byte lane sums. q4_0's nibbles are unsigned (a pair is at most
/// 2 · 15 · 127); q8_0's signed bytes go in as |q| against x carrying q's sign (a pair is
/// at most 2 · 128 · 127).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_group_avx2<const N: usize, const Q4: bool>(xs: &[&RoundedRow; N], group: &[u8]) -> [[f32; GROUP]; N] {
    macro_rules! dp {
        ($sum:expr, $w:expr, $s:expr) => {{
            let (w, x) = if Q4 { ($w, $s) } else { (_mm256_sign_epi8($w, $w), _mm256_sign_epi8($s, $w)) };
            _mm256_add_epi32($sum, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
        }};
    }
    dot_group_simd_body!(xs, group, N, Q4, false, dp)
}

fn dot_group_portable(x: &RoundedRow, group: &[u8], format: BlockFormat) -> [f32; GROUP] {
    let mut acc = [0f32; GROUP];
    for (k, group_block) in group.chunks_exact(group_block_bytes(format)).enumerate() {
        let xq = &x.quants[k * BLOCK..][..BLOCK];
        for (r, acc) in acc.iter_mut().enumerate() {
            let block = row_block(group_block, r, format);
            let d_w = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
            let sum = match format {
                BlockFormat::Q4_0 => (0..BLOCK / 2)
                    .map(|j| i32::from(block[2 + j] & 0x0f) * i32::from(xq[j]) + i32::from(block[2 + j] >> 4) * i32::from(xq[j + BLOCK / 2]))
                    .sum::<i32>()
                    - 8 * x.sums[k],
                BlockFormat::Q8_0 => (0..BLOCK).map(|j| i32::from(block[2 + j] as i8) * i32::from(xq[j])).sum(),
            };
            *acc = (sum as f32).mul_add(d_w * x.scales[k], *acc);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interleaved::interleave;

    /// Every path gives, bit for bit, the row-by-row computation the module defines
    /// (`fma(d_w · d_x, Σ w·x, acc)` over the blocks of llama.cpp's layout), on random
    /// quants and scales, including x's extreme quants, for both formats.
    #[test]
    fn every_path_equals_the_definition_bit_for_bit() {
        let mut s = 7u64;
        let mut next = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let blocks = 37;
        // Six rows of x: a tile of four, then two.
        let x_rows: Vec<RoundedRow> = (0..6)
            .map(|_| {
                let x: Vec<f32> = (0..blocks * BLOCK).map(|i| if i % 97 == 3 { -3.0 } else { (next() % 2001) as f32 / 1000.0 - 1.0 }).collect();
                RoundedRow::new(&x)
            })
            .collect();
        let w: Vec<f32> = (0..GROUP * blocks * BLOCK).map(|_| (next() % 4001) as f32 / 1000.0 - 2.0).collect();
        for format in BlockFormat::ALL {
            let mut plain = Vec::new();
            format.quantize(&w, &mut plain);
            let bb = format.block_bytes();
            let row_bytes = blocks * bb;
            let want = |rounded: &RoundedRow| -> Vec<u32> {
                (0..GROUP)
                    .map(|r| {
                        let mut acc = 0f32;
                        for k in 0..blocks {
                            let block = &plain[r * row_bytes + k * bb..][..bb];
                            let mut values = [0f32; BLOCK];
                            format.dequantize(block, &mut values);
                            let d_w = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
                            // The block's integer quants: its values over its scale (exact).
                            let sum: i32 = (0..BLOCK).map(|j| (values[j] / d_w) as i32 * i32::from(rounded.quants[k * BLOCK + j])).sum();
                            acc = (sum as f32).mul_add(d_w * rounded.scales[k], acc);
                        }
                        acc.to_bits()
                    })
                    .collect()
            };
            let group = interleave(&plain, row_bytes, format);
            let bits = |v: [f32; GROUP]| v.map(f32::to_bits).to_vec();
            let refs: Vec<&RoundedRow> = x_rows.iter().collect();
            let mut out = vec![[0f32; GROUP]; refs.len()];
            dot_group(&refs, &group, format, &mut out);
            for (i, x) in x_rows.iter().enumerate() {
                assert_eq!(bits(dot_group_portable(x, &group, format)), want(x), "{} portable, x row {i}", format.name());
                assert_eq!(bits(out[i]), want(x), "{} dispatched, x row {i}", format.name());
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("f16c") {
                // SAFETY: the CPU has the features; the group holds x's blocks.
                let three = [&x_rows[0], &x_rows[1], &x_rows[2]];
                let avx2 = unsafe {
                    match format {
                        BlockFormat::Q4_0 => dot_group_avx2::<3, true>(&three, &group),
                        BlockFormat::Q8_0 => dot_group_avx2::<3, false>(&three, &group),
                    }
                };
                for i in 0..3 {
                    assert_eq!(bits(avx2[i]), want(&x_rows[i]), "{} avx2, x row {i}", format.name());
                }
            }
        }
    }
}
