//! The request and result types of the runtime's public API: the browser's JS API
//! takes and returns them as plain objects (their TypeScript declarations are generated
//! from these types, `web/js/types.d.ts`), and the CLI's `--json` prints [`AskResult`].
//! One place decides how a request becomes a prompt and how an answer becomes boxes,
//! points and a drawing.

use serde::{Deserialize, Serialize};

use crate::error::{GenerateError, MixError, SphinxError, WeightError};
use crate::generate::{ChatSession, Generation, GenerationOptions, StopReason};
use crate::model::SphinxModel;
use crate::mixing::MixRules;
use crate::preprocess::PaddedSquare;
use crate::tasks::{draw_answer, parse_answer, Answer, DrawCommand, TaskKind};

/// One question to the model: free text or a task preset, plus sampling settings.
/// Unset settings take the official demo's defaults (temperature 0.1, top-p 0.75).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AskOptions {
    /// Free text, wrapped in SPHINX's conversation template. Either this or `task`.
    pub prompt: Option<String>,
    /// A task preset (`sphinx tasks`): "ground", "vqa", "detect", "caption", ...
    pub task: Option<String>,
    /// The task's text: the expression to ground, the category to detect, the VQA
    /// question. Defaults to `prompt`.
    pub query: Option<String>,
    /// The task's region `[x1, y1, x2, y2]` in pixels of the image (keypoints, region caption).
    pub region: Option<[f64; 4]>,
    /// Most new tokens (default 512).
    pub max_tokens: Option<usize>,
    /// 0 = greedy (default 0.1).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass (default 0.75).
    pub top_p: Option<f32>,
    /// Seed of the sampler (default 0).
    pub seed: Option<u64>,
}

impl AskOptions {
    /// The user turn: the prompt, or the task's instruction. `image` is the size of the
    /// image the question is about (regions are given in its pixels).
    pub fn instruction(&self, image: Option<PaddedSquare>) -> Result<String, GenerateError> {
        let bad = |m: String| GenerateError::BadRequest(m);
        let Some(name) = &self.task else {
            return self.prompt.clone().ok_or_else(|| bad("give a prompt or a task".into()));
        };
        let kind = TaskKind::parse(name).ok_or_else(|| {
            let names: Vec<&str> = TaskKind::ALL.iter().map(|t| t.0).collect();
            bad(format!("unknown task '{name}' (tasks: {})", names.join(", ")))
        })?;
        let region = match (self.region, image) {
            (Some(r), Some(g)) => Some(g.box_to_normalized(r)),
            (Some(_), None) => return Err(bad("a region needs an image (it is in the image's pixels)".into())),
            (None, _) => None,
        };
        Ok(kind.build(self.query.as_deref().or(self.prompt.as_deref()), region).map_err(bad)?.instruction())
    }

    /// The sampling settings, validated.
    pub fn generation_options(&self) -> Result<GenerationOptions, GenerateError> {
        let d = GenerationOptions::default();
        let opts = GenerationOptions {
            max_gen_len: self.max_tokens.unwrap_or(d.max_gen_len),
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        };
        opts.validate()?;
        Ok(opts)
    }
}

/// The outcome of one question: the text, its boxes and points, and how to draw them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct AskResult {
    /// The answer, without the end-of-turn marker.
    pub text: String,
    /// Boxes and points found in the answer, in pixels of the image when there is one.
    pub answer: Answer,
    /// The answer drawn over the image, in its pixels (empty without an image).
    pub drawing: Vec<DrawCommand>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Time to the first answer token (prompt prefill, image excluded).
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub tokens_per_second: f64,
}

impl AskResult {
    pub fn new(g: &Generation, image: Option<PaddedSquare>) -> Self {
        let ParsedAnswer { answer, drawing } = ParsedAnswer::of(&g.text, image);
        Self {
            text: g.text.clone(),
            answer,
            drawing,
            stop: g.stop,
            prompt_tokens: g.prompt_tokens,
            generated_tokens: g.tokens.len(),
            prefill_ms: g.prefill_secs * 1e3,
            decode_ms: g.decode_secs * 1e3,
            tokens_per_second: g.tokens_per_sec(),
        }
    }
}

/// An answer's boxes and points and their drawing, for an answer text from anywhere
/// (`sphinx draw`, the demo's "draw an answer").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ParsedAnswer {
    pub answer: Answer,
    /// In pixels of the image (empty without an image size).
    pub drawing: Vec<DrawCommand>,
}

impl ParsedAnswer {
    pub fn of(text: &str, image: Option<PaddedSquare>) -> Self {
        let answer = parse_answer(text, image);
        let drawing = if image.is_some() { draw_answer(&answer) } else { Vec::new() };
        Self { answer, drawing }
    }
}

