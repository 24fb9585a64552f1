//! Shards of a `sphinx convert --web` directory, fetched over HTTP, verified against
//! the manifest's SHA-256 (`crypto.subtle`), kept in the Cache API so a second load
//! needs no network, and reported as download progress. Only the shard being read is
//! held in wasm memory.

use std::cell::RefCell;
use std::collections::BTreeMap;

use js_sys::{ArrayBuffer, Function, Promise, Uint8Array};
use sphinx_core::error::WeightError;
use sphinx_core::weights::{ShardFetch, WebManifest};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

pub const CACHE_NAME: &str = "sphinx-web-weights";

fn js_err(file: &str, what: &str, e: JsValue) -> WeightError {
    WeightError::Io { file: file.into(), reason: format!("{what}: {}", e.as_string().unwrap_or_else(|| format!("{e:?}"))) }
}

/// `fetch` and `caches` of the window or the worker this runs in.
enum Scope {
    Window(web_sys::Window),
    Worker(web_sys::WorkerGlobalScope),
}

impl Scope {
    fn get() -> Self {
        let g = js_sys::global();
        match g.clone().dyn_into::<web_sys::Window>() {
            Ok(w) => Scope::Window(w),
            Err(_) => Scope::Worker(g.unchecked_into()),
        }
    }
    fn fetch(&self, url: &str) -> Promise {
        match self {
            Scope::Window(w) => w.fetch_with_str(url),
            Scope::Worker(w) => w.fetch_with_str(url),
        }
    }
    fn caches(&self) -> Result<web_sys::CacheStorage, JsValue> {
        match self {
            Scope::Window(w) => w.caches(),
            Scope::Worker(w) => w.caches(),
        }
    }
    fn crypto(&self) -> Result<web_sys::Crypto, JsValue> {
        match self {
            Scope::Window(w) => w.crypto(),
            Scope::Worker(w) => w.crypto(),
        }
    }
}

async fn bytes_of(response: web_sys::Response, file: &str) -> Result<Vec<u8>, WeightError> {
    let buf = response.array_buffer().map_err(|e| js_err(file, "reading the response", e))?;
    let buf: ArrayBuffer = JsFuture::from(buf).await.map_err(|e| js_err(file, "reading the response", e))?.unchecked_into();
    Ok(Uint8Array::new(&buf).to_vec())
}

async fn sha256_hex(scope: &Scope, file: &str, data: &[u8]) -> Result<String, WeightError> {
    let subtle = scope.crypto().map_err(|e| js_err(file, "no crypto", e))?.subtle();
    let digest = subtle
        .digest_with_str_and_u8_array("SHA-256", &mut data.to_vec())
        .map_err(|e| js_err(file, "hashing", e))?;
    let digest: ArrayBuffer = JsFuture::from(digest).await.map_err(|e| js_err(file, "hashing", e))?.unchecked_into();
    Ok(Uint8Array::new(&digest).to_vec().iter().map(|b| format!("{b:02x}")).collect())
}

/// Fetches `base/file` from the cache, else from the network (then verified and cached).
pub async fn fetch_file(base: &str, file: &str, sha256: Option<&str>) -> Result<(Vec<u8>, bool), WeightError> {
    let scope = Scope::get();
    let url = format!("{}/{file}", base.trim_end_matches('/'));
    let cache: Option<web_sys::Cache> = match scope.caches() {
        Ok(c) => JsFuture::from(c.open(CACHE_NAME)).await.ok().map(JsCast::unchecked_into),
        Err(_) => None,
    };
    if let Some(cache) = &cache {
        let hit = JsFuture::from(cache.match_with_str(&url)).await.map_err(|e| js_err(file, "reading the cache", e))?;
        if let Ok(response) = hit.dyn_into::<web_sys::Response>() {
            return Ok((bytes_of(response, file).await?, true));
        }
    }
    let response = JsFuture::from(scope.fetch(&url)).await.map_err(|e| js_err(file, "downloading", e))?;
    let response: web_sys::Response = response.unchecked_into();
    if !response.ok() {
        return Err(WeightError::Io { file: url, reason: format!("HTTP {}", response.status()) });
    }
    let data = bytes_of(response, file).await?;
    if let Some(want) = sha256 {
        let got = sha256_hex(&scope, file, &data).await?;
        if got != want {
            return Err(WeightError::Io { file: file.into(), reason: "SHA-256 does not match the manifest".into() });
        }
    }
    if let Some(cache) = &cache {
        let body = Uint8Array::from(data.as_slice());
        if let Ok(r) = web_sys::Response::new_with_opt_buffer_source(Some(&body)) {
            // A full quota is not fatal: the weights still load, just not from the cache next time.
            if let Err(e) = JsFuture::from(cache.put_with_str(&url, &r)).await {
                web_sys_log(&format!("sphinx: could not cache {file}: {e:?}"));
            }
        }
    }
    Ok((data, false))
}

fn web_sys_log(msg: &str) {
    let console = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("console")).ok();
    if let Some(log) = console.and_then(|c| js_sys::Reflect::get(&c, &JsValue::from_str("warn")).ok()).and_then(|f| f.dyn_into::<Function>().ok()) {
        let _ = log.call1(&JsValue::NULL, &JsValue::from_str(msg));
    }
}

/// The shard reader the browser loads through: one shard in memory at a time.
pub struct HttpShards {
    base: String,
    hashes: BTreeMap<String, String>,
    sizes: BTreeMap<String, u64>,
    current: RefCell<Option<(String, Vec<u8>)>>,
    progress: RefCell<(u64, u64, Vec<String>)>,
    on_progress: Option<Function>,
    pub from_cache: RefCell<u64>,
}

impl HttpShards {
    pub fn new(base: &str, manifest: &WebManifest, on_progress: Option<Function>) -> Self {
        let total = manifest.shards.iter().map(|s| s.bytes).sum();
        Self {
            base: base.to_string(),
            hashes: manifest.shards.iter().map(|s| (s.file.clone(), s.sha256.clone())).collect(),
            sizes: manifest.shards.iter().map(|s| (s.file.clone(), s.bytes)).collect(),
            current: RefCell::new(None),
            progress: RefCell::new((0, total, Vec::new())),
            on_progress,
            from_cache: RefCell::new(0),
        }
    }

    fn report(&self, file: &str) {
        let mut p = self.progress.borrow_mut();
        if !p.2.iter().any(|f| f == file) {
            p.2.push(file.to_string());
            p.0 += self.sizes.get(file).copied().unwrap_or(0);
            if let Some(f) = &self.on_progress {
                let _ = f.call2(&JsValue::NULL, &JsValue::from_f64(p.0 as f64), &JsValue::from_f64(p.1 as f64));
            }
        }
    }
}

impl ShardFetch for HttpShards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError> {
        let have = self.current.borrow().as_ref().is_some_and(|(f, _)| f == file);
        if !have {
            // Drop the previous shard before fetching the next.
            *self.current.borrow_mut() = None;
            let (data, cached) = fetch_file(&self.base, file, self.hashes.get(file).map(String::as_str)).await?;
            if cached {
                *self.from_cache.borrow_mut() += 1;
            }
            *self.current.borrow_mut() = Some((file.to_string(), data));
            self.report(file);
        }
        let cur = self.current.borrow();
        let data = &cur.as_ref().ok_or_else(|| WeightError::Io { file: file.into(), reason: "shard vanished".into() })?.1;
        let (s, e) = (offset as usize, (offset + len) as usize);
        data.get(s..e)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| WeightError::Truncated { file: file.into(), name: file.into(), start: offset, end: offset + len, len: data.len() as u64 })
    }
}
