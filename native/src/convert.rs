//! `sphinx convert --web`: a checkpoint as 32 MiB shards plus `manifest.json`, the
//! format the browser streams (see `sphinx_core::weights::WebManifest`). The output can
//! be served by any static server and is also loadable natively (`--model OUT`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use sphinx_core::error::WeightError;
use sphinx_core::model::open_checkpoint;
use sphinx_core::weights::{component, plan_shards, shard_file, ShardEntry, ShardFetch, WebManifest, WeightSource, MANIFEST_FORMAT};
use sphinx_native::model_dir::open_model_dir;

#[derive(Args)]
pub struct ConvertArgs {
    /// Write the web format (shards + manifest).
    #[arg(long, required = true)]
    web: bool,
    /// The checkpoint directory to convert.
    model: PathBuf,
    /// Output directory (must not exist).
    output: PathBuf,
}

fn hex(d: impl AsRef<[u8]>) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn run_convert(a: ConvertArgs) -> Result<()> {
    convert_web(&a.model, &a.output)
}

/// Writes `model` in the web format to `output` (which must not exist).
pub fn convert_web(model: &Path, output: &Path) -> Result<()> {
    if output.exists() {
        bail!("{} already exists", output.display());
    }
    let files = open_model_dir(model, None)?;
    let (config_json, meta_json, tokenizer) = (files.config_json.clone(), files.meta_json.clone(), files.tokenizer_model.clone());
    let source = open_checkpoint(files.checkpoints)?;
    let infos: Vec<_> = source.names().into_iter().filter_map(|n| source.info(&n).map(|i| (n, i))).collect();
    let (tensors, sizes) = plan_shards(&infos);
    let partial = output.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)?;
    }
    std::fs::create_dir_all(&partial)?;
    let written = (|| -> Result<WebManifest> {
        let mut shards = Vec::with_capacity(sizes.len());
        let mut components: BTreeMap<String, u64> = BTreeMap::new();
        let mut current: Option<(usize, std::io::BufWriter<std::fs::File>, Sha256)> = None;
        let finish = |cur: Option<(usize, std::io::BufWriter<std::fs::File>, Sha256)>, shards: &mut Vec<ShardEntry>| -> Result<()> {
            if let Some((i, mut w, h)) = cur {
                w.flush()?;
                shards.push(ShardEntry { file: shard_file(i), bytes: sizes[i], sha256: hex(h.finalize()) });
            }
            Ok(())
        };
        for t in &tensors {
            if current.as_ref().is_none_or(|c| c.0 != t.shard) {
                finish(current.take(), &mut shards)?;
                let f = std::fs::File::create(partial.join(shard_file(t.shard)))?;
                current = Some((t.shard, std::io::BufWriter::new(f), Sha256::new()));
            }
            let host = pollster::block_on(source.read(&t.name))?;
            if let Some((_, w, h)) = current.as_mut() {
                w.write_all(&host.bytes)?;
                h.update(&host.bytes);
            }
            *components.entry(component(&t.name).to_string()).or_default() += t.bytes;
        }
        finish(current.take(), &mut shards)?;
        std::fs::write(partial.join("tokenizer.model"), &tokenizer)?;
        // A model's example image (the demo opens it) travels with it.
        for example in ["example.png", "example.jpg"] {
            if model.join(example).is_file() {
                std::fs::copy(model.join(example), partial.join(example))?;
            }
        }
        let manifest = WebManifest {
            format: MANIFEST_FORMAT.into(),
            config_json,
            meta_json,
            tokenizer: ShardEntry { file: "tokenizer.model".into(), bytes: tokenizer.len() as u64, sha256: hex(Sha256::digest(&tokenizer)) },
            requirements: WebManifest::requirements_for(&tensors),
            tensors,
            shards,
            components,
        };
        std::fs::write(partial.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
        Ok(manifest)
    })();
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, output).with_context(|| format!("renaming to {}", output.display()))?;
    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    eprintln!(
        "[{} tensors in {} shards, {:.1} MiB; components {:?}; needs a {:.1} MiB storage binding]",
        manifest.tensors.len(),
        manifest.shards.len(),
        total as f64 / (1 << 20) as f64,
        manifest.components,
        manifest.requirements.max_storage_buffer_binding_size as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Shards read from a local directory, each verified against its SHA-256 once.
pub struct LocalShards {
    dir: PathBuf,
    verified: std::sync::Mutex<Vec<String>>,
    hashes: BTreeMap<String, String>,
}

impl LocalShards {
    pub fn new(dir: &Path, manifest: &WebManifest) -> Self {
        let hashes = manifest.shards.iter().map(|s| (s.file.clone(), s.sha256.clone())).collect();
        Self { dir: dir.to_path_buf(), verified: Default::default(), hashes }
    }
}

impl ShardFetch for LocalShards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError> {
        let io = |e: std::io::Error| WeightError::Io { file: file.into(), reason: e.to_string() };
        let all = std::fs::read(self.dir.join(file)).map_err(io)?;
        let checked = self.verified.lock().map(|v| v.iter().any(|f| f == file)).unwrap_or(false);
        if !checked {
            let want = self.hashes.get(file).cloned().unwrap_or_default();
            if hex(Sha256::digest(&all)) != want {
                return Err(WeightError::Io { file: file.into(), reason: "SHA-256 does not match the manifest".into() });
            }
            if let Ok(mut v) = self.verified.lock() {
                v.push(file.to_string());
            }
        }
        let (s, e) = (offset as usize, (offset + len) as usize);
        all.get(s..e).map(<[u8]>::to_vec).ok_or_else(|| io(std::io::ErrorKind::UnexpectedEof.into()))
    }
}
