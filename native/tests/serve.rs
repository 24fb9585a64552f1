//! `sphinx serve` end to end over HTTP on 127.0.0.1, with the default model (SPHINX-Micro)
//! on the CPU: answers equal the CLI's greedy answers, streamed or not, and every bad
//! request gets its documented status and OpenAI-style error while the server goes on.

mod support;

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::{cli_answer, image_data_url, Server, MICRO};

#[test]
fn serve_answers_as_the_cli_does_streamed_or_not() {
    let server = Server::start(&[]);
    assert_eq!(ureq::get(&format!("{}/health", server.base)).call().unwrap().status(), 200);
    let models: Value = serde_json::from_str(&ureq::get(&format!("{}/v1/models", server.base)).call().unwrap().into_string().unwrap()).unwrap();
    assert_eq!(models["data"][0]["id"], "sphinx-micro", "{models}");
    assert_eq!(models["data"][0]["sphinx"]["format"], "bf16", "{models}");
    assert_eq!(models["data"][0]["sphinx"]["parallel"], 4, "{models}");

    // A text chat.
    let want = cli_answer(&["--prompt", "What shapes are there?", "--max-tokens", "24"]);
    let body = json!({ "model": "sphinx-micro", "messages": [{ "role": "user", "content": "What shapes are there?" }], "temperature": 0, "max_tokens": 24 });
    let got = server.chat(&body);
    assert_eq!(got["choices"][0]["message"]["content"], want["text"], "{got}");
    assert_eq!(got["usage"]["prompt_tokens"], json!(want["prompt_ids"].as_array().unwrap().len()), "{got}");
    assert_eq!(got["usage"]["completion_tokens"], json!(want["token_ids"].as_array().unwrap().len()), "{got}");
    assert!(matches!(got["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")), "{got}");

    // The same, streamed: the deltas add up to the answer, then the usage, then [DONE].
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({ "include_usage": true });
    let (status, sse) = server.post("/v1/chat/completions", &streamed.to_string(), None);
    assert_eq!(status, 200, "{sse}");
    let events: Vec<&str> = sse.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{sse}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, want["text"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["usage"], got["usage"], "{sse}");

    // Two turns: the history carries the first answer; the second equals `sphinx chat`'s.
    let chat = {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sphinx"))
            .args(["chat", "--temperature", "0", "--max-tokens", "16", "--device", "cpu"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"What shapes are there?\nAnd their colours?\n").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let turns: Vec<&str> = chat.lines().collect();
    assert_eq!(turns.len(), 2, "{chat:?}");
    let got = server.chat(&json!({
        "messages": [
            { "role": "user", "content": "What shapes are there?" },
            { "role": "assistant", "content": turns[0] },
            { "role": "user", "content": "And their colours?" },
        ],
        "temperature": 0, "max_tokens": 16,
    }));
    assert_eq!(got["choices"][0]["message"]["content"], turns[1], "{got}");

    // An image question with a data URL, as a SPHINX grounding task: the CLI's answer, and
    // its box in pixels beside it.
    let want = cli_answer(&["--image", &format!("{MICRO}/example.png"), "--task", "ground", "--query", "the red circle", "--max-tokens", "48"]);
    let got = server.chat(&json!({
        "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": image_data_url() } },
            { "type": "text", "text": "the red circle" },
        ] }],
        "sphinx": { "task": "ground" },
        "temperature": 0, "max_tokens": 48,
    }));
    assert_eq!(got["choices"][0]["message"]["content"], want["text"], "{got}");
    assert_eq!(got["sphinx"]["answer"]["entities"][0]["boxes"][0]["pixels"], want["answer"]["entities"][0]["boxes"][0]["pixels"], "{got}");

    // A stop string ends the answer before it.
    let full = want["text"].as_str().unwrap();
    let cut = &full[full.len() / 2..full.len() / 2 + 2];
    let got = server.chat(&json!({
        "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": image_data_url() } }, { "type": "text", "text": "the red circle" }] }],
        "sphinx": { "task": "ground" }, "temperature": 0, "max_tokens": 48, "stop": [cut],
    }));
    assert_eq!(got["choices"][0]["message"]["content"], json!(&full[..full.find(cut).unwrap()]), "{got}");
    assert_eq!(got["choices"][0]["finish_reason"], "stop");
}

