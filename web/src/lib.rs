//! `sphinx-web`: SPHINX in the browser over the same `sphinx-core` as the native binary.
//!
//! A model is a `sphinx convert --web` directory served over HTTP; its shards stream
//! through the Cache API into GPU buffers tensor by tensor (`shards`). This crate only
//! moves bytes and JS values: prompts, preprocessing, the model, generation, parsing
//! and drawing are `sphinx_core`'s (`sphinx_core::api` holds the option and result
//! types, whose TypeScript declarations are generated into `web/js/types.d.ts`).
//!
//! The JS package (`web/js/`) wraps this module in a Web Worker; see `web/README.md`.

mod errors;
mod gpu;
mod shards;
mod storage;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::Function;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sphinx_core::api::{ask, task_presets, AskOptions, ErrorKind, LoadOptions, ModelInfo, ParsedAnswer};
use sphinx_core::config::ConfigOverrides;
use sphinx_core::error::WeightError;
use sphinx_core::generate::{ChatSession, Conversation};
use sphinx_core::mixing::{check_same_architecture, MixedSource};
use sphinx_core::model::{NoSource, SphinxModel};
use sphinx_core::preprocess::{DecodeOptions, PaddedSquare};
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{ManifestSource, Requirements, WebManifest, WeightSource};
use sphinx_core::SphinxError;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::errors::{core_error, js_error};
use crate::shards::{fetch_file, missing_bytes, open_cache, HttpShards, Progress};

pub use crate::errors::last_panic;

// The linker's constructor function (CubeCL registers its IR through `inventory`, whose
// entries are static constructors). Unless some exported function calls it, wasm-ld treats
// the module as a command and wraps EVERY export so that it first re-runs all the
// constructors: each call from JS (each buffer, callback and future poll) paid for that,
// most of the browser's decode time (docs/design.md §9, "The browser's per-call cost").
#[cfg(target_family = "wasm")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}

/// Runs once, right after instantiation (wasm-bindgen's start function).
#[wasm_bindgen(start)]
fn start() {
    // SAFETY: the linker-synthesised constructor function, called once before anything
    // else in the module runs; it takes no arguments and returns nothing.
    #[cfg(target_family = "wasm")]
    unsafe {
        __wasm_call_ctors()
    };
    errors::install_panic_hook();
}

/// A serialisable value as a plain JS object.
pub(crate) fn to_js<T: Serialize>(v: &T) -> JsValue {
    serde_json::to_string(v).ok().and_then(|s| js_sys::JSON::parse(&s).ok()).unwrap_or(JsValue::NULL)
}

/// A plain JS object (or `undefined` for all defaults) as `T`.
fn from_js<T: DeserializeOwned>(v: &JsValue, what: &str) -> Result<T, JsValue> {
    let json = if v.is_undefined() || v.is_null() {
        "{}".to_string()
    } else {
        js_sys::JSON::stringify(v).ok().and_then(|s| s.as_string()).ok_or_else(|| js_error(ErrorKind::Input, format!("{what} must be a plain object")))?
    };
    serde_json::from_str(&json).map_err(|e| js_error(ErrorKind::Input, format!("invalid {what}: {e}")))
}

fn core(e: impl Into<SphinxError>) -> JsValue {
    core_error(e.into(), gpu::device_lost())
}

/// A conversation kept between `chat` calls: the KV cache and the image it is about.
struct Chat {
    session: ChatSession,
    image: Option<PaddedSquare>,
}

struct State {
    model: SphinxModel,
    info: ModelInfo,
    chat: RefCell<Option<Chat>>,
    busy: Cell<bool>,
}

/// Marks the model busy for one call; a second call meanwhile is an error, not a race.
struct Busy(Rc<State>);

impl Busy {
    fn new(state: Rc<State>) -> Result<Self, JsValue> {
        if state.busy.replace(true) {
            return Err(js_error(ErrorKind::Input, "the model is busy: await the previous call first"));
        }
        Ok(Self(state))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}

/// A loaded model. Create it with `await Sphinx.load(baseUrl, options, onProgress)`.
#[wasm_bindgen]
pub struct Sphinx {
    state: RefCell<Option<Rc<State>>>,
}

#[wasm_bindgen]
impl Sphinx {
    /// Loads `baseUrl/manifest.json` and its shards (`LoadOptions`: cache, mix). Checks
    /// WebGPU, the adapter's limits and the storage quota before downloading anything.
    /// `onProgress(DownloadProgress)` is called after each shard.
    pub fn load(base_url: String, options: JsValue, on_progress: Option<Function>) -> js_sys::Promise {
        future_to_promise(async move {
            let state = load_state(&base_url, &options, on_progress).await?;
            Ok(Sphinx { state: RefCell::new(Some(Rc::new(state))) }.into())
        })
    }

