//! Dot products over llama.cpp's blocks (`blocks.rs`) for the CPU backend, as llama.cpp's
//! CPU computes them (`ggml_vec_dot_q8_0_q8_0`, `ggml_vec_dot_q4_0_q8_0`): x is first
//! rounded to q8_0 blocks ([`RoundedRow`]), then each block's 32 products are summed in
//! integers and scaled once by the product of the two blocks' scales (docs/design.md
//! §10, "x rounded to 8 bits on the CPU").

use half::f16;

use crate::blocks::{q8_0_block, BlockFormat, BLOCK};

/// One row of x rounded to q8_0 blocks (`BlockFormat::Q8_0.quantize`): its quants and,
/// per block, its scale widened to f32 and the sum of its quants.
pub(crate) struct RoundedRow {
    pub(crate) quants: Vec<i8>,
    pub(crate) scales: Vec<f32>,
    /// Σ of each block's 32 quants (for sums against unsigned nibbles, `flex_groups.rs`).
    pub(crate) sums: Vec<i32>,
}

impl RoundedRow {
    /// `x` (a whole number of blocks) rounded to q8_0, block by block as
    /// `BlockFormat::Q8_0.quantize` writes them (the scale through f16).
    pub(crate) fn new(x: &[f32]) -> Self {
        assert_eq!(x.len() % BLOCK, 0, "q8_0 rounds whole blocks of {BLOCK} values");
        let blocks = x.len() / BLOCK;
        let mut row = Self { quants: vec![0; x.len()], scales: Vec::with_capacity(blocks), sums: Vec::with_capacity(blocks) };
        for (block, quants) in x.chunks_exact(BLOCK).zip(row.quants.chunks_exact_mut(BLOCK)) {
            let quants: &mut [i8; BLOCK] = quants.try_into().expect("whole blocks");
            let d = q8_0_block(block, quants);
            row.scales.push(f16::from_f32(d).to_f32());
            row.sums.push(quants.iter().map(|&q| i32::from(q)).sum());
        }
        row
    }
}

/// Σ over the blocks of (Σ_j x_j · w_j in integers) · d_x · d_w, for `row` one row of
/// blocks as long as x: with AVX2 where the CPU has it, else portable loops.
pub(crate) fn dot_blocks(x: &RoundedRow, row: &[u8], format: BlockFormat) -> f32 {
    assert_eq!(row.len() / format.block_bytes(), x.scales.len(), "dot_blocks: row and x disagree");
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

/// [`dot_blocks`] with AVX2, as llama.cpp's: per block the integer sums of
/// [`block_sums_avx2`], scaled by the two blocks' scales into eight f32 lanes; two
/// accumulators over alternate blocks, so consecutive blocks do not wait on each other.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_blocks_avx2<const Q4: bool>(x: &RoundedRow, row: &[u8]) -> f32 {
    use std::arch::x86_64::*;
    let bb = if Q4 { BlockFormat::Q4_0 } else { BlockFormat::Q8_0 }.block_bytes();
    let blocks = row.len() / bb;
    let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    // SAFETY (both blocks below): block k is `bb` bytes of `row` (k < blocks) and x holds
    // 32 quants per block (asserted by the caller): every load stays inside them.
    let scaled = |k: usize| unsafe {
        let block = row.as_ptr().add(k * bb);
        let d_w = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(u16::from_le_bytes([*block, *block.add(1)])))));
        (_mm256_set1_ps(d_w * x.scales[k]), block_sums_avx2::<Q4>(block.add(2), x.quants.as_ptr().add(k * BLOCK)))
    };
    for pair in 0..blocks / 2 {
        let (d0, s0) = scaled(2 * pair);
        let (d1, s1) = scaled(2 * pair + 1);
        even = _mm256_fmadd_ps(d0, s0, even);
        odd = _mm256_fmadd_ps(d1, s1, odd);
    }
    if blocks % 2 == 1 {
        let (d, s) = scaled(blocks - 1);
        even = _mm256_fmadd_ps(d, s, even);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(even, odd)) };
    lanes.iter().sum()
}

/// One block's Σ_j x_j · w_j as eight f32 lanes of exact integer partial sums: its 32
/// weights as signed bytes in one register (q4_0's nibbles less 8), multiplied with x's
/// bytes by `maddubs` (|w| unsigned times x carrying w's sign; no pair of products
/// reaches i16's limit: 2·128·127), pairs summed to i32 by `madd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_sums_avx2<const Q4: bool>(quants: *const u8, x: *const i8) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller passes a block's 32 (q8_0) or 16 (q4_0) quant bytes and 32 of x.
    unsafe {
        let w = if Q4 {
            let raw = _mm_loadu_si128(quants as *const __m128i);
            let mask = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(raw, mask); // values 0..16
            let hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask); // values 16..32
            _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
        } else {
            _mm256_loadu_si256(quants as *const __m256i)
        };
        let xq = _mm256_loadu_si256(x as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
}

