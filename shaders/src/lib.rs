//! `sphinx-shaders`: SPHINX's own compute kernels, run through Burn on every backend,
//! each beside a plain-tensor reference and tests that the two agree
//! (docs/design.md §3, §9 says what each kernel computes and why).
//!
//! The kernels are a Burn backend extension ([`SphinxOps`]) with two implementations:
//! CubeCL kernels for Burn's wgpu backend (Vulkan, Metal, DX12, WebGPU in the browser;
//! `cube.rs`, `kernels.rs`) and Rust loops for Burn's CPU backend (`flex.rs`, threaded
//! with rayon, which runs on the calling thread in the browser). The model calls the
//! small functions below; the dispatch picks the implementation from the tensors' device.
//!
//! Half-precision weights travel as **pairs of halves in `u32` words** ([`PackedHalves`]):
//! WGSL has no bf16 at all and f16 only behind the optional `shader-f16` feature, so a
//! word holding two 16-bit patterns, unpacked with integer operations in the kernel, is
//! the one layout every adapter reads. Word `c` of a row holds columns `2c` (low 16 bits)
//! and `2c + 1` (high 16 bits), which is exactly the little-endian byte order a
//! safetensors or `.pth` file stores the halves in.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{backend_extension, Backend, Dispatch};
use burn::tensor::{Int, Tensor};

mod block_kernels;
mod blocks;
mod cube;
mod flex;
mod flex_attention;
mod flex_bf16;
mod flex_halves;
mod flex_blocks;
mod flex_groups;
pub mod interleaved;
mod kernels;
mod moe;
mod moe_kernels;
mod packed;
pub mod reference;
mod rounded_x;

pub use blocks::{rows_of_whole_words, BlockFormat, BlockMatrix, BLOCK};
pub use moe::route_token;
pub use packed::{HalfKind, PackedHalves};

