//! One `torch.save` checkpoint (`consolidated.NN-of-MM.model.pth`): a zip archive
//! holding `<prefix>/data.pkl` and one uncompressed entry per storage,
//! `<prefix>/data/<key>` (docs/spec.md §8). The pickle is parsed, never executed; tensor
//! bytes are read straight from the archive, one tensor at a time.

use std::collections::{BTreeMap, HashMap};

use super::bytes::{ByteSource, Cursor};
use super::dtype::{HostTensor, TensorInfo};
use super::pickle::{self, TensorRef, Value};
use super::WeightSource;
use crate::error::WeightError;

/// The largest `data.pkl` accepted (the pickle is parsed in memory).
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

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
            let mut entries = HashMap::new();
            for i in 0..zip.len() {
                let f = zip.by_index_raw(i).map_err(|e| bad(e.to_string()))?;
                let name = f.name().to_string();
                let stored = f.compression() == zip::CompressionMethod::Stored;
                let start = f.data_start();
                let size = f.compressed_size();
                if name.ends_with("data.pkl") {
                    if pickle_at.is_some() {
                        return Err(bad("two data.pkl entries".into()));
                    }
                    pickle_at = Some((start, size, stored));
                } else if let Some((_, key)) = name.rsplit_once("/data/") {
                    if !stored {
                        return Err(bad(format!("entry {name} is compressed")));
                    }
                    if start.checked_add(size).is_none_or(|end| end > bytes.len()) {
                        return Err(bad(format!("entry {name} declares {size} bytes at {start}, past the end ({} bytes)", bytes.len())));
                    }
                    if entries.insert(key.to_string(), (start, size)).is_some() {
                        return Err(bad(format!("storage {key} appears twice")));
                    }
                }
            }
            let pickle_at = pickle_at.ok_or_else(|| bad("no data.pkl entry".into()))?;
            (pickle_at, entries)
        };
        let (start, size, stored) = pickle_at;
        if !stored {
            return Err(bad("data.pkl is compressed".into()));
        }
        // The declared size comes from the zip directory: bound it by the file and a
        // sane maximum before allocating (a 13B state dict's pickle is ~100 KB).
        let fits = start.checked_add(size).is_some_and(|end| end <= bytes.len());
        if !fits || size > MAX_PICKLE_BYTES {
            return Err(bad(format!(
                "data.pkl declares {size} bytes at offset {start}, beyond the file ({} bytes) or the {MAX_PICKLE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let mut pkl = vec![0u8; size as usize];
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
    let items = root.dict_pairs().ok_or("top-level object is not a dict")?;
    let mut inner = None;
    for (k, v) in items {
        match (k.as_str(), v) {
            (Some("model"), Value::Dict(_)) => inner = Some(v),
            (Some(name), Value::Tensor(t)) => {
                if out.insert(name.to_string(), TensorRef::clone(t)).is_some() {
                    return Err(format!("tensor '{name}' appears twice in the state dict"));
                }
            }
            _ => {}
        }
    }
    if let Some(model) = inner {
        out.clear();
        return collect_state_dict(model, out);
    }
    if out.is_empty() {
        return Err("no tensors in the state dict".into());
    }
    Ok(())
}

/// Where a tensor's bytes lie in its storage, checked against overflow and the storage's
/// length. Returns `(start, end)` in bytes from the storage's start.
fn byte_span(t: &TensorRef, storage_len: u64) -> Result<(u64, u64), String> {
    let es = t.dtype.size() as u64;
    let numel = t.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64)).ok_or("element count overflows")?;
    // The storage elements the view touches: 1 + Σ (dim − 1) · stride.
    let span = if numel == 0 {
        0
    } else {
        t.shape.iter().zip(&t.stride).try_fold(1u64, |acc, (&d, &s)| (d as u64 - 1).checked_mul(s as u64).and_then(|x| acc.checked_add(x)))
            .ok_or("stride span overflows")?
    };
    let start = (t.offset as u64).checked_mul(es).ok_or("storage offset overflows")?;
    let end = span.checked_mul(es).and_then(|b| start.checked_add(b)).ok_or("tensor end overflows")?;
    let out_bytes = numel.checked_mul(es).ok_or("tensor size overflows")?;
    if end > storage_len {
        return Err(format!("needs storage bytes {start}..{end} but the storage has {storage_len}"));
    }
    // A zero stride repeats elements; the copied tensor must not outgrow its storage.
    if out_bytes > storage_len {
        return Err(format!("a {out_bytes}-byte view of a {storage_len}-byte storage (broadcast strides are not supported)"));
    }
    Ok((start, end))
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
        let (start, end) = byte_span(t, storage_len).map_err(|reason| WeightError::BadArchive {
            file: file.clone(),
            reason: format!("tensor {name} (storage {}, offset {}, shape {:?}, stride {:?}): {reason}", t.storage, t.offset, t.shape, t.stride),
        })?;
        let es = t.dtype.size() as u64;
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
        expect = expect.saturating_mul(*d);
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
