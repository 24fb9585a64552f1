//! Shards of a `sphinx convert --web` directory, fetched over HTTP, verified against
//! the manifest's SHA-256 (`crypto.subtle`), kept in the Cache API so a second load
//! needs no network, and reported as download progress. Only the shard being read is
//! held in wasm memory.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use js_sys::{ArrayBuffer, Function, Promise, Uint8Array};
use sphinx_core::api::DownloadProgress;
use sphinx_core::error::WeightError;
use sphinx_core::weights::{past_the_end, slice_range, ShardFetch, WebManifest};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::to_js;

pub const CACHE_NAME: &str = "sphinx-web-weights";

fn js_err(file: &str, what: &str, e: JsValue) -> WeightError {
    WeightError::Io { file: file.into(), reason: format!("{what}: {}", e.as_string().unwrap_or_else(|| format!("{e:?}"))) }
}

/// `fetch`, `caches` and `crypto` of the window or the worker this runs in.
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

async fn sha256_hex(scope: &Scope, file: &str, data: &mut [u8]) -> Result<String, WeightError> {
    let subtle = scope.crypto().map_err(|e| js_err(file, "no crypto", e))?.subtle();
    // Hashes the shard in place: no second copy of up to 32 MiB in wasm memory.
    let digest = subtle
        .digest_with_str_and_u8_array("SHA-256", data)
        .map_err(|e| js_err(file, "hashing", e))?;
    let digest: ArrayBuffer = JsFuture::from(digest).await.map_err(|e| js_err(file, "hashing", e))?.unchecked_into();
    Ok(Uint8Array::new(&digest).to_vec().iter().map(|b| format!("{b:02x}")).collect())
}

fn url_of(base: &str, file: &str) -> String {
    format!("{}/{file}", base.trim_end_matches('/'))
}

/// The weights cache, when the browser has one and caching is on.
pub async fn open_cache(enabled: bool) -> Option<web_sys::Cache> {
    if !enabled {
        return None;
    }
    let caches = Scope::get().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME)).await.ok().map(JsCast::unchecked_into)
}

async fn cached(cache: &web_sys::Cache, url: &str) -> Option<web_sys::Response> {
    JsFuture::from(cache.match_with_str(url)).await.ok()?.dyn_into::<web_sys::Response>().ok()
}

/// Bytes of `files` (name, size) under `base` that are not in the cache yet.
pub async fn missing_bytes(cache: &web_sys::Cache, base: &str, files: &[(String, u64)]) -> u64 {
    let mut missing = 0;
    for (file, bytes) in files {
        if cached(cache, &url_of(base, file)).await.is_none() {
            missing += bytes;
        }
    }
    missing
}

/// Fetches `base/file` from the cache, else from the network, verified against `sha256`
/// either way (a cache entry is no more trusted than the network), and caches it.
/// Returns the bytes and whether they came from the cache.
pub async fn fetch_file(
    cache: Option<&web_sys::Cache>,
    base: &str,
    file: &str,
    sha256: Option<&str>,
) -> Result<(Vec<u8>, bool), WeightError> {
    let scope = Scope::get();
    let url = url_of(base, file);
    let hit = match cache {
        Some(c) => cached(c, &url).await,
        None => None,
    };
    let from_cache = hit.is_some();
    let mut data = match hit {
        Some(hit) => bytes_of(hit, file).await?,
        None => {
            let response = JsFuture::from(scope.fetch(&url)).await.map_err(|e| js_err(&url, "downloading", e))?;
            let response: web_sys::Response = response.unchecked_into();
            if !response.ok() {
                return Err(WeightError::Io { file: url, reason: format!("HTTP {}", response.status()) });
            }
            bytes_of(response, file).await?
        }
    };
    if let Some(want) = sha256 {
        let got = sha256_hex(&scope, file, &mut data).await?;
        if got != want {
            if let (true, Some(c)) = (from_cache, cache) {
                let _ = c.delete_with_str(&url); // drop the bad entry so a reload downloads again
            }
            return Err(WeightError::Io { file: url, reason: "SHA-256 does not match the manifest".into() });
        }
    }
    if let (false, Some(cache)) = (from_cache, cache) {
        let body = Uint8Array::from(data.as_slice());
        if let Ok(r) = web_sys::Response::new_with_opt_buffer_source(Some(&body)) {
            // The quota was checked before downloading; if the browser still refuses,
            // the weights load anyway, just not from the cache next time.
            if let Err(e) = JsFuture::from(cache.put_with_str(&url, &r)).await {
                web_sys::console::warn_1(&format!("sphinx: could not cache {file}: {e:?}").into());
            }
        }
    }
    Ok((data, from_cache))
}

/// Download progress over every shard of a load (both models of a mix).
pub struct Progress {
    state: RefCell<(u64, u64, Vec<String>)>,
    on_progress: Option<Function>,
    pub from_cache: RefCell<usize>,
}

impl Progress {
    pub fn new(total: u64, on_progress: Option<Function>) -> Rc<Self> {
        Rc::new(Self { state: RefCell::new((0, total, Vec::new())), on_progress, from_cache: RefCell::new(0) })
    }

    fn report(&self, url: &str, bytes: u64, cached: bool) {
        let mut p = self.state.borrow_mut();
        if p.2.iter().any(|f| f == url) {
            return;
        }
        p.2.push(url.to_string());
        p.0 += bytes;
        if cached {
            *self.from_cache.borrow_mut() += 1;
        }
        if let Some(f) = &self.on_progress {
            let event = DownloadProgress { done_bytes: p.0 as f64, total_bytes: p.1 as f64, file: url.to_string(), cached };
            let _ = f.call1(&JsValue::NULL, &to_js(&event));
        }
    }
}

/// The shard reader the browser loads through: one shard in memory at a time.
pub struct HttpShards {
    base: String,
    cache: Option<web_sys::Cache>,
    hashes: BTreeMap<String, String>,
    sizes: BTreeMap<String, u64>,
    current: RefCell<Option<(String, Vec<u8>)>>,
    progress: Rc<Progress>,
}

impl HttpShards {
    pub fn new(base: &str, manifest: &WebManifest, cache: Option<web_sys::Cache>, progress: Rc<Progress>) -> Self {
        Self {
            base: base.to_string(),
            cache,
            hashes: manifest.shards.iter().map(|s| (s.file.clone(), s.sha256.clone())).collect(),
            sizes: manifest.shards.iter().map(|s| (s.file.clone(), s.bytes)).collect(),
            current: RefCell::new(None),
            progress,
        }
    }
}

impl ShardFetch for HttpShards {
    async fn fetch(&self, file: &str, offset: u64, len: u64) -> Result<Vec<u8>, WeightError> {
        let have = self.current.borrow().as_ref().is_some_and(|(f, _)| f == file);
        if !have {
            // Drop the previous shard before fetching the next.
            *self.current.borrow_mut() = None;
            let hash = self.hashes.get(file).ok_or_else(|| WeightError::Io { file: file.into(), reason: "not a shard of the manifest".into() })?;
            let (data, cached) = fetch_file(self.cache.as_ref(), &self.base, file, Some(hash)).await?;
            self.progress.report(&url_of(&self.base, file), self.sizes.get(file).copied().unwrap_or(0), cached);
            *self.current.borrow_mut() = Some((file.to_string(), data));
        }
        let cur = self.current.borrow();
        let data = &cur.as_ref().ok_or_else(|| WeightError::Io { file: file.into(), reason: "shard vanished".into() })?.1;
        slice_range(data, offset, len).map(<[u8]>::to_vec).ok_or_else(|| past_the_end(file, offset, len, data.len()))
    }
}
