//! `sphinx bench`: how fast a model loads, prefills and decodes on a device, and how
//! much memory it takes (sphinx_core::bench measures; this adds the process's view:
//! load time, peak resident memory, the device allocator's bytes).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use indicatif::HumanBytes;
use serde::Serialize;
use sphinx_core::bench::{bench_image, bench_llm, BenchOptions, ImageBench, LlmBench};
use sphinx_core::preprocess::DecodeOptions;
use sphinx_core::Device;
use sphinx_native::device::{init_device, DeviceChoice};
use sphinx_native::load::{load_model_on, read_image_file, ModelArgs};
use web_time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Where to compute: auto picks a hardware GPU if there is one, else the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Prompt tokens prefilled in one pass (random ids, BOS first).
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Decoding steps measured (the reported speed is one over the median step).
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Decoding steps run before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_tokens: usize,
    /// Seed of the random prompt.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also time an image question's time to first token (the process's first, then again) and each visual encoder
    #[arg(long)]
    image: Option<PathBuf>,
    /// On the CPU: also measure the memory's streaming read speed with the compute
    /// threads (512 MiB read three times), the ceiling of a decoding step that reads
    /// every weight, and compare decoding with it.
    #[arg(long)]
    bandwidth: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// Everything `sphinx bench` measures (its `--json` output).
#[derive(Serialize)]
struct BenchReport {
    model: String,
    device: String,
    llama_type: &'static str,
    /// Parameters and bytes of the weights as stored on the device.
    parameters: u64,
    /// The precision asked for the LLM's matrices (`--dtype`) and the bytes its weights
    /// occupy on the device (16-bit matrices: 2 bytes a value).
    weights_dtype: String,
    weights_bytes: u64,
    /// Bytes of weights a decoding step reads (all but the token embedding; none given
    /// for a mixture of experts), and at the measured decode speed, bytes per second.
    decode_read_bytes: Option<u64>,
    decode_read_bytes_per_s: Option<f64>,
    /// With `--bandwidth` on the CPU: the memory's streaming read speed with the compute
    /// threads, bytes per second.
    memory_read_bytes_per_s: Option<f64>,
    load_s: f64,
    /// The process's peak resident set (VmHWM), after everything ran.
    peak_rss_bytes: Option<u64>,
    /// What the device's allocator holds after loading, and the most it reserved at
    /// any of the points sampled (after loading, prefill, decoding, the image).
    device_bytes_in_use: Option<u64>,
    device_bytes_reserved_peak: Option<u64>,
    llm: LlmBench,
    image: Option<ImageBench>,
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    let open = init_device(a.device)?;
    eprintln!("device: {}", open.description);
    let m = a.model.on(&open);
    let t = Instant::now();
    let model = load_model_on(&m, &open.device)?;
    open.device.sync().map_err(|e| anyhow::anyhow!("device: {e:?}"))?;
    let load_s = t.elapsed().as_secs_f64();
    let mut memory = DeviceMemory::new(&open.device);

