//! [`SphinxOps`] on Burn's CPU backend: rayon over output columns (on the calling thread
//! in the browser); halves widened in registers and multiplied with f32 x by fused
//! multiply-adds (`flex_halves.rs`; bf16 with x rounded to bf16: `flex_bf16.rs`); blocks
//! dotted in integers against x rounded to 8 bits (`flex_blocks.rs`, `flex_groups.rs`).

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::TensorData;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::blocks::{BlockFormat, BLOCK};
use crate::flex_attention;
use crate::flex_bf16::{self, Bf16Rows};
use crate::flex_blocks::{dot_blocks, RoundedRow};
use crate::flex_groups::dot_group;
use crate::flex_halves::{self, PaddedRows};
use crate::interleaved::{self, GROUP};
use crate::SphinxOps;

// Word c of a row holds column 2c in its low half: in memory that is the u16 order
// only on little-endian machines (every target this runtime builds for).
#[cfg(target_endian = "big")]
compile_error!("packed halves are read as little-endian u16 pairs");

/// Outputs computed per rayon task: enough work to outweigh scheduling.
const OUTPUTS_PER_TASK: usize = 16;

impl SphinxOps for Flex {
    fn matvec_packed(x: FlexTensor, w: FlexTensor, bf16: bool, round_x: bool) -> FlexTensor {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let xs = x.as_slice::<f32>().expect("matvec_packed: x must be f32");
        let ws = w.as_slice::<u32>().expect("matvec_packed: w must be u32 words");
        let (rows, inp) = (x.layout().shape()[0], x.layout().shape()[1]);
        let (n_out, words) = (w.layout().shape()[0], w.layout().shape()[1]);
        assert_eq!(inp, 2 * words, "matvec_packed: x has {inp} columns, w {words} words per row");
        let halves: &[u16] = bytemuck::cast_slice(ws);
        if bf16 && round_x {
            // x rounded to bf16: the pairs' products of AVX512-BF16 (`flex_bf16.rs`).
            let x_rows = Bf16Rows::new(xs, [rows, inp]);
            return each_output_group::<Vec<u16>, OUTPUTS_PER_TASK>([rows, n_out], Vec::new, |padded, first, out| {
                flex_bf16::dot_rows(&x_rows, task_rows(halves, first, inp, padded), out)
            });
        }
        // Any number of rows: each weight widened in a register, x in f32 (`flex_halves.rs`),
        // a task's rows of W at once so that each tile of x is read once per task.
        let x_rows = PaddedRows::new(xs, [rows, inp]);
        each_output_group::<Vec<u16>, OUTPUTS_PER_TASK>([rows, n_out], Vec::new, |padded, first, out| {
            flex_halves::dot_rows(&x_rows, task_rows(halves, first, inp, padded), bf16, out)
        })
    }

    fn matvec_blocks(x: FlexTensor, w: FlexTensor, q4: bool, interleaved: bool) -> FlexTensor {
        let format = BlockFormat::of_q4(q4);
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let xs = x.as_slice::<f32>().expect("matvec_blocks: x must be f32");
        let ws = w.as_slice::<u32>().expect("matvec_blocks: w must be u32 words");
        let (rows, inp) = (x.layout().shape()[0], x.layout().shape()[1]);
        let (n_out, row_bytes) = (w.layout().shape()[0], w.layout().shape()[1] * 4);
        assert_eq!(format.cols_in(row_bytes), Some(inp), "matvec_blocks: x has {inp} columns, w {row_bytes} bytes of {} blocks per row", format.name());
        let bytes: &[u8] = bytemuck::cast_slice(ws);
        // x rounded row by row (a prefill's rows in parallel; a decode step's few on this thread).
        let round = |r: usize| RoundedRow::new(&xs[r * inp..(r + 1) * inp]);
        let x_rows: Vec<RoundedRow> = if rows > 4 { (0..rows).into_par_iter().map(round).collect() } else { (0..rows).map(round).collect() };
        if interleaved {
            assert!(interleaved::fits(n_out), "matvec_blocks: {n_out} rows interleaved");
            let group_bytes = GROUP * row_bytes;
            let x_refs: Vec<&RoundedRow> = x_rows.iter().collect();
            return each_output_group::<(), GROUP>([rows, n_out], || (), |_, first, out| {
                dot_group(&x_refs, &bytes[first / GROUP * group_bytes..][..group_bytes], format, out);
            });
        }
        each_output([rows, n_out], || (), |_, r, j| dot_blocks(&x_rows[r], &bytes[j * row_bytes..(j + 1) * row_bytes], format))
    }