/// The project's own operations, implemented per backend (`cube.rs`, `flex.rs`).
#[backend_extension(Cube, Flex)]
pub trait SphinxOps: Backend {
    /// `x · Wᵀ` for a few rows of `x`: x [rows, in] f32, w [out, in/2] u32 words of
    /// packed halves (`bf16` selects the half format) → [rows, out] f32, accumulated in f32.
    /// The CPU widens each weight in a register and multiplies-adds in f32 in a fixed
    /// order (`flex_halves.rs`), or for bf16 W with `round_x` rounds x to bf16 and sums
    /// pairs of products as AVX512-BF16's `vdpbf16ps` does (`flex_bf16.rs`), fast for any
    /// number of rows; the GPU kernels keep x in f32 and ignore `round_x`, and take more
    /// than 4 rows in tiles of 16 rows × 16 outputs per invocation.
    fn matvec_packed(x: FloatTensor<Self>, w: IntTensor<Self>, bf16: bool, round_x: bool) -> FloatTensor<Self>;
    /// `x · Wᵀ` with W's rows as llama.cpp blocks (`blocks.rs`; `q4`: q4_0, else q8_0):
    /// x [rows, in] f32, w [out, words] u32 → [rows, out] f32. x is rounded to q8_0
    /// blocks first and each block's products summed exactly, as llama.cpp does (on the
    /// CPU in integers, docs/design.md §10; on the GPU in f32, §9). Meant for a few rows of x, except on the CPU with
    /// `interleaved` W: the CPU's groups of eight rows (`interleaved.rs`), fast for any
    /// number of rows, and on a CPU driver ([`is_cpu_driver`]), where the kernel takes
    /// more than 4 rows in tiles of 16 rows × 16 outputs per invocation.
    fn matvec_blocks(x: FloatTensor<Self>, w: IntTensor<Self>, q4: bool, interleaved: bool) -> FloatTensor<Self>;
    /// x [rows, in] f32 (in a multiple of 32) rounded to q8_0 blocks and read back as f32:
    /// the x that `matvec_blocks` multiplies, for a prefill that multiplies widened tiles of
    /// a block matrix with Burn's matmul instead.
    fn round_to_q8_0(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// The blocks' values: w [rows, words] u32 → [rows, cols] f32 (`interleaved` as above).
    fn dequantize_blocks(w: IntTensor<Self>, q4: bool, interleaved: bool) -> FloatTensor<Self>;
    /// The packed halves widened to f32: w [rows, words] u32 → [rows, 2·words] f32 (exact).
    fn unpack_halves(w: IntTensor<Self>, bf16: bool) -> FloatTensor<Self>;
    /// RMSNorm of each row: x [rows, d] f32, weight [d] f32 →
    /// `x · (mean(x²) + eps)^(-1/2) · weight`, one pass over x for the sum, one for the output.
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;
    /// The index of each row's largest value, the first one on ties (`torch.argmax`):
    /// x [rows, n] f32 → [rows] u32.
    fn argmax(x: FloatTensor<Self>) -> IntTensor<Self>;
    /// Rotary embedding: x [B·S, H·hd] f32, row `r` at position `start + r % seq`;
    /// cos, sin [positions, hd/2] f32 → x with every pair of every head rotated.
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>, start: usize, seq: usize) -> FloatTensor<Self>;
    /// The SwiGLU gate: `silu(gate) · up` element-wise, gate and up [n] f32 → [n].
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Mixture-of-experts routing (`moe.rs`): gate scores [N, E] f32 → routes [N, 2k] u32,
    /// per token the k expert ids, then their weights as f32 bits.
    fn moe_route(scores: FloatTensor<Self>, k: usize) -> IntTensor<Self>;
    /// The routed experts' gated hidden layer: x [N, D], w1 and w3 [E·F, D] (expert-major
    /// rows, E = `experts`), routes [N, 2k] → h [N·k, F] with row `n·k + j` = `silu(x_n·W1_eᵀ) ⊙ x_n·W3_eᵀ`
    /// for the j-th expert `e` of token n.
    fn moe_up(x: FloatTensor<Self>, w1: FloatTensor<Self>, w3: FloatTensor<Self>, routes: IntTensor<Self>, experts: usize) -> FloatTensor<Self>;
    /// The routed experts' output, mixed: h [N·k, F], w2 [E·F, D] (used untransposed, as
    /// `h · W2_e`), routes [N, 2k] → y [N, D] = Σ_j weight_j · h_{n·k+j} · W2_{e_j}.
    fn moe_down(h: FloatTensor<Self>, w2: FloatTensor<Self>, routes: IntTensor<Self>) -> FloatTensor<Self>;
    /// Causal attention without a score matrix: q [G, R, hd], k and v [G, capacity, hd] of
    /// which the first `keys` rows are in use → [G, R, hd]. Row `r` of group `g` is the
    /// query at position `start + r % seq` and sees keys `0..=start + r % seq`.
    fn attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, keys: usize, start: usize, seq: usize, scale: f32) -> FloatTensor<Self>;
}

/// Whether `device` is Burn's CPU backend, whose kernels (`flex.rs`) take layouts and
/// row counts of their own (interleaved blocks, bf16 products for any number of rows).
pub(crate) fn is_cpu(device: &burn::tensor::Device) -> bool {
    matches!(device.as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// Whether `device` is a wgpu adapter that runs on the CPU (lavapipe natively, SwiftShader
/// in a browser without a GPU): no physical card behind it. The matrix products of a
/// prefill then tile rows in registers instead of widening tiles for Burn's matmul
/// (docs/design.md §9, "Rows per unit").
pub fn is_cpu_driver(device: &burn::tensor::Device) -> bool {
    match device.as_dispatch() {
        burn::backend::DispatchDevice::Cube(d) => d.client().properties().identity.physical.is_none(),
        _ => false,
    }
}

/// Head dimensions the attention kernel takes (its workgroup memory holds
/// [`ATTENTION_BLOCK`] partial outputs of `hd` values within WebGPU's 16 KiB).
pub const MAX_ATTENTION_HEAD_DIM: usize = 240;
/// Units sharing one query's keys in the attention kernel.
pub const ATTENTION_BLOCK: usize = 16;

/// Causal attention of grouped queries in one pass, never forming the score matrix
/// (flash-decoding's split of the keys within a workgroup, an online softmax per unit):
/// q [G, R, hd] with row `r` at position `start + r % seq` (R = n_rep · seq query heads
/// sharing one kv head), k and v [G, capacity, hd] holding `keys` positions; each row
/// sees the keys up to its own position. Scores are scaled by `scale`. → [G, R, hd].
/// `hd` must be at most [`MAX_ATTENTION_HEAD_DIM`].
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, keys: usize, start: usize, seq: usize, scale: f32) -> Tensor<3> {
    let [g, r, hd] = q.dims();
    let [gk, capacity, hdk] = k.dims();
    assert!(g == gk && hd == hdk && v.dims() == k.dims(), "attention: q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    assert!(hd <= MAX_ATTENTION_HEAD_DIM, "attention: head dim {hd} > {MAX_ATTENTION_HEAD_DIM}");
    assert!(keys <= capacity && seq > 0 && r % seq == 0 && start + seq <= keys, "attention: queries {start}..{} over {keys} keys of {capacity}", start + seq);
    let out = <Dispatch as SphinxOps>::attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), keys, start, seq, scale);
    Tensor::<3>::from_dispatch(out)
}

