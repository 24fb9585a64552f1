//! `sphinx mix`: write θ = β·θ_real + (1−β)·θ_synthetic as a new checkpoint, tensor by
//! tensor (host memory near two tensors), into a temporary directory that is renamed
//! only when complete.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use sphinx_core::mixing::{check_same_architecture, MixedSource};
use sphinx_core::model::open_checkpoint;
use sphinx_core::weights::WeightSource;
use sphinx_native::load::mix_rules;
use sphinx_native::model_dir::{open_model_dir_with, FileBytes};
use sphinx_native::staging::Staging;

use sphinx_native::model_writer::{dir_size, mib, peak_rss, write_model_dir, ModelTexts};

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

pub fn run_mix(a: MixArgs) -> Result<()> {
    let real = open_model_dir_with(&a.real, None, FileBytes::open)?;
    let synthetic = open_model_dir_with(&a.synthetic, None, FileBytes::open)?;
    check_same_architecture((&real.config_json, &real.meta_json), (&synthetic.config_json, &synthetic.meta_json))?;
    let (config_json, meta_json, tokenizer) = (real.config_json.clone(), real.meta_json.clone(), real.tokenizer_model.clone());
    let source = MixedSource::new(open_checkpoint(real.checkpoints)?, open_checkpoint(synthetic.checkpoints)?, mix_rules(a.beta, &a.rules)?, a.extrapolate)?
        .check_finite(a.check_finite);

    let staging = Staging::new(&a.output)?;
    let texts = ModelTexts { config_json: &config_json, meta_json: &meta_json, tokenizer_model: &tokenizer };
    write_mix(&source, staging.dir(), &texts, &a)?;
    staging.commit()?;
    eprintln!(
        "[mixed {} ({:.1} MiB) and {} ({:.1} MiB) into {} ({:.1} MiB); peak resident memory {}]",
        a.real.display(),
        mib(dir_size(&a.real)),
        a.synthetic.display(),
        mib(dir_size(&a.synthetic)),
        a.output.display(),
        mib(dir_size(&a.output)),
        peak_rss().map_or("unknown".into(), |b| format!("{:.1} MiB", mib(b)))
    );
    Ok(())
}

fn write_mix<S: WeightSource>(source: &S, dir: &Path, texts: &ModelTexts, a: &MixArgs) -> Result<()> {
    let infos: Vec<_> = source.names().into_iter().filter_map(|n| source.info(&n).map(|i| (n, i))).collect();
    let metadata = [("format".to_string(), "pt".to_string()), ("mix".to_string(), mix_note(a))].into_iter().collect();
    write_model_dir(dir, &infos, &metadata, texts, "mixing", |name| Ok(pollster::block_on(source.read(name))?))
}

/// What the output's metadata records: the inputs' directory names (not the paths of
/// the machine it ran on), β and the rules.
fn mix_note(a: &MixArgs) -> String {
    let name = |p: &Path| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
    serde_json::json!({"real": name(&a.real), "synthetic": name(&a.synthetic), "beta": a.beta, "rules": a.rules}).to_string()
}