fn dot_blocks_portable(x: &RoundedRow, row: &[u8], format: BlockFormat) -> f32 {
    let mut acc = 0f32;
    for (k, block) in row.chunks_exact(format.block_bytes()).enumerate() {
        let d_w = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let xq: &[i8; BLOCK] = x.quants[k * BLOCK..][..BLOCK].try_into().expect("whole blocks");
        let sum = match format {
            BlockFormat::Q8_0 => dot_i8(xq, block[2..].iter().map(|&q| i32::from(q as i8))),
            BlockFormat::Q4_0 => {
                let nibbles = &block[2..];
                let values = nibbles.iter().map(|&q| q & 0x0f).chain(nibbles.iter().map(|&q| q >> 4));
                dot_i8(xq, values.map(|n| i32::from(n) - 8))
            }
        };
        acc += sum as f32 * (d_w * x.scales[k]);
    }
    acc
}

/// Σ x[j] · w[j] in integers (exact: at most 32 · 128 · 128 in magnitude).
#[inline(always)]
fn dot_i8(x: &[i8; BLOCK], w: impl Iterator<Item = i32>) -> i32 {
    x.iter().zip(w).map(|(&x, w)| i32::from(x) * w).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes and values from a linear congruential generator.
    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            s >> 33
        }
    }

    /// x rounded for the products is, bit for bit, x written as q8_0 blocks.
    #[test]
    fn rounded_rows_are_the_q8_0_blocks() {
        let mut next = lcg(5);
        // Random values with halves among them (v / d lands on k + 0.5 when v = (k + 0.5) · d).
        let x: Vec<f32> = (0..64 * BLOCK).map(|i| if i % 7 == 0 { (next() % 255) as f32 / 2.0 - 63.5 } else { (next() % 20_001) as f32 / 1e4 - 1.0 }).collect();
        let rounded = RoundedRow::new(&x);
        let mut bytes = Vec::new();
        BlockFormat::Q8_0.quantize(&x, &mut bytes);
        for (k, block) in bytes.chunks_exact(BlockFormat::Q8_0.block_bytes()).enumerate() {
            assert_eq!(rounded.scales[k], f16::from_le_bytes([block[0], block[1]]).to_f32(), "block {k}");
            let quants: Vec<i8> = block[2..].iter().map(|&q| q as i8).collect();
            assert_eq!(&rounded.quants[k * BLOCK..(k + 1) * BLOCK], &quants[..], "block {k}");
            assert_eq!(rounded.sums[k], quants.iter().map(|&q| i32::from(q)).sum::<i32>(), "block {k}");
        }
    }

    /// Both paths equal the integer sums exactly, here where every block's products sum
    /// to an integer, each scale is 1 or 1/2 and no partial sum needs more than 24 bits
    /// (8 blocks · 32 · 128 · 127 · 2 < 2^24): exact in f32 in any order of additions.
    #[test]
    fn the_simd_and_portable_paths_sum_every_product() {
        let mut next = lcg(11);
        for format in BlockFormat::ALL {
            let blocks = 8;
            // x: integers −127..=127 with scale 1 (one value per block at ±127 fixes d = 1).
            let x: Vec<f32> = (0..blocks * BLOCK)
                .map(|i| if i % BLOCK == 5 { 127.0 } else { (next() % 255) as f32 - 127.0 })
                .collect();
            let rounded = RoundedRow::new(&x);
            assert!(rounded.scales.iter().all(|&d| d == 1.0));
            // w: random quant bytes (q8_0 includes −128, which no quantizer writes), scales 1 and 1/2.
            let mut row = Vec::new();
            let mut want = 0f64;
            for b in 0..blocks {
                let d = f16::from_f32(1.0 / (1 + b % 2) as f32);
                row.extend_from_slice(&d.to_le_bytes());
                let quants: Vec<u8> = (0..format.block_bytes() - 2).map(|_| next() as u8).collect();
                let mut values = [0f32; BLOCK];
                let mut block = d.to_le_bytes().to_vec();
                block.extend_from_slice(&quants);
                format.dequantize(&block, &mut values);
                want += values.iter().zip(&x[b * BLOCK..]).map(|(w, x)| f64::from(w * x)).sum::<f64>();
                row.extend_from_slice(&quants);
            }
            assert_eq!(f64::from(dot_blocks_portable(&rounded, &row, format)), want, "{} portable", format.name());
            assert_eq!(f64::from(dot_blocks(&rounded, &row, format)), want, "{} dispatched", format.name());
        }
    }
}
