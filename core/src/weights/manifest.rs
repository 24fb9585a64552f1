//! Weights for the web (docs/design.md §4): tensors packed in name order into shards of at
//! most 32 MiB (a larger tensor gets its own file), described by a JSON manifest —
//! per tensor its dtype, shape, shard and offset; per shard its size and SHA-256; bytes
//! per component; and the WebGPU limits the model needs — so a browser can check the
//! adapter before downloading and stream tensors one at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::dtype::{DType, HostTensor, TensorInfo};
use super::precision::{held_bytes, WeightDtype};
use super::WeightSource;
use crate::config::{LlmConfig, DEFAULT_PREFILL_CHUNK};
use crate::error::WeightError;

pub const SHARD_BYTES: u64 = 32 << 20;
pub const MANIFEST_FORMAT: &str = "sphinx-web/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub shard: usize,
    pub offset: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// What the device must offer, checked before any download.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// The largest buffer: a tensor as held on the device (16-bit LLM matrices stay
    /// 16-bit, everything else f32) or one prefill chunk's largest activation.
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    /// WebGPU features needed (none: 16-bit weights are unpacked from u32 words).
    pub features: Vec<String>,
    /// Everything the model holds on the device at its context length: the weights as
    /// held, the rotary tables, a full KV cache and one prefill chunk's activations
    /// (docs/design.md §9). 0 in manifests written before it was counted.
    #[serde(default)]
    pub device_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebManifest {
    pub format: String,
    /// The checkpoint's `config.json` and `meta.json`, verbatim.
    pub config_json: String,
    pub meta_json: String,
    pub tokenizer: ShardEntry,
    pub tensors: Vec<TensorEntry>,
    pub shards: Vec<ShardEntry>,
    /// Stored bytes per component: llm, clip, convnext, dinov2, qformer, projections.
    pub components: BTreeMap<String, u64>,
    pub requirements: Requirements,
}

/// The component a checkpoint key belongs to.
pub fn component(name: &str) -> &'static str {
    let n = name.strip_prefix("llma.").unwrap_or(name);
    let first = n.split('.').next().unwrap_or("");
    match first {
        "clip" => "clip",
        "openclip_convnext_xxl" => "convnext",
        "dinov2_vitg14" => "dinov2",
        "qformer" => "qformer",
        "visual_proj" | "qformer_proj" | "start_img" | "end_img" => "projections",
        _ => "llm",
    }
}

/// Packs tensors (in the source's name order) into shards: a new shard starts when the
/// next tensor would overflow `SHARD_BYTES`; a tensor larger than that is alone.
/// Returns the tensor entries and each shard's size; hashes are filled in by the writer.
pub fn plan_shards(infos: &[(String, TensorInfo)]) -> (Vec<TensorEntry>, Vec<u64>) {
    let mut entries = Vec::with_capacity(infos.len());
    let mut sizes: Vec<u64> = Vec::new();
    for (name, info) in infos {
        let bytes = info.byte_len() as u64;
        let fits = sizes.last().is_some_and(|&used| used > 0 && used + bytes <= SHARD_BYTES);
        if !fits {
            sizes.push(0);
        }
        let shard = sizes.len() - 1;
        entries.push(TensorEntry {
            name: name.clone(),
            dtype: info.dtype.name().to_string(),
            shape: info.shape.clone(),
            shard,
            offset: sizes[shard],
            bytes,
        });
        sizes[shard] += bytes;
    }
    (entries, sizes)
}

/// Whether `name` names a file directly inside a directory: not empty, no separator,
/// not `.` or `..`, no drive or NUL. Manifests name their shards this way only.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', ':', '\0'])
}

/// The shard file name of shard `i`.
pub fn shard_file(i: usize) -> String {
    format!("shard-{i:04}.bin")
}

