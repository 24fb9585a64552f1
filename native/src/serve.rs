//! `sphinx serve-demo`: only the web demo of `sphinx serve` (the page, the JS package and
//! a model in the web format, `server/demo.rs`), without loading the model natively:
//! the browser runs it. On 127.0.0.1.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::server::demo::{routes, DemoFiles, WEB_DIR};
use crate::server::serve_until_signal;

/// The demo's default model: SPHINX-Micro, trained in `training/` and kept in the repository.
const DEMO_MODEL: &str = sphinx_native::load::DEFAULT_MODEL;

#[derive(Args)]
pub struct ServeArgs {
    /// The model the demo loads by default: a checkpoint directory (converted for the web
    /// on the page's first request, into a temporary directory removed on exit) or a
    /// `sphinx convert --web` directory (served as it is).
    #[arg(long, default_value = DEMO_MODEL)]
    model: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The `web/` directory holding `demo/` and the built package `dist/`.
    #[arg(long, default_value = WEB_DIR)]
    web: PathBuf,
}

pub fn run_serve(a: ServeArgs) -> Result<()> {
    let files = DemoFiles::new(a.web.clone(), a.model.clone());
    let model = a.model.display().to_string();
    serve_until_signal("127.0.0.1", a.port, routes(files.clone()), Some(&files), |addr| {
        println!("Serving the SPHINX web demo at http://{addr}/demo/ (model: {model})");
    })
}
