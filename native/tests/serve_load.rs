//! `sphinx serve --parallel 4` under load on 127.0.0.1: 32 clients send 8 requests each
//! at once (text questions and image tasks, streamed or not); every request is answered,
//! none is lost or mixed up — each greedy answer equals the answer the server gives the
//! same request alone — and the run prints throughput and latency percentiles.
//! `SPHINX_LOAD_PARALLEL=1,4` compares batch sizes; `SPHINX_BIN` picks a (release) binary;
//! `SPHINX_LOAD_MODEL=DIR` serves another model (text questions only) for load figures.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{image_data_url, Server};

const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 8;

/// The distinct requests: text questions of several lengths and, with `images`, image tasks.
fn requests(images: bool) -> Vec<Value> {
    let text = |q: &str, max: u32| json!({ "messages": [{ "role": "user", "content": q }], "temperature": 0, "max_tokens": max });
    let image = |task: &str, q: &str, max: u32| {
        json!({
            "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": image_data_url() } }, { "type": "text", "text": q }] }],
            "sphinx": { "task": task }, "temperature": 0, "max_tokens": max,
        })
    };
    let mut all = vec![
        text("What shapes are there?", 16),
        text("Describe the picture in detail.", 24),
        text("How many circles are there?", 8),
        text("What colour is the square?", 12),
        text("Is there a triangle?", 20),
    ];
    if images {
        all.extend([image("ground", "the red circle", 32), image("vqa", "What colour is the circle?", 12), image("short-caption", "", 24)]);
    }
    all
}

/// One chat completion: (answer text, completion tokens), streamed or not.
fn ask(agent: &ureq::Agent, base: &str, body: &Value, stream: bool) -> (String, u64) {
    let mut body = body.clone();
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    let response = agent
        .post(&format!("{base}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("a request under load failed: {e}"));
    let text = response.into_string().unwrap();
    if !stream {
        let v: Value = serde_json::from_str(&text).unwrap();
        return (v["choices"][0]["message"]["content"].as_str().unwrap().to_string(), v["usage"]["completion_tokens"].as_u64().unwrap());
    }
    let chunks: Vec<Value> = text.lines().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let answer = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (answer, chunks.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn serve_answers_every_request_under_load_as_alone() {
    let parallels = std::env::var("SPHINX_LOAD_PARALLEL").unwrap_or_else(|_| "4".into());
    let model = std::env::var("SPHINX_LOAD_MODEL").ok();
    let bodies = requests(model.is_none());
    for parallel in parallels.split(',') {
        let mut args = vec!["--parallel", parallel, "--queue", "64", "--no-demo"];
        if let Some(m) = &model {
            args.extend(["--model", m.as_str()]);
        }
        let server = Server::start_logging(&args, Stdio::null());
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build();
        let alone: Vec<(String, u64)> = bodies.iter().map(|b| ask(&agent, &server.base, b, false)).collect();

        let started = Instant::now();
        let answers: Vec<(usize, String, u64, f64)> = std::thread::scope(|s| {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (agent, base, bodies) = (agent.clone(), server.base.clone(), &bodies);
                    s.spawn(move || {
                        (0..REQUESTS_PER_CLIENT)
                            .map(|k| {
                                let which = (3 * c + k) % bodies.len();
                                let t = Instant::now();
                                let (text, tokens) = ask(&agent, &base, &bodies[which], (c + k) % 2 == 1);
                                (which, text, tokens, t.elapsed().as_secs_f64())
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients.into_iter().flat_map(|c| c.join().expect("a client thread")).collect()
        });
        let wall = started.elapsed().as_secs_f64();

        assert_eq!(answers.len(), CLIENTS * REQUESTS_PER_CLIENT, "requests lost");
        for (which, text, tokens, _) in &answers {
            assert_eq!((text, tokens), (&alone[*which].0, &alone[*which].1), "request {which} under load (--parallel {parallel}) differs from alone");
        }
        let tokens: u64 = answers.iter().map(|a| a.2).sum();
        let mut latency: Vec<f64> = answers.iter().map(|a| a.3).collect();
        latency.sort_by(f64::total_cmp);
        eprintln!(
            "--parallel {parallel}: {} requests from {CLIENTS} clients in {wall:.1} s, {tokens} answer tokens at {:.1} tok/s; latency p50 {:.2} s, p95 {:.2} s",
            answers.len(),
            tokens as f64 / wall,
            percentile(&latency, 0.5),
            percentile(&latency, 0.95)
        );
    }
}
