//! CubeCL kernels (compiled to WGSL for wgpu, and to whatever Burn's cube runtime
//! targets). Only core WGSL features: no f16 or bf16 types, no subgroup operations,
//! workgroups of at most 256 invocations (docs/design.md §9).

use cubecl::prelude::*;

/// The f32 value of the 16-bit pattern in the high half of `word`, with integer and
/// conversion operations only and no shifts: SwiftShader's JIT (Subzero, Chromium's
/// WebGPU without a GPU) splits a shift by a constant into per-lane scalar code, while
/// multiplications, masks and i32 conversions stay 4-wide (docs/design.md §9, "Kernels
/// for SwiftShader"). bf16 is the top half of an f32. f16: normal numbers move their
/// exponent from bias 15 to bias 127 (+112 << 23 = 0x3800_0000 after the 13-bit shift);
/// subnormals (exponent 0) are `mantissa · 2⁻²⁴`; infinities and NaN (exponent 31)
/// keep exponent 255.
#[cube]
pub fn high_half_to_f32(word: u32, #[comptime] bf16: bool) -> f32 {
    if comptime!(bf16) { f32::reinterpret(word & 0xFFFF_0000u32) } else { f16_to_f32(word & 0x8000_0000u32, exp_mant_of_high(word)) }
}

/// [`high_half_to_f32`] of the low half of `word` (moved up by a multiplication).
#[cube]
pub fn low_half_to_f32(word: u32, #[comptime] bf16: bool) -> f32 {
    high_half_to_f32(word * 0x1_0000u32, bf16)
}

/// Bits 16..31 of `word` (an f16's exponent and mantissa) as 0..0x7FFF, through f32:
/// `(word & 0x7FFF_0000)` is a multiple of 2¹⁶ below 2³¹, exact in f32 and as an i32.
#[cube]
fn exp_mant_of_high(word: u32) -> u32 {
    let scaled = f32::cast_from(i32::cast_from(word & 0x7FFF_0000u32));
    u32::cast_from(i32::cast_from(scaled * f32::reinterpret(0x3780_0000u32))) // × 2⁻¹⁶
}

/// An f16 of sign bit `sign` (at bit 31) and exponent-and-mantissa `exp_mant` (0..0x7FFF).
#[cube]
fn f16_to_f32(sign: u32, exp_mant: u32) -> f32 {
    let normal = f32::reinterpret(sign | (exp_mant * 0x2000u32 + 0x3800_0000u32));
    let special = f32::reinterpret(sign | 0x7F80_0000u32 | ((exp_mant & 0x3FFu32) * 0x2000u32));
    let tiny = f32::cast_from(i32::cast_from(exp_mant)) * 5.960_464_5e-8f32;
    let subnormal = select(sign != 0u32, -tiny, tiny);
    select(exp_mant < 0x400u32, subnormal, select(exp_mant >= 0x7C00u32, special, normal))
}

/// This cube's index over a grid that wraps into its second dimension beyond 65,535.
#[cube]
pub(crate) fn cube_index() -> usize {
    CUBE_POS_Y as usize * CUBE_COUNT_X as usize + CUBE_POS_X as usize
}

/// This invocation's index over such a grid: `cube_index() · CUBE_DIM + UNIT_POS`.
#[cube]
pub(crate) fn global_index() -> usize {
    cube_index() * CUBE_DIM as usize + UNIT_POS as usize
}

/// The sum of `value` over the cube's `block` units (a power of two); every unit gets it.
#[cube]
fn block_sum(value: f32, #[comptime] block: usize) -> f32 {
    let mut partial = Shared::<[f32]>::new_slice(block);
    let unit = UNIT_POS as usize;
    partial[unit] = value;
    sync_cube();
    let mut stride = 0usize;
    stride += block / 2;
    while stride > 0usize {
        if unit < stride {
            partial[unit] = partial[unit] + partial[unit + stride];
        }
        sync_cube();
        stride /= 2usize;
    }
    partial[0]
}

