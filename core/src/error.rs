//! Typed errors: every bad input names what was wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenizerError {
    #[error("tokenizer.model is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported SentencePiece model: {0}")]
    Unsupported(String),
}

#[derive(Debug, Error)]
pub enum WeightError {
    #[error("checkpoint file '{file}' is not a readable PyTorch archive: {reason}")]
    BadArchive { file: String, reason: String },
    #[error("checkpoint pickle in '{file}' cannot be read: {reason}")]
    BadPickle { file: String, reason: String },
    #[error("web manifest (manifest.json) is invalid: {reason}")]
    BadManifest { reason: String },
    #[error("safetensors file '{file}' is invalid: {reason}")]
    BadSafetensors { file: String, reason: String },
    #[error("tensor '{name}' in '{file}' needs bytes {start}..{end} but the file has {len} (truncated?)")]
    Truncated { file: String, name: String, start: u64, end: u64, len: u64 },
    #[error("missing tensor '{name}'")]
    MissingTensor { name: String },
    #[error("unexpected tensor '{name}' (not used by the '{arch}' architecture)")]
    UnexpectedTensor { name: String, arch: String },
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor '{name}' has unsupported dtype {dtype}")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("model-parallel shards are inconsistent: {0}")]
    ShardMismatch(String),
    #[error("no checkpoint found: {0}")]
    NoCheckpoint(String),
    #[error("reading '{file}': {reason}")]
    Io { file: String, reason: String },
    #[error(transparent)]
    Mix(#[from] MixError),
}

#[derive(Debug, Error)]
pub enum MixError {
    #[error("the models have different architectures: {0}")]
    ArchitectureMismatch(String),
    #[error("tensor '{name}' is missing from the {missing_in} model")]
    KeyMismatch { name: String, missing_in: String },
    #[error("tensor '{name}' is {real:?} in the real model but {synthetic:?} in the synthetic one")]
    ShapeMismatch { name: String, real: Vec<usize>, synthetic: Vec<usize> },
    #[error("tensor '{name}' is {real} in the real model but {synthetic} in the synthetic one")]
    DtypeMismatch { name: String, real: String, synthetic: String },
    #[error("tensor '{name}' differs between the models but no rule mixes it (frozen weights must be identical; add a rule such as '{name}=real')")]
    NotIdentical { name: String },
    #[error("β = {beta} for '{pattern}' is outside [0, 1]; pass --extrapolate to allow it")]
    BetaOutOfRange { pattern: String, beta: f64 },
    #[error("the mix of '{name}' contains NaN or Inf")]
    NonFinite { name: String },
    #[error("tensor '{name}' has dtype {dtype}, which cannot be mixed")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("tensor '{name}' is block-quantized ({dtype}), which cannot be mixed: mix the 16- or 32-bit checkpoints first, then quantize the mix")]
    Quantized { name: String, dtype: String },
    #[error("bad mixing rule {0}")]
    BadRule(String),
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file} is not valid JSON: {reason}")]
    Json { file: String, reason: String },
    #[error("{file}: missing or invalid field '{field}'")]
    Field { file: String, field: String },
    #[error("unknown llama_type '{0}' in meta.json (known: {1})")]
    UnknownLlamaType(String, String),
    #[error("invalid model configuration: {0}")]
    Invalid(String),
    #[error("the model needs {need} bytes ({need_gib:.2} GiB) on the device but it has {have} ({have_gib:.2} GiB) available", need_gib = *.need as f64 / (1u64 << 30) as f64, have_gib = *.have as f64 / (1u64 << 30) as f64)]
    TooLarge { need: u64, have: u64 },
    #[error("{what} needs a buffer of {need} bytes ({need_mib:.1} MiB) but this device allows at most {have} ({have_mib:.1} MiB) per buffer{hint}", need_mib = *.need as f64 / (1u64 << 20) as f64, have_mib = *.have as f64 / (1u64 << 20) as f64)]
    BufferTooLarge { what: String, need: u64, have: u64, hint: &'static str },
}

#[derive(Debug, Error)]
pub enum GenerateError {
    #[error("the prompt has {prompt} tokens but the context allows at most {max} (max_seq_len {max_seq_len} − max_gen_len {max_gen_len}{image})", image = if *.image > 0 { format!(" − {} image tokens", .image) } else { String::new() })]
    PromptTooLong { prompt: usize, max: usize, max_seq_len: usize, max_gen_len: usize, image: usize },
    #[error("the context is full ({0} positions)")]
    ContextFull(usize),
    #[error("invalid sampling option: {0}")]
    BadOption(String),
    /// A request that names no prompt, an unknown task, a task without its query, ...
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("reading results back from the device failed: {0}")]
    Readback(String),
}

/// Any error the core can return.
#[derive(Debug, Error)]
pub enum SphinxError {
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Image(#[from] crate::preprocess::ImageError),
}

pub type Result<T, E = SphinxError> = std::result::Result<T, E>;
