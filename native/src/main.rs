//! `sphinx`: run SPHINX models from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::HumanBytes;
use sphinx_core::api::{AskOptions, AskResult, ParsedAnswer};
use sphinx_core::config::{LlmConfig, DEFAULT_PREFILL_CHUNK};
use sphinx_core::generate::{generate, Conversation, GenerationOptions, StopReason};
use sphinx_core::model::open_checkpoint;
use sphinx_core::preprocess::{decode_image, DecodeOptions, PaddedSquare};
use sphinx_core::tasks::{rasterize, TaskKind};
use sphinx_core::vision::VisionConfig;
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{component, held_bytes, WeightSource};
use sphinx_native::device::DeviceChoice;
use sphinx_native::process::on_compute_threads;
use sphinx_native::load::{encode_image_file, load_model, read_image_file, ModelArgs};
use sphinx_native::model_dir::open_model_dir;
use sphinx_native::views;

mod bench;
mod chat;
mod convert;
mod mix;
mod serve;
mod server;


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
    /// Measure a model on a device: load time, memory, prefill and decode speed, encoder times.
    Bench(bench::BenchArgs),
    /// List the task presets and their instruction texts.
    Tasks,
    /// Parse an answer's boxes and points and draw them over an image (e.g. an answer saved earlier).
    Draw(DrawArgs),
    /// Chat in the terminal, optionally about an image; answers stream and the image is kept between turns.
    Chat(chat::ChatArgs),
    /// Convert a checkpoint for the web: 32 MiB shards and a manifest with hashes and device requirements.
    Convert(convert::ConvertArgs),
    /// Mix two fine-tunes of one model into a new checkpoint: β·real + (1−β)·synthetic.
    Mix(mix::MixArgs),
    /// Store a model's LLM matrices in llama.cpp's q8_0 or q4_0 blocks (a new model directory).
    Quantize(sphinx_native::quantize::QuantizeArgs),
    /// Serve the web demo (web/demo) with the JS package and a model on 127.0.0.1.
    ServeDemo(serve::ServeArgs),
    /// An OpenAI-compatible HTTP API (/v1/chat/completions, /v1/models) over one model.
    Serve(server::ServeArgs),
    /// List the SPHINX variants with their full-size parameter counts and memory.
    Variants,
    /// Write the views an image becomes (global view and sub-images, per encoder family) as PNGs.
    Views(ViewsArgs),
}

#[derive(Args)]
struct DrawArgs {
    /// The image the answer is about.
    image: PathBuf,
    /// The answer text, e.g. "<p>dog</p>[0.10,0.20,0.50,0.90]".
    #[arg(long)]
    answer: String,
    /// Where to write the annotated PNG.
    #[arg(long, short)]
    output: PathBuf,
    /// Also print the parsed answer as JSON.
    #[arg(long)]
    json: bool,
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
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The question, wrapped in SPHINX's conversation template (or the query of --task).
    #[arg(long, short, required_unless_present = "task")]
    prompt: Option<String>,
    /// Ask with one of SPHINX's task instructions (see `sphinx tasks`): qa, caption,
    /// short-caption, ground, relation, grounded-caption, detect, keypoints, ocr, chart, vqa,
    /// region-caption, layout, chat.
    #[arg(long)]
    task: Option<String>,
    /// The task's text: the expression to ground, the category to detect, the VQA question.
    #[arg(long)]
    query: Option<String>,
    /// The task's region in pixels of the original image: x1,y1,x2,y2 (keypoints, region-caption).
    #[arg(long, value_parser = parse_region)]
    region: Option<[f64; 4]>,
    /// Print the answer as JSON (text, boxes and points in normalised and pixel coordinates).
    #[arg(long)]
    json: bool,
    /// Draw the answer's boxes, labels, keypoints and skeleton over the image into this PNG.
    #[arg(long)]
    annotate: Option<PathBuf>,
    /// An image to ask about (JPEG, PNG, WebP, GIF or BMP); needs a multimodal checkpoint.
    #[arg(long, short)]
    image: Option<PathBuf>,
    /// Rotate the image by its EXIF orientation first (the official pipeline does not).
    #[arg(long)]
    exif: bool,
    /// Send the prompt as-is, without the conversation template.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// How answers are sampled, and where the model runs.
#[derive(Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities add up to this.
    #[arg(long, default_value_t = 0.75)]
    pub top_p: f32,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Random seed for sampling (the same seed gives the same answer).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to compute: auto picks a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
}

impl SamplingArgs {
    pub fn options(&self) -> GenerationOptions {
        GenerationOptions {
            max_gen_len: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            ..Default::default()
        }
    }
}