/// Row `first + i` of x, or its last row where `first + i` lies past it (a unit's
/// last, partial group of rows computes the last row again and does not write it).
#[cube]
pub(crate) fn row_or_last(first: usize, i: usize, n_rows: usize) -> usize {
    select(first + i < n_rows, first + i, n_rows - 1)
}

/// out[r, o] = Σ_k x[r, k] · W[o, k] with W as packed halves. Each unit computes
/// `outputs` consecutive outputs (n_out a multiple of it; the first o = unit · outputs
/// over the cubes' x and y) for tiles of `rows` consecutive rows of x (the first r =
/// CUBE_POS_Z · rows, then every CUBE_COUNT_Z · rows further, so any number of rows fits
/// the grid), summing each (row, output)'s words in order, so every value is the same
/// whatever `rows` is. Each value of x is loaded once for all the outputs and each weight
/// word unpacked once for all the rows: no shared memory and no barriers, which CPU
/// drivers such as lavapipe and SwiftShader run as plain loops over the workgroup's units
/// (docs/design.md §9, "Outputs per unit", "Rows per unit").
#[cube(launch_unchecked)]
pub fn matvec_packed_kernel(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] bf16: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let o = global_index() * outputs;
    if o < w.shape(0) {
        let mut r = CUBE_POS_Z as usize * rows;
        while r < x.shape(0) {
            packed_tile(x, w, out, o, r, bf16, outputs, rows);
            r += CUBE_COUNT_Z as usize * rows;
        }
    }
}

/// [`matvec_packed_kernel`]'s outputs `o..o + outputs` for rows `r..r + rows` of x.
#[cube]
fn packed_tile(x: &Tensor<f32>, w: &Tensor<u32>, out: &mut Tensor<f32>, o: usize, r: usize, #[comptime] bf16: bool, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let words = w.shape(1);
    let n_rows = x.shape(0);
    let w_row = o * words;
    let mut acc = zeros(comptime!(rows * outputs));
    let mut even = Array::<f32>::new(rows);
    let mut odd = Array::<f32>::new(rows);
    for c in 0..words {
        #[unroll]
        for i in 0..rows {
            let xc = row_or_last(r, i, n_rows) * words * 2 + 2 * c;
            even[i] = x[xc];
            odd[i] = x[xc + 1];
        }
        #[unroll]
        for u in 0..outputs {
            let word = w[w_row + u * words + c];
            let low = low_half_to_f32(word, bf16);
            let high = high_half_to_f32(word, bf16);
            #[unroll]
            for i in 0..rows {
                acc[i * outputs + u] += even[i] * low;
                acc[i * outputs + u] += odd[i] * high;
            }
        }
    }
    write_tile(out, &acc, o, r, n_rows, outputs, rows);
}

/// `n` zeros.
#[cube]
pub(crate) fn zeros(#[comptime] n: usize) -> Array<f32> {
    let mut a = Array::<f32>::new(n);
    #[unroll]
    for i in 0..n {
        a[i] = 0.0f32;
    }
    a
}

/// A unit's tile of sums, `acc[i·outputs + u]` for rows `r + i` of `n_rows` and outputs
/// `o + u`, into out [n_rows, n_out], leaving out the rows past the end.
#[cube]
pub(crate) fn write_tile(out: &mut Tensor<f32>, acc: &Array<f32>, o: usize, r: usize, n_rows: usize, #[comptime] outputs: usize, #[comptime] rows: usize) {
    let n_out = out.shape(1);
    #[unroll]
    for i in 0..rows {
        if r + i < n_rows {
            #[unroll]
            for u in 0..outputs {
                out[(r + i) * n_out + o + u] = acc[i * outputs + u];
            }
        }
    }
}