    fn round_to_q8_0(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let xs = x.as_slice::<f32>().expect("round_to_q8_0: x must be f32");
        let (rows, inp) = (x.layout().shape()[0], x.layout().shape()[1]);
        assert_eq!(inp % BLOCK, 0, "round_to_q8_0: rows of whole blocks");
        let mut out = vec![0f32; rows * inp];
        out.par_chunks_mut(inp.max(1)).zip(xs.par_chunks(inp.max(1))).for_each(|(dst, row)| {
            let mut blocks = Vec::new();
            BlockFormat::Q8_0.quantize(row, &mut blocks);
            BlockFormat::Q8_0.dequantize(&blocks, dst);
        });
        FlexTensor::from_data(TensorData::new(out, [rows, inp]))
    }

    fn dequantize_blocks(w: FlexTensor, q4: bool, interleaved: bool) -> FlexTensor {
        let format = BlockFormat::of_q4(q4);
        let w = w.to_contiguous();
        let ws = w.as_slice::<u32>().expect("dequantize_blocks: u32 words");
        let (rows, row_bytes) = (w.layout().shape()[0], w.layout().shape()[1] * 4);
        let cols = format.cols_in(row_bytes).expect("dequantize_blocks: rows of whole blocks");
        let bytes: &[u8] = bytemuck::cast_slice(ws);
        let mut out = vec![0f32; rows * cols];
        if interleaved {
            assert!(interleaved::fits(rows), "dequantize_blocks: {rows} rows interleaved");
            out.par_chunks_mut(GROUP * cols)
                .zip(bytes.par_chunks(GROUP * row_bytes))
                .for_each(|(dst, src)| interleaved::dequantize(src, dst, GROUP, format));
        } else if cols > 0 {
            out.par_chunks_mut(cols).zip(bytes.par_chunks(row_bytes)).for_each(|(dst, src)| format.dequantize(src, dst));
        }
        FlexTensor::from_data(TensorData::new(out, [rows, cols]))
    }

    fn unpack_halves(w: FlexTensor, bf16: bool) -> FlexTensor {
        let w = w.to_contiguous();
        let ws = w.as_slice::<u32>().expect("unpack_halves: u32 words");
        let (rows, words) = (w.layout().shape()[0], w.layout().shape()[1]);
        let halves: &[u16] = bytemuck::cast_slice(ws);
        let mut out = vec![0f32; rows * words * 2];
        const CHUNK: usize = 1 << 16;
        out.par_chunks_mut(CHUNK)
            .zip(halves.par_chunks(CHUNK))
            .for_each(|(dst, src)| widen(src, bf16, dst));
        FlexTensor::from_data(TensorData::new(out, [rows, 2 * words]))
    }

