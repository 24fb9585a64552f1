//! Loading a model and reading an image from disk, shared by every command and the
//! tests: a checkpoint directory, a `sphinx convert --web` directory (read through its
//! manifest, each shard verified once), or two fine-tunes mixed while loading.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sphinx_core::config::ConfigOverrides;
use sphinx_core::weights::WeightDtype;
use sphinx_core::mixing::{check_same_architecture, MixRules, MixedSource};
use sphinx_core::model::{open_checkpoint, ModelFiles, SphinxModel};
use sphinx_core::preprocess::{decode_image, DecodeOptions, PaddedSquare, RgbImage};
use sphinx_core::vision::Activation;
use sphinx_core::weights::{LoadProgress, ManifestSource, WebManifest};

use crate::device::{init_device, DeviceChoice, OpenDevice};
use crate::files::{read_limited, ModelDir};
use crate::model_dir::{open_model_dir, FileBytes};
use crate::shards::{verify, LocalShards};

/// The model used when `--model` is not given: SPHINX-Micro, a small SPHINX (`llama_ens`)
/// trained on coloured shapes by `training/train.py` and kept in the repository, so
/// every command runs without a download and gives real answers about its example image.
pub const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sphinx-micro");

/// The largest image file read (the decoder bounds the pixels separately).
pub const MAX_IMAGE_FILE: u64 = 512 << 20;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint directory (consolidated.NN-of-MM.model.pth or *.safetensors, config.json, meta.json,
    /// tokenizer.model). Defaults to the tiny test model kept in the repository.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// SentencePiece tokenizer to use instead of MODEL/tokenizer.model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Context length in tokens (prompt + answer, image tokens included); the official loader uses 4096.
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Use exact (erf) GELU in CLIP instead of OpenAI's QuickGELU, as the official inference
    /// code does when it builds CLIP without pretrained weights.
    #[arg(long)]
    pub clip_gelu: bool,
    /// Keep the visual encoders off the device and load them one at a time per image:
    /// peak memory is the LLM plus the largest encoder, at the cost of reading them each time.
    #[arg(long)]
    pub stream_encoders: bool,
    /// Precision of the LLM's weight matrices on the device: auto keeps the checkpoint's
    /// (f16 and bf16 stay 16-bit, read by the project's kernels), f32 widens them (the
    /// reference path), f16 or bf16 rounds them. Activations are f32 in every case.
    #[arg(long, default_value = "auto")]
    pub dtype: WeightDtype,
    /// bf16 weights on the CPU: round activations to bf16 before each product, as
    /// PyTorch's bf16 and llama.cpp do — about 1.6× the prefill speed on CPUs with
    /// AVX512-BF16, answers that may differ slightly from the f32 path's. Without it
    /// activations stay f32.
    #[arg(long)]
    pub bf16_activations: bool,
    /// Attend with the reference path of Burn operations instead of the fused kernel,
    /// holding at most this many MiB of scores (queries in tiles; 0: one query at a time)
    #[arg(long, value_name = "MIB")]
    pub attention_tile_mib: Option<usize>,
    /// Mix this model with a second fine-tune while loading: --model is the real-data one,
    /// --mix-with the synthetic one (weights β·model + (1−β)·mix-with).
    #[arg(long)]
    pub mix_with: Option<PathBuf>,
    /// β for --mix-with.
    #[arg(long, default_value_t = 0.5)]
    pub beta: f64,
    /// Mixing rules for --mix-with, as for `sphinx mix`.
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Allow β outside [0, 1].
    #[arg(long)]
    pub extrapolate: bool,
    /// Bytes the device can hold (set from the device, not the command line).
    #[arg(skip)]
    pub device_memory: Option<u64>,
    /// The device's largest buffer (set from the device, not the command line).
    #[arg(skip)]
    pub max_buffer_bytes: Option<u64>,
}


impl ModelArgs {
    /// Loading options for the model directory `dir` with every other option at its
    /// command-line default (parsed by clap, so the defaults are stated once).
    pub fn for_dir(dir: &Path) -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            model: ModelArgs,
        }
        let dir = dir.as_os_str().to_os_string();
        <Only as clap::Parser>::parse_from([std::ffi::OsString::from("sphinx"), "--model".into(), dir]).model
    }

    /// These options with what `open` tells of its memory and largest buffer, so that a
    /// model it cannot hold is refused before loading.
    pub fn on(&self, open: &OpenDevice) -> Self {
        Self { device_memory: open.memory_budget(), max_buffer_bytes: open.max_buffer_bytes, ..self.clone() }
    }

    pub fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            max_seq_len: self.max_seq_len,
            clip_activation: self.clip_gelu.then_some(Activation::Gelu),
            stream_encoders: self.stream_encoders,
            weight_dtype: self.dtype,
            round_x_to_bf16: self.bf16_activations,
            device_memory: self.device_memory,
            max_buffer_bytes: self.max_buffer_bytes,
            score_tile_bytes: self.attention_tile_mib.map(|mib| mib.saturating_mul(1 << 20)),
        }
    }
}