/// out[2i], out[2i + 1] = the halves of word i, over the flattened tensor.
/// Position = (CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X) · CUBE_DIM + UNIT_POS.
#[cube(launch_unchecked)]
pub fn unpack_halves_kernel(w: &Tensor<u32>, out: &mut Tensor<f32>, #[comptime] bf16: bool) {
    let cube = cube_index();
    let i = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if i < w.len() {
        let word = w[i];
        out[2 * i] = low_half_to_f32(word, bf16);
        out[2 * i + 1] = high_half_to_f32(word, bf16);
    }
}

/// out[r, :] = x[r, :] · (Σ x[r, :]² / d + eps)^(-1/2) · w. One cube per row
/// (r = CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X): the units stride over the row for the
/// sum of squares, add it in shared memory, then write their columns.
#[cube(launch_unchecked)]
pub fn rms_norm_kernel(x: &Tensor<f32>, w: &Tensor<f32>, out: &mut Tensor<f32>, eps: f32, #[comptime] block: usize) {
    let d = x.shape(1);
    let r = cube_index();
    if r >= x.shape(0) {
        terminate!();
    }
    let base = r * d;
    let mut acc = 0.0f32;
    let mut c = UNIT_POS as usize;
    while c < d {
        let v = x[base + c];
        acc += v * v;
        c += block;
    }
    let total = block_sum(acc, block);
    let inv = 1.0f32 / f32::sqrt(total / f32::cast_from(d as u32) + eps);
    let mut j = UNIT_POS as usize;
    while j < d {
        out[base + j] = x[base + j] * inv * w[j];
        j += block;
    }
}

/// The index of each row's largest value (the first on ties, as `torch.argmax`), one
/// cube per row: each unit scans a stride of the row, then the cube halves its
/// candidates in shared memory, keeping the larger value or, on equal values, the
/// smaller index. A unit that saw nothing holds the index `NONE` and never wins.
/// x [rows, n] → out [rows] u32.
#[cube(launch_unchecked)]
pub fn argmax_kernel(x: &Tensor<f32>, out: &mut Tensor<u32>, #[comptime] block: usize) {
    let none = 0xFFFF_FFFFu32;
    let n = x.shape(1);
    let r = cube_index();
    if r >= x.shape(0) {
        terminate!();
    }
    let unit = UNIT_POS as usize;
    let base = r * n;
    let mut best = f32::new(0.0);
    let mut best_index = u32::new(0xFFFF_FFFFi64);
    let mut c = unit;
    while c < n {
        let v = x[base + c];
        if best_index == none || v > best {
            best = v;
            best_index = c as u32;
        }
        c += block;
    }
    let mut values = Shared::<[f32]>::new_slice(block);
    let mut indices = Shared::<[u32]>::new_slice(block);
    values[unit] = best;
    indices[unit] = best_index;
    sync_cube();
    let mut stride = 0usize;
    stride += block / 2;
    while stride > 0usize {
        if unit < stride {
            let (v, i) = (values[unit + stride], indices[unit + stride]);
            let (mine, my_index) = (values[unit], indices[unit]);
            if i != none && (my_index == none || v > mine || (v == mine && i < my_index)) {
                values[unit] = v;
                indices[unit] = i;
            }
        }
        sync_cube();
        stride /= 2usize;
    }
    if unit == 0usize {
        out[r] = indices[0];
    }
}

/// Rotary embedding, one unit per pair: pair i of the flattened x [rows, per_row pairs]
/// is pair k = i % half of its head, in row r = i / per_row at position start + r % seq.
/// (x0, x1) → (x0·cos − x1·sin, x0·sin + x1·cos) with cos, sin [positions, half].
#[cube(launch_unchecked)]
pub fn rope_kernel(x: &Tensor<f32>, cos: &Tensor<f32>, sin: &Tensor<f32>, out: &mut Tensor<f32>, start: u32, seq: u32) {
    let half = cos.shape(1);
    let per_row = x.shape(1) / 2;
    let cube = cube_index();
    let i = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if i < x.len() / 2 {
        let row = i / per_row;
        let pos = start as usize + row % seq as usize;
        let t = pos * half + i % half;
        let (c, s) = (cos[t], sin[t]);
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        out[2 * i] = x0 * c - x1 * s;
        out[2 * i + 1] = x0 * s + x1 * c;
    }
}