    fn rms_norm(x: FlexTensor, weight: FlexTensor, eps: f32) -> FlexTensor {
        let (x, w) = (x.to_contiguous(), weight.to_contiguous());
        let xs = x.as_slice::<f32>().expect("rms_norm: x must be f32");
        let ws = w.as_slice::<f32>().expect("rms_norm: weight must be f32");
        let (rows, d) = (x.layout().shape()[0], x.layout().shape()[1]);
        assert_eq!(ws.len(), d, "rms_norm: weight of {} for rows of {d}", ws.len());
        let mut out = vec![0f32; rows * d];
        out.par_chunks_mut(d.max(1)).zip(xs.par_chunks(d.max(1))).for_each(|(o, row)| {
            let inv = 1.0 / (dot(row, row) / d as f32 + eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(row).zip(ws) {
                *o = v * inv * g;
            }
        });
        FlexTensor::from_data(TensorData::new(out, [rows, d]))
    }

    fn argmax(x: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let xs = x.as_slice::<f32>().expect("argmax: x must be f32");
        let (rows, n) = (x.layout().shape()[0], x.layout().shape()[1]);
        assert!(n > 0 && u32::try_from(n).is_ok(), "argmax: rows of {n} values");
        let out: Vec<u32> = xs
            .par_chunks(n)
            .map(|row| row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best }) as u32)
            .collect();
        FlexTensor::from_data(TensorData::new(out, [rows]))
    }

    fn rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor, start: usize, seq: usize) -> FlexTensor {
        let (x, cos, sin) = (x.to_contiguous(), cos.to_contiguous(), sin.to_contiguous());
        let xs = x.as_slice::<f32>().expect("rope: x must be f32");
        let (cs, ss) = (cos.as_slice::<f32>().expect("rope: cos f32"), sin.as_slice::<f32>().expect("rope: sin f32"));
        let (rows, width) = (x.layout().shape()[0], x.layout().shape()[1]);
        let (positions, half) = (cos.layout().shape()[0], cos.layout().shape()[1]);
        assert!(half > 0 && width % (2 * half) == 0, "rope: rows of {width} are not whole heads of {}", 2 * half);
        assert!(seq > 0 && rows % seq == 0 && start + seq <= positions, "rope: positions {start}..{} of {positions}", start + seq);
        let mut out = vec![0f32; rows * width];
        out.par_chunks_mut(width).zip(xs.par_chunks(width)).enumerate().for_each(|(r, (o, row))| {
            let pos = start + r % seq;
            let (c, s) = (&cs[pos * half..(pos + 1) * half], &ss[pos * half..(pos + 1) * half]);
            for (o, x) in o.chunks_exact_mut(2 * half).zip(row.chunks_exact(2 * half)) {
                for k in 0..half {
                    let (x0, x1) = (x[2 * k], x[2 * k + 1]);
                    o[2 * k] = x0 * c[k] - x1 * s[k];
                    o[2 * k + 1] = x0 * s[k] + x1 * c[k];
                }
            }
        });
        FlexTensor::from_data(TensorData::new(out, [rows, width]))
    }

    fn swiglu(gate: FlexTensor, up: FlexTensor) -> FlexTensor {
        let (gate, up) = (gate.to_contiguous(), up.to_contiguous());
        let gs = gate.as_slice::<f32>().expect("swiglu: gate must be f32");
        let us = up.as_slice::<f32>().expect("swiglu: up must be f32");
        assert_eq!(gs.len(), us.len(), "swiglu: gate of {}, up of {}", gs.len(), us.len());
        let mut out = vec![0f32; gs.len()];
        const CHUNK: usize = 1 << 14;
        out.par_chunks_mut(CHUNK).zip(gs.par_chunks(CHUNK).zip(us.par_chunks(CHUNK))).for_each(|(o, (g, u))| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        });
        FlexTensor::from_data(TensorData::new(out, [gs.len()]))
    }

    fn attention(q: FlexTensor, k: FlexTensor, v: FlexTensor, keys: usize, start: usize, seq: usize, scale: f32) -> FlexTensor {
        let (q, k, v) = (q.to_contiguous(), k.to_contiguous(), v.to_contiguous());
        let qs = q.as_slice::<f32>().expect("attention: q must be f32");
        let (ks, vs) = (k.as_slice::<f32>().expect("attention: k f32"), v.as_slice::<f32>().expect("attention: v f32"));
        let [groups, rows, hd] = [q.layout().shape()[0], q.layout().shape()[1], q.layout().shape()[2]];
        let capacity = k.layout().shape()[1];
        let mut out = vec![0f32; groups * rows * hd];
        // One task per tile of a group's query rows (which share its keys and values):
        // their scores, softmaxes and weighted sums of values.
        let tile = flex_attention::MAX_ROWS;
        out.par_chunks_mut((rows * hd).max(1)).enumerate().for_each(|(group, out)| {
            let (kv, values) = (&ks[group * capacity * hd..], &vs[group * capacity * hd..]);
            out.par_chunks_mut((tile * hd).max(1)).enumerate().for_each_init(Vec::new, |scores: &mut Vec<f32>, (t, o)| {
                let (first, len) = (t * tile, o.len() / hd.max(1));
                let mut n_keys = [0; flex_attention::MAX_ROWS];
                for (i, n) in n_keys[..len].iter_mut().enumerate() {
                    *n = keys.min(start + (first + i) % seq + 1);
                }
                let queries = &qs[(group * rows + first) * hd..][..o.len()];
                flex_attention::attend_rows(queries, &n_keys[..len], kv, values, scale, scores, o);
            });
        });
        FlexTensor::from_data(TensorData::new(out, [groups, rows, hd]))
    }

    fn moe_route(scores: FlexTensor, k: usize) -> FlexTensor {
        let scores = scores.to_contiguous();
        let ss = scores.as_slice::<f32>().expect("moe_route: f32 scores");
        let (n, e) = (scores.layout().shape()[0], scores.layout().shape()[1]);
        let mut routes = vec![0u32; n * 2 * k];
        for (row, out) in ss.chunks(e.max(1)).zip(routes.chunks_mut(2 * k)) {
            for (j, (expert, weight)) in crate::route_token(row, k).into_iter().enumerate() {
                out[j] = expert as u32;
                out[k + j] = weight.to_bits();
            }
        }
        FlexTensor::from_data(TensorData::new(routes, [n, 2 * k]))
    }

    fn moe_up(x: FlexTensor, w1: FlexTensor, w3: FlexTensor, routes: FlexTensor, experts: usize) -> FlexTensor {
        let (x, w1, w3, routes) = (x.to_contiguous(), w1.to_contiguous(), w3.to_contiguous(), routes.to_contiguous());
        let xs = x.as_slice::<f32>().expect("moe_up: x f32");
        let (w1s, w3s) = (w1.as_slice::<f32>().expect("moe_up: w1 f32"), w3.as_slice::<f32>().expect("moe_up: w3 f32"));
        let rs = routes.as_slice::<u32>().expect("moe_up: routes u32");
        let (n, d, k) = (x.layout().shape()[0], x.layout().shape()[1], routes.layout().shape()[1] / 2);
        let f = w1.layout().shape()[0] / experts;
        // Each output, of (token, expert) row and hidden unit, is two dot products.
        each_output([n * k, f], || (), |_, row, col| {
            let (t, j) = (row / k, row % k);
            let w_row = (rs[t * 2 * k + j] as usize * f + col) * d;
            let x_t = &xs[t * d..(t + 1) * d];
            let g = dot(x_t, &w1s[w_row..w_row + d]);
            g / (1.0 + (-g).exp()) * dot(x_t, &w3s[w_row..w_row + d])
        })
    }

    fn moe_down(h: FlexTensor, w2: FlexTensor, routes: FlexTensor) -> FlexTensor {
        let (h, w2, routes) = (h.to_contiguous(), w2.to_contiguous(), routes.to_contiguous());
        let hs = h.as_slice::<f32>().expect("moe_down: h f32");
        let w2s = w2.as_slice::<f32>().expect("moe_down: w2 f32");
        let rs = routes.as_slice::<u32>().expect("moe_down: routes u32");
        let (n, k, d, f) = (routes.layout().shape()[0], routes.layout().shape()[1] / 2, w2.layout().shape()[1], h.layout().shape()[1]);
        let mut y = vec![0f32; n * d];
        // One task per token: y_n += weight · h[f] · (row e·F + f of w2), row by row.
        y.par_chunks_mut(d.max(1)).enumerate().for_each(|(t, out)| {
            for j in 0..k {
                let (e, weight) = (rs[t * 2 * k + j] as usize, f32::from_bits(rs[t * 2 * k + k + j]));
                let mut part = vec![0f32; d];
                for (c, &hv) in hs[(t * k + j) * f..(t * k + j + 1) * f].iter().enumerate() {
                    let w_row = &w2s[(e * f + c) * d..(e * f + c + 1) * d];
                    part.iter_mut().zip(w_row).for_each(|(p, &w)| *p += hv * w);
                }
                out.iter_mut().zip(&part).for_each(|(o, &p)| *o += weight * p);
            }
        });
        FlexTensor::from_data(TensorData::new(y, [n, d]))
    }
}

