//! The model's own thread: it loads the model, then answers the queued requests, up to
//! `--parallel` of them decoded together (continuous batching, docs/design.md §11),
//! streaming each answer's text back to its request as events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use sphinx_core::api::{ErrorKind, ParsedAnswer};
use sphinx_core::generate::{Batch, Conversation, Role, Sequence, StopReason};
use sphinx_core::model::SphinxModel;
use sphinx_core::preprocess::{DecodeOptions, PaddedSquare};
use sphinx_core::error::SphinxError;
use sphinx_native::device::DeviceChoice;
use sphinx_native::process::on_compute_threads;
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
    /// When the model took it from the queue.
    pub started_at: Option<Instant>,
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
    /// How the LLM's weights are held (`Llm::weight_format`).
    pub format: String,
    pub parallel: usize,
}

/// Starts the model's thread; returns once the model is loaded (or failed to load).
pub fn start(model: ModelArgs, device: DeviceChoice, jobs: mpsc::Receiver<Job>, metrics: Arc<Metrics>, parallel: usize) -> Result<ModelCard> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("sphinx-model".into()).spawn(move || {
        // The model's work is issued from one of the threads that run it (`on_compute_threads`).
        on_compute_threads(move || {
            let loaded = match load_model(&model, device) {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let card = ModelCard { variant: loaded.llama_type().name().to_string(), context_length: loaded.config.max_seq_len, multimodal: loaded.vision.is_some(), format: loaded.llm.weight_format(), parallel };
            let _ = ready_tx.send(Ok(card));
            serve_jobs(&loaded, &model, jobs, &metrics, parallel);
        })
    })?;
    ready_rx.recv().map_err(|_| anyhow::anyhow!("the model thread stopped while loading"))?
}