/// Asks one question in `chat` (a conversation about the image of size `image`, if
/// any), streaming the answer's text through `on_text`.
pub async fn ask(
    model: &SphinxModel,
    chat: &mut ChatSession,
    image: Option<PaddedSquare>,
    options: &AskOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<AskResult, SphinxError> {
    let question = options.instruction(image)?;
    let opts = options.generation_options()?;
    let g = chat.ask(&model.llm, &model.tokenizer, &question, &opts, on_text).await?;
    Ok(AskResult::new(&g, image))
}

/// How the browser loads a model (`Sphinx.load(url, options)`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadOptions {
    /// Keep the shards in the Cache API for the next load (default true). When the
    /// browser's storage quota cannot hold them, loading fails with a `quota` error
    /// before downloading; `cache: false` then loads without caching.
    pub cache: Option<bool>,
    /// Load a mix of this model (trained on real data) and another (synthetic data).
    pub mix: Option<MixOptions>,
}

/// Loading-time weight mixing: θ = β·θ_this + (1−β)·θ_with, by rules (docs/spec.md §7).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixOptions {
    /// Base URL of the synthetic-data model (a `sphinx convert --web` directory).
    pub with: String,
    /// β for every trained tensor.
    pub beta: f64,
    /// Overrides, first match wins: "PATTERN=β", "PATTERN=real" or "PATTERN=synthetic".
    pub rules: Option<Vec<String>>,
}

impl MixOptions {
    pub fn rules(&self) -> Result<MixRules, MixError> {
        let overrides = self.rules.iter().flatten().map(|r| MixRules::parse_rule(r)).collect::<Result<Vec<_>, _>>()?;
        let rules = MixRules::with_overrides(self.beta, overrides);
        rules.validate(false)?;
        Ok(rules)
    }
}

/// Download progress of a load, reported once per file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DownloadProgress {
    pub done_bytes: f64,
    pub total_bytes: f64,
    /// The shard just read.
    pub file: String,
    /// Whether it came from the Cache API instead of the network.
    pub cached: bool,
}

/// What a loaded model is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `meta.json`'s `llama_type`.
    pub llama_type: String,
    /// Whether the model takes images.
    pub multimodal: bool,
    /// Visual tokens per image (0 for text-only models).
    pub image_tokens: usize,
    /// Most positions of a conversation.
    pub context_length: usize,
    pub vocab_size: usize,
    /// Shards the load took from the Cache API rather than the network.
    pub shards_from_cache: usize,
    pub shards: usize,
}

impl ModelInfo {
    pub fn of(model: &SphinxModel, shards: usize, shards_from_cache: usize) -> Self {
        Self {
            llama_type: model.llama_type().name().to_string(),
            multimodal: model.vision.is_some(),
            image_tokens: model.vision_config.as_ref().map_or(0, |v| v.image_tokens()),
            context_length: model.config.max_seq_len,
            vocab_size: model.tokenizer.vocab_size(),
            shards_from_cache,
            shards,
        }
    }
}

/// A task preset, for menus (`sphinx tasks`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TaskPreset {
    pub name: String,
    pub description: String,
    pub needs_query: bool,
    pub needs_region: bool,
}

/// Every task preset.
pub fn task_presets() -> Vec<TaskPreset> {
    TaskKind::ALL
        .iter()
        .map(|(name, kind, description)| TaskPreset {
            name: name.to_string(),
            description: description.to_string(),
            needs_query: kind.build(None, Some([0.0; 4])).is_err(),
            needs_region: kind.build(Some(""), None).is_err(),
        })
        .collect()
}

/// The kind of an error, as JS code tells them apart (`SphinxError.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The browser has no WebGPU, or no adapter.
    WebgpuUnavailable,
    /// The adapter's limits or features are too small for the model.
    Limits,
    /// The storage quota cannot hold the weights' cache.
    Quota,
    /// The GPU device was lost (driver reset, tab in background too long, ...).
    DeviceLost,
    /// A file could not be fetched, or its hash does not match.
    Download,
    /// A checkpoint or manifest is malformed, truncated or mismatched.
    Weights,
    /// The image cannot be decoded.
    Image,
    /// A bad request: no prompt, unknown task, bad option, prompt too long.
    Input,
    /// A bug in the runtime: the instance must be loaded again.
    Internal,
}

impl SphinxError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SphinxError::Weights(WeightError::Io { .. }) => ErrorKind::Download,
            SphinxError::Weights(WeightError::Mix(MixError::BadRule(_) | MixError::BetaOutOfRange { .. })) => ErrorKind::Input,
            SphinxError::Weights(_) | SphinxError::Config(_) | SphinxError::Tokenizer(_) => ErrorKind::Weights,
            SphinxError::Image(_) => ErrorKind::Image,
            // Reading results back fails when the device is gone.
            SphinxError::Generate(GenerateError::Readback(_)) => ErrorKind::DeviceLost,
            SphinxError::Generate(_) => ErrorKind::Input,
        }
    }
}
