//! A `sphinx convert --web` directory read natively: each shard is opened through
//! [`ModelDir`] (a plain name, a regular file inside the directory), memory-mapped
//! once, checked against the manifest's size and SHA-256 before its first tensor is
//! used, and then sliced per tensor, so each shard is read once, not once per tensor.

use std::collections::BTreeMap;
use std::sync::Mutex;

use memmap2::Mmap;
use sha2::{Digest, Sha256};
use sphinx_core::error::WeightError;
use sphinx_core::weights::{past_the_end, slice_range, ShardEntry, ShardFetch, WebManifest};

use crate::files::ModelDir;

/// Lowercase hex of a digest.
pub fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `data` against a manifest entry's size and SHA-256.
pub fn verify(entry: &ShardEntry, data: &[u8]) -> Result<(), WeightError> {
    let bad = |reason: String| WeightError::Io { file: entry.file.clone(), reason };
    if data.len() as u64 != entry.bytes {
        return Err(bad(format!("{} bytes, but the manifest says {}", data.len(), entry.bytes)));
    }
    if hex(Sha256::digest(data)) != entry.sha256 {
        return Err(bad("SHA-256 does not match the manifest".into()));
    }
    Ok(())
}

/// The shards of one web manifest in a local directory.
pub struct LocalShards {
    dir: ModelDir,
    entries: BTreeMap<String, ShardEntry>,
    /// Shards mapped and verified so far.
    open: Mutex<BTreeMap<String, std::sync::Arc<Mmap>>>,
}

impl LocalShards {
    pub fn new(dir: ModelDir, manifest: &WebManifest) -> Self {
        let entries = manifest.shards.iter().map(|s| (s.file.clone(), s.clone())).collect();
        Self { dir, entries, open: Default::default() }
    }

    fn shard(&self, file: &str) -> Result<std::sync::Arc<Mmap>, WeightError> {
        let io = |reason: String| WeightError::Io { file: file.into(), reason };
        if let Some(m) = self.open.lock().map_err(|_| io("lock poisoned".into()))?.get(file) {
            return Ok(m.clone());
        }
        let entry = self.entries.get(file).ok_or_else(|| io("not a shard of the manifest".into()))?;
        let path = self.dir.resolve(file).map_err(|e| io(format!("{e:#}")))?;
        let f = std::fs::File::open(&path).map_err(|e| io(e.to_string()))?;
        // SAFETY: read-only map; every slice below is bounds-checked against its length.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| io(e.to_string()))?;
        verify(entry, &map)?;
        let map = std::sync::Arc::new(map);
        self.open.lock().map_err(|_| io("lock poisoned".into()))?.insert(file.to_string(), map.clone());
        Ok(map)
    }
}

impl ShardFetch for LocalShards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError> {
        let map = self.shard(file)?;
        slice_range(&map, offset, len).map(<[u8]>::to_vec).ok_or_else(|| past_the_end(file, offset, len, map.len()))
    }
}
