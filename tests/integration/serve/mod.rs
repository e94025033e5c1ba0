//! `orc serve` through the real binary (issue 9): the JSON API, live events over SSE (with
//! reconnects), `/v1` with the official OpenAI Python SDK, `/metrics`, shutdown, and the
//! dashboard in a real browser. Each test starts `orc serve --bind 127.0.0.1:0` in a temp
//! dir of its own and reads the `listening on http://ADDR` line it prints first.

mod api;
mod browser;
mod events;
mod openai;
mod shutdown;

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Test;

/// Two agents on the instant mock, the second reading the first.
pub(crate) const PAIR: &str = "\
name: pair
description: a writer and an editor
defaults: { model_profile: mock-fast }
agents:
  - name: writer
    system_prompt: Write one sentence about the input.
  - name: editor
    depends_on: [writer]
    system_prompt: Tighten the sentence.
";

/// A chain of four agents at 300 ms each: slow enough to watch and to cancel.
pub(crate) const SLOW: &str = "\
name: slow
model_profiles:
  steady: { provider: mock, model: mock-1, latency_ms: 300 }
defaults: { model_profile: steady }
agents:
  - name: one
  - name: two
    depends_on: [one]
  - name: three
    depends_on: [two]
  - name: four
    depends_on: [three]
";

/// A running `orc serve`, stopped (SIGTERM, then killed) when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) base: String,
    pub(crate) stderr: Arc<Mutex<String>>,
    pub(crate) test: Test,
    pub(crate) token: Option<String>,
    pub(crate) http: reqwest::Client,
}

/// The HTTP client of the tests (plain HTTP; no TLS is involved).
pub(crate) fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .expect("build an HTTP client")
}

impl Server {
    /// Starts `orc serve ARGS --bind 127.0.0.1:0` in the test's directory.
    #[track_caller]
    pub(crate) fn start(test: Test, args: &[&str]) -> Server {
        let mut command = test.command();
        command.arg("serve").args(args);
        if !args.contains(&"--bind") {
            command.args(["--bind", "127.0.0.1:0"]);
        }
        let token = args
            .iter()
            .position(|a| *a == "--token")
            .map(|i| args[i + 1].to_string());
        let mut child = command.spawn().expect("spawn orc serve");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let log = Arc::new(Mutex::new(format!("{first}\n")));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Some(addr) = first.strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "the first stderr line is not `listening on http://ADDR`: {first:?}\n{}",
                log.lock().unwrap()
            );
        };
        Server {
            base: format!("http://{}", addr.trim()),
            child: Some(child),
            stderr: log,
            test,
            token,
            http: client(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .auth(self.http.get(self.url(path)))
            .send()
            .await
            .expect("GET");
        status_json(r).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .auth(self.http.post(self.url(path)).json(&body))
            .send()
            .await
            .expect("POST");
        status_json(r).await
    }

    /// Starts a run and returns its id.
    pub(crate) async fn start_run(&self, ensemble: &str, input: &str) -> String {
        let (status, body) = self
            .post(
                "/api/runs",
                serde_json::json!({ "ensemble": ensemble, "input": input }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().expect("an id").to_string()
    }

    /// Waits until the run's status is not `running`; its document.
    pub(crate) async fn wait_run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, doc) = self.get(&format!("/api/runs/{id}")).await;
            assert_eq!(status, 200, "{doc}");
            if doc["status"] != "running" {
                return doc;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish: {doc}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every SSE event of a run from `after`, until the server ends the stream.
    pub(crate) async fn events(&self, id: &str, last_event_id: Option<u64>) -> Vec<(u64, Value)> {
        let mut request = self.auth(self.http.get(self.url(&format!("/api/runs/{id}/events"))));
        if let Some(n) = last_event_id {
            request = request.header("Last-Event-ID", n.to_string());
        }
        let mut stream = SseStream::new(request.send().await.expect("GET events"));
        let mut out = Vec::new();
        while let Some(e) = stream.next().await {
            out.push(e);
        }
        out
    }

    /// Sends SIGTERM and waits for the process; its exit code.
    pub(crate) fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for orc serve") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("orc serve did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn unsafe_kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid this test spawned; no memory is involved.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("read the body");
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Server-Sent Events read from a response, one `(id, data as JSON)` at a time.
pub(crate) struct SseStream {
    response: reqwest::Response,
    buf: String,
}

impl SseStream {
    pub(crate) fn new(response: reqwest::Response) -> SseStream {
        assert_eq!(response.status(), 200, "an event stream answers 200");
        SseStream {
            response,
            buf: String::new(),
        }
    }

    pub(crate) async fn next(&mut self) -> Option<(u64, Value)> {
        loop {
            while let Some(cut) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..cut + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let value = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
                return Some((id.unwrap_or(0), value));
            }
            let chunk = self.response.chunk().await.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
