//! Files from strangers (docs/design.md §7). A model directory may come from anywhere,
//! so what it names is opened only if it is a regular file inside the directory: a
//! symlink that leads out of it, a FIFO, a device such as `/dev/zero` or a directory is
//! refused before anything is read, and small files (configs, tokenizer, manifest) are
//! read only up to a limit.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The most a config, meta, manifest or tokenizer file may hold (LLaMA's tokenizer is
/// 500 KB; a 13B manifest ~300 KB).
pub const MAX_SMALL_FILE: u64 = 64 << 20;

/// A directory whose files are opened by name, never outside it.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    pub fn new(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let root = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        Ok(Self { root })
    }

    /// The directory as the user named it, resolved.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `dir/name`, checked: `name` is a plain file name, and the file it resolves to
    /// (through any symlinks) is a regular file inside the directory.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        if !sphinx_core::weights::is_plain_file_name(name) {
            bail!("'{name}' is not a plain file name inside {}", self.root.display());
        }
        let path = self.root.join(name);
        let real = path.canonicalize().with_context(|| format!("opening {}", path.display()))?;
        if !real.starts_with(&self.root) {
            bail!("{} leads outside the model directory (to {}); refusing to read it", path.display(), real.display());
        }
        regular_file(&real)?;
        Ok(real)
    }

    /// Whether `name` exists in the directory (as anything).
    pub fn has(&self, name: &str) -> bool {
        self.root.join(name).symlink_metadata().is_ok()
    }

    /// Reads a small file by name, at most [`MAX_SMALL_FILE`] bytes.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        read_limited(&self.resolve(name)?, MAX_SMALL_FILE)
    }

    pub fn read_text(&self, name: &str) -> Result<String> {
        String::from_utf8(self.read_small(name)?).with_context(|| format!("{name} in {} is not UTF-8", self.root.display()))
    }
}

/// Fails unless `path` is a regular file (not a FIFO, a device, a socket or a directory).
pub fn regular_file(path: &Path) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).with_context(|| format!("opening {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(meta)
}

/// Reads a regular file of at most `limit` bytes (checked before and while reading, so a
/// file that grows meanwhile is still bounded).
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = regular_file(path)?.len();
    if len > limit {
        bail!("{} has {len} bytes, more than the {limit} allowed for it", path.display());
    }
    let mut out = Vec::with_capacity(len as usize);
    File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(limit + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {}", path.display()))?;
    if out.len() as u64 > limit {
        bail!("{} grew past {limit} bytes while being read", path.display());
    }
    Ok(out)
}