fn parse_region(s: &str) -> Result<[f64; 4], String> {
    let v: Vec<f64> = s.split(',').map(|x| x.trim().parse::<f64>()).collect::<Result<_, _>>().map_err(|e| format!("{e}"))?;
    let r = <[f64; 4]>::try_from(v).map_err(|_| "expected four numbers: x1,y1,x2,y2".to_string())?;
    if !r.iter().all(|x| x.is_finite() && *x >= 0.0) {
        return Err("the region's coordinates must be finite pixel positions ≥ 0".into());
    }
    Ok(r)
}

fn main() {
    sphinx_native::process::quiet_setup();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate(a) => on_compute_threads(|| run_generate(a)),
        Command::Info(a) => run_info(a),
        Command::Bench(a) => on_compute_threads(|| bench::run_bench(a)),
        Command::Tasks => {
            for (name, kind, what) in TaskKind::ALL {
                let example = kind.build(Some("{query}"), Some([0.1, 0.2, 0.5, 0.9])).map(|t| t.instruction()).unwrap_or_default();
                println!("{name:<17} {what}\n{:<17} → {:?}", "", example);
            }
            Ok(())
        }
        Command::Chat(a) => on_compute_threads(|| chat::run_chat(a)),
        Command::Mix(a) => mix::run_mix(a),
        Command::Quantize(a) => sphinx_native::quantize::run_quantize(a),
        Command::Convert(a) => convert::run_convert(a),
        Command::ServeDemo(a) => serve::run_serve(a),
        Command::Serve(a) => server::run_serve(a),
        Command::Draw(a) => {
            let bytes = read_image_file(&a.image)?;
            let mut img = decode_image(&bytes, &DecodeOptions::default())?;
            let parsed = ParsedAnswer::of(&a.answer, Some(PaddedSquare::new(img.width, img.height)));
            rasterize(&mut img, &parsed.drawing);
            views::save_png(&img, &a.output)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&parsed.answer)?);
            }
            Ok(())
        }
        Command::Variants => {
            run_variants();
            Ok(())
        }
        Command::Views(a) => views::run_views(a.image, &a.variant, a.output, a.exif, a.max_pixels),
    }
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let model = load_model(&a.model, a.sampling.device)?;


    let opts = a.sampling.options();
    let decode = DecodeOptions { apply_exif_orientation: a.exif, ..Default::default() };
    let image = match &a.image {
        Some(path) => Some(encode_image_file(&model, path, &decode, &a.model)?),
        None => None,
    };
    let geometry = image.as_ref().map(|i| i.geometry);
    let ask = AskOptions { prompt: a.prompt.clone(), task: a.task.clone(), query: a.query.clone(), region: a.region, ..Default::default() };
    let question = ask.instruction(geometry)?;
    let text = if a.raw { question } else { Conversation::single(&question).prompt() };
    let ids = model.tokenizer.encode(&text, true, false);
    let mut cache = model.llm.new_cache();
    let mut stdout = std::io::stdout();
    let json = a.json;
    let mut on_text = |t: &str| {
        if !json {
            let _ = stdout.write_all(t.as_bytes());
            let _ = stdout.flush();
        }
    };
    let tokens = image.as_ref().map(|i| i.tokens.clone());
    let g = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &ids, tokens, &opts, &mut on_text))?;
    let result = AskResult::new(&g, geometry);
    if a.json {
        // The ids let answers be compared token for token across runtimes.
        let mut json = serde_json::to_value(&result)?;
        json["prompt_ids"] = serde_json::json!(ids);
        json["token_ids"] = serde_json::json!(g.tokens);
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!();
    }
    if let Some(out) = &a.annotate {
        let img = image.as_ref().context("--annotate needs --image")?;
        let mut canvas = img.pixels.clone();
        rasterize(&mut canvas, &result.drawing);
        views::save_png(&canvas, out)?;
        eprintln!("[annotated image: {}]", out.display());
    }
    let why = match g.stop {
        StopReason::EndOfTurn => "end of turn",
        StopReason::MaxTokens => "max tokens",
        StopReason::Cancelled => "cancelled",
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

fn run_info(a: ModelArgs) -> Result<()> {
    let files = open_model_dir(&a.model, a.tokenizer.as_deref())?;
    let tokenizer = Tokenizer::from_model_bytes(&files.tokenizer_model)?;
    let config = LlmConfig::from_json(&files.config_json, &files.meta_json, tokenizer.vocab_size(), &a.overrides())?;
    let json: serde_json::Value = serde_json::from_str(&files.config_json).context("config.json")?;
    let vision = VisionConfig::for_llama_type(config.llama_type, &json, config.dim)?;
    let n_files = files.checkpoints.len();
    let source = open_checkpoint(files.checkpoints)?;
    print_info(&a.model, &config, &source, n_files);
    if let Some(v) = &vision {
        print_vision(v);
    }
    // What loading with the default precision puts on the device, per component.
    let mut held: std::collections::BTreeMap<&str, u64> = Default::default();
    for name in source.names() {
        if let Some(info) = source.info(&name) {
            *held.entry(component(&name)).or_default() += held_bytes(&name, &info, a.dtype);
        }
    }
    let parts: Vec<String> = held.iter().map(|(c, b)| format!("{c} {}", HumanBytes(*b))).collect();
    println!("on device    {} of weights with --dtype {} ({})", HumanBytes(held.values().sum()), a.dtype, parts.join(", "));
    Ok(())
}

fn print_vision(v: &VisionConfig) {
    let t = v.tiling;
    let mut encoders = Vec::new();
    if let Some(c) = v.clip {
        encoders.push(format!("CLIP ViT (width {}, {} layers, {:?})", c.width, c.layers, c.act));
    }
    encoders.push(format!("ConvNeXt (dims {:?}, depths {:?})", v.convnext.dims, v.convnext.depths));
    encoders.push(format!("DINOv2 (dim {}, {} layers)", v.dinov2.dim, v.dinov2.layers));
    if let Some(b) = v.blip2 {
        encoders.push(format!("BLIP-2 Q-Former ({} queries; EVA ViT dim {}, {} layers)", b.queries, b.vision_dim, b.vision_layers));
    }
    println!("encoders     {}", encoders.join(" · "));
    println!(
        "image        {} px padded square · {} views ({}) · {} image tokens",
        t.image_size,
        t.vit.view_count(),
        if t.vit.grid > 0 { format!("global + {0}×{0}", t.vit.grid) } else { "global".into() },
        v.image_tokens()
    );
    println!("vision params {} ({:.3} B)", v.parameter_count(), v.parameter_count() as f64 / 1e9);
}

/// Context of the device totals `sphinx variants` prints.
const VARIANTS_CONTEXT: usize = 2048;

fn run_variants() {
    println!(
        "{:<15} {:<20} {:>5} {:>5} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>10} {:>12}",
        "variant", "llama_type", "px", "views", "img tok", "LLM B", "vision B", "LLM f32", "bf16", "q8_0", "q4_0", "vision", "state+act", "q4_0 total", "+ q8_0 enc"
    );
    for (name, t) in LlmConfig::VARIANTS {
        let c = LlmConfig { max_seq_len: VARIANTS_CONTEXT, ..LlmConfig::full_size(t) };
        let v = VisionConfig::for_llama_type(t, &serde_json::Value::Null, c.dim).ok().flatten();
        let (llm, vis) = (c.parameter_count(), v.as_ref().map_or(0, |v| v.parameter_count()));
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        // The encoders' dense layers are held in 16 bits (as official checkpoints store
        // them); their convolutions, norms and the projections, a small share, in f32.
        let state = c.state_bytes() + c.prefill_activation_bytes(DEFAULT_PREFILL_CHUNK);
        println!(
            "{:<15} {:<20} {:>5} {:>5} {:>7} {:>7.3} {:>8.3} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>10.2} {:>10.1} {:>12.1}",
            name,
            t.name(),
            v.as_ref().map_or(0, |v| v.tiling.image_size),
            v.as_ref().map_or(0, |v| v.tiling.vit.view_count()),
            v.as_ref().map_or(0, |v| v.image_tokens()),
            llm as f64 / 1e9,
            vis as f64 / 1e9,
            gib(c.held_weight_bytes(128)),
            gib(c.held_weight_bytes(64)),
            gib(c.held_weight_bytes(34)),
            gib(c.held_weight_bytes(18)),
            gib(vis * 2),
            gib(state),
            gib(c.held_weight_bytes(18) + vis * 2 + state),
            gib(c.held_weight_bytes(18) + (vis * 34).div_ceil(32) + state),
        );
    }
    println!("GiB on the device at a {VARIANTS_CONTEXT}-token context: the LLM's weights per format, the encoders (16-bit),");
    println!("the rotary tables, KV cache and a prefill chunk's activations (f32), and the total with a q4_0 LLM");
    println!("(`sphinx quantize --to q4_0`), then with the encoders at q8_0 too (`--encoders q8_0`; all their weights counted).");
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
    println!("llama_type   {}{}", c.llama_type.name(), if c.llama_type.is_multimodal() { " (multimodal)" } else { " (text only)" });
    println!("checkpoint   {n_files} file(s)");
    println!("LLM          dim {} · {} layers · {} heads · {} kv heads · head_dim {}", c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim());
    match c.moe {
        Some(m) => println!("FFN          MoE: {} experts, top-{}, hidden {} per expert", m.num_experts, m.experts_per_token, c.ffn_hidden),
        None => println!("FFN          SwiGLU, hidden {}", c.ffn_hidden),
    }
    println!("vocab        {} · rope θ {} · norm eps {} · max_seq_len {}", c.vocab_size, c.rope_theta, c.norm_eps, c.max_seq_len);
    println!("LLM params   {params} ({:.3} B)", params as f64 / 1e9);
    for (dtype, (n, bytes)) in &by_dtype {
        println!("stored       {dtype}: {n} values, {}", HumanBytes(*bytes));
    }
}
