//! bf16 weights times f32 activations on the CPU through x86's AVX512-BF16 dot product
//! (`vdpbf16ps`), for one row of x or a whole prefill (docs/design.md §9, "bf16 products
//! on the CPU").
//!
//! Each value of x is split once per product into two bf16, `hi = bf16(x)` and
//! `lo = bf16(x − hi)` ([`Bf16Rows`]), so x keeps 16 of f32's 24 significant bits, and
//! `x · w = hi · w + lo · w`: two dot products of bf16 vectors (or, when the user asks
//! for PyTorch's bf16 numerics, x is rounded to `hi` alone: one). Each of those keeps 16 f32
//! lanes, and every step of [`CHUNK`] columns adds to lane `i` first the product of
//! columns `2i + 1`, then that of columns `2i` (each product of two bf16 is exact in f32,
//! so each addition rounds once); the lanes are then folded in a fixed order
//! ([`fold_lanes`]) and the two dot products added. With AVX512-BF16 one instruction does
//! a step for 16 lanes; the AVX2 and portable paths do the same additions in the same
//! order, so every machine gets the same bits (on normal numbers: `vdpbf16ps` flushes
//! subnormal inputs and sums to zero, the emulation does not).

/// Columns per step: one 512-bit register of bf16.
pub const CHUNK: usize = 32;
/// Lanes per output.
const LANES: usize = CHUNK / 2;
/// Rows of W dotted together (their outputs for every row of x).
pub const GROUP: usize = 4;

/// Rows of x as one or two bf16 parts each: part `k·r` of row r is `hi`, part `2r + 1`
/// (k = 2) is `lo` (each rounded to nearest even), each padded with zeros to whole chunks.
pub struct Bf16Rows {
    bits: Vec<u16>, // [k · rows, stride]
    rows: usize,
    /// k: 2 (hi and lo) or 1 (hi: x rounded to bf16).
    parts: usize,
    stride: usize,
    cols: usize,
}

