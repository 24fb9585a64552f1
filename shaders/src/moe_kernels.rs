//! CubeCL kernels of the mixture-of-experts FFN (`moe.rs` has the rule and the layout of
//! a route): routing, the gated hidden layer and the mixed output, one invocation per
//! value computed, no workgroup memory and no barriers (as `matvec_packed_kernel`).

use cubecl::prelude::*;

use crate::kernels::global_index;

/// One invocation per token: softmax of its E scores, then k passes that each take the
/// most probable expert ranked after the previous pick (probability descending, index
/// ascending), then the k weights renormalised. scores [N, E] → routes [N, 2k].
#[cube(launch_unchecked)]
pub fn moe_route_kernel(scores: &Tensor<f32>, routes: &mut Tensor<u32>, #[comptime] k: usize) {
    let n_experts = scores.shape(1);
    let t = global_index();
    if t >= scores.shape(0) {
        terminate!();
    }
    let base = t * n_experts;
    let mut top = scores[base];
    for e in 1..n_experts {
        top = f32::max(top, scores[base + e]);
    }
    let mut sum = 0.0f32;
    for e in 0..n_experts {
        sum += f32::exp(scores[base + e] - top);
    }
    let out = t * 2 * k;
    let mut total = 0.0f32;
    let mut last = f32::new(0.0);
    let mut last_index = n_experts;
    #[unroll]
    for j in 0..k {
        let mut best = f32::new(-1.0);
        let mut best_index = n_experts;
        for e in 0..n_experts {
            let p = f32::exp(scores[base + e] - top) / sum;
            let after_last = last_index == n_experts || p < last || (p == last && e > last_index);
            if after_last && (p > best || (p == best && e < best_index)) {
                best = p;
                best_index = e;
            }
        }
        routes[out + j] = best_index as u32;
        routes[out + k + j] = u32::reinterpret(best);
        total += best;
        last = best;
        last_index = best_index;
    }
    #[unroll]
    for j in 0..k {
        routes[out + k + j] = u32::reinterpret(f32::reinterpret(routes[out + k + j]) / total);
    }
}

/// One invocation per hidden value: row `n·k + j` of h is token n's j-th expert e, and
/// column f reads rows `e·F + f` of w1 and w3. h [N·k, F].
#[cube(launch_unchecked)]
pub fn moe_up_kernel(x: &Tensor<f32>, w1: &Tensor<f32>, w3: &Tensor<f32>, routes: &Tensor<u32>, h: &mut Tensor<f32>, #[comptime] k: usize) {
    let (d, f_per_expert) = (x.shape(1), h.shape(1));
    let i = global_index();
    if i >= h.len() {
        terminate!();
    }
    let (row, f) = (i / f_per_expert, i % f_per_expert);
    let (n, j) = (row / k, row % k);
    let e = routes[n * 2 * k + j] as usize;
    let (x_row, w_row) = (n * d, (e * f_per_expert + f) * d);
    let mut g = 0.0f32;
    let mut u = 0.0f32;
    for c in 0..d {
        let v = x[x_row + c];
        g += v * w1[w_row + c];
        u += v * w3[w_row + c];
    }
    h[i] = g / (1.0f32 + f32::exp(-g)) * u;
}

/// One invocation per output value y[n, c] = Σ_j weight_j · Σ_f h[n·k + j, f] ·
/// w2[e_j·F + f, c]: neighbouring invocations read neighbouring columns of w2's rows.
#[cube(launch_unchecked)]
pub fn moe_down_kernel(h: &Tensor<f32>, w2: &Tensor<f32>, routes: &Tensor<u32>, y: &mut Tensor<f32>, #[comptime] k: usize) {
    let (d, f_per_expert) = (y.shape(1), h.shape(1));
    let i = global_index();
    if i >= y.len() {
        terminate!();
    }
    let (n, c) = (i / d, i % d);
    let mut acc = 0.0f32;
    #[unroll]
    for j in 0..k {
        let e = routes[n * 2 * k + j] as usize;
        let weight = f32::reinterpret(routes[n * 2 * k + k + j]);
        let h_row = (n * k + j) * f_per_expert;
        let w_row = e * f_per_expert;
        let mut part = 0.0f32;
        for f in 0..f_per_expert {
            part += h[h_row + f] * w2[(w_row + f) * d + c];
        }
        acc += weight * part;
    }
    y[i] = acc;
}
