//! Writing a model directory tensor by tensor (`sphinx mix`, `sphinx quantize`): one
//! `model.safetensors` streamed to disk, host memory near one tensor, then the config,
//! the tokenizer and — last, since a directory without it is no loadable model — meta.json.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use sphinx_core::weights::{safetensors_header, HostTensor, TensorInfo};

/// The files of a model directory besides its weights.
pub struct ModelTexts<'a> {
    pub config_json: &'a str,
    pub meta_json: &'a str,
    pub tokenizer_model: &'a [u8],
}

/// Writes `tensors` (names and what each will be written as) into `dir`: each one's
/// bytes come from `produce(name)`, in order, and must match its info. `verb` labels
/// the progress bar.
pub fn write_model_dir(
    dir: &Path,
    tensors: &[(String, TensorInfo)],
    metadata: &std::collections::BTreeMap<String, String>,
    texts: &ModelTexts,
    verb: &str,
    mut produce: impl FnMut(&str) -> Result<HostTensor>,
) -> Result<()> {
    let total: u64 = tensors.iter().map(|(_, i)| i.byte_len() as u64).sum();
    let path = dir.join("model.safetensors");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    out.write_all(&safetensors_header(tensors, metadata)?)?;
    let template = format!("{verb} {{bar:30}} {{bytes}}/{{total_bytes}} {{msg}}");
    let bar = ProgressBar::new(total).with_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    for (name, info) in tensors {
        bar.set_message(name.clone());
        let t = produce(name)?;
        anyhow::ensure!(t.info() == *info, "{name}: produced {} {:?}, expected {} {:?}", t.dtype, t.shape, info.dtype, info.shape);
        out.write_all(&t.bytes)?;
        bar.inc(t.bytes.len() as u64);
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    bar.finish_and_clear();
    std::fs::write(dir.join("config.json"), texts.config_json)?;
    std::fs::write(dir.join("tokenizer.model"), texts.tokenizer_model)?;
    std::fs::write(dir.join("meta.json"), texts.meta_json)?;
    Ok(())
}

/// Peak resident memory of this process (Linux), for the closing report.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Bytes of the files directly in `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
