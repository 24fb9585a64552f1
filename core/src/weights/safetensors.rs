//! Safetensors (docs/spec.md §8): an 8-byte little-endian header length, a JSON header
//! naming each tensor's dtype, shape and byte range, then the data. The header is parsed
//! and validated by the `safetensors` crate (offsets contiguous from 0 and consistent
//! with dtype × shape, no overflow); this module adds what a stranger's file also needs
//! here: the header bounded by the file before it is read, duplicate names refused, and
//! the data area exactly as long as the tensors. Tensors are read one at a time.

use std::collections::{BTreeMap, HashSet};

use ::safetensors::tensor::{Metadata, TensorInfo as StInfo};

use super::bytes::ByteSource;
use super::dtype::{DType, HostTensor, TensorInfo};
use super::WeightSource;
use crate::error::WeightError;
use sphinx_shaders::BlockFormat;

/// The metadata key naming the block-quantized tensors: a JSON object from tensor name
/// to block format (`{"llma.layers.0.attention.wq.weight": "q8_0", ...}`). Such a tensor
/// is stored as `U8` [rows, row_bytes]; it reads as [`DType::Q8_0`] / [`DType::Q4_0`]
/// [rows, cols] (docs/design.md §10).
pub const BLOCKS_METADATA_KEY: &str = "sphinx.blocks";

/// The largest JSON header accepted (the `safetensors` crate's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

pub struct SafetensorsFile<B: ByteSource> {
    bytes: B,
    data_start: u64,
    tensors: BTreeMap<String, (TensorInfo, u64, u64)>,
}

impl<B: ByteSource> SafetensorsFile<B> {
    pub fn open(bytes: B) -> Result<Self, WeightError> {
        let file = bytes.name().to_string();
        let bad = |reason: String| WeightError::BadSafetensors { file: file.clone(), reason };
        if bytes.len() < 8 {
            return Err(bad("shorter than its 8-byte header length".into()));
        }
        let mut len = [0u8; 8];
        bytes.read_at(0, &mut len)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER_BYTES || header_len > bytes.len() - 8 {
            return Err(bad(format!("header length {header_len} does not fit the file ({} bytes)", bytes.len())));
        }
        let mut header = vec![0u8; header_len as usize];
        bytes.read_at(8, &mut header)?;
        refuse_duplicate_names(&header).map_err(|e| bad(format!("header JSON: {e}")))?;
        let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = bytes.len() - data_start;
        if meta.data_len() as u64 != data_len {
            return Err(bad(format!("the tensors cover {} bytes but the data area has {data_len}", meta.data_len())));
        }
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = DType::from_safetensors_name(&info.dtype.to_string())
                .ok_or_else(|| bad(format!("tensor {name}: unsupported dtype {}", info.dtype)))?;
            let (b, e) = info.data_offsets;
            tensors.insert(name, (TensorInfo { dtype, shape: info.shape.clone() }, b as u64, e as u64));
        }
        let blocks = meta.metadata().as_ref().and_then(|m| m.get(BLOCKS_METADATA_KEY));
        if let Some(blocks) = blocks {
            let blocks: BTreeMap<String, String> = serde_json::from_str(blocks).map_err(|e| bad(format!("{BLOCKS_METADATA_KEY}: {e}")))?;
            for (name, format) in blocks {
                let format = BlockFormat::from_name(&format).ok_or_else(|| bad(format!("tensor {name}: unknown block format {format:?}")))?;
                let (info, _, _) = tensors.get_mut(&name).ok_or_else(|| bad(format!("{BLOCKS_METADATA_KEY} names {name}, which the file does not hold")))?;
                *info = block_info(format, info).ok_or_else(|| {
                    bad(format!("tensor {name}: {} {:?} is not rows of whole {} blocks", info.dtype, info.shape, format.name()))
                })?;
            }
        }
        Ok(Self { bytes, data_start, tensors })
    }
}

