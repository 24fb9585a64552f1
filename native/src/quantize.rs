//! `sphinx quantize`: a model's LLM matrices as llama.cpp's q8_0 or q4_0 blocks
//! (docs/design.md §10), written tensor by tensor (host memory near the largest tensor,
//! widened to f32 once) into a temporary directory that is renamed only when complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use sphinx_core::model::open_checkpoint;
use sphinx_core::weights::{quantize_tensor, stored_form, round_tensor_to_f16, BlockFormat, DType, EncoderWeights, Stored, TensorInfo, WeightSource};
use crate::model_dir::{open_model_dir_with, FileBytes};
use crate::staging::Staging;

use crate::model_writer::{dir_size, mib, peak_rss, write_model_dir, ModelTexts};

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model to quantize (a checkpoint directory in f32, f16 or bf16).
    model: PathBuf,
    /// The block format of the LLM's matrices: q8_0 or q4_0 (the output head: see --head).
    #[arg(long, value_parser = parse_format)]
    to: BlockFormat,
    /// The block format of the output head, whose errors go straight into the logits:
    /// q8_0 (default) or q4_0 (llama.cpp's `--pure`: 5% fewer bytes per token at
    /// TinyLlama's shape, answers that may differ).
    #[arg(long, value_parser = parse_format, default_value = "q8_0")]
    head: BlockFormat,
    /// The visual encoders' dense layers: keep (as stored, 16-bit in official checkpoints),
    /// f16 (rounded from f32 or bf16) or q8_0. Their convolutions, norms and embeddings are
    /// kept either way.
    #[arg(long, value_parser = parse_encoders, default_value = "keep")]
    encoders: EncoderWeights,
    /// Output directory (must not exist).
    #[arg(long, short)]
    output: PathBuf,
}

fn parse_encoders(s: &str) -> Result<EncoderWeights, String> {
    match s.to_ascii_lowercase().as_str() {
        "keep" => Ok(EncoderWeights::Keep),
        "f16" => Ok(EncoderWeights::F16),
        "q8_0" => Ok(EncoderWeights::Blocks(BlockFormat::Q8_0)),
        _ => Err(format!("unknown encoder precision {s:?}: expected keep, f16 or q8_0")),
    }
}

fn parse_format(s: &str) -> Result<BlockFormat, String> {
    BlockFormat::from_name(&s.to_ascii_lowercase()).ok_or_else(|| format!("unknown block format {s:?}: expected q8_0 or q4_0"))
}

pub fn run_quantize(a: QuantizeArgs) -> Result<()> {
    let plan = quantize_model_dir(&a.model, a.to, a.head, a.encoders, &a.output)?;
    let count = |f: Stored| plan.values().filter(|g| **g == f).count();
    eprintln!(
        "[quantized {} ({:.1} MiB) into {} ({:.1} MiB): {} matrices q8_0, {} q4_0, {} f16, {} tensors kept; peak resident memory {}]",
        a.model.display(),
        mib(dir_size(&a.model)),
        a.output.display(),
        mib(dir_size(&a.output)),
        count(Stored::Blocks(BlockFormat::Q8_0)),
        count(Stored::Blocks(BlockFormat::Q4_0)),
        count(Stored::F16),
        count(Stored::Kept),
        peak_rss().map_or("unknown".into(), |b| format!("{:.1} MiB", mib(b)))
    );
    Ok(())
}

/// Writes `model` with its LLM matrices in `to`'s blocks (the output head in `head`'s)
/// and its encoders' dense layers as `encoders` says to `output`, which must not exist.
/// Returns what each tensor became.
pub fn quantize_model_dir(model: &Path, to: BlockFormat, head: BlockFormat, encoders: EncoderWeights, output: &Path) -> Result<BTreeMap<String, Stored>> {
    let files = open_model_dir_with(model, None, FileBytes::open)?;
    let source = open_checkpoint(files.checkpoints)?;
    // What each tensor becomes and what is written for it.
    let mut formats = BTreeMap::new();
    let mut written = Vec::new();
    for name in source.names() {
        let Some(info) = source.info(&name) else { continue };
        if let Some(format) = info.dtype.block_format() {
            bail!("{} is already quantized ({name} is {}); quantize the 16- or 32-bit model instead", model.display(), format.name());
        }
        let stored = stored_form(&name, &info, to, head, encoders);
        let dtype = match stored {
            Stored::Kept => info.dtype,
            Stored::Blocks(format) => DType::of_blocks(format),
            Stored::F16 => DType::F16,
        };
        written.push((name.clone(), TensorInfo { dtype, ..info }));
        formats.insert(name, stored);
    }
    let encoders_name = match encoders {
        EncoderWeights::Keep => "kept",
        EncoderWeights::F16 => "f16",
        EncoderWeights::Blocks(format) => format.name(),
    };
    let scheme = format!("{}; head {}; encoders {encoders_name}", to.name(), head.name());
    let metadata = [("format".to_string(), "pt".to_string()), ("quantized".to_string(), scheme)].into_iter().collect();

    let staging = Staging::new(output)?;
    let texts = ModelTexts { config_json: &files.config_json, meta_json: &files.meta_json, tokenizer_model: &files.tokenizer_model };
    write_model_dir(staging.dir(), &written, &metadata, &texts, "quantizing", |name| {
        let t = pollster::block_on(source.read(name))?;
        match formats.get(name).copied().unwrap_or(Stored::Kept) {
            Stored::Blocks(format) => quantize_tensor(&t, format).ok_or_else(|| anyhow::anyhow!("{name}: {} {:?} cannot be quantized", t.dtype, t.shape)),
            Stored::F16 => round_tensor_to_f16(name, &t).map_err(anyhow::Error::msg),
            Stored::Kept => Ok(t),
        }
    })?;
    staging.commit()?;
    Ok(formats)
}