    /// What the model is (`ModelInfo`).
    #[wasm_bindgen(getter)]
    pub fn info(&self) -> Result<JsValue, JsValue> {
        Ok(to_js(&self.state()?.info))
    }

    /// Answers one question (`AskOptions`), optionally about an image (encoded bytes:
    /// JPEG, PNG, WebP, GIF, BMP). `onToken(text)` gets each new piece of the answer;
    /// resolves to the `AskResult`: text, boxes and points, drawing, timings.
    pub fn generate(&self, options: JsValue, image: Option<Vec<u8>>, on_token: Option<Function>) -> js_sys::Promise {
        let state = self.state();
        future_to_promise(async move {
            let busy = Busy::new(state?)?;
            let mut chat = new_chat(&busy.0, image.as_deref()).await?;
            turn(&busy.0, &mut chat, &options, on_token).await
        })
    }

    /// Like `generate`, but continues the conversation: the image and the earlier turns
    /// stay in the KV cache. An image starts a new conversation about it.
    pub fn chat(&self, options: JsValue, image: Option<Vec<u8>>, on_token: Option<Function>) -> js_sys::Promise {
        let state = self.state();
        future_to_promise(async move {
            let busy = Busy::new(state?)?;
            let kept = busy.0.chat.borrow_mut().take();
            let mut chat = match (kept, image) {
                (Some(c), None) => c,
                (_, image) => new_chat(&busy.0, image.as_deref()).await?,
            };
            let result = turn(&busy.0, &mut chat, &options, on_token).await;
            // A failed turn (e.g. the context is full) leaves the conversation as it was.
            *busy.0.chat.borrow_mut() = Some(chat);
            result
        })
    }

    /// Forgets the conversation `chat` continues.
    #[wasm_bindgen(js_name = resetChat)]
    pub fn reset_chat(&self) -> Result<(), JsValue> {
        *self.state()?.chat.borrow_mut() = None;
        Ok(())
    }

    /// Frees the model's GPU memory; the instance cannot be used afterwards.
    pub fn dispose(&self) {
        self.state.borrow_mut().take();
    }
}

impl Sphinx {
    fn state(&self) -> Result<Rc<State>, JsValue> {
        self.state.borrow().clone().ok_or_else(|| js_error(ErrorKind::Input, "this model was disposed"))
    }
}

/// A conversation, about `image` if given (encoded once here; the core keeps the
/// visual tokens of recent images, so asking again about the same bytes is free).
async fn new_chat(state: &State, image: Option<&[u8]>) -> Result<Chat, JsValue> {
    gpu::check_alive()?;
    let (image, tokens) = match image {
        None => (None, None),
        Some(_) if !state.info.multimodal => {
            return Err(js_error(ErrorKind::Input, format!("'{}' is a text-only model: it takes no image", state.info.llama_type)));
        }
        Some(bytes) => {
            let (geometry, tokens) = state.model.image_tokens(bytes, &DecodeOptions::default(), None::<&NoSource>).await.map_err(core)?;
            (Some(geometry), Some(tokens))
        }
    };
    Ok(Chat { session: ChatSession::new(&state.model.llm, tokens), image })
}

/// One question and its answer in `chat`.
async fn turn(state: &State, chat: &mut Chat, options: &JsValue, on_token: Option<Function>) -> Result<JsValue, JsValue> {
    gpu::check_alive()?;
    let options: AskOptions = from_js(options, "generate options")?;
    let mut on_text = |t: &str| {
        if let Some(f) = &on_token {
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(t));
        }
    };
    let result = ask(&state.model, &mut chat.session, chat.image, &options, &mut on_text).await.map_err(core)?;
    Ok(to_js(&result))
}

async fn fetch_manifest(base: &str) -> Result<WebManifest, JsValue> {
    // Always from the network: a model updated in place must not meet stale shards.
    let (bytes, _) = fetch_file(None, base, "manifest.json", None).await.map_err(core)?;
    WebManifest::parse(&String::from_utf8_lossy(&bytes)).map_err(core)
}

fn shard_list(m: &WebManifest) -> Vec<(String, u64)> {
    m.shards.iter().map(|s| (s.file.clone(), s.bytes)).collect()
}

