//! [`SphinxOps`] on Burn's cube backend (wgpu natively and in the browser): launches
//! the kernels of `kernels.rs`.

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::{CubeCount, CubeDim};

use crate::blocks::{BlockFormat, BLOCK};
use crate::{block_kernels, kernels, moe_kernels, rounded_x, SphinxOps};

/// Units per cube in the reductions: a power of two within WebGPU's guaranteed 256.
const REDUCE_BLOCK: usize = 64;
/// Units per cube in the MoE kernels (one output each).
const MATVEC_BLOCK: usize = 64;
/// Most outputs one unit of a matrix-vector product computes (docs/design.md §9, "Outputs
/// per unit"): each value of x it loads serves all of them. On lavapipe 8 decoded q4_0
/// TinyLlama at 1.6–1.8 tok/s, 4 at 1.3–1.6, 1 at 0.7–1.0.
const MATVEC_OUTPUTS: usize = 8;
/// Units per cube in the matrix-vector products: with 8 outputs each, a 256-row matrix
/// (a kv projection) still spans a cube per CPU thread on lavapipe.
const MATVEC_UNITS: usize = 32;
/// Rows of x up to which each unit takes one row (decoding, a batch's few positions).
const DECODE_ROWS: usize = 4;
/// Rows of x per unit beyond [`DECODE_ROWS`] (a prefill on a CPU driver; docs/design.md
/// §9, "Rows per unit"): each weight is unpacked once for all of them. On lavapipe, 16
/// rows × 16 outputs prefilled TinyLlama at 7.6 tok/s (bf16) and 7.4 (q4_0), 8 × 8 at
/// 4.6 and 5.0, widened tiles through Burn's matmul at 4.1 and 4.4.
const TILE_ROWS: usize = 16;
/// Outputs per unit beyond [`DECODE_ROWS`] rows of x.
const TILE_OUTPUTS: usize = 16;
/// Units per cube in element-wise kernels.
const ELEMENTWISE_BLOCK: usize = 256;
/// WebGPU guarantees 65535 workgroups per grid dimension.
const MAX_GRID: usize = 65_535;

/// A grid of at least `cubes` cubes over x and y, `z` deep.
fn grid(cubes: usize, z: usize) -> CubeCount {
    let x = cubes.clamp(1, MAX_GRID);
    CubeCount::Static(x as u32, cubes.div_ceil(x).max(1) as u32, z as u32)
}

/// The operands of a matrix-vector kernel (one unit per output, rows in the grid's z):
/// x [rows, inp] f32 and w [n_out, words] u32 made contiguous, and the [rows, n_out] output.
struct Matvec {
    x: CubeTensor,
    w: CubeTensor,
    out: CubeTensor,
    rows: usize,
    inp: usize,
    n_out: usize,
    words: usize,
}

impl Matvec {
    fn new(x: CubeTensor, w: CubeTensor, what: &str) -> Self {
        assert_eq!((x.dtype, w.dtype), (DType::F32, DType::U32), "{what}: x f32, w u32 words");
        let (x, w) = (into_contiguous(x), into_contiguous(w));
        let (rows, inp) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (n_out, words) = (w.meta.shape()[0], w.meta.shape()[1]);
        let out = empty_f32(&x, Shape::new([rows, n_out]));
        Self { x, w, out, rows, inp, n_out, words }
    }

    /// Whether x has more rows than decoding's few: then each unit takes a tile of
    /// [`TILE_ROWS`] rows × [`TILE_OUTPUTS`] outputs.
    fn tiled(&self) -> bool {
        self.rows > DECODE_ROWS
    }

    /// Outputs per unit: the most of [`MATVEC_OUTPUTS`] (or [`TILE_OUTPUTS`]), 8, 4, 2, 1
    /// that divides n_out.
    fn outputs(&self) -> usize {
        let most = if self.tiled() { TILE_OUTPUTS } else { MATVEC_OUTPUTS };
        [most, 8, 4, 2, 1].into_iter().find(|&u| u <= most && self.n_out % u == 0).unwrap_or(1)
    }

