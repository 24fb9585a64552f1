//! Writing a directory atomically: into a fresh hidden directory beside the output
//! (`.NAME.tmp-<pid>-<n>`, created by this run, so no other run or file can share it),
//! renamed to the output only when complete. If the run fails, only that directory —
//! which this run created — is removed; nothing else is ever deleted.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub struct Staging {
    dir: PathBuf,
    output: PathBuf,
    done: bool,
}

impl Staging {
    /// Creates the staging directory for `output`, which must not exist.
    pub fn new(output: &Path) -> Result<Self> {
        if output.symlink_metadata().is_ok() {
            bail!("{} already exists", output.display());
        }
        let name = output.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} has no file name", output.display()))?;
        let parent = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        for n in 0..1000u32 {
            let dir = parent.join(format!(".{name}.tmp-{}-{stamp:x}{n}", std::process::id()));
            // `create_dir` fails if the name exists: the directory is ours alone.
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Self { dir, output: output.to_path_buf(), done: false }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        bail!("could not create a staging directory beside {}", output.display())
    }

    /// Where to write the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves the finished directory to the output; fails if the output appeared meanwhile.
    pub fn commit(mut self) -> Result<()> {
        if self.output.symlink_metadata().is_ok() {
            bail!("{} appeared while it was being written; this run's result is discarded", self.output.display());
        }
        std::fs::rename(&self.dir, &self.output).with_context(|| format!("renaming {} to {}", self.dir.display(), self.output.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