/// out[i] = g / (1 + e^(−g)) · u with g = gate[i], u = up[i], one unit per value.
#[cube(launch_unchecked)]
pub fn swiglu_kernel(gate: &Tensor<f32>, up: &Tensor<f32>, out: &mut Tensor<f32>) {
    let cube = cube_index();
    let i = cube * CUBE_DIM as usize + UNIT_POS as usize;
    if i < gate.len() {
        let g = gate[i];
        out[i] = g / (1.0f32 + f32::exp(-g)) * up[i];
    }
}

/// Causal attention, one cube per query row (row = CUBE_POS_Y · CUBE_COUNT_X +
/// CUBE_POS_X over G · R) and `block` units splitting its keys, flash-decoding style:
/// unit u takes keys u, u + block, ... below the row's limit, keeping a running max `m`,
/// the sum `l` of e^(s − m) and the weighted sum of values `acc[hd]`; the units then
/// merge their partial results through workgroup memory, rescaled to the common max.
/// q [G, R, hd]; k, v [G, capacity, hd] of which `keys` are in use; row r of a group is
/// at position start + r % seq and sees keys 0..=that position.
#[cube(launch_unchecked)]
pub fn attention_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    out: &mut Tensor<f32>,
    keys: u32,
    start: u32,
    seq: u32,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] block: usize,
) {
    let rows = q.shape(1);
    let capacity = k.shape(1);
    let row = cube_index();
    if row >= q.shape(0) * rows {
        terminate!();
    }
    let group = row / rows;
    let visible = start as usize + (row % rows) % seq as usize + 1;
    let mut n_keys = keys as usize;
    if visible < n_keys {
        n_keys = visible;
    }
    let q_base = row * hd;
    let kv_base = group * capacity * hd;
    let unit = UNIT_POS as usize;

    let mut query = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    for d in 0..hd {
        query[d] = q[q_base + d] * scale;
        acc[d] = 0.0f32;
    }
    let mut m = f32::new(-3.0e38);
    let mut l = f32::new(0.0);
    let mut j = unit;
    while j < n_keys {
        let key = kv_base + j * hd;
        let mut s = f32::new(0.0);
        for d in 0..hd {
            s += query[d] * k[key + d];
        }
        let m_new = select(s > m, s, m);
        let correction = f32::exp(m - m_new);
        let p = f32::exp(s - m_new);
        l = l * correction + p;
        for d in 0..hd {
            acc[d] = acc[d] * correction + p * v[key + d];
        }
        m = m_new;
        j += block;
    }

    let mut m_part = Shared::<[f32]>::new_slice(block);
    let mut l_part = Shared::<[f32]>::new_slice(block);
    let mut acc_part = Shared::<[f32]>::new_slice(comptime!(block * hd));
    m_part[unit] = m;
    l_part[unit] = l;
    for d in 0..hd {
        acc_part[unit * hd + d] = acc[d];
    }
    sync_cube();
    let mut top = f32::new(-3.0e38);
    for w in 0..block {
        top = select(m_part[w] > top, m_part[w], top);
    }
    let mut total = f32::new(0.0);
    for w in 0..block {
        total += l_part[w] * f32::exp(m_part[w] - top);
    }
    let mut d = unit;
    while d < hd {
        let mut sum = f32::new(0.0);
        for w in 0..block {
            sum += acc_part[w * hd + d] * f32::exp(m_part[w] - top);
        }
        out[q_base + d] = sum / total;
        d += block;
    }
}