    /// Rows of x per unit: one each for a few rows (decoding), else [`TILE_ROWS`].
    fn rows_per_unit(&self) -> usize {
        if self.tiled() { TILE_ROWS } else { 1 }
    }

    /// [`MATVEC_UNITS`] units per cube of `outputs()` outputs each, a tile of
    /// `rows_per_unit()` rows per z (the kernels step through further tiles beyond
    /// WebGPU's 65,535).
    fn grid(&self) -> CubeCount {
        grid((self.n_out / self.outputs()).div_ceil(MATVEC_UNITS), self.rows.div_ceil(self.rows_per_unit()).min(MAX_GRID))
    }
}

fn empty_f32(like: &CubeTensor, shape: Shape) -> CubeTensor {
    empty_device_contiguous_dtype(like.client.clone(), like.device.clone(), shape, DType::F32)
}

/// x [rows, inp] (contiguous f32, inp a multiple of 32) rounded to q8_0 blocks
/// (`rounded_x.rs`): its quants four to a word [rows, inp / 4] u32 and its blocks'
/// scales [rows, inp / 32] f32.
fn round_x(x: CubeTensor, rows: usize, inp: usize) -> (CubeTensor, CubeTensor) {
    assert_eq!(inp % BLOCK, 0, "round_x: rows of whole blocks");
    let xq = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows, inp / 4]), DType::U32);
    let xd = empty_f32(&x, Shape::new([rows, inp / BLOCK]));
    let client = x.client.clone();
    // SAFETY: the kernel guards its block below xd's rows · inp / 32 blocks, each of
    // which is 32 values of x and 8 words of xq.
    unsafe {
        rounded_x::round_x_kernel::launch_unchecked(
            &client,
            grid((rows * inp / BLOCK).div_ceil(ELEMENTWISE_BLOCK), 1),
            CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
            x.into_tensor_arg(),
            xq.clone().into_tensor_arg(),
            xd.clone().into_tensor_arg(),
        )
    };
    (xq, xd)
}

impl SphinxOps for CubeBackend {
    fn matvec_packed(x: CubeTensor, w: CubeTensor, bf16: bool, _round_x: bool) -> CubeTensor {
        let m = Matvec::new(x, w, "matvec_packed");
        assert_eq!(m.inp, 2 * m.words, "matvec_packed: x has {} columns, w {} words per row", m.inp, m.words);
        let (grid, outputs, rows) = (m.grid(), m.outputs(), m.rows_per_unit());
        let Matvec { x, w, out, .. } = m;
        let client = x.client.clone();
        // SAFETY: every index the kernel reads or writes is below the bound it checks
        // (o + outputs ≤ n_out, as outputs divides n_out; rows read below n_rows, written
        // only there; c < words by the loop) or fixed by the shapes asserted above.
        unsafe {
            kernels::matvec_packed_kernel::launch_unchecked(
                &client,
                grid,
                CubeDim::new_1d(MATVEC_UNITS as u32),
                x.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                bf16,
                outputs,
                rows,
            )
        };
        out
    }

    fn matvec_blocks(x: CubeTensor, w: CubeTensor, q4: bool, interleaved: bool) -> CubeTensor {
        assert!(!interleaved, "matvec_blocks: interleaved blocks are the CPU's layout");
        let format = BlockFormat::of_q4(q4);
        let m = Matvec::new(x, w, "matvec_blocks");
        let (inp, words) = (m.inp, m.words);
        assert_eq!(format.cols_in(words * 4), Some(inp), "matvec_blocks: x has {inp} columns, w {words} words of {} blocks per row", format.name());
        let (grid, outputs, rows) = (m.grid(), m.outputs(), m.rows_per_unit());
        let Matvec { x, w, out, rows: n_rows, .. } = m;
        let client = x.client.clone();
        let (xq, xd) = round_x(x, n_rows, inp);
        // SAFETY: the kernel guards o < n_out (then o + outputs ≤ n_out, as outputs
        // divides n_out); every block it reads lies in its rows' `words` words, and every
        // word of x's quants and every scale in row r's `inp / 4` and `inp / 32` (the
        // shapes asserted above and made by `round_x`).
        unsafe {
            block_kernels::matvec_blocks_kernel::launch_unchecked(
                &client,
                grid,
                CubeDim::new_1d(MATVEC_UNITS as u32),
                xq.into_tensor_arg(),
                xd.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                q4,
                outputs,
                rows,
            )
        };
        out
    }

