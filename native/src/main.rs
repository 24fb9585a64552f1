//! `sphinx`: run SPHINX models from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sphinx_core::config::{ConfigOverrides, LlmConfig};
use sphinx_core::generate::{generate, Conversation, GenerationOptions, StopReason};
use sphinx_core::model::{open_checkpoint, SphinxModel};
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{DType, WeightSource};
use sphinx_native::device::{init_device, DeviceChoice};
use sphinx_native::model_dir::open_model_dir;
use sphinx_native::views;

/// The model used when `--model` is not given: a tiny random-weight LLaMA kept in the
/// repository (two model-parallel bf16 shards), so every command runs without a download.
const DEFAULT_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/tiny-llama-mp2");

#[derive(Parser)]
#[command(name = "sphinx", version, about = "Run SPHINX multi-modal LLMs locally (Vulkan, Metal, DX12 or CPU).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer a prompt, streaming the answer to stdout.
    Generate(GenerateArgs),
    /// Describe a model: architecture, parameter count, dtypes, bytes.
    Info(ModelArgs),
    /// Write the views an image becomes (global view and sub-images, per encoder family) as PNGs.
    Views(ViewsArgs),
}

#[derive(Args)]
struct ViewsArgs {
    /// The image (JPEG, PNG, WebP, GIF or BMP).
    image: PathBuf,
    /// Which SPHINX variant's preprocessing: sphinx, sphinx-1k, sphinx-v2-1k, sphinx-2k, sphinx-moe,
    /// sphinx-moe-1k, sphinx-tiny, sphinx-tiny-1k.
    #[arg(long, default_value = "sphinx-1k")]
    variant: String,
    /// Output directory (created if missing).
    #[arg(long, short, default_value = "views")]
    output: PathBuf,
    /// Rotate the image by its EXIF orientation first (the official pipeline does not).
    #[arg(long)]
    exif: bool,
    /// Refuse images with more pixels than this (decompression-bomb guard).
    #[arg(long, default_value_t = sphinx_core::preprocess::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
}

#[derive(Args)]
struct ModelArgs {
    /// Checkpoint directory (consolidated.NN-of-MM.model.pth or *.safetensors, config.json, meta.json,
    /// tokenizer.model). Defaults to the tiny test model kept in the repository.
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// SentencePiece tokenizer to use instead of MODEL/tokenizer.model.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Context length in tokens (prompt + answer); the official loader uses 4096.
    #[arg(long)]
    max_seq_len: Option<usize>,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The question, wrapped in SPHINX's conversation template.
    #[arg(long, short)]
    prompt: String,
    /// Send the prompt as-is, without the conversation template.
    #[arg(long)]
    raw: bool,
    /// Sampling temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.1)]
    temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities add up to this.
    #[arg(long, default_value_t = 0.75)]
    top_p: f32,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Random seed for sampling (the same seed gives the same answer).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to compute: auto picks a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Info(a) => run_info(a),
        Command::Views(a) => views::run_views(a.image, &a.variant, a.output, a.exif, a.max_pixels),
    }
}

fn overrides(a: &ModelArgs) -> ConfigOverrides {
    ConfigOverrides { max_seq_len: a.max_seq_len }
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let (device, what) = init_device(a.device)?;
    eprintln!("device: {what}");
    let files = open_model_dir(&a.model.model, a.model.tokenizer.as_deref())?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("loading {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut on_progress = |p: &sphinx_core::weights::LoadProgress| {
        bar.set_length(p.total_bytes);
        bar.set_position(p.done_bytes);
    };
    let model = pollster::block_on(SphinxModel::load(files, &device, &overrides(&a.model), &mut on_progress))
        .with_context(|| format!("loading {}", a.model.model.display()))?;
    bar.finish_and_clear();

    let text = if a.raw { a.prompt.clone() } else { Conversation::single(&a.prompt).prompt() };
    let ids = model.tokenizer.encode(&text, true, false);
    let opts = GenerationOptions {
        max_gen_len: a.max_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
        ..Default::default()
    };
    let mut cache = model.llm.new_cache();
    let mut stdout = std::io::stdout();
    let mut on_text = |t: &str| {
        let _ = stdout.write_all(t.as_bytes());
        let _ = stdout.flush();
    };
    let g = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &ids, None, &opts, &mut on_text))?;
    println!();
    let why = match g.stop {
        StopReason::EndOfTurn => "end of turn",
        StopReason::MaxTokens => "max tokens",
    };
    eprintln!(
        "[{} prompt tokens in {:.2}s, {} tokens at {:.1} tok/s, stopped: {why}]",
        g.prompt_tokens,
        g.prefill_secs,
        g.tokens.len(),
        g.tokens_per_sec()
    );
    Ok(())
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn run_info(a: ModelArgs) -> Result<()> {
    let files = open_model_dir(&a.model, a.tokenizer.as_deref())?;
    let tokenizer = Tokenizer::from_model_bytes(&files.tokenizer_model)?;
    let config = LlmConfig::from_json(&files.config_json, &files.meta_json, tokenizer.vocab_size(), &overrides(&a))?;
    let n_files = files.checkpoints.len();
    let source = open_checkpoint(files.checkpoints)?;
    print_info(&a.model, &config, &source, n_files);
    Ok(())
}

fn print_info(dir: &Path, c: &LlmConfig, source: &impl WeightSource, n_files: usize) {
    let mut by_dtype: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for n in source.names() {
        if let Some(i) = source.info(&n) {
            let e = by_dtype.entry(i.dtype.to_string()).or_default();
            e.0 += i.numel() as u64;
            e.1 += i.byte_len() as u64;
        }
    }
    let params = c.parameter_count();
    println!("model        {}", dir.display());
    println!("llama_type   {}{}", c.llama_type.name(), if c.llama_type.is_multimodal() { " (multimodal; this build runs its LLM only)" } else { "" });
    println!("checkpoint   {n_files} file(s)");
    println!("LLM          dim {} · {} layers · {} heads · {} kv heads · head_dim {}", c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim());
    match c.moe {
        Some(m) => println!("FFN          MoE: {} experts, top-{}, hidden {} per expert", m.num_experts, m.experts_per_token, c.ffn_hidden),
        None => println!("FFN          SwiGLU, hidden {}", c.ffn_hidden),
    }
    println!("vocab        {} · rope θ {} · norm eps {} · max_seq_len {}", c.vocab_size, c.rope_theta, c.norm_eps, c.max_seq_len);
    println!("LLM params   {params} ({:.3} B)", params as f64 / 1e9);
    for (dtype, (n, bytes)) in &by_dtype {
        println!("stored       {dtype}: {n} values, {}", human_bytes(*bytes));
    }
    println!("in memory    {} as f32 on the device", human_bytes(params * DType::F32.size() as u64));
}
