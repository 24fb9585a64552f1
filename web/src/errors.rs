//! Errors as JS sees them: an `Error` named "SphinxError" with a `kind` (the
//! `ErrorKind` of `sphinx_core::api`, e.g. "webgpu-unavailable", "quota", "image") that
//! code can branch on. A panic — a bug, never bad input — is recorded by the hook below
//! so the JS wrapper can report it as an "internal" error instead of a bare trap.

use std::cell::RefCell;

use sphinx_core::api::ErrorKind;
use sphinx_core::SphinxError;
use wasm_bindgen::prelude::*;

/// A JS `Error` with `name = "SphinxError"` and `kind`.
pub fn js_error(kind: ErrorKind, message: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&message.to_string());
    e.set_name("SphinxError");
    let kind = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    let _ = js_sys::Reflect::set(&e, &"kind".into(), &kind.into());
    e.into()
}

/// A core error, classified; `lost` says whether the GPU device is gone (which turns
/// any failure into a device-lost error).
pub fn core_error(e: SphinxError, lost: bool) -> JsValue {
    if lost {
        return js_error(ErrorKind::DeviceLost, format!("the GPU device was lost ({e}); load the model again"));
    }
    js_error(e.kind(), e)
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records panic messages (see [`last_panic`]) and logs them to the console.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        web_sys::console::error_1(&format!("sphinx-web panicked: {msg}").into());
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(msg));
    }));
}

/// The message of the panic that stopped this instance, if one did.
#[wasm_bindgen(js_name = lastPanic)]
pub fn last_panic() -> Option<String> {
    LAST_PANIC.with(|p| p.borrow().clone())
}