/// A PNG whose header says 10000 × 10000 pixels (and nothing else that is valid).
fn huge_png_header() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(10_000u32.to_be_bytes());
    ihdr.extend(10_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png
}

#[test]
fn serve_refuses_bad_requests_with_openai_errors_and_goes_on() {
    let server = Server::start(&["--api-key", "secret", "--max-body-mb", "1"]);
    let key = Some("secret");
    let user = |content: Value| json!({ "messages": [{ "role": "user", "content": content }], "temperature": 0, "max_tokens": 4 });
    let with_image = |url: &str| user(json!([{ "type": "image_url", "image_url": { "url": url } }, { "type": "text", "text": "what is this?" }]));
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let cases: Vec<(&str, String, Option<&str>, u16)> = vec![
        ("no API key", user(json!("hi")).to_string(), None, 401),
        ("a wrong API key", user(json!("hi")).to_string(), Some("guess"), 401),
        ("malformed JSON", "{\"messages\": [".into(), key, 400),
        ("a field of the wrong type", json!({ "messages": [{ "role": "user", "content": "hi" }], "temperature": "hot" }).to_string(), key, 400),
        ("no messages", json!({ "messages": [] }).to_string(), key, 400),
        ("a system message", json!({ "messages": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi" }] }).to_string(), key, 400),
        ("a non-image data URL", with_image(&format!("data:text/plain;base64,{}", b64(b"hello"))).to_string(), key, 400),
        ("an http URL", with_image("https://example.com/cat.png").to_string(), key, 400),
        ("a 100-megapixel PNG header", with_image(&format!("data:image/png;base64,{}", b64(&huge_png_header()))).to_string(), key, 400),
        ("a corrupt PNG", with_image(&format!("data:image/png;base64,{}", b64(b"\x89PNG\r\n\x1a\nnot really"))).to_string(), key, 400),
        (
            "two images",
            user(json!([
                { "type": "image_url", "image_url": { "url": image_data_url() } },
                { "type": "image_url", "image_url": { "url": image_data_url() } },
                { "type": "text", "text": "compare" },
            ]))
            .to_string(),
            key,
            400,
        ),
        ("a prompt longer than the context", user(json!("hello ".repeat(20_000))).to_string().chars().take(1 << 20).collect::<String>(), key, 400),
    ];
    for (what, body, key, want) in cases {
        let (status, text) = server.post("/v1/chat/completions", &body, key);
        assert_eq!(status, want, "{what}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: the error is not JSON ({e}): {text}"));
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()) && error["error"]["type"].is_string(), "{what}: {error}");
    }
    let (status, text) = server.post_headers_only("/v1/chat/completions", 2 << 20, "secret");
    assert_eq!(status, 413, "a body over --max-body-mb: {text}");
    assert!(serde_json::from_str::<Value>(&text).is_ok_and(|e| e["error"]["message"].is_string()), "{text}");
    let (status, text) = server.post("/v1/nothing", "{}", key);
    assert_eq!(status, 404, "{text}");
    // And the next request is answered.
    let (status, text) = server.post("/v1/chat/completions", &user(json!("hi")).to_string(), key);
    assert_eq!(status, 200, "{text}");
    // /metrics counts them, in Prometheus' text format.
    let metrics = ureq::get(&format!("{}/metrics", server.base)).call().unwrap().into_string().unwrap();
    let value = |line: &str| metrics.lines().find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok());
    assert_eq!(value("sphinx_requests_total{status=\"200\"}"), Some(1.0), "{metrics}");
    assert_eq!(value("sphinx_requests_total{status=\"401\"}"), Some(2.0), "{metrics}");
    assert_eq!(value("sphinx_requests_total{status=\"413\"}"), Some(1.0), "{metrics}");
    assert!(value("sphinx_requests_total{status=\"400\"}").is_some_and(|n| n >= 10.0), "{metrics}");
    assert!(value("sphinx_completion_tokens_total").is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(value("sphinx_queue_depth"), Some(0.0), "{metrics}");
    assert_eq!(value("sphinx_running_requests"), Some(0.0), "{metrics}");
    assert!(value("sphinx_request_seconds_count").is_some_and(|n| n >= 1.0), "{metrics}");
}