    let opts = BenchOptions { prompt_tokens: a.prompt_tokens, decode_tokens: a.decode_tokens, warmup_tokens: a.warmup_tokens, seed: a.seed };
    // The image question first, so that its cold time to first token is what a fresh
    // process answering a first question pays.
    let image = match &a.image {
        Some(path) => Some(pollster::block_on(bench_image(&model, &read_image_file(path)?, &DecodeOptions::default()))?),
        None => None,
    };
    memory.sample();
    let llm = pollster::block_on(bench_llm(&model.llm, &opts))?;
    memory.sample();
    let decode_read_bytes = model.llm.decode_read_bytes();
    let on_cpu = matches!(open.device.as_dispatch(), burn::backend::DispatchDevice::Flex(_));
    if a.bandwidth && !on_cpu {
        eprintln!("--bandwidth measures the CPU's memory: not measured on {}", open.description);
    }
    let memory_read_bytes_per_s = (a.bandwidth && on_cpu).then(memory_read_speed);
    let report = BenchReport {
        model: a.model.model.display().to_string(),
        device: open.description,
        llama_type: model.config.llama_type.name(),
        parameters: model.config.parameter_count() + model.vision_config.as_ref().map_or(0, |v| v.parameter_count()),
        weights_dtype: a.model.dtype.to_string(),
        weights_bytes: model.llm.weight_bytes(),
        decode_read_bytes,
        decode_read_bytes_per_s: decode_read_bytes.map(|b| b as f64 * llm.decode_tok_s),
        memory_read_bytes_per_s,
        load_s,
        peak_rss_bytes: peak_rss(),
        device_bytes_in_use: memory.after_load,
        device_bytes_reserved_peak: memory.peak_reserved,
        llm,
        image,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Bytes per second that the compute threads (the rayon pool this runs in) read from
/// memory, streaming: 512 MiB, far beyond any cache, summed in parallel slices, the
/// fastest of three passes.
fn memory_read_speed() -> f64 {
    use rayon::prelude::*;
    const BYTES: usize = 512 << 20;
    let mut words = vec![0u64; BYTES / 8];
    // Written first, so that every page is mapped before the timing.
    words.par_iter_mut().enumerate().for_each(|(i, w)| *w = i as u64);
    let mut fastest = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        let sum = words.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b))).reduce(|| 0, u64::wrapping_add);
        std::hint::black_box(sum);
        fastest = fastest.min(t.elapsed().as_secs_f64());
    }
    BYTES as f64 / fastest
}

/// The device allocator's view, where the backend reports one (wgpu does).
struct DeviceMemory<'a> {
    device: &'a Device,
    after_load: Option<u64>,
    peak_reserved: Option<u64>,
}

impl<'a> DeviceMemory<'a> {
    fn new(device: &'a Device) -> Self {
        let usage = device.memory_pool_usage();
        Self { device, after_load: usage.map(|u| u.bytes_in_use), peak_reserved: usage.map(|u| u.bytes_reserved) }
    }

    fn sample(&mut self) {
        if let Some(u) = self.device.memory_pool_usage() {
            self.peak_reserved = Some(self.peak_reserved.unwrap_or(0).max(u.bytes_reserved));
        }
    }
}

/// The peak resident set size of this process (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok()?.checked_mul(1024)
}

fn print_table(r: &BenchReport) {
    let bytes = |b: Option<u64>| b.map_or("n/a".to_string(), |b| HumanBytes(b).to_string());
    let l = &r.llm;
    println!("model            {} ({}, {:.3} B parameters)", r.model, r.llama_type, r.parameters as f64 / 1e9);
    println!("device           {}", r.device);
    println!("LLM weights      {} on the device (--dtype {})", HumanBytes(r.weights_bytes), r.weights_dtype);
    println!("load             {:.2} s", r.load_s);
    println!("peak host RSS    {}", bytes(r.peak_rss_bytes));
    println!("device memory    {} in use after loading, {} reserved at most", bytes(r.device_bytes_in_use), bytes(r.device_bytes_reserved_peak));
    println!("prefill          {} tokens: {:.1} tok/s ({:.3} s; first run {:.3} s)", l.prompt_tokens, l.prefill_tok_s, l.prefill_s, l.prefill_cold_s);
    let reads = r.decode_read_bytes_per_s.map_or(String::new(), |b| format!("; its weights at {:.1} GB/s", b / 1e9));
    println!("decode           {:.2} tok/s (median of {} steps{reads})", l.decode_tok_s, l.decode_step_s.len());
    if let Some(m) = r.memory_read_bytes_per_s {
        let share = r.decode_read_bytes_per_s.map_or(String::new(), |b| format!(": decoding reads weights at {:.0}% of it", 100.0 * b / m));
        println!("memory           {:.1} GB/s streaming reads with {} threads{share}", m / 1e9, rayon::current_num_threads());
    }
    if let Some(i) = &r.image {
        println!("image            preprocess {:.3} s · {} image tokens", i.preprocess_s, i.image_tokens);
        println!("first token      {:.2} s for the process's first image question, {:.2} s for the next", i.time_to_first_token_cold_s, i.time_to_first_token_s);
        for e in &i.encoders {
            println!("  {:<14} {} views: {:.3} s ({:.3} s/view)", e.encoder, e.views, e.s, e.s_per_view);
        }
    }
}
