//! Helpers shared by the server's tests: a `sphinx serve` child process on 127.0.0.1
//! with the default model (SPHINX-Micro) on the CPU, requests to it, and the CLI's answers.

#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const MICRO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/sphinx-micro");

/// A running `sphinx serve`, stopped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_logging(extra, Stdio::inherit())
    }

    /// A server whose per-request log lines go to `log`.
    pub fn start_logging(extra: &[&str], log: Stdio) -> Self {
        Self::spawn(Command::new(sphinx_bin()).args(["serve", "--port", "0", "--device", "cpu"]).args(extra).stderr(log))
    }

    /// A server whose temporary files go under `tmp` (`TMPDIR`), and whose display-less
    /// runtime directory (`process.rs`) is `runtime`.
    pub fn start_with_tmp(extra: &[&str], tmp: &std::path::Path, runtime: &std::path::Path) -> Self {
        let mut command = Command::new(sphinx_bin());
        command.args(["serve", "--port", "0", "--device", "cpu"]).args(extra).env("TMPDIR", tmp).env("XDG_RUNTIME_DIR", runtime);
        Self::spawn(command.stderr(Stdio::inherit()))
    }

    fn spawn(command: &mut Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("sphinx serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
        let base = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, base: format!("http://{}", base.trim_end_matches("/v1")) }
    }

    /// POSTs `body` to `path`: (status, body text).
    pub fn post(&self, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
        let mut req = ureq::post(&format!("{}{path}", self.base)).set("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{path}: {e}"),
        }
    }

    /// Sends only a POST's headers, declaring `length` bytes of body: (status, body text).
    /// (Sending a body larger than the server takes could fail to write once the server
    /// has answered and closed; this cannot.)
    pub fn post_headers_only(&self, path: &str, length: usize, key: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAuthorization: Bearer {key}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let _ = s.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {response:?}"));
        (status, response.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string()))
    }

    /// Sends SIGTERM and waits (at most a minute) for the server to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success(), "kill -TERM {pid}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "sphinx serve did not exit within a minute of SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn chat(&self, body: &Value) -> Value {
        let (status, text) = self.post("/v1/chat/completions", &body.to_string(), None);
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CLI's greedy answer (`sphinx generate --json`).
pub fn cli_answer(args: &[&str]) -> Value {
    let out = Command::new(sphinx_bin())
        .args(["generate", "--temperature", "0", "--device", "cpu", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn image_data_url() -> String {
    use base64::Engine;
    let png = std::fs::read(format!("{MICRO}/example.png")).unwrap();
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// The binary under test: `SPHINX_BIN` if set (a release build for load figures), else
/// this build's.
pub fn sphinx_bin() -> String {
    std::env::var("SPHINX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sphinx").to_string())
}
