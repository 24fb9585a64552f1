//! The web demo at `/`: the page (`web/demo/`), the JS package (`web/dist/`, built by
//! `web/build.sh`) and the model in the web format at `/models/default/`, which the page
//! loads and runs in the browser on WebGPU. `sphinx serve` and `sphinx serve-demo` share
//! these routes. Files are streamed by tower-http (`ServeDir`, `ServeFile`): a client that
//! stops reading stalls only its own connection, never the others.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::sync::OnceCell;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use super::errors::ApiError;
use crate::convert::convert_web;

/// The `web/` directory of this source tree (the default where the demo is served from).
pub const WEB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../web");

/// Where the demo's files come from.
pub struct DemoFiles {
    /// `web/`, holding `demo/` and `dist/`.
    web: PathBuf,
    /// The model as given: a checkpoint directory, or one in the web format already.
    model: PathBuf,
    web_model: OnceCell<Result<PathBuf, String>>,
    /// The directory this run converted the model into; removed by [`DemoFiles::remove_temporary`]
    /// (and when dropped).
    converted: Mutex<Option<tempfile::TempDir>>,
}

impl DemoFiles {
    pub fn new(web: PathBuf, model: PathBuf) -> Arc<Self> {
        if !web.join("dist/sphinx.js").exists() {
            eprintln!("warning: {} is missing: build the JS package with web/build.sh, or the demo page cannot start", web.join("dist").display());
        }
        Arc::new(Self { web, model, web_model: OnceCell::new(), converted: Mutex::new(None) })
    }

    /// The model in the web format: its own directory when it is one (`manifest.json`),
    /// else converted once, on the first request for it, into a temporary directory.
    pub async fn web_model(self: &Arc<Self>) -> Result<PathBuf, String> {
        self.web_model
            .get_or_init(|| async {
                if self.model.join("manifest.json").exists() {
                    return Ok(self.model.clone());
                }
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.convert()).await.unwrap_or_else(|e| Err(format!("the conversion stopped: {e}")))
            })
            .await
            .clone()
    }

    fn convert(&self) -> Result<PathBuf, String> {
        let dir = tempfile::Builder::new().prefix("sphinx-demo-model-").tempdir().map_err(|e| format!("making a temporary directory: {e}"))?;
        let out = dir.path().join("model");
        eprintln!("[converting {} for the web demo into {}]", self.model.display(), out.display());
        // Kept before converting, so a shutdown during the conversion still removes it.
        *self.converted.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        convert_web(&self.model, &out).map_err(|e| format!("converting {} for the web: {e:#}", self.model.display()))?;
        Ok(out)
    }

    /// Removes the files this run made (the converted model), if any.
    pub fn remove_temporary(&self) {
        if let Some(dir) = self.converted.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let path = dir.path().to_path_buf();
            match dir.close() {
                Ok(()) => eprintln!("[removed {}]", path.display()),
                Err(e) => eprintln!("warning: could not remove {}: {e}", path.display()),
            }
        }
    }
}

/// `/` (the demo), `/models/default/…` (the model) and the rest of `web/` as files;
/// anything else is a 404 in the API's error format.
pub fn routes<S: Clone + Send + Sync + 'static>(files: Arc<DemoFiles>) -> Router<S> {
    let not_found = any(|| async { ApiError::not_found("no such endpoint or file: see /v1/models, /v1/chat/completions and /demo/") });
    let web = ServeDir::new(&files.web).append_index_html_on_directories(true).call_fallback_on_method_not_allowed(true).fallback(not_found);
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/demo/") }))
        .route("/models/default/{*path}", get(model_file))
        .with_state(files)
        .fallback_service(web)
}

async fn model_file(State(files): State<Arc<DemoFiles>>, request: Request) -> Response {
    let rel = request.uri().path().trim_start_matches("/models/default/").to_string();
    let Some(rel) = plain_relative(&rel) else {
        return ApiError::not_found("no such file").into_response();
    };
    let dir = match files.web_model().await {
        Ok(dir) => dir,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    match ServeFile::new(dir.join(rel)).oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// `path` (URL-decoded by the caller's router) as a path of plain names only: no `..`,
/// no root, nothing that leaves the directory it is joined to.
fn plain_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    let rel = Path::new(&decoded);
    (!decoded.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)))).then(|| rel.to_path_buf())
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
