//! `sphinx-web`: SPHINX in the browser over the same `sphinx-core` as the native binary.
//! A model is a `sphinx convert --web` directory served over HTTP; its shards stream
//! through the Cache API into GPU buffers tensor by tensor (see `shards`).
//!
//! Status: this API compiles for wasm32 in CI; the headless-browser tests, the Worker
//! wrapper, the JS package and the demo page are still to come (ARCHITECTURE.md).

mod shards;

use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Function, Promise};
use sphinx_core::config::ConfigOverrides;
use sphinx_core::generate::{generate, Conversation, GenerationOptions};
use sphinx_core::model::SphinxModel;
use sphinx_core::tokenizer::Tokenizer;
use sphinx_core::weights::{ManifestSource, WebManifest};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::shards::{fetch_file, HttpShards};

fn err(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// A loaded model. Create it with `await Sphinx.load(baseUrl, onProgress)`.
#[wasm_bindgen]
pub struct Sphinx {
    model: Rc<SphinxModel>,
    from_cache: u64,
}

#[wasm_bindgen]
impl Sphinx {
    /// Loads `baseUrl/manifest.json` and its shards. Checks WebGPU and the adapter's
    /// limits before downloading anything. `onProgress(doneBytes, totalBytes)`.
    pub fn load(base_url: String, on_progress: Option<Function>) -> Promise {
        future_to_promise(async move {
            let (manifest_bytes, _) = fetch_file(&base_url, "manifest.json", None).await.map_err(err)?;
            let manifest = WebManifest::parse(&String::from_utf8_lossy(&manifest_bytes)).map_err(err)?;
            let (device, setup) = Device::wgpu_options()
                .init_with_setup_async()
                .await
                .map_err(|e| err(format!("WebGPU is not available: {e}")))?;
            let limits = setup.adapter.limits();
            let need = manifest.requirements.max_storage_buffer_binding_size;
            if (limits.max_storage_buffer_binding_size as u64) < need || limits.max_buffer_size < need {
                return Err(err(format!(
                    "this GPU's limits are too small: the model needs {need}-byte buffers, the adapter allows {} (binding) / {} (buffer)",
                    limits.max_storage_buffer_binding_size, limits.max_buffer_size
                )));
            }
            let (tokenizer, _) = fetch_file(&base_url, &manifest.tokenizer.file, Some(&manifest.tokenizer.sha256)).await.map_err(err)?;
            let shards = HttpShards::new(&base_url, &manifest, on_progress);
            let source = ManifestSource::new(manifest.clone(), shards);
            let model = SphinxModel::load_from(
                &manifest.config_json,
                &manifest.meta_json,
                &tokenizer,
                &source,
                &device,
                &ConfigOverrides::default(),
                &mut |_| {},
            )
            .await
            .map_err(err)?;
            let from_cache = *source_shards(&source).from_cache.borrow();
            Ok(Sphinx { model: Rc::new(model), from_cache }.into())
        })
    }

    /// How many shards the last load took from the Cache API instead of the network.
    #[wasm_bindgen(getter, js_name = shardsFromCache)]
    pub fn shards_from_cache(&self) -> u64 {
        self.from_cache
    }

    /// Answers `prompt` (wrapped in SPHINX's conversation template). `onToken(text)` gets
    /// each new piece of the answer; resolves to the whole answer.
    pub fn generate(&self, prompt: String, max_tokens: usize, temperature: f32, on_token: Option<Function>) -> Promise {
        let model = self.model.clone();
        future_to_promise(async move {
            let ids = model.tokenizer.encode(&Conversation::single(&prompt).prompt(), true, false);
            let opts = GenerationOptions { max_gen_len: max_tokens, temperature, ..Default::default() };
            let mut cache = model.llm.new_cache();
            let mut on_text = |t: &str| {
                if let Some(f) = &on_token {
                    let _ = f.call1(&JsValue::NULL, &JsValue::from_str(t));
                }
            };
            let g = generate(&model.llm, &model.tokenizer, &mut cache, &ids, None, &opts, &mut on_text).await.map_err(err)?;
            Ok(JsValue::from_str(&g.text))
        })
    }
}

fn source_shards(s: &ManifestSource<HttpShards>) -> &HttpShards {
    s.fetcher()
}

/// The LLaMA SentencePiece tokenizer, built from the bytes of `tokenizer.model`.
#[wasm_bindgen(js_name = Tokenizer)]
pub struct JsTokenizer(Tokenizer);

#[wasm_bindgen(js_class = Tokenizer)]
impl JsTokenizer {
    #[wasm_bindgen(constructor)]
    pub fn new(model_bytes: &[u8]) -> Result<JsTokenizer, JsError> {
        Tokenizer::from_model_bytes(model_bytes).map(JsTokenizer).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Token ids of `text`, optionally with BOS / EOS.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Vec<u32> {
        self.0.encode(text, bos, eos)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.0.decode(ids)
    }
}

/// SPHINX's one-turn prompt for `question` (spec §5.1).
#[wasm_bindgen(js_name = chatPrompt)]
pub fn chat_prompt(question: &str) -> String {
    Conversation::single(question).prompt()
}
