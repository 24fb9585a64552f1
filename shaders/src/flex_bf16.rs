//! bf16 weights times activations rounded to bf16 on the CPU, through x86's AVX512-BF16
//! dot product (`vdpbf16ps`), for one row of x or a whole prefill: PyTorch's bf16
//! numerics, asked for with `--bf16-activations` (docs/design.md §9, "Half-precision
//! products on the CPU"; without it, `flex_halves.rs` keeps x in f32).
//!
//! Each value of x is rounded once per product to bf16 ([`Bf16Rows`]); the dot product of
//! bf16 vectors keeps 16 f32 lanes, and every step of [`CHUNK`] columns adds to lane `i`
//! first the product of columns `2i + 1`, then that of columns `2i` (each product of two
//! bf16 is exact in f32, so each addition rounds once); the lanes are then folded in a
//! fixed order ([`fold_lanes`]). With AVX512-BF16 one instruction does a step for 16
//! lanes; the AVX2 and portable paths do the same additions in the same order, so every
//! machine gets the same bits (on normal numbers: `vdpbf16ps` flushes subnormal inputs
//! and sums to zero, the emulation does not).

#[cfg(target_arch = "x86_64")]
use crate::flex_halves::padded_tails;
use crate::flex_halves::{by_tiles, TILE};
pub use crate::flex_halves::{fold_lanes, GROUP};

/// Columns per step: one 512-bit register of bf16.
pub const CHUNK: usize = 32;
/// Lanes per output.
const LANES: usize = CHUNK / 2;

/// Rows of x rounded to bf16 (to nearest even), each padded with zeros to whole chunks.
pub struct Bf16Rows {
    bits: Vec<u16>, // [rows, stride]
    rows: usize,
    stride: usize,
    cols: usize,
}

impl Bf16Rows {
    /// x [rows, cols] row-major.
    pub fn new(x: &[f32], [rows, cols]: [usize; 2]) -> Self {
        assert_eq!(Some(x.len()), rows.checked_mul(cols), "Bf16Rows: {} values for [{rows}, {cols}]", x.len());
        let stride = cols.div_ceil(CHUNK) * CHUNK;
        let mut bits = vec![0u16; rows * stride];
        if cols > 0 {
            for (dst, src) in bits.chunks_exact_mut(stride).zip(x.chunks_exact(cols)) {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = half::bf16::from_f32(v).to_bits();
                }
            }
        }
        Self { bits, rows, stride, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `r`, padded.
    fn row(&self, r: usize) -> &[u16] {
        &self.bits[r * self.stride..(r + 1) * self.stride]
    }
}

/// `out[r][j] = x_r · w_j` for every row r of x and the N rows of `w` ([N, cols] bf16
/// bits, row-major; N a multiple of [`GROUP`]). Rows of x are taken a tile at a time
/// against every group of W, so a tile is read from memory once for all N rows of W.
pub fn dot_rows<const N: usize>(x: &Bf16Rows, w: &[u16], out: &mut [[f32; N]]) {
    const { assert!(N % GROUP == 0) };
    assert_eq!(w.len(), N * x.cols, "dot_rows: {} weights for {N} rows of {}", w.len(), x.cols);
    assert_eq!(out.len(), x.rows(), "dot_rows: {} outputs for {} rows", out.len(), x.rows());
    by_tiles(out, |rows, g, tile| dot_group(x, rows, &w[g * GROUP * x.cols..(g + 1) * GROUP * x.cols], tile));
}

/// `out[i][j] = x_{rows.start + i} · w_j` for at most [`TILE`] rows of x and the
/// [`GROUP`] rows of `w`, by the fastest path the CPU has.
fn dot_group(x: &Bf16Rows, rows: std::ops::Range<usize>, w: &[u16], out: &mut [[f32; GROUP]]) {
    debug_assert!(rows.len() == out.len() && rows.len() <= TILE && w.len() == GROUP * x.cols);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512bf16") {
            // SAFETY: the CPU has the features `avx512::dot_group` is compiled for.
            return unsafe { avx512::dot_group(x, rows.start, w, out) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above, for `avx2::dot_group`.
            return unsafe { avx2::dot_group(x, rows.start, w, out) };
        }
    }
    for (o, p) in out.iter_mut().zip(rows) {
        for (j, v) in o.iter_mut().enumerate() {
            *v = dot_portable(x.row(p), &w[j * x.cols..(j + 1) * x.cols]);
        }
    }
}

