//! One `torch.save` checkpoint (`consolidated.NN-of-MM.model.pth`): a zip archive
//! holding `<prefix>/data.pkl` and one uncompressed entry per storage,
//! `<prefix>/data/<key>` (spec §8). The pickle is parsed, never executed; tensor
//! bytes are read straight from the archive, one tensor at a time.

use std::collections::{BTreeMap, HashMap};

use super::bytes::{ByteSource, Cursor};
use super::dtype::{HostTensor, TensorInfo};
use super::pickle::{self, TensorRef, Value};
use super::WeightSource;
use crate::error::WeightError;

pub struct PthFile<B: ByteSource> {
    bytes: B,
    tensors: BTreeMap<String, TensorRef>,
    /// Storage key → (byte offset of its data in the file, byte length).
    storages: HashMap<String, (u64, u64)>,
}

impl<B: ByteSource> PthFile<B> {
    pub fn open(bytes: B) -> Result<Self, WeightError> {
        let file = bytes.name().to_string();
        let bad = |reason: String| WeightError::BadArchive { file: file.clone(), reason };
        let (pickle_at, storages) = {
            let mut zip = zip::ZipArchive::new(Cursor { source: &bytes, pos: 0 }).map_err(|e| bad(e.to_string()))?;
            let mut pickle_at = None;
            let mut entries = Vec::new();
            for i in 0..zip.len() {
                let f = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
                let name = f.name().to_string();
                let stored = f.compression() == zip::CompressionMethod::Stored;
                let start = f.data_start();
                let size = f.compressed_size();
                if name.ends_with("data.pkl") {
                    pickle_at = Some((start, size, stored));
                } else if let Some((_, key)) = name.rsplit_once("/data/") {
                    if !stored {
                        return Err(bad(format!("entry {name} is compressed")));
                    }
                    entries.push((key.to_string(), (start, size)));
                }
            }
            let pickle_at = pickle_at.ok_or_else(|| bad("no data.pkl entry".into()))?;
            (pickle_at, entries.into_iter().collect::<HashMap<_, _>>())
        };
        let (start, size, stored) = pickle_at;
        if !stored {
            return Err(bad("data.pkl is compressed".into()));
        }
        let mut pkl = vec![0u8; usize::try_from(size).map_err(|_| bad("data.pkl too large".into()))?];
        bytes.read_at(start, &mut pkl)?;
        let root = pickle::parse(&pkl).map_err(|reason| WeightError::BadPickle { file: file.clone(), reason })?;
        let mut tensors = BTreeMap::new();
        collect_state_dict(&root, &mut tensors)
            .map_err(|reason| WeightError::BadPickle { file: file.clone(), reason })?;
        Ok(Self { bytes, tensors, storages })
    }

    pub fn file_name(&self) -> &str {
        self.bytes.name()
    }
}

/// Accepts `{"model": {name: tensor}}` (LLaMA2-Accessory) or a flat `{name: tensor}`.
fn collect_state_dict(root: &Value, out: &mut BTreeMap<String, TensorRef>) -> Result<(), String> {
    let Value::Dict(items) = root else {
        return Err("top-level object is not a dict".into());
    };
    if let Some((_, inner @ Value::Dict(_))) = items.iter().find(|(k, _)| k.as_str() == Some("model")) {
        return collect_state_dict(inner, out);
    }
    for (k, v) in items {
        if let (Some(name), Value::Tensor(t)) = (k.as_str(), v) {
            out.insert(name.to_string(), t.clone());
        }
    }
    if out.is_empty() {
        return Err("no tensors in the state dict".into());
    }
    Ok(())
}

impl<B: ByteSource> WeightSource for PthFile<B> {
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn info(&self, name: &str) -> Option<TensorInfo> {
        self.tensors.get(name).map(|t| TensorInfo { dtype: t.dtype, shape: t.shape.clone() })
    }

    async fn read(&self, name: &str) -> Result<HostTensor, WeightError> {
        let t = self.tensors.get(name).ok_or_else(|| WeightError::MissingTensor { name: name.into() })?;
        let file = self.bytes.name().to_string();
        let &(base, storage_len) = self.storages.get(&t.storage).ok_or_else(|| WeightError::BadArchive {
            file: file.clone(),
            reason: format!("storage {} of tensor {name} is not in the archive", t.storage),
        })?;
        let es = t.dtype.size() as u64;
        let numel: usize = t.shape.iter().product();
        // The span of storage elements the view touches.
        let span = if numel == 0 { 0 } else { 1 + t.shape.iter().zip(&t.stride).map(|(d, s)| (d - 1) * s).sum::<usize>() };
        let start = t.offset as u64 * es;
        let end = start + span as u64 * es;
        if end > storage_len || base + end > self.bytes.len() {
            return Err(WeightError::Truncated { file, name: name.into(), start: base + start, end: base + end, len: self.bytes.len() });
        }
        let mut raw = vec![0u8; (end - start) as usize];
        self.bytes.read_at(base + start, &mut raw)?;
        let bytes = if is_contiguous(&t.shape, &t.stride) { raw } else { gather_strided(&raw, &t.shape, &t.stride, es as usize) };
        Ok(HostTensor { dtype: t.dtype, shape: t.shape.clone(), bytes })
    }
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1;
    for (d, s) in shape.iter().zip(stride).rev() {
        if *d != 1 && *s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// Copies a strided view into row-major order.
fn gather_strided(raw: &[u8], shape: &[usize], stride: &[usize], es: usize) -> Vec<u8> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let off: usize = idx.iter().zip(stride).map(|(i, s)| i * s).sum();
        out.extend_from_slice(&raw[off * es..(off + 1) * es]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}