/// The rules of a mix from the command line.
pub fn mix_rules(beta: f64, extra: &[String]) -> Result<MixRules> {
    let extra = extra.iter().map(|r| MixRules::parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
    Ok(MixRules::with_overrides(beta, extra))
}

/// Opens the device and loads the model with a progress bar.
/// A model that would not fit the device's memory or its largest buffer (when known) is
/// refused before loading.
pub fn load_model(m: &ModelArgs, device: DeviceChoice) -> Result<SphinxModel> {
    let open = init_device(device)?;
    eprintln!("device: {}", open.description);
    load_model_on(&m.on(&open), &open.device)
}

/// Loads the model on an open device.
pub fn load_model_on(m: &ModelArgs, device: &Device) -> Result<SphinxModel> {
    let dir = ModelDir::new(&m.model)?;
    if dir.has("manifest.json") {
        return load_web_dir(m, dir, device);
    }
    let files = open_model_dir(&m.model, m.tokenizer.as_deref())?;
    if let Some(other) = &m.mix_with {
        return load_mixed(m, files, other, device);
    }
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("loading {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut on_progress = |p: &LoadProgress| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
    };
    let model = pollster::block_on(SphinxModel::load(files, device, &m.overrides(), &mut on_progress))
        .with_context(|| format!("loading {}", m.model.display()))?;
    bar.finish_and_clear();
    Ok(model)
}

/// A directory written by `sphinx convert --web`: the manifest says everything, and
/// the tokenizer and every shard are checked against its sizes and hashes.
fn load_web_dir(m: &ModelArgs, dir: ModelDir, device: &Device) -> Result<SphinxModel> {
    let manifest = WebManifest::parse(&dir.read_text("manifest.json")?)?;
    let tokenizer = dir.read_small(&manifest.tokenizer.file)?;
    verify(&manifest.tokenizer, &tokenizer)?;
    let source = ManifestSource::new(manifest.clone(), LocalShards::new(dir, &manifest));
    pollster::block_on(SphinxModel::load_from(&manifest.config_json, &manifest.meta_json, &tokenizer, &source, device, &m.overrides(), &mut |_| {}))
        .with_context(|| format!("loading {}", m.model.display()))
}

/// Loads `m.model` mixed with `other` on the device, tensor by tensor.
fn load_mixed(m: &ModelArgs, files: ModelFiles<FileBytes>, other: &Path, device: &Device) -> Result<SphinxModel> {
    let synthetic = open_model_dir(other, m.tokenizer.as_deref())?;
    check_same_architecture((&files.config_json, &files.meta_json), (&synthetic.config_json, &synthetic.meta_json))?;
    let source = MixedSource::new(
        open_checkpoint(files.checkpoints)?,
        open_checkpoint(synthetic.checkpoints)?,
        mix_rules(m.beta, &m.rules)?,
        m.extrapolate,
    )?;
    let model = pollster::block_on(SphinxModel::load_from(&files.config_json, &files.meta_json, &files.tokenizer_model, &source, device, &m.overrides(), &mut |_| {}))
        .with_context(|| format!("loading the mix of {} and {}", m.model.display(), other.display()))?;
    eprintln!("[mixed while loading: β = {} of {} + {} of {}]", m.beta, m.model.display(), 1.0 - m.beta, other.display());
    Ok(model)
}

/// An image read, decoded and encoded for the model.
pub struct EncodedImage {
    pub pixels: RgbImage,
    pub geometry: PaddedSquare,
    pub tokens: burn::tensor::Tensor<3>,
}

/// Reads an image file (at most [`MAX_IMAGE_FILE`] bytes).
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    read_limited(path, MAX_IMAGE_FILE).with_context(|| format!("reading image {}", path.display()))
}

/// Reads, decodes and encodes an image for `model` (loading streamed encoders from `m.model`).
pub fn encode_image_file(model: &SphinxModel, path: &Path, decode: &DecodeOptions, m: &ModelArgs) -> Result<EncodedImage> {
    let bytes = read_image_file(path)?;
    let t0 = web_time::Instant::now();
    let (geometry, tokens) = encode_image_bytes(model, &bytes, decode, m).with_context(|| format!("encoding {}", path.display()))?;
    eprintln!("[image: {} tokens in {:.2}s]", tokens.dims()[1], t0.elapsed().as_secs_f64());
    let pixels = decode_image(&bytes, decode)?;
    Ok(EncodedImage { pixels, geometry, tokens })
}

/// Decodes and encodes an image's bytes for `model` (loading streamed encoders from
/// `m.model`): its geometry and its image block [1, N, D].
pub fn encode_image_bytes(model: &SphinxModel, bytes: &[u8], decode: &DecodeOptions, m: &ModelArgs) -> Result<(PaddedSquare, burn::tensor::Tensor<3>)> {
    let source = if m.stream_encoders { Some(open_checkpoint(open_model_dir(&m.model, m.tokenizer.as_deref())?.checkpoints)?) } else { None };
    Ok(pollster::block_on(model.image_tokens(bytes, decode, source.as_ref()))?)
}