/// Mixtral's sparse FFN for a few tokens, entirely on the device: x [N, D], the experts'
/// stacked w1, w3 [E·F, D] and w2 [E·F, D], `k` experts per token → [N, D]. Every token
/// reads its k experts' rows, so this suits decoding; a long prefill is cheaper routed
/// on the host and batched per expert.
pub fn moe_ffn(x: Tensor<2>, gate_scores: Tensor<2>, w1: &Tensor<2>, w2: &Tensor<2>, w3: &Tensor<2>, k: usize) -> Tensor<2> {
    let [n, d] = x.dims();
    let [rows, e] = gate_scores.dims();
    assert!(rows == n && k >= 1 && k <= e && u32::try_from(e).is_ok(), "moe_ffn: {k} of {e} experts for {n} tokens, scores of {rows}");
    assert!(w1.dims() == w3.dims() && w1.dims() == w2.dims() && w1.dims()[1] == d && w1.dims()[0] % e == 0, "moe_ffn: w1 {:?}, w2 {:?}, w3 {:?} for {e} experts of dim {d}", w1.dims(), w2.dims(), w3.dims());
    let routes = <Dispatch as SphinxOps>::moe_route(gate_scores.into_dispatch(), k);
    let (w1, w3) = (w1.clone().into_dispatch(), w3.clone().into_dispatch());
    let h = <Dispatch as SphinxOps>::moe_up(x.into_dispatch(), w1, w3, routes.clone(), e);
    Tensor::from_dispatch(<Dispatch as SphinxOps>::moe_down(h, w2.clone().into_dispatch(), routes))
}

/// The routes of [`moe_ffn`] as the device computes them: gate scores [N, E] →
/// [N, 2k] u32 (k expert ids, then the weights' f32 bits). For tests and inspection.
pub fn moe_routes(gate_scores: Tensor<2>, k: usize) -> Tensor<2, Int> {
    let e = gate_scores.dims()[1];
    assert!(k >= 1 && k <= e, "moe_routes: {k} of {e} experts");
    Tensor::from_dispatch(<Dispatch as SphinxOps>::moe_route(gate_scores.into_dispatch(), k))
}

/// `silu(gate) ⊙ up` (LLaMA's FFN, `silu(x) = x / (1 + e^(−x))`) in one pass: gate and
/// up of the same shape → that shape.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let dims = gate.dims();
    assert_eq!(dims, up.dims(), "swiglu: gate and up differ in shape");
    let n = dims.iter().product::<usize>();
    let (gate, up) = (gate.reshape([n]).into_dispatch(), up.reshape([n]).into_dispatch());
    Tensor::<1>::from_dispatch(<Dispatch as SphinxOps>::swiglu(gate, up)).reshape(dims)
}

/// Meta-style rotary embedding of `x` [B, S, H, hd] at positions `start..start + S`:
/// each pair `(x[2i], x[2i+1])` of a head turns by the angle whose cos and sin are
/// `cos[pos, i]`, `sin[pos, i]` (tables [positions, hd/2]).
pub fn rope(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>, start: usize) -> Tensor<4> {
    let dims = x.dims();
    let [b, s, h, hd] = dims;
    let x = x.reshape([b * s, h * hd]).into_dispatch();
    let (cos, sin) = (cos.clone().into_dispatch(), sin.clone().into_dispatch());
    Tensor::<2>::from_dispatch(<Dispatch as SphinxOps>::rope(x, cos, sin, start, s)).reshape(dims)
}