/// A `U8` [rows, row_bytes] tensor of `format`'s blocks as [rows, cols] of its dtype.
fn block_info(format: BlockFormat, stored: &TensorInfo) -> Option<TensorInfo> {
    match (stored.dtype, stored.shape.as_slice()) {
        (DType::U8, &[rows, row_bytes]) => Some(TensorInfo { dtype: DType::of_blocks(format), shape: vec![rows, format.cols_in(row_bytes)?] }),
        _ => None,
    }
}

/// Fails on a name that appears twice in the header (a JSON map would keep only one).
fn refuse_duplicate_names(header: &[u8]) -> Result<(), serde_json::Error> {
    struct UniqueKeys;
    impl<'de> serde::de::Visitor<'de> for UniqueKeys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<serde::de::IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!("'{key}' appears twice")));
                }
            }
            Ok(())
        }
    }
    serde::Deserializer::deserialize_map(&mut serde_json::Deserializer::from_slice(header), UniqueKeys)
}

impl<B: ByteSource> WeightSource for SafetensorsFile<B> {
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|t| t.0.clone())
    }
    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        let (info, b, e) = self.tensors.get(name).ok_or_else(|| WeightError::MissingTensor { name: name.into() })?;
        // Validated at open: `b ≤ e` and `data_start + e` is the file's length at most.
        let mut bytes = vec![0u8; (e - b) as usize];
        self.bytes.read_at(self.data_start + b, &mut bytes)?;
        Ok(HostTensor { dtype: info.dtype, shape: info.shape.clone(), bytes })
    }
}

/// The safetensors header (length prefix + JSON, padded to 8 bytes) for tensors
/// written in this order, so the data can follow tensor by tensor. The entries are the
/// `safetensors` crate's, checked by it; names and metadata keep a stable order so the
/// same tensors always give the same bytes.
pub fn safetensors_header(tensors: &[(String, TensorInfo)], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, WeightError> {
    let bad = |reason: String| WeightError::BadSafetensors { file: "(header being written)".into(), reason };
    let mut entries = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    let mut blocks = BTreeMap::new();
    for (name, t) in tensors {
        let dtype = serde_json::from_value(serde_json::json!(t.dtype.safetensors_name())).map_err(|e| bad(e.to_string()))?;
        let len = t.checked_byte_len().ok_or_else(|| bad(format!("tensor {name}: size overflows, or {:?} is not whole blocks", t.shape)))?;
        let end = offset.checked_add(len).ok_or_else(|| bad("total size overflows".into()))?;
        // Blocks are stored as their bytes, a row of blocks per row.
        let shape = match t.dtype.block_format() {
            Some(format) => {
                blocks.insert(name.clone(), format.name().to_string());
                vec![t.shape[0], format.row_bytes(t.shape[1]).unwrap_or(0)]
            }
            None => t.shape.clone(),
        };
        entries.push((name.clone(), StInfo { dtype, shape, data_offsets: (offset, end) }));
        offset = end;
    }
    let mut metadata = metadata.clone();
    if !blocks.is_empty() {
        metadata.insert(BLOCKS_METADATA_KEY.into(), serde_json::to_string(&blocks).map_err(|e| bad(e.to_string()))?);
    }
    let metadata = &metadata;
    // Validation only: offsets contiguous, sizes consistent.
    Metadata::new(None, entries.clone()).map_err(|e| bad(e.to_string()))?;
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    for (name, info) in entries {
        header.insert(name, serde_json::to_value(info).map_err(|e| bad(e.to_string()))?);
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    Ok(out)
}

/// Serialises tensors as one safetensors file in memory, in the given order.
pub fn write_safetensors(tensors: &[(String, HostTensor)], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>, WeightError> {
    let infos: Vec<(String, TensorInfo)> = tensors.iter().map(|(n, t)| (n.clone(), t.info())).collect();
    let mut out = safetensors_header(&infos, metadata)?;
    for (_, t) in tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}
