//! `sphinx serve`: an OpenAI-compatible HTTP API over one loaded model (README, "HTTP
//! server"), on axum + tokio. Requests are checked and translated on the async side
//! (`openai.rs`), queued (bounded: a full queue is a 503), and answered by the model's
//! thread (`worker.rs`), up to `--parallel` at once in one batch, which streams each
//! answer back as it is generated.

pub(crate) mod demo;
mod errors;
mod metrics;
mod openai;
mod stop;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};
use sphinx_core::generate::GenerationOptions;
use sphinx_native::load::{ModelArgs, MAX_IMAGE_FILE};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::SamplingArgs;
use errors::ApiError;
use openai::{ChatRequest, ImagePolicy};
use worker::{Event, Finished, Job, ModelCard};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The sampling defaults for requests that do not set them.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on the API's endpoints.
    #[arg(long)]
    api_key: Option<String>,
    /// Largest request body in MiB (images come inside it, base64-encoded).
    #[arg(long, default_value_t = 20)]
    max_body_mb: usize,
    /// Requests decoded together (continuous batching): each step feeds every running
    /// answer's last token in one forward pass, so N answers cost far less than N times one.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    parallel: u16,
    /// Requests that may wait for a place in the batch; more are refused with 503.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Let `file://` image URLs read images under this directory.
    #[arg(long)]
    allow_files: Option<PathBuf>,
    /// The `web/` directory whose demo page (running the model in the browser) is served
    /// at `/`, with the model converted to the web format on the page's first request.
    #[arg(long, default_value = demo::WEB_DIR)]
    web: PathBuf,
    /// Serve the API only: no demo page, no web conversion.
    #[arg(long)]
    no_demo: bool,
}

struct AppState {
    jobs: mpsc::Sender<Job>,
    queue: usize,
    api_key: Option<String>,
    max_body_mb: usize,
    allow_files: Option<PathBuf>,
    defaults: GenerationOptions,
    model_id: String,
    card: ModelCard,
    next_id: AtomicU64,
    metrics: Arc<metrics::Metrics>,
}

impl AppState {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else { return Ok(()) };
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(key.as_str()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

pub fn run_serve(a: ServeArgs) -> Result<()> {
    let (jobs, queue_rx) = mpsc::channel(a.queue.max(1));
    let metrics = Arc::new(metrics::Metrics::default());
    let card = worker::start(a.model.clone(), a.sampling.device, queue_rx, metrics.clone(), usize::from(a.parallel))?;
    let model_id = a.model.model.file_name().map_or("sphinx".into(), |n| n.to_string_lossy().into_owned());
    let state = Arc::new(AppState {
        jobs,
        queue: a.queue.max(1),
        api_key: a.api_key.clone(),
        max_body_mb: a.max_body_mb,
        allow_files: a.allow_files.clone(),
        defaults: a.sampling.options(),
        model_id,
        card,
        next_id: AtomicU64::new(1),
        metrics,
    });
    let demo = (!a.no_demo).then(|| demo::DemoFiles::new(a.web.clone(), a.model.model.clone()));
    let app = router(state, demo.clone());
    let model = a.model.model.display().to_string();
    serve_until_signal(&a.host, a.port, app, demo.as_deref(), |addr| {
        println!("sphinx serve: listening on http://{addr}/v1 (model {model}); demo page at http://{addr}/demo/");
    })
}

/// How long open connections get to finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `app` on `host:port` until SIGINT or SIGTERM; then open connections get
/// [`SHUTDOWN_GRACE`] to finish (a client that stopped reading would hold them forever),
/// and the files this run made for the demo are removed.
pub(crate) fn serve_until_signal(host: &str, port: u16, app: Router, demo: Option<&demo::DemoFiles>, announce: impl FnOnce(std::net::SocketAddr)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((host, port)).await.with_context(|| format!("listening on {host}:{port}"))?;
        announce(listener.local_addr()?);
        let stopping = Arc::new(tokio::sync::Notify::new());
        let notify = stopping.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            notify.notify_one();
        });
        tokio::select! {
            r = server => r?,
            () = async { stopping.notified().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
                eprintln!("sphinx serve: closing the connections still open after {} s", SHUTDOWN_GRACE.as_secs());
            }
        }
        anyhow::Ok(())
    });
    if let Some(d) = demo {
        d.remove_temporary();
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    eprintln!("sphinx serve: stopped");
    served
}

