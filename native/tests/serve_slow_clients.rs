//! Clients that stall do not delay the others: with 8 connections open that sent
//! nothing, asked for a large file (the demo's model shard) or a streamed answer and
//! stopped reading, `sphinx serve` still answers a chat, the demo page and /health. On
//! SIGTERM it exits cleanly and removes the files it made (the model converted for the
//! demo), leaving nothing behind in its temporary directory.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::Server;

/// A connection that sends `request` (maybe nothing) and then never reads.
fn stalled(addr: &str, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s
}

#[test]
fn stalled_clients_delay_no_one_and_sigterm_removes_temporary_files() {
    let base = std::env::temp_dir().join(format!("sphinx-serve-test-{}", std::process::id()));
    let (tmp, runtime) = (base.join("tmp"), base.join("runtime"));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    let server = Server::start_with_tmp(&["--parallel", "4"], &tmp, &runtime);
    let addr = server.base.trim_start_matches("http://").to_string();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let get = |path: &str| agent.get(&format!("{}{path}", server.base)).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));

    // The demo's model, converted for the web on its first request, into TMPDIR.
    let manifest: Value = serde_json::from_str(&get("/models/default/manifest.json").into_string().unwrap()).unwrap();
    let shard = manifest["shards"][0]["file"].as_str().unwrap().to_string();
    assert!(manifest["shards"][0]["bytes"].as_u64().unwrap() > 8 << 20, "a shard large enough to fill the socket buffers");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1, "the conversion's directory is in TMPDIR");
    let question = json!({ "messages": [{ "role": "user", "content": "What shapes are there?" }], "temperature": 0, "max_tokens": 16 });
    let alone = server.chat(&question);

    let stream = json!({ "messages": [{ "role": "user", "content": "Describe the picture in detail." }], "max_tokens": 200, "stream": true }).to_string();
    let post = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{stream}", stream.len());
    let shard_request = format!("GET /models/default/{shard} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let _stalled: Vec<TcpStream> = [("", 3), (shard_request.as_str(), 3), (post.as_str(), 2)]
        .iter()
        .flat_map(|&(request, n)| (0..n).map(move |_| request))
        .map(|request| stalled(&addr, request))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    assert_eq!(server.chat(&question)["choices"][0]["message"]["content"], alone["choices"][0]["message"]["content"]);
    assert!(get("/demo/").into_string().unwrap().contains("<html"), "the demo page");
    assert_eq!(get("/health").status(), 200);

    // SIGTERM with the stalled connections still open: a clean exit, no files left.
    let status = server.terminate();
    assert!(status.success(), "sphinx serve exited with {status}");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "files left in TMPDIR after SIGTERM: {left:?}");
    std::fs::remove_dir_all(&base).unwrap();
}