/// One part's dot product, the reference of the SIMD paths: x padded to whole chunks, w not.
pub fn dot_portable(x: &[u16], w: &[u16]) -> f32 {
    let value = |b: u16| f32::from_bits(u32::from(b) << 16);
    let mut lanes = [0f32; LANES];
    for (c, xs) in x.chunks_exact(CHUNK).enumerate() {
        let ws = w.get(c * CHUNK..).unwrap_or(&[]);
        for (i, lane) in lanes.iter_mut().enumerate() {
            let pair = |k: usize| value(xs[k]) * value(ws.get(k).copied().unwrap_or(0));
            *lane = (*lane + pair(2 * i + 1)) + pair(2 * i);
        }
    }
    fold_lanes(lanes)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{padded_tails, Bf16Rows, CHUNK, GROUP};
    use crate::flex_halves::avx512::fold;
    use std::arch::x86_64::*;

    /// Rows `first..first + out.len()` of x (at most [`super::TILE`]) against the group.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn dot_group(x: &Bf16Rows, first: usize, w: &[u16], out: &mut [[f32; GROUP]]) {
        let tails = padded_tails::<CHUNK>(w, x.cols);
        // SAFETY: this function's target features are the callee's.
        unsafe {
            match out.len() {
                4 => tile::<4>(x, first, w, &tails, out),
                3 => tile::<3>(x, first, w, &tails, out),
                2 => tile::<2>(x, first, w, &tails, out),
                1 => tile::<1>(x, first, w, &tails, out),
                n => unreachable!("a tile of {n} rows"),
            }
        }
    }

    /// Rows `r..r + R` of x against the group.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const R: usize>(x: &Bf16Rows, r: usize, w: &[u16], tails: &[[u16; CHUNK]; GROUP], out: &mut [[f32; GROUP]]) {
        let (cols, full) = (x.cols, x.cols / CHUNK);
        let xp: [*const u16; R] = std::array::from_fn(|i| x.row(r + i).as_ptr());
        let wp: [*const u16; GROUP] = std::array::from_fn(|j| w[j * cols..].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); GROUP]; R];
        let load = |p: *const u16| -> __m512bh {
            // SAFETY: callers pass pointers to CHUNK readable u16.
            unsafe { std::mem::transmute(_mm512_loadu_si512(p as *const _)) }
        };
        // SAFETY: chunk c < full lies inside every row of w (cols values) and of x (stride ≥ cols).
        if R == 1 {
            // Decoding, bound by memory: W's rows one after the other, one stream through
            // memory (four rows at once decoded 15–20% slower, measured on the EPYC).
            for j in 0..GROUP {
                for c in 0..full {
                    acc[0][j] = _mm512_dpbf16_ps(acc[0][j], load(unsafe { xp[0].add(c * CHUNK) }), load(unsafe { wp[j].add(c * CHUNK) }));
                }
            }
        } else {
            // A prefill, bound by the multiply-adds: GROUP × R independent sums per step.
            for c in 0..full {
                let wv: [__m512bh; GROUP] = std::array::from_fn(|j| load(unsafe { wp[j].add(c * CHUNK) }));
                for i in 0..R {
                    let xv = load(unsafe { xp[i].add(c * CHUNK) });
                    for j in 0..GROUP {
                        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
                    }
                }
            }
        }
        if cols % CHUNK != 0 {
            // x's padding is zeros, as are the tails' beyond the row.
            let wv: [__m512bh; GROUP] = std::array::from_fn(|j| load(tails[j].as_ptr()));
            for i in 0..R {
                let xv = load(unsafe { xp[i].add(full * CHUNK) });
                for j in 0..GROUP {
                    acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
                }
            }
        }
        for i in 0..R {
            for j in 0..GROUP {
                out[i][j] = fold(acc[i][j]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{padded_tails, Bf16Rows, CHUNK, GROUP};
    use std::arch::x86_64::*;

    /// [`super::dot_portable`]'s additions, eight lanes to a register: word `i` of a
    /// chunk's half holds columns `2i` (low bits) and `2i + 1` (high bits), which
    /// become f32 by a shift and by a mask.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_group(x: &Bf16Rows, first: usize, w: &[u16], out: &mut [[f32; GROUP]]) {
        let (cols, full) = (x.cols, x.cols / CHUNK);
        let tails = padded_tails::<CHUNK>(w, cols);
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        // (odd, even) columns of the 16 values at `p` as f32.
        let split = |p: *const u16| {
            // SAFETY: callers pass pointers to 16 readable u16.
            let words = unsafe { _mm256_loadu_si256(p as *const __m256i) };
            (_mm256_castsi256_ps(_mm256_and_si256(words, high)), _mm256_castsi256_ps(_mm256_slli_epi32(words, 16)))
        };
        let chunks = full + usize::from(cols % CHUNK != 0);
        for (r, o) in out.iter_mut().enumerate() {
            let xp = x.row(first + r).as_ptr();
            // W's rows one after the other: one stream through memory.
            for (j, v) in o.iter_mut().enumerate() {
                let mut acc = [_mm256_setzero_ps(); 2];
                for c in 0..chunks {
                    // SAFETY: x rows hold whole chunks; w's chunk c < full is inside its row.
                    let wp = if c < full { unsafe { w.as_ptr().add(j * cols + c * CHUNK) } } else { tails[j].as_ptr() };
                    for (h, a) in acc.iter_mut().enumerate() {
                        let (x_odd, x_even) = split(unsafe { xp.add(c * CHUNK + h * 16) });
                        let (w_odd, w_even) = split(unsafe { wp.add(h * 16) });
                        *a = _mm256_fmadd_ps(x_even, w_even, _mm256_fmadd_ps(x_odd, w_odd, *a));
                    }
                }
                *v = crate::flex_halves::avx2::fold(acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flex_halves::tests::values;

    /// The dispatched kernel against the portable reference, bit for bit, and against f64
    /// sums of x rounded to bf16 times w: odd widths (a partial chunk) and row counts that
    /// leave a partial tile.
    #[test]
    fn rows_match_the_portable_sums() {
        for (rows, cols) in [(1, 32), (3, 40), (6, 2048), (5, 7), (9, 100)] {
            let x = values(rows * cols, 1);
            let w: Vec<u16> = values(GROUP * cols, 2).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
            let xr = Bf16Rows::new(&x, [rows, cols]);
            let mut out = vec![[0f32; GROUP]; rows];
            dot_rows(&xr, &w, &mut out);
            let value = |b: u16| f64::from(half::bf16::from_bits(b).to_f32());
            for r in 0..rows {
                for j in 0..GROUP {
                    let wr = &w[j * cols..(j + 1) * cols];
                    let expected = dot_portable(xr.row(r), wr);
                    assert_eq!(out[r][j].to_bits(), expected.to_bits(), "rows {rows} cols {cols} at ({r}, {j})");
                    let terms = (0..cols).map(|k| value(xr.row(r)[k]) * value(wr[k]));
                    let (exact, magnitude) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                    // Exact products, then f32 sums.
                    assert!((f64::from(expected) - exact).abs() <= magnitude * 1e-6, "{expected} vs {exact}");
                }
            }
        }
    }

    /// Lane `i` adds the product of column `2i + 1` before that of `2i`, as
    /// `vdpbf16ps` does (checked on an AVX512-BF16 CPU): with a lane at 1, adding
    /// 0.75 ulp then 0.5 ulp gives 1 + 2 ulp, the other order 1 + 1 ulp.
    #[test]
    fn odd_columns_are_added_first() {
        let bits = |v: f32| half::bf16::from_f32(v).to_bits();
        let cols = 2 * CHUNK;
        let mut x = vec![0f32; cols];
        (x[1], x[CHUNK + 1], x[CHUNK]) = (1.0, 1.5 * 2f32.powi(-24), 2f32.powi(-24));
        let w = vec![bits(1.0); GROUP * cols];
        let xr = Bf16Rows::new(&x, [1, cols]);
        assert_eq!(dot_portable(xr.row(0), &w[..cols]), 1.0 + 2f32.powi(-22));
        let mut out = vec![[0f32; GROUP]; 1];
        dot_rows(&xr, &w, &mut out);
        assert_eq!(out[0], [1.0 + 2f32.powi(-22); GROUP]);
    }

    /// Each SIMD path the CPU has, called directly on tiles of x's rows (four: a prefill's
    /// order; one: a decode step's), against the portable sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_path_matches_the_portable_sums() {
        use std::arch::is_x86_feature_detected as has;
        let (rows, cols) = (6, 72);
        let x = values(rows * cols, 3);
        let w: Vec<u16> = values(GROUP * cols, 4).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
        let xr = Bf16Rows::new(&x, [rows, cols]);
        for tile in [2..6, 5..6, 3..5] {
            let expected: Vec<[f32; GROUP]> = tile.clone().map(|r| std::array::from_fn(|j| dot_portable(xr.row(r), &w[j * cols..(j + 1) * cols]))).collect();
            let mut out = vec![[0f32; GROUP]; tile.len()];
            if has!("avx2") && has!("fma") {
                // SAFETY: the CPU has the path's features.
                unsafe { avx2::dot_group(&xr, tile.start, &w, &mut out) };
                assert_eq!(out, expected, "avx2 {tile:?}");
            }
            if has!("avx512f") && has!("avx512bw") && has!("avx512bf16") {
                // SAFETY: as above.
                unsafe { avx512::dot_group(&xr, tile.start, &w, &mut out) };
                assert_eq!(out, expected, "avx512 {tile:?}");
            }
        }
    }
}
