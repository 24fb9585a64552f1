//! Multi-head attention with grouped kv heads (docs/spec.md §2.4): q head `j` uses kv head
//! `j / n_rep`, scores scaled by `1/√hd`, and a right-aligned causal mask for chunks
//! of more than one token, so a prompt can be prefilled in pieces. Decoding and prefill
//! use the fused kernel (`sphinx_shaders::attention`); the reference path of Burn
//! operations, in tiles of queries, stays for checking and for heads wider than the
//! kernel takes (docs/design.md §9).

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Int, Tensor};
use sphinx_shaders::attention;

use super::cat_parts;
use super::kv_cache::LayerCache;
use super::linear::Linear;
use super::rope::Rope;
use crate::config::LlmConfig;
use crate::error::WeightError;
use crate::weights::{WeightLoader, WeightSource};

#[derive(Debug, Clone)]
pub struct Attention {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    /// The reference path's most bytes of scores ([B, Hq, queries, keys] in f32) at once,
    /// or `None` for the fused kernel (LlmConfig::attention_tile_bytes).
    score_tile_bytes: Option<usize>,
}

impl Attention {
    pub async fn load<S: WeightSource>(l: &WeightLoader<'_, S>, p: &str, c: &LlmConfig) -> Result<Self, WeightError> {
        let hd = c.head_dim();
        Ok(Self {
            wq: Linear::load(l, &format!("{p}.wq.weight"), c.n_heads * hd, c.dim).await?,
            wk: Linear::load(l, &format!("{p}.wk.weight"), c.n_kv_heads * hd, c.dim).await?,
            wv: Linear::load(l, &format!("{p}.wv.weight"), c.n_kv_heads * hd, c.dim).await?,
            wo: Linear::load(l, &format!("{p}.wo.weight"), c.dim, c.n_heads * hd).await?,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
            score_tile_bytes: c.attention_tile_bytes(),
        })
    }

