//! The weight-source seam (docs/design.md §3): the one thing that differs between a
//! local `.pth` set, a safetensors file, an HTTP shard set or a mix of two sources.
//! Model code only ever asks a [`WeightSource`] for one tensor at a time, so host
//! memory peaks near the largest tensor, never the whole model.

mod bytes;
mod dtype;
mod loader;
mod manifest;
mod pickle;
mod precision;
mod quantize;
mod pth;
mod safetensors;
mod sharded;

pub use bytes::{copy_range, past_the_end, slice_range, ByteSource, MemoryBytes};
pub use dtype::{DType, HostTensor, TensorInfo};
pub use loader::{LoadProgress, WeightLoader};
pub use manifest::{
    component, is_plain_file_name, plan_shards, shard_file, ManifestSource, Requirements, ShardEntry, ShardFetch, TensorEntry, WebManifest,
    MANIFEST_FORMAT, SHARD_BYTES,
};
pub use precision::{held_bytes, HalfKind, WeightDtype};
pub use sphinx_shaders::BlockFormat;
pub use pth::PthFile;
pub use quantize::{quantize_tensor, stored_form, round_tensor_to_f16, EncoderWeights, Stored};
pub use safetensors::{safetensors_header, write_safetensors, SafetensorsFile, BLOCKS_METADATA_KEY};
pub use sharded::{ModelParallelSource, SplitRule};

use crate::error::WeightError;


/// A set of named tensors that can be read one at a time.
#[allow(async_fn_in_trait)]
pub trait WeightSource {
    /// Every tensor name, in a stable order.
    fn names(&self) -> Vec<String>;
    /// Dtype and shape of one tensor, without reading it.
    fn info(&self, name: &str) -> Option<TensorInfo>;
    /// The bytes of one tensor, row-major, little-endian.
    async fn read(&self, name: &str) -> Result<HostTensor, WeightError>;
    /// The tensor as stored, or — for a mix of two sources — both parts and β, so the
    /// loader can mix them on the device.
    async fn read_parts(&self, name: &str) -> Result<TensorParts, WeightError> {
        Ok(TensorParts::Plain(self.read(name).await?))
    }
}

/// What [`WeightSource::read_parts`] returns.
pub enum TensorParts {
    Plain(HostTensor),
    /// `beta · real + (1 − beta) · synthetic`.
    Mix { real: HostTensor, synthetic: HostTensor, beta: f64 },
}

/// A plain list of checkpoint files of one model: either model-parallel `.pth`
/// shards (merged on read) or a single safetensors file.
pub enum CheckpointSource<B: ByteSource> {
    Pth(ModelParallelSource<PthFile<B>>),
    Safetensors(SafetensorsFile<B>),
}

impl<B: ByteSource> WeightSource for CheckpointSource<B> {
    fn names(&self) -> Vec<String> {
        match self {
            Self::Pth(s) => s.names(),
            Self::Safetensors(s) => s.names(),
        }
    }
    fn info(&self, name: &str) -> Option<TensorInfo> {
        match self {
            Self::Pth(s) => s.info(name),
            Self::Safetensors(s) => s.info(name),
        }
    }
    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        match self {
            Self::Pth(s) => s.read(name).await,
            Self::Safetensors(s) => s.read(name).await,
        }
    }
}

/// Parses `consolidated.NN-of-MM.model.pth` and returns `(rank, world)`.
pub fn parse_shard_name(file_name: &str) -> Option<(usize, usize)> {
    let rest = file_name.strip_prefix("consolidated.")?;
    let rest = rest.strip_suffix(".model.pth").or_else(|| rest.strip_suffix(".pth"))?;
    let (rank, world) = rest.split_once("-of-")?;
    Some((rank.parse().ok()?, world.parse().ok()?))
}