/// The model's loop: admits queued requests while fewer than `parallel` run, and
/// advances them together (`Batch`: one prefill chunk, then one token for every
/// decoding request), streaming each one's text to its client as it comes.
fn serve_jobs(model: &SphinxModel, args: &ModelArgs, mut jobs: mpsc::Receiver<Job>, metrics: &Metrics, parallel: usize) {
    let mut batch: Batch<Running> = Batch::default();
    loop {
        // Wait for a request while idle; otherwise take what is queued, up to `parallel`.
        while batch.len() < parallel.max(1) {
            let job = if batch.is_empty() {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            metrics.dequeued(job.queued_at.elapsed().as_secs_f64());
            if job.cancel.load(Ordering::Relaxed) || job.events.is_closed() {
                eprintln!("[{}] cancelled while queued ({:.2} s)", job.id, job.queued_at.elapsed().as_secs_f64());
                continue;
            }
            match admit(model, args, job) {
                Ok((running, seq)) => batch.join(running, seq),
                Err((job, e)) => {
                    eprintln!("[{}] error {}: {}", job.id, e.status.as_u16(), e.message);
                    let _ = job.events.send(Event::Failed(e));
                }
            }
        }
        metrics.running(batch.len());
        if let Err(e) = pollster::block_on(batch.advance(&model.llm, &model.tokenizer)) {
            // A fault in the shared forward pass: every running request fails with it.
            let e = classify(e.into());
            let failed = batch.take_all();
            metrics.running(0);
            for (r, _) in failed {
                eprintln!("[{}] error {}: {}", r.job.id, e.status.as_u16(), e.message);
                let _ = r.job.events.send(Event::Failed(e.clone()));
            }
            continue;
        }
        for (r, seq) in batch.iter_mut() {
            r.push_text(&seq.take_text());
        }
        // Finished answers leave; so do requests whose client left during their prefill.
        let leaving = batch.take_if(|r, s| s.is_finished() || (s.is_prefilling() && r.job.cancel.load(Ordering::Relaxed)));
        metrics.running(batch.len());
        for (r, seq) in leaving {
            r.finish(seq, model, metrics);
        }
    }
}

/// A request in the batch: its job, and its answer text as released to the client.
struct Running {
    job: Job,
    matcher: StopMatcher,
    /// A stop string was matched: the answer is complete, its sequence cancelled.
    stopped: bool,
    text: String,
    geometry: Option<PaddedSquare>,
    /// Prompt positions, the image block's included.
    positions: usize,
}

impl Running {
    /// Releases the new answer text, cut at a request's stop string.
    fn push_text(&mut self, piece: &str) {
        if self.stopped || piece.is_empty() {
            return;
        }
        let (out, hit) = self.matcher.push(piece);
        self.send(out);
        if hit {
            self.stopped = true;
            self.job.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn send(&mut self, piece: String) {
        if !piece.is_empty() {
            self.text.push_str(&piece);
            if self.job.events.send(Event::Text(piece)).is_err() {
                self.job.cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The answer is complete (or abandoned): its last event, a log line, the metrics.
    fn finish(mut self, seq: Sequence, model: &SphinxModel, metrics: &Metrics) {
        let (g, _) = seq.into_generation(&model.tokenizer);
        if !self.stopped {
            let rest = self.matcher.finish();
            self.send(rest);
        }
        let finish_reason = match g.stop {
            StopReason::MaxTokens if !self.stopped => "length",
            _ => "stop",
        };
        let job = &self.job;
        let rate = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        eprintln!(
            "[{}] {} prompt tokens at {:.1} tok/s, {} answer tokens at {:.1} tok/s, queued {:.2} s, finish: {finish_reason}{}",
            job.id,
            self.positions,
            rate(self.positions, g.prefill_secs),
            g.tokens.len(),
            g.tokens_per_sec(),
            job.started_at.map_or(0.0, |t| t.duration_since(job.queued_at).as_secs_f64()),
            if job.cancel.load(Ordering::Relaxed) && job.events.is_closed() { " (client left)" } else { "" }
        );
        metrics.answered(self.positions, g.tokens.len(), job.queued_at.elapsed().as_secs_f64());
        let p = &job.prepared;
        let sphinx = p.task.then(|| serde_json::to_value(ParsedAnswer::of(&self.text, self.geometry)).expect("a parsed answer serializes"));
        let usage = Usage::new(self.positions, g.tokens.len());
        let _ = job.events.send(Event::Done(Finished { text: std::mem::take(&mut self.text), finish_reason, usage, sphinx }));
    }
}

/// Turns a request into a sequence for the batch: its image encoded, its conversation
/// rendered and tokenized, checked against the context.
fn admit(model: &SphinxModel, args: &ModelArgs, mut job: Job) -> Result<(Running, Sequence), (Job, ApiError)> {
    job.started_at = Some(Instant::now());
    match prepare(model, args, &job) {
        Ok((seq, geometry, positions)) => {
            let matcher = StopMatcher::new(job.prepared.stop.clone());
            Ok((Running { job, matcher, stopped: false, text: String::new(), geometry, positions }, seq))
        }
        Err(e) => Err((job, e)),
    }
}

fn prepare(model: &SphinxModel, args: &ModelArgs, job: &Job) -> Result<(Sequence, Option<PaddedSquare>, usize), ApiError> {
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
    let mut options = p.options.clone();
    options.cancel = Some(job.cancel.clone());
    let seq = Sequence::new(&model.llm, &model.tokenizer, model.llm.new_cache(), &ids, image, &options).map_err(|e| classify(e.into()))?;
    Ok((seq, geometry, ids.len() + image_positions))
}

/// A failure as the client should see it: its own mistakes (a bad image, a prompt longer
/// than the context) are 400s, the rest 500s.
fn classify(e: anyhow::Error) -> ApiError {
    match e.downcast_ref::<SphinxError>().map(SphinxError::kind) {
        Some(ErrorKind::Image | ErrorKind::Input) => ApiError::bad_request(format!("{e:#}")),
        _ => ApiError::internal(format!("{e:#}")),
    }
}