    /// How the query projection's weights are held (`Matrix::format_name`).
    pub fn weight_format(&self) -> &'static str {
        self.wq.weight.format_name()
    }

    /// Bytes of the four projections on the device.
    pub fn device_bytes(&self) -> usize {
        [&self.wq, &self.wk, &self.wv, &self.wo].iter().map(|l| l.device_bytes()).sum()
    }

    /// x: [B, S, D], B sequences each feeding S positions: sequence `i` at positions
    /// `starts[i]..starts[i] + S` over its own cache `caches[i]` → [B, S, D]. The
    /// projections take the whole batch; rotation, cache and attention go sequence by
    /// sequence (each sequence's keys are its own, at its own length).
    pub fn forward(&self, x: Tensor<3>, starts: &[usize], rope: &Rope, caches: &mut [&mut LayerCache], max_len: usize) -> Tensor<3> {
        let [b, s, _] = x.dims();
        assert!(starts.len() == b && caches.len() == b, "attention: {b} sequences, {} starts, {} caches", starts.len(), caches.len());
        let (hq, hkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self.wq.forward_seq(x.clone()).reshape([b, s, hq, hd]);
        let k = self.wk.forward_seq(x.clone()).reshape([b, s, hkv, hd]);
        let v = self.wv.forward_seq(x).reshape([b, s, hkv, hd]);
        let one = |t: &Tensor<4>, i: usize| if b == 1 { t.clone() } else { t.clone().narrow(0, i, 1) };
        let parts = (0..b)
            .zip(caches.iter_mut())
            .map(|(i, cache)| self.attend_cached(one(&q, i), one(&k, i), one(&v, i), starts[i], rope, cache, max_len))
            .collect();
        self.wo.forward_seq(cat_parts(parts, 0))
    }

    /// One sequence: q [1, S, Hq, hd], k and v [1, S, Hkv, hd] at positions
    /// `start..start + S`, not yet rotated; k, v join `cache` → [1, S, Hq·hd].
    #[allow(clippy::too_many_arguments)]
    fn attend_cached(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, start: usize, rope: &Rope, cache: &mut LayerCache, max_len: usize) -> Tensor<3> {
        let [b, s, hq, hd] = q.dims();
        let hkv = self.n_kv_heads;
        let (q, k) = (rope.apply(q, start), rope.apply(k, start));
        let (k_all, v_all) = cache.append(k.swap_dims(1, 2), v.swap_dims(1, 2), start, max_len); // [1, Hkv, capacity, hd]
        let t = start + s;
        match self.score_tile_bytes {
            None => {
                // The fused kernel over the cache: no score matrix, no mask.
                let n_rep = hq / hkv;
                let capacity = k_all.dims()[2];
                let q = q.swap_dims(1, 2).reshape([b * hkv, n_rep * s, hd]); // [Hkv, n_rep·S, hd]
                let (k_all, v_all) = (k_all.reshape([b * hkv, capacity, hd]), v_all.reshape([b * hkv, capacity, hd]));
                let out = attention(q, k_all, v_all, t, start, s, 1.0 / (hd as f32).sqrt()); // [Hkv, n_rep·S, hd]
                out.reshape([b, hq, s, hd]).swap_dims(1, 2).reshape([b, s, hq * hd])
            }
            Some(tile_bytes) => {
                // Queries in tiles, so that a long chunk (SPHINX-2k's image block is ~2.9k
                // positions) never holds more than `tile_bytes` of scores.
                let tile = (tile_bytes / (4 * b * hq * t).max(1)).clamp(1, s);
                let parts: Vec<Tensor<3>> = (0..s)
                    .step_by(tile)
                    .map(|i0| {
                        let len = tile.min(s - i0);
                        let q_tile = q.clone().narrow(1, i0, len); // [1, len, Hq, hd]
                        let seen = start + i0 + len; // keys after the tile's last query are all masked
                        let (k_seen, v_seen) = (k_all.clone().narrow(2, 0, seen), v_all.clone().narrow(2, 0, seen));
                        self.attend(q_tile, k_seen, v_seen, start + i0)
                    })
                    .collect();
                cat_parts(parts, 1) // [1, S, Hq·hd]
            }
        }
    }

    /// Causal attention of queries q: [B, S, Hq, hd] at positions `start..start + S` over
    /// keys and values [B, Hkv, start + S, hd] → [B, S, Hq·hd].
    fn attend(&self, q: Tensor<4>, keys: Tensor<4>, values: Tensor<4>, start: usize) -> Tensor<3> {
        let [b, s, hq, hd] = q.dims();
        let hkv = self.n_kv_heads;
        let n_rep = hq / hkv;
        // Group the n_rep query heads that share a kv head: [B, Hkv, n_rep·S, hd].
        let q = q.swap_dims(1, 2).reshape([b, hkv, n_rep * s, hd]);
        let scores = q.matmul(keys.swap_dims(2, 3)).mul_scalar(1.0 / (hd as f64).sqrt()); // [B, Hkv, n_rep·S, T]
        let scores = if s > 1 {
            let mask = causal_mask(s, start, &scores.device()); // [S, T]
            let [_, _, rows, t] = scores.dims();
            let mask = mask.unsqueeze::<3>().expand([n_rep, s, t]).reshape([1, 1, rows, t]).expand(scores.dims());
            scores.mask_fill(mask, f32::NEG_INFINITY)
        } else {
            scores
        };
        let out = softmax(scores, 3).matmul(values); // [B, Hkv, n_rep·S, hd]
        out.reshape([b, hq, s, hd]).swap_dims(1, 2).reshape([b, s, hq * hd])
    }
}

/// Which scores of a chunk are masked, [S, start + S]: query `i` of the chunk sees key
/// `j` iff `j ≤ start + i` (`(i − q_len) ≥ (j − kv_len)`, llama.py `_make_causal_mask`).
/// Built on the device from two index ranges; no S × T matrix is uploaded.
fn causal_mask(s: usize, start: usize, device: &Device) -> Tensor<2, Bool> {
    let t = start + s;
    let query_pos = Tensor::<1, Int>::arange(start as i64..t as i64, device).reshape([s, 1]).expand([s, t]);
    let key_pos = Tensor::<1, Int>::arange(0..t as i64, device).reshape([1, t]).expand([s, t]);
    key_pos.greater(query_pos)
}
