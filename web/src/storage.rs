//! The storage quota, checked before a download that the Cache API is to keep
//! (`navigator.storage.estimate()`), so a full disk is a clear error up front rather
//! than a cache that silently stays empty.

use js_sys::Reflect;
use sphinx_core::api::ErrorKind;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::errors::js_error;

fn get(v: &JsValue, key: &str) -> Option<JsValue> {
    Reflect::get(v, &key.into()).ok().filter(|x| !x.is_undefined() && !x.is_null())
}

/// (usage, quota) in bytes, when the browser can tell.
async fn estimate() -> Option<(f64, f64)> {
    let storage = get(&get(&js_sys::global(), "navigator")?, "storage")?;
    let f: js_sys::Function = get(&storage, "estimate")?.dyn_into().ok()?;
    let promise: js_sys::Promise = f.call0(&storage).ok()?.dyn_into().ok()?;
    let e = JsFuture::from(promise).await.ok()?;
    Some((get(&e, "usage")?.as_f64()?, get(&e, "quota")?.as_f64()?))
}

const MIB: f64 = 1024.0 * 1024.0;

/// Fails with a quota error when `missing` more bytes would not fit.
pub async fn check_quota(missing: u64) -> Result<(), JsValue> {
    if missing == 0 {
        return Ok(());
    }
    let Some((usage, quota)) = estimate().await else { return Ok(()) };
    let free = (quota - usage).max(0.0);
    if (missing as f64) > free {
        return Err(js_error(
            ErrorKind::Quota,
            format!(
                "not enough browser storage to cache the weights: {:.1} MiB needed, {:.1} MiB free of a {:.1} MiB quota; free some space or load with {{ cache: false }}",
                missing as f64 / MIB,
                free / MIB,
                quota / MIB
            ),
        ));
    }
    Ok(())
}
