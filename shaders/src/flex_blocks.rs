//! Dot products over llama.cpp's blocks (`blocks.rs`) for the CPU backend: per block the
//! quants are summed against x in f32 lanes, then scaled once, as llama.cpp's dot
//! products do (its own also round x to 8 bits first; these keep x in f32).

use half::f16;

use crate::blocks::{BlockFormat, BLOCK};

/// Σ x[i] · value_i over one row of blocks (`x.len()` values, `row` its blocks): with
/// AVX2 (+F16C for the scales) where the CPU has them, else portable loops.
pub(crate) fn dot_blocks(x: &[f32], row: &[u8], format: BlockFormat) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU has the features these functions are compiled for.
        return unsafe {
            match format {
                BlockFormat::Q8_0 => dot_blocks_avx2::<false>(x, row),
                BlockFormat::Q4_0 => dot_blocks_avx2::<true>(x, row),
            }
        };
    }
    dot_blocks_portable(x, row, format)
}

/// [`dot_blocks`] with AVX2: per block its 32 quants widened to f32 in four registers,
/// multiplied with x, and the block's sum scaled into eight running lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks_avx2<const Q4: bool>(x: &[f32], row: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let bb = if Q4 { BlockFormat::Q4_0 } else { BlockFormat::Q8_0 }.block_bytes();
    assert_eq!(row.len() / bb * BLOCK, x.len(), "dot_blocks: row and x disagree");
    // Eight quants (32-bit lanes) as f32.
    macro_rules! f32s {
        ($lanes:expr) => {
            _mm256_cvtepi32_ps($lanes)
        };
    }
    let mut acc = _mm256_setzero_ps();
    for (block, xs) in row.chunks_exact(bb).zip(x.chunks_exact(BLOCK)) {
        // SAFETY: a block is `bb` bytes (2 of scale, then 32 or 16 of quants) and xs 32
        // values: every load below stays inside them.
        unsafe {
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(u16::from_le_bytes([block[0], block[1]])))));
            let q = block.as_ptr().add(2);
            let [v0, v1, v2, v3] = if Q4 {
                let raw = _mm_loadu_si128(q as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(raw, mask); // values 0..16
                let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask); // values 16..32
                let eight = _mm256_set1_ps(8.0);
                [
                    _mm256_sub_ps(f32s!(_mm256_cvtepu8_epi32(lo)), eight),
                    _mm256_sub_ps(f32s!(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), eight),
                    _mm256_sub_ps(f32s!(_mm256_cvtepu8_epi32(hi)), eight),
                    _mm256_sub_ps(f32s!(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), eight),
                ]
            } else {
                let quants = |i: usize| _mm_loadl_epi64(q.add(i) as *const __m128i);
                [
                    f32s!(_mm256_cvtepi8_epi32(quants(0))),
                    f32s!(_mm256_cvtepi8_epi32(quants(8))),
                    f32s!(_mm256_cvtepi8_epi32(quants(16))),
                    f32s!(_mm256_cvtepi8_epi32(quants(24))),
                ]
            };
            let xp = xs.as_ptr();
            // Two independent chains of two, so a block's sum is not four latencies long.
            let s01 = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), v1, _mm256_mul_ps(_mm256_loadu_ps(xp), v0));
            let s23 = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(24)), v3, _mm256_mul_ps(_mm256_loadu_ps(xp.add(16)), v2));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_add_ps(s01, s23), acc);
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    lanes.iter().sum()
}

fn dot_blocks_portable(x: &[f32], row: &[u8], format: BlockFormat) -> f32 {
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