/// Widens 16-bit patterns to f32 (exact), with F16C/AVX2 where the CPU has them.
fn widen(bits: &[u16], bf16: bool, dst: &mut [f32]) {
    if bf16 {
        bits.reinterpret_cast::<bf16>().convert_to_f32_slice(dst);
    } else {
        bits.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
    }
}

/// The [`OUTPUTS_PER_TASK`] rows of W from row `first` (`inp` halves each), padded with
/// zero rows (in `padded`) where the matrix ends before them.
fn task_rows<'a>(halves: &'a [u16], first: usize, inp: usize, padded: &'a mut Vec<u16>) -> &'a [u16] {
    let rows = &halves[first * inp..((first + OUTPUTS_PER_TASK) * inp).min(halves.len())];
    if rows.len() == OUTPUTS_PER_TASK * inp {
        return rows;
    }
    padded.clear();
    padded.extend_from_slice(rows);
    padded.resize(OUTPUTS_PER_TASK * inp, 0);
    padded
}

/// A [rows, cols] f32 tensor whose value (r, c) is `value(scratch, r, c)`: [`each_output_group`]
/// one output at a time.
fn each_output<S>(
    dims: [usize; 2],
    scratch: impl Fn() -> S + Sync + Send,
    value: impl Fn(&mut S, usize, usize) -> f32 + Sync + Send,
) -> FlexTensor {
    each_output_group::<S, 1>(dims, scratch, |s, c, out| {
        for (r, o) in out.iter_mut().enumerate() {
            o[0] = value(s, r, c);
        }
    })
}