impl Bf16Rows {
    /// x [rows, cols] row-major, in `parts` (2: hi and lo; 1: hi) per row.
    pub fn new(x: &[f32], [rows, cols]: [usize; 2], parts: usize) -> Self {
        assert_eq!(Some(x.len()), rows.checked_mul(cols), "Bf16Rows: {} values for [{rows}, {cols}]", x.len());
        assert!(parts == 1 || parts == 2, "Bf16Rows: {parts} parts");
        let stride = cols.div_ceil(CHUNK) * CHUNK;
        let mut bits = vec![0u16; parts * rows * stride];
        if cols > 0 {
            for (dst, src) in bits.chunks_exact_mut(parts * stride).zip(x.chunks_exact(cols)) {
                let (hi, lo) = dst.split_at_mut(stride);
                for (k, &v) in src.iter().enumerate() {
                    let high = half::bf16::from_f32(v);
                    hi[k] = high.to_bits();
                    if let Some(l) = lo.get_mut(k) {
                        // v − high is exact in f32 (high is v rounded to fewer bits).
                        *l = half::bf16::from_f32(v - high.to_f32()).to_bits();
                    }
                }
            }
        }
        Self { bits, rows, parts, stride, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Part `p` (of row `p / k`: hi, or lo for the second of two).
    fn part(&self, p: usize) -> &[u16] {
        &self.bits[p * self.stride..(p + 1) * self.stride]
    }
}

/// `out[r][j] = x_r · w_j` for every row r of x and the N rows of `w` ([N, cols] bf16
/// bits, row-major; N a multiple of [`GROUP`]). The parts of x are taken a tile at a time
/// against every group of W, so a tile is read from memory once for all N rows of W.
pub fn dot_rows<const N: usize>(x: &Bf16Rows, w: &[u16], out: &mut [[f32; N]]) {
    const { assert!(N % GROUP == 0) };
    assert_eq!(w.len(), N * x.cols, "dot_rows: {} weights for {N} rows of {}", w.len(), x.cols);
    assert_eq!(out.len(), x.rows(), "dot_rows: {} outputs for {} rows", out.len(), x.rows());
    let k = x.parts;
    let mut tile = [[0f32; GROUP]; TILE];
    for first in (0..x.rows()).step_by(TILE / k) {
        let n = (TILE / k).min(x.rows() - first);
        for g in 0..N / GROUP {
            dot_group(x, k * first..k * (first + n), &w[g * GROUP * x.cols..(g + 1) * GROUP * x.cols], &mut tile[..k * n]);
            for (o, parts) in out[first..first + n].iter_mut().zip(tile.chunks_exact(k)) {
                for (j, v) in o[g * GROUP..(g + 1) * GROUP].iter_mut().enumerate() {
                    // hi's sum, plus lo's when there is one.
                    *v = parts[1..].iter().fold(parts[0][j], |sum, lo| sum + lo[j]);
                }
            }
        }
    }
}

/// Parts of x taken together (4 × GROUP accumulators, GROUP + 4 loads per step).
const TILE: usize = 4;

/// `out[i][j] = part_{parts.start + i} · w_j` for at most [`TILE`] parts of x and the
/// [`GROUP`] rows of `w`, by the fastest path the CPU has.
fn dot_group(x: &Bf16Rows, parts: std::ops::Range<usize>, w: &[u16], out: &mut [[f32; GROUP]]) {
    debug_assert!(parts.len() == out.len() && parts.len() <= TILE && w.len() == GROUP * x.cols);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512bw") && has!("avx512bf16") {
            // SAFETY: the CPU has the features `avx512::dot_group` is compiled for.
            return unsafe { avx512::dot_group(x, parts.start, w, out) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above, for `avx2::dot_group`.
            return unsafe { avx2::dot_group(x, parts.start, w, out) };
        }
    }
    for (o, p) in out.iter_mut().zip(parts) {
        for (j, v) in o.iter_mut().enumerate() {
            *v = dot_portable(x.part(p), &w[j * x.cols..(j + 1) * x.cols]);
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

/// The lanes' sum in the order the SIMD paths take: halves, quarters, pairs, then one add.
pub fn fold_lanes(l: [f32; LANES]) -> f32 {
    let s8: [f32; 8] = std::array::from_fn(|i| l[i] + l[i + 8]);
    let s4: [f32; 4] = std::array::from_fn(|i| s8[i] + s8[i + 4]);
    let s2: [f32; 2] = std::array::from_fn(|i| s4[i] + s4[i + 2]);
    s2[0] + s2[1]
}

/// The last partial chunk of a row of w, padded with zeros (so the kernels read whole chunks).
#[cfg(target_arch = "x86_64")]
fn padded_tail(w: &[u16], full: usize) -> [u16; CHUNK] {
    let mut tail = [0u16; CHUNK];
    let rest = &w[full * CHUNK..];
    tail[..rest.len()].copy_from_slice(rest);
    tail
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{padded_tail, Bf16Rows, CHUNK, GROUP};
    use std::arch::x86_64::*;

    /// Parts `first..first + out.len()` of x (at most [`super::TILE`]) against the group.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn dot_group(x: &Bf16Rows, first: usize, w: &[u16], out: &mut [[f32; GROUP]]) {
        let tails: [[u16; CHUNK]; GROUP] = std::array::from_fn(|j| padded_tail(&w[j * x.cols..(j + 1) * x.cols], x.cols / CHUNK));
        // SAFETY: this function's target features are the callee's.
        unsafe {
            match out.len() {
                4 => tile::<4>(x, first, w, &tails, out),
                3 => tile::<3>(x, first, w, &tails, out),
                2 => tile::<2>(x, first, w, &tails, out),
                1 => tile::<1>(x, first, w, &tails, out),
                n => unreachable!("a tile of {n} parts"),
            }
        }
    }

    /// Parts `r..r + R` of x against the group.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn tile<const R: usize>(x: &Bf16Rows, r: usize, w: &[u16], tails: &[[u16; CHUNK]; GROUP], out: &mut [[f32; GROUP]]) {
        let (cols, full) = (x.cols, x.cols / CHUNK);
        let xp: [*const u16; R] = std::array::from_fn(|i| x.part(r + i).as_ptr());
        let wp: [*const u16; GROUP] = std::array::from_fn(|j| w[j * cols..].as_ptr());
        let mut acc = [[_mm512_setzero_ps(); GROUP]; R];
        let load = |p: *const u16| -> __m512bh {
            // SAFETY: callers pass pointers to CHUNK readable u16.
            unsafe { std::mem::transmute(_mm512_loadu_si512(p as *const _)) }
        };
        // SAFETY: chunk c < full lies inside every row of w (cols values) and of x (stride ≥ cols).
        if R <= 2 {
            // Decoding (one row: one or two parts), bound by memory: W's rows one after the other,
            // one stream through memory (four rows at once decoded 15–20% slower, measured
            // on the EPYC), each row's words loaded once for both parts.
            for j in 0..GROUP {
                for c in 0..full {
                    let wv = load(unsafe { wp[j].add(c * CHUNK) });
                    for i in 0..R {
                        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], load(unsafe { xp[i].add(c * CHUNK) }), wv);
                    }
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

    /// [`super::fold_lanes`] in registers.
    #[target_feature(enable = "avx512f")]
    fn fold(a: __m512) -> f32 {
        let s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{padded_tail, Bf16Rows, CHUNK, GROUP};
    use std::arch::x86_64::*;

    /// [`super::dot_portable`]'s additions, eight lanes to a register: word `i` of a
    /// chunk's half holds columns `2i` (low bits) and `2i + 1` (high bits), which
    /// become f32 by a shift and by a mask.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_group(x: &Bf16Rows, first: usize, w: &[u16], out: &mut [[f32; GROUP]]) {
        let (cols, full) = (x.cols, x.cols / CHUNK);
        let tails: [[u16; CHUNK]; GROUP] = std::array::from_fn(|j| padded_tail(&w[j * cols..(j + 1) * cols], full));
        let high = _mm256_set1_epi32(0xffff_0000u32 as i32);
        // (odd, even) columns of the 16 values at `p` as f32.
        let split = |p: *const u16| {
            // SAFETY: callers pass pointers to 16 readable u16.
            let words = unsafe { _mm256_loadu_si256(p as *const __m256i) };
            (_mm256_castsi256_ps(_mm256_and_si256(words, high)), _mm256_castsi256_ps(_mm256_slli_epi32(words, 16)))
        };
        let chunks = full + usize::from(cols % CHUNK != 0);
        for (r, o) in out.iter_mut().enumerate() {
            let xp = x.part(first + r).as_ptr();
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
                let mut lanes = [0f32; 16];
                // SAFETY: `lanes` holds 16 f32.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
                }
                *v = super::fold_lanes(lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect()
    }

    /// The dispatched kernel against the portable reference, bit for bit, and against f64
    /// sums of x (unrounded) times w: odd widths (a partial chunk) and row counts that
    /// leave a partial tile.
    #[test]
    fn rows_match_the_portable_sums() {
        for (rows, cols) in [(1, 32), (3, 40), (6, 2048), (5, 7), (9, 100)] {
            let x = values(rows * cols, 1);
            let w: Vec<u16> = values(GROUP * cols, 2).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
            let xr = Bf16Rows::new(&x, [rows, cols], 2);
            let mut out = vec![[0f32; GROUP]; rows];
            dot_rows(&xr, &w, &mut out);
            for r in 0..rows {
                for j in 0..GROUP {
                    let wr = &w[j * cols..(j + 1) * cols];
                    let expected = dot_portable(xr.part(2 * r), wr) + dot_portable(xr.part(2 * r + 1), wr);
                    assert_eq!(out[r][j].to_bits(), expected.to_bits(), "rows {rows} cols {cols} at ({r}, {j})");
                    let terms = (0..cols).map(|k| f64::from(x[r * cols + k]) * f64::from(half::bf16::from_bits(wr[k]).to_f32()));
                    let (exact, magnitude) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                    // x's split keeps 16 bits (2⁻¹⁷ relative), then f32 sums.
                    assert!((f64::from(expected) - exact).abs() <= magnitude * (2f64.powi(-17) + 1e-6), "{expected} vs {exact}");
                }
            }
        }
    }

    /// With x rounded to bf16 (one part per row), each output is that part's dot product,
    /// on every tile size (a prefill's four rows, a last tile of three, decoding's one).
    #[test]
    fn rounded_rows_are_one_part() {
        for rows in [1, 3, 7] {
            let cols = 100;
            let x = values(rows * cols, 6);
            let w: Vec<u16> = values(GROUP * cols, 7).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
            let (one, two) = (Bf16Rows::new(&x, [rows, cols], 1), Bf16Rows::new(&x, [rows, cols], 2));
            let mut out = vec![[0f32; GROUP]; rows];
            dot_rows(&one, &w, &mut out);
            for r in 0..rows {
                assert_eq!(one.part(r), two.part(2 * r), "hi parts");
                let expected: [f32; GROUP] = std::array::from_fn(|j| dot_portable(one.part(r), &w[j * cols..(j + 1) * cols]));
                assert_eq!(out[r], expected, "{rows} rows, row {r}");
            }
        }
    }

    /// hi + lo is x to 16 significant bits.
    #[test]
    fn parts_keep_sixteen_bits() {
        let x = values(4096, 5);
        let xr = Bf16Rows::new(&x, [1, 4096], 2);
        let value = |b: u16| half::bf16::from_bits(b).to_f32();
        for (k, &v) in x.iter().enumerate() {
            let sum = value(xr.part(0)[k]) + value(xr.part(1)[k]);
            assert!((sum - v).abs() <= v.abs() * 2f32.powi(-17), "{v} split to {sum}");
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
        let xr = Bf16Rows::new(&x, [1, cols], 2);
        // The values are bf16 already: the lo part is zero.
        assert_eq!(dot_portable(xr.part(0), &w[..cols]), 1.0 + 2f32.powi(-22));
        assert_eq!(dot_portable(xr.part(1), &w[..cols]), 0.0);
        let mut out = vec![[0f32; GROUP]; 1];
        dot_rows(&xr, &w, &mut out);
        assert_eq!(out[0], [1.0 + 2f32.powi(-22); GROUP]);
    }

    /// Each SIMD path the CPU has, called directly on tiles of x's parts (four: a prefill's
    /// order; two: a decode step's), against the portable sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_path_matches_the_portable_sums() {
        use std::arch::is_x86_feature_detected as has;
        let (rows, cols) = (6, 72);
        let x = values(rows * cols, 3);
        let w: Vec<u16> = values(GROUP * cols, 4).iter().map(|&v| half::bf16::from_f32(v).to_bits()).collect();
        let xr = Bf16Rows::new(&x, [rows, cols], 2);
        for parts in [2..6, 4..6] {
            let expected: Vec<[f32; GROUP]> = parts.clone().map(|p| std::array::from_fn(|j| dot_portable(xr.part(p), &w[j * cols..(j + 1) * cols]))).collect();
            let mut out = vec![[0f32; GROUP]; parts.len()];
            if has!("avx2") && has!("fma") {
                // SAFETY: the CPU has the path's features.
                unsafe { avx2::dot_group(&xr, parts.start, &w, &mut out) };
                assert_eq!(out, expected, "avx2 {parts:?}");
            }
            if has!("avx512f") && has!("avx512bw") && has!("avx512bf16") {
                // SAFETY: as above.
                unsafe { avx512::dot_group(&xr, parts.start, &w, &mut out) };
                assert_eq!(out, expected, "avx512 {parts:?}");
            }
        }
    }
}
