//! `sphinx convert --web`: a checkpoint as 32 MiB shards plus `manifest.json`, the
//! format the browser streams (see `sphinx_core::weights::WebManifest`). The output can
//! be served by any static server and is also loadable natively (`--model OUT`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use sha2::{Digest, Sha256};
use sphinx_core::config::{ConfigOverrides, LlmConfig};
use sphinx_core::model::open_checkpoint;
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{component, plan_shards, shard_file, ShardEntry, WebManifest, WeightSource, MANIFEST_FORMAT};
use sphinx_native::files::ModelDir;
use sphinx_native::model_dir::open_model_dir;
use sphinx_native::shards::hex;
use sphinx_native::staging::Staging;

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

pub fn run_convert(a: ConvertArgs) -> Result<()> {
    convert_web(&a.model, &a.output)
}

/// Writes `model` in the web format to `output` (which must not exist).
pub fn convert_web(model: &Path, output: &Path) -> Result<()> {
    let files = open_model_dir(model, None)?;
    let (config_json, meta_json, tokenizer) = (files.config_json.clone(), files.meta_json.clone(), files.tokenizer_model.clone());
    let vocab = Tokenizer::from_model_bytes(&tokenizer)?.vocab_size();
    let config = LlmConfig::from_json(&config_json, &meta_json, vocab, &ConfigOverrides::default())?;
    let source = open_checkpoint(files.checkpoints)?;
    let infos: Vec<_> = source.names().into_iter().filter_map(|n| source.info(&n).map(|i| (n, i))).collect();
    let (tensors, sizes) = plan_shards(&infos);
    let staging = Staging::new(output)?;
    let partial = staging.dir();
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
        let dir = ModelDir::new(model)?;
        for example in ["example.png", "example.jpg"] {
            if dir.has(example) {
                std::fs::copy(dir.resolve(example)?, partial.join(example))?;
            }
        }
        let manifest = WebManifest {
            format: MANIFEST_FORMAT.into(),
            config_json,
            meta_json,
            tokenizer: ShardEntry { file: "tokenizer.model".into(), bytes: tokenizer.len() as u64, sha256: hex(Sha256::digest(&tokenizer)) },
            requirements: WebManifest::requirements_for(&tensors, &config),
            tensors,
            shards,
            components,
        };
        std::fs::write(partial.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
        Ok(manifest)
    })();
    let manifest = written?;
    staging.commit()?;
    let total: u64 = manifest.shards.iter().map(|s| s.bytes).sum();
    eprintln!(
        "[{} tensors in {} shards, {:.1} MiB; components {:?}; needs a {:.1} MiB storage binding and {:.1} MiB on the device]",
        manifest.tensors.len(),
        manifest.shards.len(),
        total as f64 / (1 << 20) as f64,
        manifest.components,
        manifest.requirements.max_storage_buffer_binding_size as f64 / (1 << 20) as f64,
        manifest.requirements.device_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