    fn round_to_q8_0(x: CubeTensor) -> CubeTensor {
        assert_eq!(x.dtype, DType::F32, "round_to_q8_0: f32 x");
        let x = into_contiguous(x);
        let (rows, inp) = (x.meta.shape()[0], x.meta.shape()[1]);
        let out = empty_f32(&x, Shape::new([rows, inp]));
        let (xq, xd) = round_x(x, rows, inp);
        let client = xq.client.clone();
        // SAFETY: the kernel guards its word below xq's rows · inp / 4; each word is 4 values
        // of out and its block's scale one of xd's rows · inp / 32.
        unsafe {
            rounded_x::rounded_values_kernel::launch_unchecked(
                &client,
                grid((rows * inp / 4).div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                xq.into_tensor_arg(),
                xd.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }

    fn dequantize_blocks(w: CubeTensor, q4: bool, interleaved: bool) -> CubeTensor {
        assert!(!interleaved, "dequantize_blocks: interleaved blocks are the CPU's layout");
        let format = BlockFormat::of_q4(q4);
        assert_eq!(w.dtype, DType::U32, "dequantize_blocks: u32 words");
        let w = into_contiguous(w);
        let (rows, words) = (w.meta.shape()[0], w.meta.shape()[1]);
        let cols = format.cols_in(words * 4).expect("dequantize_blocks: rows of whole blocks");
        let out = empty_f32(&w, Shape::new([rows, cols]));
        let client = w.client.clone();
        // SAFETY: the kernel guards its pair index below rows · pairs per row, and out
        // holds 64 values per pair.
        unsafe {
            block_kernels::dequantize_blocks_kernel::launch_unchecked(
                &client,
                grid((rows * cols / (2 * BLOCK)).div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                q4,
            )
        };
        out
    }

    fn unpack_halves(w: CubeTensor, bf16: bool) -> CubeTensor {
        assert_eq!(w.dtype, DType::U32, "unpack_halves: u32 words");
        let w = into_contiguous(w);
        let (rows, words) = (w.meta.shape()[0], w.meta.shape()[1]);
        let out = empty_f32(&w, Shape::new([rows, 2 * words]));
        let client = w.client.clone();
        // SAFETY: the kernel guards i < w.len(), and out holds 2 · w.len() elements.
        unsafe {
            kernels::unpack_halves_kernel::launch_unchecked(
                &client,
                grid((rows * words).div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                bf16,
            )
        };
        out
    }

    fn rms_norm(x: CubeTensor, weight: CubeTensor, eps: f32) -> CubeTensor {
        assert_eq!((x.dtype, weight.dtype), (DType::F32, DType::F32), "rms_norm: f32");
        let (x, w) = (into_contiguous(x), into_contiguous(weight));
        let (rows, d) = (x.meta.shape()[0], x.meta.shape()[1]);
        assert_eq!(w.meta.shape()[0], d, "rms_norm: weight of {} for rows of {d}", w.meta.shape()[0]);
        let out = empty_f32(&x, Shape::new([rows, d]));
        let client = x.client.clone();
        // SAFETY: the kernel guards r < rows and c < d; w holds d values.
        unsafe {
            kernels::rms_norm_kernel::launch_unchecked(
                &client,
                grid(rows, 1),
                CubeDim::new_1d(REDUCE_BLOCK as u32),
                x.into_tensor_arg(),
                w.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                eps,
                REDUCE_BLOCK,
            )
        };
        out
    }

    fn argmax(x: CubeTensor) -> CubeTensor {
        assert_eq!(x.dtype, DType::F32, "argmax: f32");
        let x = into_contiguous(x);
        let (rows, n) = (x.meta.shape()[0], x.meta.shape()[1]);
        assert!(n > 0 && u32::try_from(n).is_ok(), "argmax: rows of {n} values");
        let out = empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), Shape::new([rows]), DType::U32);
        let client = x.client.clone();
        // SAFETY: the kernel guards r < rows and c < n; out holds rows values.
        unsafe {
            kernels::argmax_kernel::launch_unchecked(
                &client,
                grid(rows, 1),
                CubeDim::new_1d(REDUCE_BLOCK as u32),
                x.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                REDUCE_BLOCK,
            )
        };
        out
    }

    fn rope(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, start: usize, seq: usize) -> CubeTensor {
        assert_eq!((x.dtype, cos.dtype, sin.dtype), (DType::F32, DType::F32, DType::F32), "rope: f32");
        let (x, cos, sin) = (into_contiguous(x), into_contiguous(cos), into_contiguous(sin));
        let (rows, width) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (positions, half) = (cos.meta.shape()[0], cos.meta.shape()[1]);
        assert!(half > 0 && width % (2 * half) == 0, "rope: rows of {width} are not whole heads of {}", 2 * half);
        assert!(seq > 0 && rows % seq == 0 && start + seq <= positions, "rope: positions {start}..{} of {positions}", start + seq);
        let start = u32::try_from(start).expect("rope: start fits u32");
        let seq = u32::try_from(seq).expect("rope: seq fits u32");
        let out = empty_f32(&x, Shape::new([rows, width]));
        let client = x.client.clone();
        // SAFETY: the kernel guards i < pairs; every position is < start + seq ≤ positions.
        unsafe {
            kernels::rope_kernel::launch_unchecked(
                &client,
                grid((rows * width / 2).div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                x.into_tensor_arg(),
                cos.into_tensor_arg(),
                sin.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                start,
                seq,
            )
        };
        out
    }

    fn swiglu(gate: CubeTensor, up: CubeTensor) -> CubeTensor {
        assert_eq!((gate.dtype, up.dtype), (DType::F32, DType::F32), "swiglu: f32");
        let (gate, up) = (into_contiguous(gate), into_contiguous(up));
        let n = gate.meta.shape()[0];
        assert_eq!(up.meta.shape()[0], n, "swiglu: gate of {n}, up of {}", up.meta.shape()[0]);
        let out = empty_f32(&gate, Shape::new([n]));
        let client = gate.client.clone();
        // SAFETY: the kernel guards i < n, and gate, up and out all hold n values.
        unsafe {
            kernels::swiglu_kernel::launch_unchecked(
                &client,
                grid(n.div_ceil(ELEMENTWISE_BLOCK), 1),
                CubeDim::new_1d(ELEMENTWISE_BLOCK as u32),
                gate.into_tensor_arg(),
                up.into_tensor_arg(),
                out.clone().into_tensor_arg(),
            )
        };
        out
    }

    fn attention(q: CubeTensor, k: CubeTensor, v: CubeTensor, keys: usize, start: usize, seq: usize, scale: f32) -> CubeTensor {
        assert_eq!((q.dtype, k.dtype, v.dtype), (DType::F32, DType::F32, DType::F32), "attention: f32");
        let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
        let [groups, rows, hd] = [q.meta.shape()[0], q.meta.shape()[1], q.meta.shape()[2]];
        let out = empty_f32(&q, Shape::new([groups, rows, hd]));
        let client = q.client.clone();
        let small = |n: usize| u32::try_from(n).expect("attention: positions fit u32");
        // SAFETY: every row index is < G · R (guarded), every key index < keys ≤ capacity
        // and every value index < hd, as `sphinx_shaders::attention` asserted.
        unsafe {
            kernels::attention_kernel::launch_unchecked(
                &client,
                grid(groups * rows, 1),
                CubeDim::new_1d(crate::ATTENTION_BLOCK as u32),
                q.into_tensor_arg(),
                k.into_tensor_arg(),
                v.into_tensor_arg(),
                out.clone().into_tensor_arg(),
                small(keys),
                small(start),
                small(seq),
                scale,
                hd,
                crate::ATTENTION_BLOCK,
            )
        };
        out
    }

    fn moe_route(scores: CubeTensor, k: usize) -> CubeTensor {
        assert_eq!(scores.dtype, DType::F32, "moe_route: f32 scores");
        let scores = into_contiguous(scores);
        let n = scores.meta.shape()[0];
        let routes = empty_device_contiguous_dtype(scores.client.clone(), scores.device.clone(), Shape::new([n, 2 * k]), DType::U32);
        let client = scores.client.clone();
        // SAFETY: the kernel guards t < N and writes 2k values of row t.
        unsafe {
            moe_kernels::moe_route_kernel::launch_unchecked(
                &client,
                grid(n.div_ceil(MATVEC_BLOCK), 1),
                CubeDim::new_1d(MATVEC_BLOCK as u32),
                scores.into_tensor_arg(),
                routes.clone().into_tensor_arg(),
                k,
            )
        };
        routes
    }

    fn moe_up(x: CubeTensor, w1: CubeTensor, w3: CubeTensor, routes: CubeTensor, experts: usize) -> CubeTensor {
        assert_eq!((x.dtype, w1.dtype, w3.dtype, routes.dtype), (DType::F32, DType::F32, DType::F32, DType::U32), "moe_up: f32 values, u32 routes");
        let (x, w1, w3, routes) = (into_contiguous(x), into_contiguous(w1), into_contiguous(w3), into_contiguous(routes));
        let (n, k) = (x.meta.shape()[0], routes.meta.shape()[1] / 2);
        let f = w1.meta.shape()[0] / experts;
        let h = empty_f32(&x, Shape::new([n * k, f]));
        let client = x.client.clone();
        // SAFETY: the kernel guards i < N·k·F; expert ids come from moe_route (< E), so
        // every row read is < E·F, and every column < D.
        unsafe {
            moe_kernels::moe_up_kernel::launch_unchecked(
                &client,
                grid((n * k * f).div_ceil(MATVEC_BLOCK), 1),
                CubeDim::new_1d(MATVEC_BLOCK as u32),
                x.into_tensor_arg(),
                w1.into_tensor_arg(),
                w3.into_tensor_arg(),
                routes.into_tensor_arg(),
                h.clone().into_tensor_arg(),
                k,
            )
        };
        h
    }

    fn moe_down(h: CubeTensor, w2: CubeTensor, routes: CubeTensor) -> CubeTensor {
        assert_eq!((h.dtype, w2.dtype, routes.dtype), (DType::F32, DType::F32, DType::U32), "moe_down: f32 values, u32 routes");
        let (h, w2, routes) = (into_contiguous(h), into_contiguous(w2), into_contiguous(routes));
        let (n, k, d) = (routes.meta.shape()[0], routes.meta.shape()[1] / 2, w2.meta.shape()[1]);
        assert_eq!(h.meta.shape()[0], n * k, "moe_down: h for {n} tokens × {k} experts");
        let y = empty_f32(&h, Shape::new([n, d]));
        let client = h.client.clone();
        // SAFETY: the kernel guards i < N·D; expert ids come from moe_route (< E).
        unsafe {
            moe_kernels::moe_down_kernel::launch_unchecked(
                &client,
                grid((n * d).div_ceil(MATVEC_BLOCK), 1),
                CubeDim::new_1d(MATVEC_BLOCK as u32),
                h.into_tensor_arg(),
                w2.into_tensor_arg(),
                routes.into_tensor_arg(),
                y.clone().into_tensor_arg(),
                k,
            )
        };
        y
    }
}

