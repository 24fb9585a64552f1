//! A `sphinx convert --web` directory read natively: each shard is opened through
//! [`ModelDir`] (a plain name, a regular file inside the directory), checked against the
//! manifest's size and SHA-256 before its first tensor is used (hashed in 1 MiB reads),
//! and then read per tensor with positioned reads. Nothing is mapped, so the process
//! holds each tensor once, on its way to the device, not the shard's pages too.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use sphinx_core::error::WeightError;
use sphinx_core::weights::{past_the_end, ByteSource, ShardEntry, ShardFetch, WebManifest};

use crate::files::ModelDir;
use crate::model_dir::FileBytes;

/// How much of a shard is hashed per read.
const HASH_CHUNK: u64 = 1 << 20;

/// Lowercase hex of a digest.
pub fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `data` against a manifest entry's size and SHA-256.
pub fn verify(entry: &ShardEntry, data: &[u8]) -> Result<(), WeightError> {
    check_len(entry, data.len() as u64)?;
    check_digest(entry, Sha256::digest(data))
}

/// Checks a shard file against its manifest entry's size and SHA-256, reading it in
/// [`HASH_CHUNK`] pieces.
fn verify_file(entry: &ShardEntry, file: &FileBytes) -> Result<(), WeightError> {
    check_len(entry, file.len())?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; HASH_CHUNK.min(file.len()) as usize];
    let mut offset = 0;
    while offset < file.len() {
        let n = HASH_CHUNK.min(file.len() - offset) as usize;
        file.read_at(offset, &mut chunk[..n])?;
        hasher.update(&chunk[..n]);
        offset += n as u64;
    }
    check_digest(entry, hasher.finalize())
}

fn check_len(entry: &ShardEntry, len: u64) -> Result<(), WeightError> {
    if len != entry.bytes {
        return Err(WeightError::Io { file: entry.file.clone(), reason: format!("{len} bytes, but the manifest says {}", entry.bytes) });
    }
    Ok(())
}

fn check_digest(entry: &ShardEntry, digest: impl AsRef<[u8]>) -> Result<(), WeightError> {
    if hex(digest) != entry.sha256 {
        return Err(WeightError::Io { file: entry.file.clone(), reason: "SHA-256 does not match the manifest".into() });
    }
    Ok(())
}

/// The shards of one web manifest in a local directory.
pub struct LocalShards {
    dir: ModelDir,
    entries: BTreeMap<String, ShardEntry>,
    /// Shards opened and verified so far.
    open: Mutex<BTreeMap<String, Arc<FileBytes>>>,
}

impl LocalShards {
    pub fn new(dir: ModelDir, manifest: &WebManifest) -> Self {
        let entries = manifest.shards.iter().map(|s| (s.file.clone(), s.clone())).collect();
        Self { dir, entries, open: Default::default() }
    }

    fn shard(&self, file: &str) -> Result<Arc<FileBytes>, WeightError> {
        let io = |reason: String| WeightError::Io { file: file.into(), reason };
        if let Some(m) = self.open.lock().map_err(|_| io("lock poisoned".into()))?.get(file) {
            return Ok(m.clone());
        }
        let entry = self.entries.get(file).ok_or_else(|| io("not a shard of the manifest".into()))?;
        let path = self.dir.resolve(file).map_err(|e| io(format!("{e:#}")))?;
        let shard = FileBytes::open(&path).map_err(|e| io(format!("{e:#}")))?;
        verify_file(entry, &shard)?;
        let shard = Arc::new(shard);
        self.open.lock().map_err(|_| io("lock poisoned".into()))?.insert(file.to_string(), shard.clone());
        Ok(shard)
    }
}

impl ShardFetch for LocalShards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError> {
        let shard = self.shard(file)?;
        let end = offset.checked_add(len).filter(|&end| end <= shard.len());
        let len = end.and_then(|_| usize::try_from(len).ok()).ok_or_else(|| past_the_end(file, offset, len, shard.len() as usize))?;
        let mut bytes = vec![0u8; len];
        shard.read_at(offset, &mut bytes)?;
        Ok(bytes)
    }
}
