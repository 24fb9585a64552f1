//! The model's own thread: it loads the model, then answers the queued requests one at a
//! time, streaming each answer's text back to its request as events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sphinx_core::api::{ErrorKind, ParsedAnswer};
use sphinx_core::generate::{generate, Conversation, Role, StopReason};
use sphinx_core::model::SphinxModel;
use sphinx_core::preprocess::DecodeOptions;
use sphinx_core::error::SphinxError;
use sphinx_native::device::DeviceChoice;
use sphinx_native::load::{encode_image_bytes, load_model, ModelArgs};
use tokio::sync::mpsc;

use super::errors::ApiError;
use super::metrics::Metrics;
use super::openai::{Prepared, Usage};
use super::stop::StopMatcher;

/// One request for the model.
pub struct Job {
    pub id: String,
    pub prepared: Prepared,
    pub events: mpsc::UnboundedSender<Event>,
    /// Set when the client has gone: the answer ends after the current token.
    pub cancel: Arc<AtomicBool>,
    pub queued_at: Instant,
}

pub enum Event {
    /// The next piece of the answer.
    Text(String),
    Done(Finished),
    Failed(ApiError),
}

pub struct Finished {
    pub text: String,
    /// OpenAI's `finish_reason`: `stop` (end of turn or a stop string) or `length`.
    pub finish_reason: &'static str,
    pub usage: Usage,
    /// With a SPHINX task: the answer parsed into boxes and points, in pixels.
    pub sphinx: Option<serde_json::Value>,
}

/// What the server says about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelCard {
    pub variant: String,
    pub context_length: usize,
    pub multimodal: bool,
}

/// Starts the model's thread; returns once the model is loaded (or failed to load).
pub fn start(model: ModelArgs, device: DeviceChoice, jobs: mpsc::Receiver<Job>, metrics: Arc<Metrics>) -> Result<ModelCard> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("sphinx-model".into()).spawn(move || {
        let loaded = match load_model(&model, device) {
            Ok(m) => m,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let card = ModelCard { variant: loaded.llama_type().name().to_string(), context_length: loaded.config.max_seq_len, multimodal: loaded.vision.is_some() };
        let _ = ready_tx.send(Ok(card));
        serve_jobs(&loaded, &model, jobs, &metrics);
    })?;
    ready_rx.recv().map_err(|_| anyhow::anyhow!("the model thread stopped while loading"))?
}

fn serve_jobs(model: &SphinxModel, args: &ModelArgs, mut jobs: mpsc::Receiver<Job>, metrics: &Metrics) {
    while let Some(job) = jobs.blocking_recv() {
        metrics.dequeued(job.queued_at.elapsed().as_secs_f64());
        if job.cancel.load(Ordering::Relaxed) || job.events.is_closed() {
            eprintln!("[{}] cancelled while queued ({:.2} s)", job.id, job.queued_at.elapsed().as_secs_f64());
            continue;
        }
        let waited = job.queued_at.elapsed().as_secs_f64();
        let event = match answer(model, args, &job) {
            Ok((finished, timing)) => {
                eprintln!(
                    "[{}] {} prompt tokens at {:.1} tok/s, {} answer tokens at {:.1} tok/s, queued {waited:.2} s, finish: {}{}",
                    job.id,
                    finished.usage.prompt_tokens,
                    timing.prefill_rate,
                    finished.usage.completion_tokens,
                    timing.decode_rate,
                    finished.finish_reason,
                    if job.cancel.load(Ordering::Relaxed) && job.events.is_closed() { " (client left)" } else { "" }
                );
                metrics.answered(finished.usage.prompt_tokens, finished.usage.completion_tokens, job.queued_at.elapsed().as_secs_f64());
                Event::Done(finished)
            }
            Err(e) => {
                eprintln!("[{}] error {}: {}", job.id, e.status.as_u16(), e.message);
                Event::Failed(e)
            }
        };
        let _ = job.events.send(event);
    }
}

struct Timing {
    prefill_rate: f64,
    decode_rate: f64,
}

/// The answer to one request, its text streamed through `job.events` as it comes.
fn answer(model: &SphinxModel, args: &ModelArgs, job: &Job) -> Result<(Finished, Timing), ApiError> {
    let p = &job.prepared;
    let (geometry, image) = match &p.image {
        Some(_) if model.vision.is_none() => {
            return Err(ApiError::bad_param("messages", format!("'{}' is a text-only model: it takes no image", model.llama_type().name())))
        }
        Some(bytes) => {
            let (g, t) = encode_image_bytes(model, bytes, &DecodeOptions::default(), args).map_err(classify)?;
            (Some(g), Some(t))
        }
        None => (None, None),
    };
    let image_positions = image.as_ref().map_or(0, |t| t.dims()[1]);
    let question = p.ask.instruction(geometry).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut conversation = Conversation::new();
    for (role, text) in &p.history {
        conversation.push(*role, text);
    }
    conversation.push(Role::Human, &question);
    let ids = model.tokenizer.encode(&conversation.prompt(), true, false);
    let mut cache = model.llm.new_cache();
    let mut options = p.options.clone();
    options.cancel = Some(job.cancel.clone());

    let mut matcher = StopMatcher::new(p.stop.clone());
    let (mut text, mut stopped) = (String::new(), false);
    let send = |piece: String, text: &mut String| {
        if !piece.is_empty() {
            text.push_str(&piece);
            if job.events.send(Event::Text(piece)).is_err() {
                job.cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    let mut on_text = |piece: &str| {
        if !stopped {
            let (out, hit) = matcher.push(piece);
            send(out, &mut text);
            if hit {
                stopped = true;
                job.cancel.store(true, Ordering::Relaxed);
            }
        }
    };
    let g = pollster::block_on(generate(&model.llm, &model.tokenizer, &mut cache, &ids, image, &options, &mut on_text)).map_err(|e| classify(e.into()))?;
    if !stopped {
        let rest = matcher.finish();
        send(rest, &mut text);
    }
    let finish_reason = match g.stop {
        StopReason::MaxTokens if !stopped => "length",
        _ => "stop",
    };
    let sphinx = p.task.then(|| serde_json::to_value(ParsedAnswer::of(&text, geometry)).expect("a parsed answer serializes"));
    let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let timing = Timing { prefill_rate: rate(g.prompt_tokens, g.prefill_secs), decode_rate: g.tokens_per_sec() };
    Ok((Finished { text, finish_reason, usage: Usage::new(ids.len() + image_positions, g.tokens.len()), sphinx }, timing))
}

/// A failure as the client should see it: its own mistakes (a bad image, a prompt longer
/// than the context) are 400s, the rest 500s.
fn classify(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<SphinxError>().map(SphinxError::kind) {
        Some(ErrorKind::Image | ErrorKind::Input) => ApiError::bad_request(format!("{e:#}")),
        _ => ApiError::internal(format!("{e:#}")),
    }
}
