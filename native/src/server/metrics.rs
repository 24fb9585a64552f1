//! `GET /metrics`: the server's counters in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

#[derive(Default)]
pub struct Metrics(Mutex<Counts>);

#[derive(Default)]
struct Counts {
    /// Chat completion responses by HTTP status.
    responses: BTreeMap<u16, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Requests waiting for the model.
    queued: i64,
    /// Requests in the batch (prefilling or decoding).
    running: usize,
    /// From arrival to the last token.
    request_seconds: Histogram,
    /// From arrival to the model taking the request.
    queue_seconds: Histogram,
}

#[derive(Default)]
struct Histogram {
    /// Observations ≤ each bound of [`BUCKETS`].
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(&BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counts) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn responded(&self, status: u16) {
        self.with(|c| *c.responses.entry(status).or_default() += 1);
    }

    pub fn enqueued(&self) {
        self.with(|c| c.queued += 1);
    }

    /// A request counted by [`Metrics::enqueued`] did not fit the queue after all.
    pub fn refused_from_queue(&self) {
        self.with(|c| c.queued -= 1);
    }

    /// The model took a request that waited `waited` seconds.
    pub fn dequeued(&self, waited: f64) {
        self.with(|c| {
            c.queued -= 1;
            c.queue_seconds.observe(waited);
        });
    }

    /// The batch now holds `n` requests.
    pub fn running(&self, n: usize) {
        self.with(|c| c.running = n);
    }

    /// A request answered `seconds` after it arrived.
    pub fn answered(&self, prompt_tokens: usize, completion_tokens: usize, seconds: f64) {
        self.with(|c| {
            c.prompt_tokens += prompt_tokens as u64;
            c.completion_tokens += completion_tokens as u64;
            c.request_seconds.observe(seconds);
        });
    }

    pub fn render(&self) -> String {
        self.with(|c| {
            let mut out = String::new();
            let _ = writeln!(out, "# HELP sphinx_requests_total Chat completion responses, by HTTP status.\n# TYPE sphinx_requests_total counter");
            for (status, n) in &c.responses {
                let _ = writeln!(out, "sphinx_requests_total{{status=\"{status}\"}} {n}");
            }
            let _ = writeln!(out, "# HELP sphinx_prompt_tokens_total Prompt tokens read (image positions included).\n# TYPE sphinx_prompt_tokens_total counter\nsphinx_prompt_tokens_total {}", c.prompt_tokens);
            let _ = writeln!(out, "# HELP sphinx_completion_tokens_total Tokens generated.\n# TYPE sphinx_completion_tokens_total counter\nsphinx_completion_tokens_total {}", c.completion_tokens);
            let _ = writeln!(out, "# HELP sphinx_queue_depth Requests waiting for the model.\n# TYPE sphinx_queue_depth gauge\nsphinx_queue_depth {}", c.queued);
            let _ = writeln!(out, "# HELP sphinx_running_requests Requests being answered together (at most --parallel).\n# TYPE sphinx_running_requests gauge\nsphinx_running_requests {}", c.running);
            c.request_seconds.write(&mut out, "sphinx_request_seconds", "From a request's arrival to its last token.");
            c.queue_seconds.write(&mut out, "sphinx_queue_seconds", "From a request's arrival to the model taking it.");
            out
        })
    }
}
