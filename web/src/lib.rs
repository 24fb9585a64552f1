//! `sphinx-web`: SPHINX in the browser, over the same `sphinx-core` as the native
//! binary. For now it exposes the tokenizer and the conversation template to JS;
//! the model itself follows in the browser-target work (see ARCHITECTURE.md).

use sphinx_core::generate::Conversation;
use sphinx_core::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;

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
