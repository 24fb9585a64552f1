//! `sphinx serve-demo`: the web demo (`web/demo/`), the JS package (`web/dist/`, built
//! by `web/build.sh`) and a model in the web format, served on 127.0.0.1. Any static
//! server does the same job; this one also converts the model on the fly.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;

use crate::convert::convert_web;

/// The demo's default model: SPHINX-Micro, trained in `training/` and kept in the repository.
const DEMO_MODEL: &str = sphinx_native::load::DEFAULT_MODEL;
const WEB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../web");

#[derive(Args)]
pub struct ServeArgs {
    /// The model the demo loads by default: a checkpoint directory (converted for the web
    /// at start-up) or a `sphinx convert --web` directory (served as it is).
    #[arg(long, default_value = DEMO_MODEL)]
    model: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The `web/` directory holding `demo/` and the built package `dist/`.
    #[arg(long, default_value = WEB_DIR)]
    web: PathBuf,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript",
        "css" => "text/css",
        "json" => "application/json",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ts" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file a URL path names: `/models/default/…` in the model, the rest under `web/`.
/// `None` for paths that try to leave those directories.
fn resolve(url: &str, web: &Path, model: &Path) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    let (root, rest) = match path.strip_prefix("/models/default/") {
        Some(rest) => (model, rest.to_string()),
        None => (web, path.trim_start_matches('/').to_string()),
    };
    let rel = Path::new(&rest);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    let full = root.join(rel);
    Some(if full.is_dir() { full.join("index.html") } else { full })
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

pub fn run_serve(a: ServeArgs) -> Result<()> {
    let model = if a.model.join("manifest.json").exists() {
        a.model.clone()
    } else {
        let dir = std::env::temp_dir().join(format!("sphinx-demo-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("[converting {} for the web]", a.model.display());
        convert_web(&a.model, &dir)?;
        dir
    };
    if !a.web.join("dist/sphinx.js").exists() {
        eprintln!("warning: {} is missing: build the JS package with web/build.sh, or the page cannot start", a.web.join("dist").display());
    }
    let server = tiny_http::Server::http(("127.0.0.1", a.port)).map_err(|e| anyhow::anyhow!("{e}")).context("starting the server")?;
    let port = server.server_addr().to_ip().map(|s| s.port()).unwrap_or(a.port);
    println!("Serving the SPHINX web demo at http://127.0.0.1:{port}/demo/ (model: {})", a.model.display());
    let server = Arc::new(server);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, web, model) = (server.clone(), a.web.clone(), model.clone());
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let response = match resolve(request.url(), &web, &model).map(|p| (std::fs::File::open(&p), p)) {
                        Some((Ok(file), path)) => {
                            let header = tiny_http::Header::from_bytes("Content-Type", content_type(&path)).ok();
                            let mut r = tiny_http::Response::from_file(file).boxed();
                            if let Some(h) = header {
                                r.add_header(h);
                            }
                            r
                        }
                        _ => tiny_http::Response::from_string("not found").with_status_code(404).boxed(),
                    };
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
