//! OpenAI's chat-completions request and response shapes (the subset SPHINX answers),
//! and their translation into one prepared generation ([`Prepared`]).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sphinx_core::api::AskOptions;
use sphinx_core::generate::{GenerationOptions, Role};

use super::errors::ApiError;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    // `model` is not read: the server has one model (GET /v1/models names it).
    pub messages: Vec<Message>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Choices per request: only 1.
    pub n: Option<usize>,
    /// SPHINX's tasks (grounding, detection, ...): this server's extension.
    pub sphinx: Option<SphinxTask>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

/// `"sphinx": {"task": "ground", "query": "the dog"}`: the last user message is replaced
/// by the task's instruction (its query defaults to that message's text).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SphinxTask {
    pub task: String,
    pub query: Option<String>,
    /// `[x1, y1, x2, y2]` in pixels of the image (keypoints, region captions).
    pub region: Option<[f64; 4]>,
}

/// A request checked and translated, ready for the model.
pub struct Prepared {
    /// The conversation before the last user message.
    pub history: Vec<(Role, String)>,
    /// The last user message, as SPHINX is asked it (`ask.instruction`).
    pub ask: AskOptions,
    /// Whether a task was asked (then the answer is parsed into boxes and points).
    pub task: bool,
    /// The conversation's image, as encoded bytes.
    pub image: Option<Vec<u8>>,
    pub options: GenerationOptions,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// Where `file://` image URLs may point (`--allow-files`), if anywhere.
pub struct ImagePolicy<'a> {
    pub allow_files: Option<&'a std::path::Path>,
    pub max_file_bytes: u64,
}

impl ChatRequest {
    /// Checks the request and translates it; `defaults` are the server's sampling settings.
    pub fn prepare(self, defaults: &GenerationOptions, images: &ImagePolicy) -> Result<Prepared, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_param("n", "only n = 1 is supported"));
        }
        let Some(last) = self.messages.last() else {
            return Err(ApiError::bad_param("messages", "messages must not be empty"));
        };
        if last.role != "user" {
            return Err(ApiError::bad_param("messages", format!("the last message must be the user's, not '{}'", last.role)));
        }
        let mut image = None;
        let mut history = Vec::new();
        for m in &self.messages {
            let role = match m.role.as_str() {
                "user" => Role::Human,
                "assistant" => Role::Assistant,
                "system" | "developer" => {
                    return Err(ApiError::bad_param("messages", "SPHINX's conversation template has its own fixed system prompt; system messages are not supported"))
                }
                other => return Err(ApiError::bad_param("messages", format!("unknown role '{other}' (user or assistant)"))),
            };
            let mut text = String::new();
            match &m.content {
                Content::Text(t) => text.push_str(t),
                Content::Parts(parts) => {
                    for part in parts {
                        match part {
                            Part::Text { text: t } => text.push_str(t),
                            Part::ImageUrl { image_url } if role == Role::Human => {
                                if image.is_some() {
                                    return Err(ApiError::bad_param("messages", "SPHINX takes one image per conversation; this one has two"));
                                }
                                image = Some(image_bytes(&image_url.url, images)?);
                            }
                            Part::ImageUrl { .. } => return Err(ApiError::bad_param("messages", "only user messages may carry an image")),
                        }
                    }
                }
            }
            history.push((role, text));
        }
        let (_, question) = history.pop().expect("the last message");
        let task = self.sphinx.is_some();
        let ask = match self.sphinx {
            Some(t) => AskOptions { prompt: Some(question), task: Some(t.task), query: t.query, region: t.region, ..Default::default() },
            None => AskOptions { prompt: Some(question), ..Default::default() },
        };
        let options = GenerationOptions {
            max_gen_len: self.max_completion_tokens.or(self.max_tokens).unwrap_or(defaults.max_gen_len),
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
            ..defaults.clone()
        };
        options.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) if v.len() <= 4 => v,
            Some(Stop::Many(_)) => return Err(ApiError::bad_param("stop", "at most 4 stop sequences")),
        };
        Ok(Prepared {
            history,
            ask,
            task,
            image,
            options,
            stop,
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// The bytes of an image URL: a `data:` URL with base64 data, or a `file://` path under
/// `--allow-files`; network URLs are refused (the server fetches nothing).
fn image_bytes(url: &str, policy: &ImagePolicy) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_param("messages", m);
    if let Some(rest) = url.strip_prefix("data:") {
        let (header, data) = rest.split_once(',').ok_or_else(|| bad("a data URL needs a ',' before its data".into()))?;
        if !header.ends_with(";base64") {
            return Err(bad("image data URLs must be base64 (data:image/png;base64,...)".into()));
        }
        let mime = header.trim_end_matches(";base64");
        if !matches!(mime, "image/png" | "image/jpeg" | "image/jpg" | "image/webp" | "image/gif" | "image/bmp") {
            return Err(bad(format!("'{mime}' is not an image type this server decodes (PNG, JPEG, WebP, GIF, BMP)")));
        }
        return base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| bad(format!("the image's base64 data is invalid: {e}")));
    }
    if let Some(path) = url.strip_prefix("file://") {
        let root = policy.allow_files.ok_or_else(|| bad("file:// image URLs are refused: start the server with --allow-files DIR".into()))?;
        let root = root.canonicalize().map_err(|e| ApiError::internal(format!("--allow-files {}: {e}", root.display())))?;
        let full = std::path::Path::new(path).canonicalize().map_err(|_| bad(format!("no such image file: {path}")))?;
        if !full.starts_with(&root) {
            return Err(bad(format!("{path} is outside --allow-files {}", root.display())));
        }
        return sphinx_native::files::read_limited(&full, policy.max_file_bytes).map_err(|e| bad(format!("{path}: {e}")));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(bad("http(s) image URLs are refused: this server fetches nothing from the network; send the image as a data: URL".into()));
    }
    Err(bad("an image URL must be a data: URL (or file:// with --allow-files)".into()))
}

/// Token counts of one answer, as OpenAI's `usage`.
#[derive(Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}
