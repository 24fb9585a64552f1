//! The key/value cache (docs/spec.md §2.5): rotated keys and values of every position fed
//! so far, per layer, and one absolute position counter. It grows in blocks up to
//! `max_seq_len` instead of reserving the whole context up front.

use burn::tensor::Tensor;

use crate::error::GenerateError;

const GROW_BLOCK: usize = 256;

#[derive(Debug, Clone, Default)]
pub(crate) struct LayerCache {
    /// k, v: [B, H_kv, capacity, hd]
    k: Option<Tensor<4>>,
    v: Option<Tensor<4>>,
}

impl LayerCache {
    /// Writes k, v ([B, H_kv, S, hd]) at `start` and returns the whole buffers
    /// ([B, H_kv, capacity, hd]), of which positions `0..start + S` are filled.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>, start: usize, max_len: usize) -> (Tensor<4>, Tensor<4>) {
        let k_all = grow_and_write(self.k.take(), k, start, max_len);
        let v_all = grow_and_write(self.v.take(), v, start, max_len);
        self.k = Some(k_all.clone());
        self.v = Some(v_all.clone());
        (k_all, v_all)
    }
}

fn grow_and_write(cache: Option<Tensor<4>>, new: Tensor<4>, start: usize, max_len: usize) -> Tensor<4> {
    let [b, h, s, hd] = new.dims();
    let end = start + s;
    let cache = match cache {
        Some(c) if c.dims()[2] >= end => c,
        old => {
            let cap = end.div_ceil(GROW_BLOCK).saturating_mul(GROW_BLOCK).min(max_len).max(end);
            let have = old.as_ref().map_or(0, |c| c.dims()[2]);
            let extra = Tensor::<4>::zeros([b, h, cap - have, hd], &new.device());
            match old {
                Some(c) => Tensor::cat(vec![c, extra], 2),
                None => extra,
            }
        }
    };
    cache.slice_assign([0..b, 0..h, start..end, 0..hd], new)
}

/// All layers' caches and the next absolute position.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    pos: usize,
    max_seq_len: usize,
}

impl KvCache {
    pub fn new(n_layers: usize, max_seq_len: usize) -> Self {
        Self { layers: vec![LayerCache::default(); n_layers], pos: 0, max_seq_len }
    }

    /// Positions already fed (the RoPE position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Checks that `n` more positions fit.
    pub(crate) fn reserve(&self, n: usize) -> Result<(), GenerateError> {
        if self.pos + n > self.max_seq_len {
            return Err(GenerateError::ContextFull(self.max_seq_len));
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// Forgets every position from `pos` on (they will be overwritten). No-op if `pos`
    /// is not behind the current position.
    pub fn rewind(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }

    /// Forgets everything (a new conversation).
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = LayerCache::default());
        self.pos = 0;
    }
}
