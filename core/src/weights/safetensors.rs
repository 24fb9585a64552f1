//! Safetensors: an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range, then the data.

use std::collections::BTreeMap;

use super::bytes::ByteSource;
use super::dtype::{DType, HostTensor, TensorInfo};
use super::WeightSource;
use crate::error::WeightError;

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
        if header_len > 100_000_000 || 8 + header_len > bytes.len() {
            return Err(bad(format!("header length {header_len} does not fit the file")));
        }
        let mut header = vec![0u8; header_len as usize];
        bytes.read_at(8, &mut header)?;
        let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("header JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("header is not an object".into()))?;
        let mut tensors = BTreeMap::new();
        for (name, v) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = v["dtype"].as_str().and_then(DType::from_safetensors_name);
            let dtype = dtype.ok_or_else(|| bad(format!("tensor {name}: missing or unknown dtype")))?;
            let shape: Option<Vec<usize>> =
                v["shape"].as_array().map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect());
            let shape = shape.ok_or_else(|| bad(format!("tensor {name}: missing shape")))?;
            let off = v["data_offsets"].as_array();
            let (b, e) = match off.map(|o| (o.first().and_then(|x| x.as_u64()), o.get(1).and_then(|x| x.as_u64()))) {
                Some((Some(b), Some(e))) if e >= b => (b, e),
                _ => return Err(bad(format!("tensor {name}: bad data_offsets"))),
            };
            let info = TensorInfo { dtype, shape };
            if (e - b) as usize != info.byte_len() {
                return Err(bad(format!("tensor {name}: {} bytes for shape {:?} {dtype}", e - b, info.shape)));
            }
            tensors.insert(name.clone(), (info, b, e));
        }
        Ok(Self { bytes, data_start: 8 + header_len, tensors })
    }
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
        let (start, end) = (self.data_start + b, self.data_start + e);
        if end > self.bytes.len() {
            return Err(WeightError::Truncated {
                file: self.bytes.name().into(),
                name: name.into(),
                start,
                end,
                len: self.bytes.len(),
            });
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        self.bytes.read_at(start, &mut bytes)?;
        Ok(HostTensor { dtype: info.dtype, shape: info.shape.clone(), bytes })
    }
}

/// The safetensors header (length prefix + JSON, padded to 8 bytes) for tensors
/// written in this order, so the data can follow tensor by tensor.
pub fn safetensors_header(tensors: &[(String, TensorInfo)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let len = t.byte_len();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": t.dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out
}

/// Serialises tensors as one safetensors file in memory, in the given order.
pub fn write_safetensors(tensors: &[(String, HostTensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let infos: Vec<(String, TensorInfo)> = tensors.iter().map(|(n, t)| (n.clone(), t.info())).collect();
    let mut out = safetensors_header(&infos, metadata);
    for (_, t) in tensors {
        out.extend_from_slice(&t.bytes);
    }
    out
}