/// A [rows, cols] f32 tensor whose values (r, c..c + G), for c a multiple of G, are
/// written by `values(scratch, c, out)` into `out[r]`, for every row r at once (when G
/// does not divide `cols`, the last group's values past `cols` are dropped). A rayon
/// task takes [`OUTPUTS_PER_TASK`] columns (a multiple of G), one group of G after the
/// other, so the weights of an output group are read from memory once for all the rows
/// of x (the sequences of a decoding batch, the positions of a prefill); each value is
/// computed on its own, the same whatever the other rows. `scratch` makes each task's
/// own buffer. Each task writes its columns of every row straight into the result
/// (they are no slice of it, hence [`DisjointColumns`]).
fn each_output_group<S, const G: usize>(
    [rows, cols]: [usize; 2],
    scratch: impl Fn() -> S + Sync + Send,
    values: impl Fn(&mut S, usize, &mut [[f32; G]]) + Sync + Send,
) -> FlexTensor {
    const { assert!(OUTPUTS_PER_TASK % G == 0) };
    let mut out = vec![0f32; rows * cols];
    if rows > 0 {
        let columns = DisjointColumns { out: out.as_mut_ptr(), cols };
        (0..cols.div_ceil(OUTPUTS_PER_TASK)).into_par_iter().for_each_init(
            || (scratch(), vec![[0f32; G]; rows]),
            |(s, group_out), task| {
                let first = task * OUTPUTS_PER_TASK;
                let task_cols = OUTPUTS_PER_TASK.min(cols - first);
                for group in 0..task_cols.div_ceil(G) {
                    values(s, first + group * G, group_out);
                    // A last group past `cols` (when G does not divide it) keeps its columns inside.
                    let n = G.min(task_cols - group * G);
                    for (r, v) in group_out.iter().enumerate() {
                        // SAFETY: columns first..first + task_cols of every row are this task's alone.
                        unsafe { columns.write(r, first + group * G, &v[..n]) };
                    }
                }
            },
        );
    }
    FlexTensor::from_data(TensorData::new(out, [rows, cols]))
}

/// A [rows, cols] row-major result whose columns are written by different rayon tasks.
struct DisjointColumns {
    out: *mut f32,
    cols: usize,
}

// SAFETY: tasks write through it to disjoint columns only (see `write`).
unsafe impl Sync for DisjointColumns {}

impl DisjointColumns {
    /// Writes `v` at row `r`, columns `c..c + v.len()`.
    ///
    /// # Safety
    /// Those columns lie inside the result and no other thread writes them meanwhile.
    unsafe fn write(&self, r: usize, c: usize, v: &[f32]) {
        debug_assert!(c + v.len() <= self.cols);
        // SAFETY: the caller's contract; `v` is not inside the result.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.out.add(r * self.cols + c), v.len()) };
    }
}

/// Σ a[i]·b[i] in f32, over eight partial sums (so the compiler vectorises it).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `dot_avx2` is compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<true>(a, b)
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_lanes::<false>(a, b)
}

/// `FUSED`: multiply-add in one rounding (only where the CPU has FMA; elsewhere
/// `mul_add` is a slow library call).
#[inline(always)]
fn dot_lanes<const FUSED: bool>(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] = if FUSED { ca[l].mul_add(cb[l], acc[l]) } else { acc[l] + ca[l] * cb[l] };
        }
    }
    acc.iter().sum::<f32>() + tail
}
