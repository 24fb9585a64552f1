//! Model-parallel shards merged on read (docs/spec.md §2.6, §2.7, §8;
//! `accessory/util/tensor_parallel.py`): column-parallel weights are concatenated
//! along dim 0, row-parallel ones and the embedding along dim 1, Mixtral expert
//! weights per expert along the hidden dim, and everything else is replicated.

use super::dtype::{HostTensor, TensorInfo};
use super::WeightSource;
use crate::error::WeightError;

/// How one tensor is laid out across model-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitRule {
    Replicated,
    /// Concatenate along this dim.
    Concat(usize),
    /// Mixtral `w1/w2/w3` `[E*F, D]`: view each shard as `[E, F/mp, D]`, concat along dim 1.
    Experts(usize),
}

impl SplitRule {
    /// The rule for a checkpoint key (with or without the `llma.` prefix).
    pub fn for_name(name: &str, num_experts: Option<usize>) -> SplitRule {
        let n = name.strip_prefix("llma.").unwrap_or(name);
        match n {
            "tok_embeddings.weight" => return SplitRule::Concat(1),
            "output.weight" => return SplitRule::Concat(0),
            _ => {}
        }
        let Some(rest) = n.strip_prefix("layers.") else { return SplitRule::Replicated };
        let Some((_, leaf)) = rest.split_once('.') else { return SplitRule::Replicated };
        match leaf {
            "attention.wq.weight" | "attention.wk.weight" | "attention.wv.weight" | "feed_forward.w1.weight"
            | "feed_forward.w3.weight" => SplitRule::Concat(0),
            "attention.wo.weight" | "feed_forward.w2.weight" => SplitRule::Concat(1),
            "feed_forward.w1" | "feed_forward.w2" | "feed_forward.w3" => match num_experts {
                Some(e) => SplitRule::Experts(e),
                None => SplitRule::Concat(0),
            },
            _ => SplitRule::Replicated,
        }
    }

    /// The view each shard is concatenated in, and the concat dim.
    fn view(self, shape: &[usize]) -> Option<(Vec<usize>, usize)> {
        match self {
            SplitRule::Replicated => None,
            SplitRule::Concat(d) => Some((shape.to_vec(), d)),
            SplitRule::Experts(e) => {
                let (rows, cols) = (*shape.first()?, *shape.get(1)?);
                Some((vec![e, rows / e.max(1), cols], 1))
            }
        }
    }
}

/// The shards of one model-parallel checkpoint, ranks in order, read as one model.
pub struct ModelParallelSource<S: WeightSource> {
    shards: Vec<S>,
    num_experts: Option<usize>,
}

impl<S: WeightSource> ModelParallelSource<S> {
    /// `shards` in rank order. Every shard must hold the same tensor names.
    pub fn new(shards: Vec<S>) -> Result<Self, WeightError> {
        let first = shards.first().ok_or_else(|| WeightError::NoCheckpoint("no shard files".into()))?;
        let names = first.names();
        for (rank, s) in shards.iter().enumerate().skip(1) {
            let other = s.names();
            if let Some(n) = names.iter().find(|n| !other.contains(n)) {
                return Err(WeightError::ShardMismatch(format!("'{n}' is in shard 0 but not in shard {rank}")));
            }
            if let Some(n) = other.iter().find(|n| !names.contains(n)) {
                return Err(WeightError::ShardMismatch(format!("'{n}' is in shard {rank} but not in shard 0")));
            }
        }
        // Expert count from any MoE gate: `[E, D]`.
        let num_experts = names
            .iter()
            .find(|n| n.ends_with("feed_forward.gate.weight"))
            .and_then(|n| first.info(n))
            .and_then(|i| i.shape.first().copied());
        Ok(Self { shards, num_experts })
    }

    pub fn world_size(&self) -> usize {
        self.shards.len()
    }

    fn rule(&self, name: &str) -> SplitRule {
        if self.shards.len() == 1 {
            SplitRule::Replicated
        } else {
            SplitRule::for_name(name, self.num_experts)
        }
    }
}

impl<S: WeightSource> WeightSource for ModelParallelSource<S> {
    fn names(&self) -> Vec<String> {
        self.shards[0].names()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        let mut info = self.shards[0].info(name)?;
        if let Some((_, dim)) = self.rule(name).view(&info.shape) {
            let d = if matches!(self.rule(name), SplitRule::Experts(_)) { 0 } else { dim };
            info.shape[d] *= self.shards.len();
        }
        Some(info)
    }

    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        let rule = self.rule(name);
        if rule == SplitRule::Replicated {
            return self.shards[0].read(name).await;
        }
        let mut parts = Vec::with_capacity(self.shards.len());
        for (rank, s) in self.shards.iter().enumerate() {
            let t = s.read(name).await?;
            if let Some(p) = parts.first() {
                let p: &HostTensor = p;
                if p.shape != t.shape || p.dtype != t.dtype {
                    return Err(WeightError::ShardMismatch(format!(
                        "'{name}' is {:?} {} in shard 0 but {:?} {} in shard {rank}",
                        p.shape, p.dtype, t.shape, t.dtype
                    )));
                }
            }
            parts.push(t);
        }
        let (view, dim) = rule.view(&parts[0].shape).ok_or_else(|| WeightError::ShardMismatch(format!("'{name}' is not 2-D")))?;
        let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.bytes.len()).sum());
        let outer: usize = view[..dim].iter().product();
        let chunk: usize = view[dim..].iter().product::<usize>() * parts[0].dtype.size();
        for o in 0..outer {
            for p in &parts {
                bytes.extend_from_slice(&p.bytes[o * chunk..(o + 1) * chunk]);
            }
        }
        let info = self.info(name).ok_or_else(|| WeightError::MissingTensor { name: name.into() })?;
        Ok(HostTensor { dtype: parts[0].dtype, shape: info.shape, bytes })
    }
}
