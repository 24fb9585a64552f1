//! Mixture-of-experts routing (docs/spec.md §2.7, Mixtral's `MoE` in LLaMA2-Accessory's
//! `mixtral_sparse.py`): the rule itself, which the CPU path and the prefill path of the
//! model share, and the layout of a route on the device.
//!
//! A token's route: `softmax(scores)` over all experts in f32, the `k` largest
//! probabilities (the smaller expert index first on equal values), renormalised over
//! those `k`. On the device a route is a row of `2k` u32 words: the `k` expert ids, then
//! the `k` weights as f32 bit patterns, so that routing, the experts and the weighted sum
//! all stay on the device (one tensor, no host readback per layer).

/// The route of one token's gate scores: `(expert, weight)` pairs, the most probable first.
pub fn route_token(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scores.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| exp[b].total_cmp(&exp[a]).then(a.cmp(&b)));
    let top = &order[..k.min(scores.len())];
    let total: f32 = top.iter().map(|&e| exp[e] / sum).sum();
    top.iter().map(|&e| (e, exp[e] / sum / total)).collect()
}