async fn load_state(base: &str, options: &JsValue, on_progress: Option<Function>) -> Result<State, JsValue> {
    let opts: LoadOptions = from_js(options, "load options")?;
    let manifest = fetch_manifest(base).await?;
    let other = match &opts.mix {
        Some(mix) => {
            let m = fetch_manifest(&mix.with).await?;
            check_same_architecture((&manifest.config_json, &manifest.meta_json), (&m.config_json, &m.meta_json))
                .map_err(|e| core(WeightError::from(e)))?;
            Some((mix, m))
        }
        None => None,
    };
    let mut need: Requirements = manifest.requirements.clone();
    if let Some((_, m)) = &other {
        need.max_storage_buffer_binding_size = need.max_storage_buffer_binding_size.max(m.requirements.max_storage_buffer_binding_size);
        need.max_buffer_size = need.max_buffer_size.max(m.requirements.max_buffer_size);
        need.device_bytes = need.device_bytes.max(m.requirements.device_bytes);
        need.features.extend(m.requirements.features.iter().cloned());
    }
    let device = gpu::webgpu_device(&need).await?;

    let cache = open_cache(opts.cache.unwrap_or(true)).await;
    if let Some(c) = &cache {
        let mut missing = missing_bytes(c, base, &shard_list(&manifest)).await;
        if let Some((mix, m)) = &other {
            missing += missing_bytes(c, &mix.with, &shard_list(m)).await;
        }
        storage::check_quota(missing).await?;
    }
    let total = manifest.shards.iter().chain(other.iter().flat_map(|(_, m)| &m.shards)).map(|s| s.bytes).sum();
    let shards = manifest.shards.len() + other.as_ref().map_or(0, |(_, m)| m.shards.len());
    let progress = Progress::new(total, on_progress);
    let (tokenizer, _) = fetch_file(cache.as_ref(), base, &manifest.tokenizer.file, Some(&manifest.tokenizer.sha256)).await.map_err(core)?;
    let (config, meta) = (manifest.config_json.clone(), manifest.meta_json.clone());
    let http = HttpShards::new(base, &manifest, cache.clone(), progress.clone());
    let real = ManifestSource::new(manifest, http);
    let model = match other {
        None => load_model(&config, &meta, &tokenizer, &real, &device).await?,
        Some((mix, m)) => {
            let http = HttpShards::new(&mix.with, &m, cache.clone(), progress.clone());
            let synthetic = ManifestSource::new(m, http);
            let rules = mix.rules().map_err(|e| core(WeightError::from(e)))?;
            let mixed = MixedSource::new(real, synthetic, rules, false).map_err(|e| core(WeightError::from(e)))?.check_finite(true);
            load_model(&config, &meta, &tokenizer, &mixed, &device).await?
        }
    };
    let from_cache = *progress.from_cache.borrow();
    let info = ModelInfo::of(&model, shards, from_cache);
    Ok(State { model, info, chat: RefCell::new(None), busy: Cell::new(false) })
}

async fn load_model<S: WeightSource>(config: &str, meta: &str, tokenizer: &[u8], source: &S, device: &burn::tensor::Device) -> Result<SphinxModel, JsValue> {
    SphinxModel::load_from(config, meta, tokenizer, source, device, &ConfigOverrides::default(), &mut |_| {}).await.map_err(core)
}

/// Every task preset (`TaskPreset[]`), for menus.
#[wasm_bindgen]
pub fn tasks() -> JsValue {
    to_js(&task_presets())
}

/// The boxes and points of an answer text and their drawing over an image of
/// `width` × `height` pixels (`ParsedAnswer`), as the model's answers are parsed.
#[wasm_bindgen(js_name = parseAnswer)]
pub fn parse_answer(text: &str, width: Option<u32>, height: Option<u32>) -> JsValue {
    let image = width.zip(height).map(|(w, h)| PaddedSquare::new(w as usize, h as usize));
    to_js(&ParsedAnswer::of(text, image))
}

/// The LLaMA SentencePiece tokenizer, built from the bytes of `tokenizer.model`.
#[wasm_bindgen(js_name = Tokenizer)]
pub struct JsTokenizer(Tokenizer);

#[wasm_bindgen(js_class = Tokenizer)]
impl JsTokenizer {
    #[wasm_bindgen(constructor)]
    pub fn new(model_bytes: &[u8]) -> Result<JsTokenizer, JsValue> {
        Tokenizer::from_model_bytes(model_bytes).map(JsTokenizer).map_err(core)
    }

    /// Token ids of `text`, optionally with BOS / EOS.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        self.0.encode(text, bos, eos)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids)
    }
}

/// SPHINX's one-turn prompt for `question` (docs/spec.md §5.1).
#[wasm_bindgen(js_name = chatPrompt)]
pub fn chat_prompt(question: &str) -> String {
    Conversation::single(question).prompt()
}
