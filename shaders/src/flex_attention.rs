//! Attention of a few query rows sharing one kv head on the CPU backend (`flex.rs` runs
//! one tile of rows per rayon task): each row's scores against the keys, its softmax, and
//! its weighted sum of the values.
//!
//! The numbers are defined row by row by the portable path: score `j` is
//! `dot(q, k_j) · scale` (`flex.rs` `dot`: 16 lanes of fused multiply-adds, then the lanes
//! added in order from lane 0), the weights `e^(s_j − max)`, the output
//! `(Σ_j p_j · v_j) / Σ_j p_j` with each value's `o + p · x` a multiply then an add, keys
//! in order. With AVX-512 the same operations run with the rows' queries held in
//! registers, each key and value loaded once for all the rows of the tile (grouped-query
//! heads share them), sixteen keys' lanes transposed so that each lane's additions are
//! one vector addition for the sixteen, and the outputs summed in registers: the same
//! bits (docs/design.md §9, "Attention on the CPU").

/// Rows of a tile: `out` [rows, hd] = the attention of `queries` [rows, hd] (row `i` over
/// the first `n_keys[i]` rows of `keys` and `values`, rows of hd), scores scaled by
/// `scale`; `scores` is scratch. At most [`MAX_ROWS`] rows.
pub(crate) fn attend_rows(queries: &[f32], n_keys: &[usize], keys: &[f32], values: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let rows = n_keys.len();
    let hd = queries.len() / rows.max(1);
    let most = n_keys.iter().copied().max().unwrap_or(0);
    assert!(rows <= MAX_ROWS && queries.len() == rows * hd && out.len() == rows * hd, "attend_rows: {rows} rows of {hd}");
    assert!(keys.len() >= most * hd && values.len() >= most * hd, "attend_rows: {most} keys of {hd}");
    #[cfg(target_arch = "x86_64")]
    if hd % avx512::LANES == 0 && hd <= avx512::MAX_HEAD_DIM && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; hd is whole registers within the bound, and keys
        // and values hold every row's keys (asserted above).
        return unsafe { avx512::attend_rows(queries, n_keys, keys, values, scale, scores, out) };
    }
    for ((query, &n), out) in queries.chunks_exact(hd.max(1)).zip(n_keys).zip(out.chunks_exact_mut(hd.max(1))) {
        attend_row(query, n, keys, values, scale, scores, out);
    }
}

/// One row, the definition: `out` [hd] = the attention of `query` [hd] over the first
/// `n_keys` rows of `keys` and `values`.
fn attend_row(query: &[f32], n_keys: usize, keys: &[f32], values: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
    let hd = query.len();
    scores.clear();
    scores.extend((0..n_keys).map(|j| crate::flex::dot(query, &keys[j * hd..(j + 1) * hd]) * scale));
    let total = softmax_weights(scores);
    out.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        for (o, &x) in out.iter_mut().zip(&values[j * hd..(j + 1) * hd]) {
            *o += p * x;
        }
    }
    out.iter_mut().for_each(|o| *o /= total);
}

/// Most rows of a tile (registers: a query and an output's sums per row).
pub(crate) const MAX_ROWS: usize = 4;

