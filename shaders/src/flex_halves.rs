//! f16 or bf16 weights times f32 activations on the CPU, for one row of x or a whole
//! prefill (docs/design.md §9, "Half-precision products on the CPU").
//!
//! Each weight is widened to f32 in a register (exact) and multiplied with x, kept in
//! f32, and added in one rounding (a fused multiply-add). The order of the additions is
//! part of the definition, so every machine gets the same bits: an output keeps
//! [`LANES`] f32 lanes; each step of [`LANES`] columns adds to lane `i` the product of
//! column `i` of the step (`lane = fma(x, w, lane)`); the lanes are then folded in halves,
//! quarters, pairs ([`fold_lanes`]). AVX-512 does a step in one instruction, AVX2 in two,
//! the portable path lane by lane with `f32::mul_add`, each the same operations in the
//! same order.

/// Columns per step, one f32 lane each: one 512-bit register.
pub const LANES: usize = 16;
/// Rows of W dotted together (their outputs for every row of x).
pub const GROUP: usize = 4;
/// Rows of x taken together in a prefill (TILE × GROUP accumulators, GROUP + TILE loads
/// per step; also `flex_bf16.rs`'s).
pub(crate) const TILE: usize = 4;

/// Rows of x padded with zeros to whole steps (so the kernels load whole registers): x
/// itself when its rows are whole steps already (every matrix of the LLM), else a copy.
pub struct PaddedRows<'a> {
    values: std::borrow::Cow<'a, [f32]>, // [rows, stride]
    rows: usize,
    stride: usize,
    cols: usize,
}

impl<'a> PaddedRows<'a> {
    /// x [rows, cols] row-major.
    pub fn new(x: &'a [f32], [rows, cols]: [usize; 2]) -> Self {
        assert_eq!(Some(x.len()), rows.checked_mul(cols), "PaddedRows: {} values for [{rows}, {cols}]", x.len());
        let stride = cols.div_ceil(LANES) * LANES;
        if stride == cols {
            return Self { values: x.into(), rows, stride, cols };
        }
        let mut values = vec![0f32; rows * stride];
        if cols > 0 {
            for (dst, src) in values.chunks_exact_mut(stride).zip(x.chunks_exact(cols)) {
                dst[..cols].copy_from_slice(src);
            }
        }
        Self { values: values.into(), rows, stride, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.stride..(r + 1) * self.stride]
    }
}

/// `out[r][j] = x_r · w_j` for every row r of x and the N rows of `w` ([N, cols] 16-bit
/// patterns, bf16 when `bf16`, else f16; N a multiple of [`GROUP`]). Rows of x are taken
/// [`TILE`] at a time against every group of W, so a group is widened once per tile.
pub fn dot_rows<const N: usize>(x: &PaddedRows, w: &[u16], bf16: bool, out: &mut [[f32; N]]) {
    const { assert!(N % GROUP == 0) };
    assert_eq!(w.len(), N * x.cols, "dot_rows: {} weights for {N} rows of {}", w.len(), x.cols);
    assert_eq!(out.len(), x.rows(), "dot_rows: {} outputs for {} rows", out.len(), x.rows());
    #[cfg(target_arch = "x86_64")]
    if !bf16 && x.rows() > 1 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has the features `avx512::dot_rows_widened` is compiled for.
        return unsafe { avx512::dot_rows_widened(x, w, out) };
    }
    by_tiles(out, |rows, g, tile| dot_group(x, rows, &w[g * GROUP * x.cols..(g + 1) * GROUP * x.cols], bf16, tile));
}

/// Fills `out` [rows of x, N] a tile at a time: for every [`TILE`] rows of x (the last
/// tile maybe fewer) and every group `g` of [`GROUP`] rows of W, `group(rows, g, tile)`
/// writes the tile's outputs into `tile` [rows.len(), GROUP].
pub(crate) fn by_tiles<const N: usize>(out: &mut [[f32; N]], mut group: impl FnMut(std::ops::Range<usize>, usize, &mut [[f32; GROUP]])) {
    let mut tile = [[0f32; GROUP]; TILE];
    for first in (0..out.len()).step_by(TILE) {
        let n = TILE.min(out.len() - first);
        for g in 0..N / GROUP {
            group(first..first + n, g, &mut tile[..n]);
            for (o, t) in out[first..first + n].iter_mut().zip(&tile) {
                o[g * GROUP..(g + 1) * GROUP].copy_from_slice(t);
            }
        }
    }
}

