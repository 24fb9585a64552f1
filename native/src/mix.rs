//! `sphinx mix`: write θ = β·θ_real + (1−β)·θ_synthetic as a new checkpoint, tensor by
//! tensor (host memory near two tensors), into a temporary directory that is renamed
//! only when complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sphinx_core::mixing::{check_same_architecture, MixedSource};
use sphinx_core::model::open_checkpoint;
use sphinx_core::weights::{safetensors_header, WeightSource};
use sphinx_native::load::mix_rules;
use sphinx_native::model_dir::{open_model_dir_with, FileBytes};
use sphinx_native::staging::Staging;

#[derive(Args)]
pub struct MixArgs {
    /// The model fine-tuned on real-world data (θ_real).
    #[arg(long)]
    real: PathBuf,
    /// The model fine-tuned on synthetic data (θ_synthetic).
    #[arg(long)]
    synthetic: PathBuf,
    /// β: the real model's share of every trained weight.
    #[arg(long)]
    beta: f64,
    /// Extra rules, tried in order before the uniform β: 'PATTERN=β', 'PATTERN=real' or
    /// 'PATTERN=synthetic'; `*` matches anything (e.g. '*layers.0.*=0.8').
    #[arg(long = "rule")]
    rules: Vec<String>,
    /// Allow β outside [0, 1] (extrapolating past one of the models).
    #[arg(long)]
    extrapolate: bool,
    /// Fail if a mixed tensor contains NaN or Inf.
    #[arg(long)]
    check_finite: bool,
    /// Output directory (must not exist).
    #[arg(long, short)]
    output: PathBuf,
}

/// Peak resident memory of this process (Linux), for the closing report.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

pub fn run_mix(a: MixArgs) -> Result<()> {
    let real = open_model_dir_with(&a.real, None, FileBytes::open)?;
    let synthetic = open_model_dir_with(&a.synthetic, None, FileBytes::open)?;
    check_same_architecture((&real.config_json, &real.meta_json), (&synthetic.config_json, &synthetic.meta_json))?;
    let (config_json, meta_json, tokenizer) = (real.config_json.clone(), real.meta_json.clone(), real.tokenizer_model.clone());
    let source = MixedSource::new(open_checkpoint(real.checkpoints)?, open_checkpoint(synthetic.checkpoints)?, mix_rules(a.beta, &a.rules)?, a.extrapolate)?
        .check_finite(a.check_finite);

    let staging = Staging::new(&a.output)?;
    write_mix(&source, staging.dir(), &config_json, &meta_json, &tokenizer, &a)?;
    staging.commit()?;
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "[mixed {} ({:.1} MiB) and {} ({:.1} MiB) into {} ({:.1} MiB); peak resident memory {}]",
        a.real.display(),
        mb(dir_size(&a.real)),
        a.synthetic.display(),
        mb(dir_size(&a.synthetic)),
        a.output.display(),
        mb(dir_size(&a.output)),
        peak_rss().map_or("unknown".into(), |b| format!("{:.1} MiB", mb(b)))
    );
    Ok(())
}

fn write_mix<S: WeightSource>(source: &S, dir: &Path, config: &str, meta: &str, tokenizer: &[u8], a: &MixArgs) -> Result<()> {
    let names = source.names();
    let infos: Vec<_> = names.iter().filter_map(|n| source.info(n).map(|i| (n.clone(), i))).collect();
    let total: u64 = infos.iter().map(|(_, i)| i.byte_len() as u64).sum();
    let metadata = [("format".to_string(), "pt".to_string()), ("mix".to_string(), mix_note(a))].into_iter().collect();
    let path = dir.join("model.safetensors");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    out.write_all(&safetensors_header(&infos, &metadata)?)?;
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("mixing {bar:30} {bytes}/{total_bytes} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for (name, info) in &infos {
        bar.set_message(name.clone());
        let t = pollster::block_on(source.read(name))?;
        debug_assert_eq!(t.bytes.len(), info.byte_len());
        out.write_all(&t.bytes)?;
        bar.inc(t.bytes.len() as u64);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    std::fs::write(dir.join("config.json"), config)?;
    std::fs::write(dir.join("tokenizer.model"), tokenizer)?;
    // meta.json last: a directory without it is not a loadable model.
    std::fs::write(dir.join("meta.json"), meta)?;
    Ok(())
}

/// What the output's metadata records: the inputs' directory names (not the paths of
/// the machine it ran on), β and the rules.
fn mix_note(a: &MixArgs) -> String {
    let name = |p: &Path| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
    serde_json::json!({"real": name(&a.real), "synthetic": name(&a.synthetic), "beta": a.beta, "rules": a.rules}).to_string()
}