/// Greedy decoding's choice: the index of each row's largest value, the first on ties
/// (as `torch.argmax`): x [rows, n] → [rows] (u32 on the device; only these ids need
/// to come back to the host).
pub fn argmax(x: Tensor<2>) -> Tensor<1, Int> {
    Tensor::from_dispatch(<Dispatch as SphinxOps>::argmax(x.into_dispatch()))
}

/// RMSNorm over the last dimension: x [..., d], weight [d] → [..., d].
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f32) -> Tensor<D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let x = x.reshape([rows, d]).into_dispatch();
    Tensor::<2>::from_dispatch(<Dispatch as SphinxOps>::rms_norm(x, weight.clone().into_dispatch(), eps)).reshape(dims)
}

/// x [rows, in] · Wᵀ with W packed: [rows, out]. Meant for decoding (one or a few rows),
/// and for any number of rows where [`PackedHalves::multiplies_any_rows`]: each weight
/// word is read straight from 16 bits.
pub fn matvec_packed(x: Tensor<2>, w: &PackedHalves) -> Tensor<2> {
    let bf16 = w.kind == HalfKind::Bf16;
    Tensor::from_dispatch(<Dispatch as SphinxOps>::matvec_packed(x.into_dispatch(), w.words.clone().into_dispatch(), bf16, w.round_x))
}

/// The packed weight as f32 [rows, cols] (exact: every f16 and bf16 value is an f32).
pub fn unpack_halves(w: &PackedHalves) -> Tensor<2> {
    unpack_words(w.words.clone(), w.kind)
}

/// Packed words [rows, words] (e.g. rows gathered from a [`PackedHalves`]) as f32 [rows, 2·words].
pub fn unpack_words(words: Tensor<2, Int>, kind: HalfKind) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as SphinxOps>::unpack_halves(words.into_dispatch(), kind == HalfKind::Bf16))
}

/// x [rows, in] · Wᵀ with W block-quantized: [rows, out]. Meant for decoding: each
/// block is read once per row, straight from its 8 or 4 bits. x is rounded to q8_0
/// blocks first, on every backend (as llama.cpp does; [`reference::matvec_blocks_rounded`]).
pub fn matvec_blocks(x: Tensor<2>, w: &BlockMatrix) -> Tensor<2> {
    let q4 = w.format == BlockFormat::Q4_0;
    Tensor::from_dispatch(<Dispatch as SphinxOps>::matvec_blocks(x.into_dispatch(), w.words.clone().into_dispatch(), q4, w.interleaved))
}

/// x [rows, in] rounded to q8_0 blocks, as f32 (`BlockFormat::Q8_0`'s quantizer then its
/// values): what a block matrix multiplies in [`matvec_blocks`].
pub fn round_to_q8_0(x: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as SphinxOps>::round_to_q8_0(x.into_dispatch()))
}

/// Rows of blocks [rows, words] in llama.cpp's layout (e.g. rows gathered from a
/// [`BlockMatrix`] that is not interleaved) as their f32 values [rows, cols].
pub fn dequantize_blocks(words: Tensor<2, Int>, format: BlockFormat) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as SphinxOps>::dequantize_blocks(words.into_dispatch(), format == BlockFormat::Q4_0, false))
}

/// Rows `start..start + len` of the block matrix as f32 [len, cols], in either layout
/// (an interleaved matrix is cut at whole groups: `start` and `len` multiples of 8).
pub fn dequantize_rows(w: &BlockMatrix, start: usize, len: usize) -> Tensor<2> {
    assert!(!w.interleaved || (start % interleaved::GROUP == 0 && len % interleaved::GROUP == 0), "dequantize_rows: rows {start}..{} of an interleaved matrix", start + len);
    let words = w.words.clone().narrow(0, start, len).into_dispatch();
    Tensor::from_dispatch(<Dispatch as SphinxOps>::dequantize_blocks(words, w.format == BlockFormat::Q4_0, w.interleaved))
}
