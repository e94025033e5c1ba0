//! Workers (issue 10): `orc invoke --redis` with `orc worker` processes, all the real
//! binary, against a real `redis-server` each test starts on a free loopback port, and the
//! fake OpenAI-compatible server (which counts and times every request).
//!
//! Without `redis-server` on the PATH a test prints why and passes, except in CI (`CI` is
//! set), where `.ci/run` installs it and a missing one is a failure.

mod basics;
mod generate;
mod kill;
mod limits;
mod restart;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) use crate::providers::fake::{Fake, Reply};
use crate::support::Test;

/// A `redis-server` of the test's own, on a loopback port, with its data in a temp dir.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persist: bool,
}

impl Redis {
    /// Starts a server, or `None` (after saying why) when `redis-server` is not installed
    /// outside CI. `persist`: every write is in an append-only file, so a restart keeps
    /// everything.
    pub(crate) fn start(persist: bool) -> Option<Redis> {
        if which("redis-server").is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed; .ci/run installs it"
            );
            eprintln!(
                "skipping: redis-server is not installed (apt-get install redis-server runs this test)"
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::Builder::new()
                .prefix("orc-redis-")
                .tempdir()
                .expect("a temp dir"),
            persist,
        };
        redis.spawn();
        Some(redis)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persist {
            command
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("always");
        } else {
            command.arg("--appendonly").arg("no");
        }
        self.child = Some(command.spawn().expect("start redis-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_up() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Answers PING.
    fn is_up(&self) -> bool {
        use std::io::Write;
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server: SIGTERM (a clean shutdown) or SIGKILL.
    pub(crate) fn stop(&mut self, kill: bool) {
        if let Some(mut child) = self.child.take() {
            let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
            // SAFETY: signalling a child process this test started and still owns.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data directory.
    pub(crate) fn restart(&mut self) {
        self.stop(false);
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Skips the test (returns) when there is no redis-server.
macro_rules! redis_or_skip {
    ($persist:expr) => {
        match $crate::worker::Redis::start($persist) {
            Some(redis) => redis,
            None => return,
        }
    };
}
pub(crate) use redis_or_skip;

/// A running `orc worker`, its stderr collected; killed when dropped.
pub(crate) struct WorkerProc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    _test: Test,
}

impl WorkerProc {
    /// `orc worker --redis URL --name NAME --concurrency N` and `extra` arguments, with
    /// debug logs of the worker module on stderr.
    pub(crate) fn start(redis: &Redis, name: &str, concurrency: u32, extra: &[&str]) -> WorkerProc {
        let test = Test::new()
            .args(["worker", "--redis", &redis.url(), "--name", name])
            .args(["--concurrency", &concurrency.to_string()])
            .args(extra.iter().copied())
            .env("ORC_LOG", "orc::worker=debug");
        let mut child = test.command().spawn().expect("start orc worker");
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("not poisoned")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let worker = WorkerProc {
            child,
            stderr,
            _test: test,
        };
        worker.wait_for_stderr("taking jobs");
        worker
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().expect("not poisoned").clone()
    }

    /// Waits until the worker said `text` on stderr (it is ready, it took a job, ...).
    #[track_caller]
    pub(crate) fn wait_for_stderr(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the worker never said {text:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OpenAI-compatible answer with these token counts.
pub(crate) fn answer(text: &str, input: u64, output: u64) -> Reply {
    Reply::json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    }))
}

/// `count` independent agents `a1`, `a2`, ... on profile `p` (the fake), each with its own
/// system prompt naming it (so requests can be told apart), and `profile_extra` keys on
/// the profile.
pub(crate) fn agents_yaml(fake: &Fake, count: usize, profile_extra: &str) -> String {
    let mut yaml = format!(
        "name: many\nmodel_profiles:\n  p: {{provider: openai-compatible, base_url: \"{}/v1\", model: gpt-test, price: {{input_per_mtok: 1.0, output_per_mtok: 2.0}}{profile_extra}}}\nagents:\n",
        fake.url()
    );
    for i in 1..=count {
        yaml.push_str(&format!(
            "  - name: a{i}\n    model_profile: p\n    system_prompt: agent a{i}\n"
        ));
    }
    yaml
}

/// Requests the fake received per agent (by the system prompt `agent NAME`).
pub(crate) fn requests_per_agent(fake: &Fake) -> std::collections::BTreeMap<String, usize> {
    let mut per = std::collections::BTreeMap::new();
    for r in fake.requests() {
        let system = r.body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = system.strip_prefix("agent ").unwrap_or(&system).to_string();
        *per.entry(name).or_insert(0) += 1;
    }
    per
}

/// `orc invoke ensemble.yaml hello --redis URL --output json` as a child process, with
/// `extra` arguments.
pub(crate) fn invoke(test: &Test, redis: &Redis, extra: &[&str]) -> Child {
    let mut command = test.command();
    command
        .args([
            "invoke",
            crate::support::ENSEMBLE,
            "hello",
            "--output",
            "json",
        ])
        .args(["--redis", &redis.url()])
        .args(extra);
    command.spawn().expect("start orc invoke")
}

/// Waits for a child `orc invoke`: (exit code, stdout as JSON, stderr).
#[track_caller]
pub(crate) fn finish(child: Child) -> (Option<i32>, Value, String) {
    let (code, stdout, stderr) = crate::support::wait_with_limit(child, Duration::from_secs(120));
    assert!(!stderr.contains("panicked"), "orc panicked:\n{stderr}");
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}):\n{stdout}\n--- stderr ---\n{stderr}")
    });
    (code, doc, stderr)
}

/// Waits until `ready()` holds.
#[track_caller]
pub(crate) fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