/// `out[i][j] = x_{rows.start + i} · w_j` for at most [`TILE`] rows of x and the
/// [`GROUP`] rows of `w`, by the fastest path the CPU has.
fn dot_group(x: &PaddedRows, rows: std::ops::Range<usize>, w: &[u16], bf16: bool, out: &mut [[f32; GROUP]]) {
    debug_assert!(rows.len() == out.len() && rows.len() <= TILE && w.len() == GROUP * x.cols);
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has the features `avx512::dot_group` is compiled for.
            return unsafe { avx512::dot_group(x, rows.start, w, bf16, out) };
        }
        if has!("avx2") && has!("fma") && has!("f16c") {
            // SAFETY: as above, for `avx2::dot_group`.
            return unsafe { avx2::dot_group(x, rows.start, w, bf16, out) };
        }
    }
    for (o, r) in out.iter_mut().zip(rows) {
        for (j, v) in o.iter_mut().enumerate() {
            *v = dot_portable(x.row(r), &w[j * x.cols..(j + 1) * x.cols], bf16);
        }
    }
}

/// One output, the reference of the SIMD paths: x padded to whole steps, w not.
pub fn dot_portable(x: &[f32], w: &[u16], bf16: bool) -> f32 {
    let value = |b: u16| if bf16 { half::bf16::from_bits(b).to_f32() } else { half::f16::from_bits(b).to_f32() };
    let mut lanes = [0f32; LANES];
    for (c, xs) in x.chunks_exact(LANES).enumerate() {
        let ws = w.get(c * LANES..).unwrap_or(&[]);
        for (i, lane) in lanes.iter_mut().enumerate() {
            *lane = xs[i].mul_add(ws.get(i).map_or(0.0, |&b| value(b)), *lane);
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

/// The last partial step of `STEP` columns of each row of the group ([GROUP, cols]),
/// padded with zeros (so the kernels read whole steps).
#[cfg(target_arch = "x86_64")]
pub(crate) fn padded_tails<const STEP: usize>(w: &[u16], cols: usize) -> [[u16; STEP]; GROUP] {
    let full = cols / STEP * STEP;
    let mut tails = [[0u16; STEP]; GROUP];
    if full < cols {
        for (j, tail) in tails.iter_mut().enumerate() {
            tail[..cols - full].copy_from_slice(&w[j * cols + full..(j + 1) * cols]);
        }
    }
    tails
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{padded_tails, PaddedRows, GROUP, LANES};
    use std::arch::x86_64::*;

    /// How a row of W is stored: bf16 or f16 bits, or f32 (f16 widened once, below).
    const BF16: u8 = 0;
    const F16: u8 = 1;
    const F32: u8 = 2;

    /// Rows `first..first + out.len()` of x (at most [`super::TILE`]) against the group.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_group(x: &PaddedRows, first: usize, w: &[u16], bf16: bool, out: &mut [[f32; GROUP]]) {
        let tails = padded_tails::<LANES>(w, x.cols);
        let rows: [*const u8; GROUP] = std::array::from_fn(|j| w[j * x.cols..].as_ptr().cast());
        let tails: [*const u8; GROUP] = std::array::from_fn(|j| tails[j].as_ptr().cast());
        // SAFETY: this function's target features are the callee's; the rows hold x.cols halves.
        unsafe {
            match (out.len(), bf16) {
                (4, true) => tile::<4, BF16>(x, first, rows, tails, out),
                (4, false) => tile::<4, F16>(x, first, rows, tails, out),
                (3, true) => tile::<3, BF16>(x, first, rows, tails, out),
                (3, false) => tile::<3, F16>(x, first, rows, tails, out),
                (2, true) => tile::<2, BF16>(x, first, rows, tails, out),
                (2, false) => tile::<2, F16>(x, first, rows, tails, out),
                (1, true) => tile::<1, BF16>(x, first, rows, tails, out),
                (1, false) => tile::<1, F16>(x, first, rows, tails, out),
                (n, _) => unreachable!("a tile of {n} rows"),
            }
        }
    }

    /// [`super::dot_rows`] for f16 W and more than one row of x: the N rows of W widened to
    /// f32 once (exact; padded with zeros to x's stride), then every tile of x against them.
    /// Converting f16 takes the CPU far longer than shifting bf16 (50 against 95 tok/s of
    /// TinyLlama's prefill products with the conversion in the loop), so it is done once
    /// per call rather than once per tile; the sums are the same operations in the same order.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_rows_widened<const N: usize>(x: &PaddedRows, w: &[u16], out: &mut [[f32; N]]) {
        thread_local! {
            // A rayon worker's widened rows, kept between calls (up to 16 rows of the
            // widest matrix: 360 KiB at TinyLlama's FFN) instead of mapped afresh each time.
            static WIDE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // SAFETY: this function's target features are the callee's.
        WIDE.with_borrow_mut(|wide| unsafe { widened_rows(x, w, wide, out) })
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn widened_rows<const N: usize>(x: &PaddedRows, w: &[u16], wide: &mut Vec<f32>, out: &mut [[f32; N]]) {
        let (cols, stride) = (x.cols, x.stride);
        wide.clear();
        wide.resize(N * stride, 0.0);
        // (No columns: nothing to widen, and every sum is 0.)
        for (dst, src) in wide.chunks_exact_mut(stride.max(1)).zip(w.chunks_exact(cols.max(1))) {
            half::slice::HalfFloatSliceExt::convert_to_f32_slice(half::slice::HalfBitsSliceExt::reinterpret_cast::<half::f16>(src), &mut dst[..cols]);
        }
        super::by_tiles(out, |rows, g, outputs| {
            let wp: [*const u8; GROUP] = std::array::from_fn(|j| wide[(g * GROUP + j) * stride..].as_ptr().cast());
            // SAFETY: the rows hold `stride` f32, whole steps (no tails read); this
            // function's target features are the callee's.
            unsafe {
                match outputs.len() {
                    4 => tile::<4, F32>(x, rows.start, wp, wp, outputs),
                    3 => tile::<3, F32>(x, rows.start, wp, wp, outputs),
                    2 => tile::<2, F32>(x, rows.start, wp, wp, outputs),
                    1 => tile::<1, F32>(x, rows.start, wp, wp, outputs),
                    n => unreachable!("a tile of {n} rows"),
                }
            }
        });
    }

    /// Sixteen values of W at step `c` of the row at `p`, as f32 (bf16: shifted into the
    /// high half; f16: converted; f32: loaded).
    #[inline(always)]
    unsafe fn load<const KIND: u8>(p: *const u8, c: usize) -> __m512 {
        // SAFETY: callers pass rows holding step c; the features are the caller's.
        unsafe {
            if KIND == F32 {
                return _mm512_loadu_ps(p.cast::<f32>().add(c * LANES));
            }
            let bits = _mm256_loadu_si256(p.cast::<u16>().add(c * LANES) as *const __m256i);
            if KIND == BF16 { _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)) } else { _mm512_cvtph_ps(bits) }
        }
    }

    /// Rows `r..r + R` of x against the group's rows `wp` (x.cols values each of KIND, or
    /// x's stride when f32), with the last partial step of each in `tails`.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const KIND: u8>(x: &PaddedRows, r: usize, wp: [*const u8; GROUP], tails: [*const u8; GROUP], out: &mut [[f32; GROUP]]) {
        let cols = if KIND == F32 { x.stride } else { x.cols };
        let full = cols / LANES;
        let xp: [*const f32; R] = std::array::from_fn(|i| x.row(r + i).as_ptr());
        let mut acc = [[_mm512_setzero_ps(); GROUP]; R];
        // SAFETY (every load below): step c < full lies inside every row of w and of x
        // (stride ≥ cols); the tails and x's padding hold the last partial step.
        if R == 1 {
            // Decoding, bound by memory: W's rows one after the other, one stream through memory.
            for (j, a) in acc[0].iter_mut().enumerate() {
                for c in 0..full {
                    *a = unsafe { _mm512_fmadd_ps(_mm512_loadu_ps(xp[0].add(c * LANES)), load::<KIND>(wp[j], c), *a) };
                }
            }
        } else {
            // A prefill, bound by the multiply-adds: GROUP × R independent sums per step.
            for c in 0..full {
                let wv: [__m512; GROUP] = std::array::from_fn(|j| unsafe { load::<KIND>(wp[j], c) });
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = unsafe { _mm512_loadu_ps(xp[i].add(c * LANES)) };
                    for j in 0..GROUP {
                        a[j] = _mm512_fmadd_ps(xv, wv[j], a[j]);
                    }
                }
            }
        }
        if cols % LANES != 0 {
            let wv: [__m512; GROUP] = std::array::from_fn(|j| unsafe { load::<KIND>(tails[j], 0) });
            for (i, a) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm512_loadu_ps(xp[i].add(full * LANES)) };
                for j in 0..GROUP {
                    a[j] = _mm512_fmadd_ps(xv, wv[j], a[j]);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            for j in 0..GROUP {
                o[j] = fold(a[j]);
            }
        }
    }

    /// [`super::fold_lanes`] in registers.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn fold(a: __m512) -> f32 {
        let s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{padded_tails, PaddedRows, GROUP, LANES};
    use std::arch::x86_64::*;

    /// [`super::dot_portable`]'s operations, eight lanes to a register, one output at a
    /// time (sixteen registers hold no tile of them).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_group(x: &PaddedRows, first: usize, w: &[u16], bf16: bool, out: &mut [[f32; GROUP]]) {
        // SAFETY: this function's target features are the callee's.
        unsafe {
            match bf16 {
                true => outputs::<true>(x, first, w, out),
                false => outputs::<false>(x, first, w, out),
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn outputs<const BF16: bool>(x: &PaddedRows, first: usize, w: &[u16], out: &mut [[f32; GROUP]]) {
        let (cols, full) = (x.cols, x.cols / LANES);
        let tails = padded_tails::<LANES>(w, cols);
        // Eight halves at `p` widened to f32.
        let widen = |p: *const u16| {
            // SAFETY: callers pass pointers to 8 readable u16.
            let bits = unsafe { _mm_loadu_si128(p as *const __m128i) };
            if BF16 { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16)) } else { _mm256_cvtph_ps(bits) }
        };
        let steps = full + usize::from(cols % LANES != 0);
        for (r, o) in out.iter_mut().enumerate() {
            let xp = x.row(first + r).as_ptr();
            // W's rows one after the other: one stream through memory.
            for (j, v) in o.iter_mut().enumerate() {
                let mut acc = [_mm256_setzero_ps(); 2];
                for c in 0..steps {
                    // SAFETY: x rows hold whole steps; w's step c < full is inside its row.
                    let wp = if c < full { unsafe { w.as_ptr().add(j * cols + c * LANES) } } else { tails[j].as_ptr() };
                    for (h, a) in acc.iter_mut().enumerate() {
                        *a = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(c * LANES + h * 8)), widen(wp.add(h * 8)), *a) };
                    }
                }
                *v = fold(acc);
            }
        }
    }

    /// [`super::fold_lanes`] of 16 lanes held in two registers (lanes 0–7, then 8–15).
    #[target_feature(enable = "avx")]
    pub(crate) fn fold(acc: [__m256; 2]) -> f32 {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 16 f32.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        }
        super::fold_lanes(lanes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// n values in [−1, 1], the same for a seed on every machine.
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
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

    fn halves(v: &[f32], bf16: bool) -> Vec<u16> {
        v.iter().map(|&v| if bf16 { half::bf16::from_f32(v).to_bits() } else { half::f16::from_f32(v).to_bits() }).collect()
    }

    /// The dispatched kernel against the portable reference, bit for bit, and against f64
    /// sums: odd widths (a partial step) and row counts that leave a partial tile.
    #[test]
    fn rows_match_the_portable_sums() {
        for bf16 in [true, false] {
            for (rows, cols) in [(1, 16), (3, 40), (6, 2048), (5, 7), (9, 100), (4, 0)] {
                let x = values(rows * cols, 1);
                let w = halves(&values(GROUP * cols, 2), bf16);
                let xr = PaddedRows::new(&x, [rows, cols]);
                let mut out = vec![[0f32; GROUP]; rows];
                dot_rows(&xr, &w, bf16, &mut out);
                for r in 0..rows {
                    for j in 0..GROUP {
                        let wr = &w[j * cols..(j + 1) * cols];
                        let expected = dot_portable(xr.row(r), wr, bf16);
                        assert_eq!(out[r][j].to_bits(), expected.to_bits(), "bf16 {bf16} rows {rows} cols {cols} at ({r}, {j})");
                        let value = |b: u16| if bf16 { half::bf16::from_bits(b).to_f32() } else { half::f16::from_bits(b).to_f32() };
                        let terms = (0..cols).map(|k| f64::from(x[r * cols + k]) * f64::from(value(wr[k])));
                        let (exact, magnitude) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
                        // Products exact before one rounding each, then f32 sums.
                        let bound = magnitude * f64::from(f32::EPSILON) * (cols as f64 / LANES as f64 + 4.0);
                        assert!((f64::from(expected) - exact).abs() <= bound, "{expected} vs {exact}");
                    }
                }
            }
        }
    }

    /// Each multiply-add rounds once: with a lane at −1, x = 1 + 2⁻¹⁴ times w = 1 + 2⁻¹⁰
    /// (exact in f16) adds 1 + 2⁻¹⁰ + 2⁻¹⁴ + 2⁻²⁴, which a separate product would round
    /// to 1 + 2⁻¹⁰ + 2⁻¹⁴ first (a tie, to even); fused, the lane keeps the 2⁻²⁴.
    #[test]
    fn products_are_fused_into_the_sums() {
        let cols = 2 * LANES;
        let mut x = vec![0f32; cols];
        (x[0], x[LANES]) = (-1.0, 1.0 + 2f32.powi(-14));
        let mut w = vec![0u16; GROUP * cols];
        for j in 0..GROUP {
            w[j * cols] = half::f16::ONE.to_bits();
            w[j * cols + LANES] = half::f16::from_f32(1.0 + 2f32.powi(-10)).to_bits();
        }
        let xr = PaddedRows::new(&x, [1, cols]);
        let fused = 2f32.powi(-10) + 2f32.powi(-14) + 2f32.powi(-24);
        assert_eq!(dot_portable(xr.row(0), &w[..cols], false), fused);
        let mut out = vec![[0f32; GROUP]; 1];
        dot_rows(&xr, &w, false, &mut out);
        assert_eq!(out[0], [fused; GROUP]);
    }

    /// Each SIMD path the CPU has, called directly on tiles of x's rows (four: a prefill's
    /// order; one: a decode step's), against the portable sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_path_matches_the_portable_sums() {
        use std::arch::is_x86_feature_detected as has;
        let (rows, cols) = (6, 72);
        let x = values(rows * cols, 3);
        let xr = PaddedRows::new(&x, [rows, cols]);
        for bf16 in [true, false] {
            let w = halves(&values(GROUP * cols, 4), bf16);
            for tile in [2..6, 5..6, 3..5] {
                let expected: Vec<[f32; GROUP]> = tile.clone().map(|r| std::array::from_fn(|j| dot_portable(xr.row(r), &w[j * cols..(j + 1) * cols], bf16))).collect();
                let mut out = vec![[0f32; GROUP]; tile.len()];
                if has!("avx2") && has!("fma") && has!("f16c") {
                    // SAFETY: the CPU has the path's features.
                    unsafe { avx2::dot_group(&xr, tile.start, &w, bf16, &mut out) };
                    assert_eq!(out, expected, "avx2 bf16 {bf16} {tile:?}");
                }
                if has!("avx512f") {
                    // SAFETY: as above.
                    unsafe { avx512::dot_group(&xr, tile.start, &w, bf16, &mut out) };
                    assert_eq!(out, expected, "avx512 bf16 {bf16} {tile:?}");
                }
            }
        }
    }
}
