//! A checkpoint directory on disk, as LLaMA2-Accessory ships it (docs/spec.md §8):
//! `consolidated.NN-of-MM.model.pth` (or one `*.safetensors`), `config.json` or
//! `params.json`, `meta.json`, `tokenizer.model`. Checkpoints are read with positioned
//! reads, one tensor at a time, never mapped (docs/design.md §9, "Host memory while loading").

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sphinx_core::error::WeightError;
use sphinx_core::model::ModelFiles;
use sphinx_core::weights::ByteSource;

use crate::files::{read_limited, regular_file, ModelDir, MAX_SMALL_FILE};

/// A checkpoint file read with positioned reads. Nothing is mapped, so the file's pages
/// (in the OS's page cache) are not counted in the process's resident memory: while a
/// model loads the process holds the tensors already on the device plus the one being
/// read, not a second copy of the whole file.
pub struct FileBytes {
    name: String,
    file: File,
    len: u64,
}

impl FileBytes {
    pub fn open(path: &Path) -> Result<Self> {
        regular_file(path)?;
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

/// The checkpoint files of a model directory, sorted by name, each checked to be a
/// regular file inside it.
pub fn checkpoint_paths(dir: &ModelDir) -> Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .with_context(|| format!("reading model directory {}", dir.path().display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| (n.starts_with("consolidated.") && n.ends_with(".pth")) || n.ends_with(".safetensors"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("{} holds no consolidated.NN-of-MM.model.pth or .safetensors checkpoint", dir.path().display());
    }
    names.iter().map(|n| dir.resolve(n)).collect()
}

/// Reads a model directory. `tokenizer` overrides `DIR/tokenizer.model`.
pub fn open_model_dir(dir: &Path, tokenizer: Option<&Path>) -> Result<ModelFiles<FileBytes>> {
    open_model_dir_with(dir, tokenizer, FileBytes::open)
}

/// [`open_model_dir`] with checkpoints opened by `open`. Every file is read through
/// [`ModelDir`]: regular files inside the directory only, small files bounded.
pub fn open_model_dir_with<B: ByteSource>(
    dir: &Path,
    tokenizer: Option<&Path>,
    open: impl Fn(&Path) -> Result<B>,
) -> Result<ModelFiles<B>> {
    let dir = ModelDir::new(dir)?;
    let config = ["config.json", "params.json"].into_iter().find(|f| dir.has(f));
    let config = config.with_context(|| format!("{} has neither config.json nor params.json", dir.path().display()))?;
    if !dir.has("meta.json") {
        bail!("{} has no meta.json (it names the architecture, e.g. {{\"llama_type\": \"llama\"}})", dir.path().display());
    }
    // A tokenizer the user names is theirs to choose; the directory's own is checked.
    let tokenizer_model = match tokenizer {
        Some(path) => read_limited(path, MAX_SMALL_FILE).with_context(|| format!("reading tokenizer {}", path.display()))?,
        None => dir.read_small("tokenizer.model")?,
    };
    let checkpoints = checkpoint_paths(&dir)?.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
    Ok(ModelFiles { config_json: dir.read_text(config)?, meta_json: dir.read_text("meta.json")?, tokenizer_model, checkpoints })
}
