//! A checkpoint directory on disk, as LLaMA2-Accessory ships it (spec §8):
//! `consolidated.NN-of-MM.model.pth` (or one `*.safetensors`), `config.json` or
//! `params.json`, `meta.json`, `tokenizer.model`. Checkpoints are memory-mapped, so
//! reading one tensor touches only its pages.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use sphinx_core::error::WeightError;
use sphinx_core::model::ModelFiles;
use sphinx_core::weights::{copy_range, ByteSource};

/// A memory-mapped checkpoint file.
pub struct MmapBytes {
    name: String,
    map: Mmap,
}

impl MmapBytes {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: the map is read-only; a checkpoint modified while in use is the user's error,
        // and every read is bounds-checked against the length taken here.
        let map = unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        Ok(Self { name: path.display().to_string(), map })
    }
}

impl ByteSource for MmapBytes {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.map.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), WeightError> {
        copy_range(&self.name, &self.map, offset, buf)
    }
}

/// A checkpoint file read with positioned reads (no mapping): its pages are not
/// counted in the process's resident memory, so `sphinx mix` can report its real peak.
pub struct FileBytes {
    name: String,
    file: File,
    len: u64,
}

impl FileBytes {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        Ok(Self { name: path.display().to_string(), file, len })
    }
}

impl ByteSource for FileBytes {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), WeightError> {
        let io = |e: std::io::Error| WeightError::Io { file: self.name.clone(), reason: e.to_string() };
        if offset.saturating_add(buf.len() as u64) > self.len {
            return Err(io(std::io::Error::other(format!("read of {} bytes at {offset} is past the end ({})", buf.len(), self.len))));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(buf, offset).map_err(io)
        }
        #[cfg(windows)]
        {
            use std::os::windows::fs::FileExt;
            let mut done = 0;
            while done < buf.len() {
                let n = self.file.seek_read(&mut buf[done..], offset + done as u64).map_err(io)?;
                if n == 0 {
                    return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                done += n;
            }
            Ok(())
        }
    }
}

/// The checkpoint files of a model directory, sorted by name.
pub fn checkpoint_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading model directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (n.starts_with("consolidated.") && n.ends_with(".pth")) || n.ends_with(".safetensors")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} holds no consolidated.NN-of-MM.model.pth or .safetensors checkpoint", dir.display());
    }
    Ok(paths)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Reads a model directory. `tokenizer` overrides `DIR/tokenizer.model`.
pub fn open_model_dir(dir: &Path, tokenizer: Option<&Path>) -> Result<ModelFiles<MmapBytes>> {
    open_model_dir_with(dir, tokenizer, MmapBytes::open)
}

/// [`open_model_dir`] with checkpoints opened by `open`.
pub fn open_model_dir_with<B: ByteSource>(
    dir: &Path,
    tokenizer: Option<&Path>,
    open: impl Fn(&Path) -> Result<B>,
) -> Result<ModelFiles<B>> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let config = ["config.json", "params.json"].iter().map(|f| dir.join(f)).find(|p| p.is_file());
    let config = config.with_context(|| format!("{} has neither config.json nor params.json", dir.display()))?;
    let meta = dir.join("meta.json");
    if !meta.is_file() {
        bail!("{} has no meta.json (it names the architecture, e.g. {{\"llama_type\": \"llama\"}})", dir.display());
    }
    let tok = tokenizer.map(Path::to_path_buf).unwrap_or_else(|| dir.join("tokenizer.model"));
    let tokenizer_model = std::fs::read(&tok).with_context(|| format!("reading tokenizer {}", tok.display()))?;
    let checkpoints = checkpoint_paths(dir)?.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
    Ok(ModelFiles { config_json: read_text(&config)?, meta_json: read_text(&meta)?, tokenizer_model, checkpoints })
}