/// Scores → `e^(s − max)` in place; their sum, added in order.
fn softmax_weights(scores: &mut [f32]) -> f32 {
    let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - top).exp();
        total += *s;
    }
    total
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::MAX_ROWS;
    use std::arch::x86_64::*;

    pub const LANES: usize = 16;
    /// Widest head in registers.
    pub const MAX_HEAD_DIM: usize = 8 * LANES;

    /// [`super::attend_rows`] for hd a multiple of 16 up to [`MAX_HEAD_DIM`]: rows in
    /// register tiles of R ≤ 16 / (hd / 16) (queries and output sums).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn attend_rows(queries: &[f32], n_keys: &[usize], keys: &[f32], values: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
        let hd = queries.len() / n_keys.len().max(1);
        let n = hd / LANES;
        let tile = (16 / n).clamp(1, MAX_ROWS);
        for (i, n_keys) in n_keys.chunks(tile).enumerate() {
            let (q, o) = (&queries[i * tile * hd..][..n_keys.len() * hd], &mut out[i * tile * hd..][..n_keys.len() * hd]);
            // SAFETY: as the caller's; N is hd / 16 and R the tile's rows (≤ 16 / N).
            unsafe {
                match n_keys.len() {
                    4 => by_head::<4>(n, q, n_keys, keys, values, scale, scores, o),
                    3 => by_head::<3>(n, q, n_keys, keys, values, scale, scores, o),
                    2 => by_head::<2>(n, q, n_keys, keys, values, scale, scores, o),
                    1 => by_head::<1>(n, q, n_keys, keys, values, scale, scores, o),
                    r => unreachable!("a tile of {r} rows"),
                }
            }
        }
    }

    /// A tile of R rows for a head of `n` registers (R ≤ 16 / n).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn by_head<const R: usize>(n: usize, q: &[f32], n_keys: &[usize], keys: &[f32], values: &[f32], scale: f32, scores: &mut Vec<f32>, o: &mut [f32]) {
        // SAFETY: as the caller's.
        unsafe {
            match n {
                1 => tile_rows::<1, R>(q, n_keys, keys, values, scale, scores, o),
                2 => tile_rows::<2, R>(q, n_keys, keys, values, scale, scores, o),
                3 => tile_rows::<3, R>(q, n_keys, keys, values, scale, scores, o),
                4 => tile_rows::<4, R>(q, n_keys, keys, values, scale, scores, o),
                5 => tile_rows::<5, R>(q, n_keys, keys, values, scale, scores, o),
                6 => tile_rows::<6, R>(q, n_keys, keys, values, scale, scores, o),
                7 => tile_rows::<7, R>(q, n_keys, keys, values, scale, scores, o),
                8 => tile_rows::<8, R>(q, n_keys, keys, values, scale, scores, o),
                n => unreachable!("a head of {n} registers"),
            }
        }
    }

    /// The 16 × 16 matrix of `rows` transposed: lane k of result l is lane l of row k.
    /// Pairs of rows interleaved by 32 then 64 bits, then 128-bit quarters gathered.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose(rows: [__m512; LANES]) -> [__m512; LANES] {
        // a[2i], a[2i + 1]: rows 2i and 2i + 1 interleaved (low, high pairs of each quarter).
        let a: [__m512; LANES] = std::array::from_fn(|i| {
            let (r0, r1) = (rows[i & !1], rows[i | 1]);
            if i % 2 == 0 { _mm512_unpacklo_ps(r0, r1) } else { _mm512_unpackhi_ps(r0, r1) }
        });
        // b[4g + c]: in quarter L, rows 4g..4g + 4 of column 4L + c.
        let b: [__m512; LANES] = std::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            let (x, y) = (_mm512_castps_pd(a[4 * g + c / 2]), _mm512_castps_pd(a[4 * g + 2 + c / 2]));
            _mm512_castpd_ps(if c % 2 == 0 { _mm512_unpacklo_pd(x, y) } else { _mm512_unpackhi_pd(x, y) })
        });
        // Result 4L + c: quarter L of b[c], b[4 + c], b[8 + c], b[12 + c].
        std::array::from_fn(|i| {
            let (quarter, c) = (i / 4, i % 4);
            let (e, f) = if quarter < 2 {
                (_mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]), _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]))
            } else {
                (_mm512_shuffle_f32x4::<0xEE>(b[c], b[4 + c]), _mm512_shuffle_f32x4::<0xEE>(b[8 + c], b[12 + c]))
            };
            if quarter % 2 == 0 { _mm512_shuffle_f32x4::<0x88>(e, f) } else { _mm512_shuffle_f32x4::<0xDD>(e, f) }
        })
    }

    /// R rows of N registers each: every key's row, then every value's row, loaded once
    /// for the R rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_rows<const N: usize, const R: usize>(queries: &[f32], n_keys: &[usize], keys: &[f32], values: &[f32], scale: f32, scores: &mut Vec<f32>, out: &mut [f32]) {
        let hd = N * LANES;
        let most = n_keys.iter().copied().max().unwrap_or(0);
        // SAFETY (every load and store): rows j < n_keys[i] ≤ most of keys and values hold
        // hd values each, queries and out R rows of hd (the callers' assertions).
        let q: [[__m512; N]; R] = std::array::from_fn(|i| std::array::from_fn(|c| unsafe { _mm512_loadu_ps(queries.as_ptr().add(i * hd + c * LANES)) }));
        // Scores [R, most]: row i's first n_keys[i] are its own.
        scores.clear();
        scores.resize(R * most, 0.0);
        let scores_at = scores.as_mut_ptr();
        let scale_v = _mm512_set1_ps(scale);
        let mut j = 0;
        // Sixteen keys at a time: each row's sixteen keys' lanes transposed, so that lane l
        // of every key is added in one vector addition, from lane 0 as `dot` adds them.
        while j + LANES <= most {
            for (i, q) in q.iter().enumerate() {
                let acc: [__m512; LANES] = std::array::from_fn(|key| {
                    let mut acc = _mm512_setzero_ps();
                    for c in 0..N {
                        acc = _mm512_fmadd_ps(q[c], unsafe { _mm512_loadu_ps(keys.as_ptr().add((j + key) * hd + c * LANES)) }, acc);
                    }
                    acc
                });
                let lanes = transpose(acc);
                let mut total = _mm512_setzero_ps();
                for lane in lanes {
                    total = _mm512_add_ps(total, lane);
                }
                unsafe { _mm512_storeu_ps(scores_at.add(i * most + j), _mm512_mul_ps(total, scale_v)) };
            }
            j += LANES;
        }
        // The last keys one at a time, the rows' chains of lane sums side by side.
        while j < most {
            let k: [__m512; N] = std::array::from_fn(|c| unsafe { _mm512_loadu_ps(keys.as_ptr().add(j * hd + c * LANES)) });
            let mut lanes = [[0f32; LANES]; R];
            for (i, lanes) in lanes.iter_mut().enumerate() {
                let mut acc = _mm512_setzero_ps();
                for c in 0..N {
                    acc = _mm512_fmadd_ps(q[i][c], k[c], acc);
                }
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
            }
            let mut total = [0f32; R];
            for l in 0..LANES {
                for (t, lanes) in total.iter_mut().zip(&lanes) {
                    *t += lanes[l];
                }
            }
            for (i, t) in total.into_iter().enumerate() {
                unsafe { *scores_at.add(i * most + j) = t * scale };
            }
            j += 1;
        }
        let totals: [f32; R] = std::array::from_fn(|i| super::softmax_weights(&mut scores[i * most..i * most + n_keys[i]]));
        let mut acc = [[_mm512_setzero_ps(); N]; R];
        for j in 0..most {
            let v: [__m512; N] = std::array::from_fn(|c| unsafe { _mm512_loadu_ps(values.as_ptr().add(j * hd + c * LANES)) });
            for (i, acc) in acc.iter_mut().enumerate() {
                if j < n_keys[i] {
                    let p = _mm512_set1_ps(scores[i * most + j]);
                    for c in 0..N {
                        acc[c] = _mm512_add_ps(acc[c], _mm512_mul_ps(p, v[c]));
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let total = _mm512_set1_ps(totals[i]);
            for (c, a) in acc.iter().enumerate() {
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(i * hd + c * LANES), _mm512_div_ps(*a, total)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// The definition the fast path must equal: [`attend_row`], row by row.
    fn definition(query: &[f32], keys: &[f32], values: &[f32], n_keys: usize, scale: f32) -> Vec<f32> {
        let mut out = vec![0f32; query.len()];
        attend_row(query, n_keys, keys, values, scale, &mut Vec::new(), &mut out);
        out
    }

    /// Every head width (whole registers or not, up to past the widest in registers),
    /// tile of rows (one to four, rows seeing different numbers of keys as in a causal
    /// prefill) and key count (one, a few, many) gives the definition's bits, row by row.
    #[test]
    fn attend_rows_equals_the_definition_bit_for_bit() {
        for hd in [8, 16, 48, 64, 80, 128, 144] {
            for most in [1, 3, 5, 17, 130] {
                for rows in 1..=MAX_ROWS {
                    let n_keys: Vec<usize> = (0..rows).map(|i| most - (rows - 1 - i).min(most - 1)).collect();
                    let (q, k, v) = (values(rows * hd, 1), values(most * hd, 2), values(most * hd, 3));
                    let scale = 1.0 / (hd as f32).sqrt();
                    let mut out = vec![0f32; rows * hd];
                    attend_rows(&q, &n_keys, &k, &v, scale, &mut Vec::new(), &mut out);
                    for (i, &n) in n_keys.iter().enumerate() {
                        let want = definition(&q[i * hd..(i + 1) * hd], &k, &v, n, scale);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&out[i * hd..(i + 1) * hd]), bits(&want), "hd {hd}, {rows} rows, row {i} over {n} keys");
                    }
                }
            }
        }
    }
}