fn router(state: Arc<AppState>, demo: Option<Arc<demo::DemoFiles>>) -> Router {
    let api = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/v1/models", get(models))
        .route("/metrics", get(|State(s): State<Arc<AppState>>| async move { ([("content-type", "text/plain; version=0.0.4")], s.metrics.render()) }))
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(state);
    match demo {
        Some(files) => api.merge(demo::routes(files)),
        None => api.fallback(|| async { ApiError::not_found("no such endpoint: see /v1/models and /v1/chat/completions") }),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
}

fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

async fn models(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = s.authorize(&headers) {
        return e.into_response();
    }
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.model_id,
            "object": "model",
            "created": 0,
            "owned_by": "sphinx-webgpu",
            "sphinx": {
                "variant": s.card.variant, "format": s.card.format, "context_length": s.card.context_length,
                "multimodal": s.card.multimodal, "parallel": s.card.parallel,
            },
        }],
    }))
    .into_response()
}

/// Sets the job's cancel flag when dropped: the request's future or stream is dropped
/// when its client disconnects.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn chat_completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let response = answer_chat(&s, headers, body).await;
    s.metrics.responded(response.status().as_u16());
    response
}

async fn answer_chat(s: &Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    if let Err(e) = s.authorize(&headers) {
        return e.into_response();
    }
    let body = match read_body(body, &headers, s.max_body_mb).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("the body is not a valid chat completion request: {e}")).into_response(),
    };
    let policy = ImagePolicy { allow_files: s.allow_files.as_deref(), max_file_bytes: MAX_IMAGE_FILE };
    let prepared = match request.prepare(&s.defaults, &policy) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let (stream, include_usage) = (prepared.stream, prepared.include_usage);
    let id = format!("chatcmpl-{}", s.next_id.fetch_add(1, Ordering::Relaxed));
    let (events, mut rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job { id: id.clone(), prepared, events, cancel: cancel.clone(), queued_at: Instant::now(), started_at: None };
    s.metrics.enqueued();
    if let Err(e) = s.jobs.try_send(job) {
        s.metrics.refused_from_queue();
        return match e {
            mpsc::error::TrySendError::Full(_) => ApiError::busy(s.queue).into_response(),
            mpsc::error::TrySendError::Closed(_) => ApiError::internal("the model's thread has stopped").into_response(),
        };
    }
    let guard = CancelOnDrop(cancel);
    let created = unix_time();
    if !stream {
        let _guard = guard;
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(_) => {}
                Event::Done(f) => return Json(completion(&id, created, &s.model_id, f)).into_response(),
                Event::Failed(e) => return e.into_response(),
            }
        }
        return ApiError::internal("the model's thread stopped before answering").into_response();
    }
    // Streamed: events become server-sent chunks, in a task that ends (dropping the guard,
    // which cancels the answer) when the client stops reading.
    let (out, sse_rx) = mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(16);
    let model = s.model_id.clone();
    tokio::spawn(async move {
        let _guard = guard;
        let chunk = |delta: Value, finish: Option<&str>, extra: Option<Value>| {
            let mut c = json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            if include_usage {
                c["usage"] = Value::Null;
            }
            if let Some(extra) = extra {
                c["sphinx"] = extra;
            }
            SseEvent::default().data(c.to_string())
        };
        let send = |e: SseEvent| out.send(Ok(e));
        if send(chunk(json!({ "role": "assistant", "content": "" }), None, None)).await.is_err() {
            return;
        }
        while let Some(event) = rx.recv().await {
            match event {
                Event::Text(t) => {
                    if send(chunk(json!({ "content": t }), None, None)).await.is_err() {
                        return;
                    }
                }
                Event::Done(f) => {
                    let _ = send(chunk(json!({}), Some(f.finish_reason), f.sphinx)).await;
                    if include_usage {
                        let usage = json!({ "id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [], "usage": f.usage });
                        let _ = send(SseEvent::default().data(usage.to_string())).await;
                    }
                    let _ = send(SseEvent::default().data("[DONE]")).await;
                    return;
                }
                Event::Failed(e) => {
                    let _ = send(SseEvent::default().data(e.body().to_string())).await;
                    let _ = send(SseEvent::default().data("[DONE]")).await;
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(sse_rx)).keep_alive(KeepAlive::default()).into_response()
}

/// The request's body, at most `max_mb` MiB: a larger declared length is refused before
/// anything is read, a longer body as soon as it passes the limit.
async fn read_body(body: Body, headers: &HeaderMap, max_mb: usize) -> Result<Vec<u8>, ApiError> {
    let limit = max_mb.saturating_mul(1 << 20);
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(max_mb));
    }
    let mut data = body.into_data_stream();
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::too_large(max_mb));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A finished answer as OpenAI's `chat.completion` (with the parsed task answer beside
/// it when a SPHINX task was asked).
fn completion(id: &str, created: u64, model: &str, f: Finished) -> Value {
    let mut c = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": f.text }, "finish_reason": f.finish_reason }],
        "usage": f.usage,
    });
    if let Some(s) = f.sphinx {
        c["sphinx"] = s;
    }
    c
}