impl WebManifest {
    /// Parses and validates a manifest (it comes from a web server or a stranger's directory).
    pub fn parse(json: &str) -> Result<Self, WeightError> {
        let bad = |reason: String| WeightError::BadManifest { reason };
        let m: Self = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!("format '{}', expected '{MANIFEST_FORMAT}'", m.format)));
        }
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// Every file name plain, every hash well-formed, every tensor inside its shard and
    /// as long as its dtype and shape say, no name twice.
    fn validate(&self) -> Result<(), String> {
        for s in self.shards.iter().chain([&self.tokenizer]) {
            if !is_plain_file_name(&s.file) {
                return Err(format!("file name '{}' is not a plain file name in the model's directory", s.file));
            }
            if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("file '{}' has no valid SHA-256", s.file));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(format!("tensor '{}' appears twice", t.name));
            }
            let dtype = DType::from_name(&t.dtype).ok_or_else(|| format!("tensor '{}': unknown dtype {}", t.name, t.dtype))?;
            let info = TensorInfo { dtype, shape: t.shape.clone() };
            if info.checked_byte_len().map(|b| b as u64) != Some(t.bytes) {
                return Err(format!("tensor '{}': {} bytes for shape {:?} {}", t.name, t.bytes, t.shape, t.dtype));
            }
            let shard = self.shards.get(t.shard).ok_or_else(|| format!("tensor '{}' is in shard {}, which is not listed", t.name, t.shard))?;
            if t.offset.checked_add(t.bytes).is_none_or(|end| end > shard.bytes) {
                return Err(format!("tensor '{}' (bytes {} + {}) lies outside {} ({} bytes)", t.name, t.offset, t.bytes, shard.file, shard.bytes));
            }
        }
        Ok(())
    }

    /// Requirements of the tensors loaded with the default precision (the checkpoint's)
    /// for the LLM `config`: the largest buffer must fit one binding.
    pub fn requirements_for(tensors: &[TensorEntry], config: &LlmConfig) -> Requirements {
        let held = |t: &TensorEntry| {
            let info = TensorInfo { dtype: DType::from_name(&t.dtype).unwrap_or(DType::F32), shape: t.shape.clone() };
            held_bytes(&t.name, &info, WeightDtype::Auto)
        };
        let weights: u64 = tensors.iter().map(held).sum();
        let largest = tensors.iter().map(held).max().unwrap_or(0).max(config.largest_activation_bytes(DEFAULT_PREFILL_CHUNK));
        let device_bytes = weights + config.state_bytes() + config.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK);
        Requirements { max_storage_buffer_binding_size: largest, max_buffer_size: largest, features: Vec::new(), device_bytes }
    }
}

/// Reads byte ranges of shard files: local files natively, `fetch` + the Cache API in a browser.
#[allow(async_fn_in_trait)]
pub trait ShardFetch {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError>;
}

/// The tensors of a web manifest, read one at a time through a [`ShardFetch`].
pub struct ManifestSource<F: ShardFetch> {
    manifest: WebManifest,
    by_name: BTreeMap<String, usize>,
    fetch: F,
}

impl<F: ShardFetch> ManifestSource<F> {
    pub fn new(manifest: WebManifest, fetch: F) -> Self {
        let by_name = manifest.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Self { manifest, by_name, fetch }
    }

    pub fn manifest(&self) -> &WebManifest {
        &self.manifest
    }

    pub fn fetcher(&self) -> &F {
        &self.fetch
    }
}

impl<F: ShardFetch> WeightSource for ManifestSource<F> {
    fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        let t = &self.manifest.tensors[*self.by_name.get(name)?];
        Some(TensorInfo { dtype: DType::from_name(&t.dtype)?, shape: t.shape.clone() })
    }

    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        let i = *self.by_name.get(name).ok_or_else(|| WeightError::MissingTensor { name: name.into() })?;
        let t = &self.manifest.tensors[i];
        let info = self.info(name).ok_or_else(|| WeightError::UnsupportedDtype { name: name.into(), dtype: t.dtype.clone() })?;
        // `parse` checked that the tensor lies inside its shard.
        let shard = self.manifest.shards.get(t.shard).ok_or_else(|| WeightError::MissingTensor { name: format!("shard {} of {name}", t.shard) })?;
        let bytes = self.fetch.fetch(&shard.file, t.offset, t.bytes).await?;
        if bytes.len() as u64 != t.bytes {
            return Err(WeightError::Truncated { file: shard.file.clone(), name: name.into(), start: t.offset, end: t.offset + t.bytes, len: bytes.len() as u64 });
        }
        Ok(HostTensor { dtype: info.dtype, shape: info.shape, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(bytes: usize) -> TensorInfo {
        TensorInfo { dtype: DType::U8, shape: vec![bytes] }
    }

    #[test]
    fn shards_hold_at_most_32_mib_and_big_tensors_stand_alone() {
        let mib = 1 << 20;
        let infos: Vec<_> = [10, 20, 5, 40, 1, 31, 2].iter().enumerate().map(|(i, m)| (format!("t{i}"), info(m * mib))).collect();
        let (entries, sizes) = plan_shards(&infos);
        let shards: Vec<usize> = entries.iter().map(|e| e.shard).collect();
        assert_eq!(shards, vec![0, 0, 1, 2, 3, 3, 4]);
        assert_eq!(sizes.iter().map(|s| s / mib as u64).collect::<Vec<_>>(), vec![30, 5, 40, 32, 2]);
        assert_eq!((entries[1].offset, entries[5].offset), (10 * mib as u64, mib as u64));
    }

    #[test]
    fn plain_file_names_only() {
        for ok in ["shard-0000.bin", "tokenizer.model", "a..b"] {
            assert!(is_plain_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "C:x", "a\0"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn components() {
        assert_eq!(component("llma.layers.0.attention.wq.weight"), "llm");
        assert_eq!(component("llma.dinov2_vitg14.blocks.0.norm1.weight"), "dinov2");
        assert_eq!(component("llma.start_img"), "projections");
        assert_eq!(component("llma.qformer.query_tokens"), "qformer");
    }
}
