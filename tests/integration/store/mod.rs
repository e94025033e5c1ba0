//! The run store, `orc runs`, `orc resume`, the cache and the event stream (issue 8),
//! through the real binary: runs killed with -9 and resumed against a fake model that
//! counts requests, the `runs` subcommands, caching across runs and within one, a store that
//! cannot be used, two processes sharing one store, and the events' numbering.
//!
//! Every test has a `Session`: a temp dir whose `home/` is the `HOME` of every command it
//! runs, so they share the store at its default place (`~/.local/share/orc/orc.db`).

mod cache;
mod concurrent;
mod degraded;
mod events;
mod generate;
mod model;
mod resume;
mod runs;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::{Output, Test};

/// Several commands sharing one home, and so one store.
pub(crate) struct Session {
    dir: TempDir,
}

impl Session {
    pub(crate) fn new() -> Session {
        Session {
            dir: tempfile::Builder::new()
                .prefix("orc-store-")
                .tempdir()
                .expect("create temp dir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the store is by default for this session's commands.
    pub(crate) fn store(&self) -> PathBuf {
        self.dir.path().join("home/.local/share/orc/orc.db")
    }

    /// Writes a file of the session (relative to its dir); returns its path.
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// `orc ARGS` in the session's dir with its home.
    pub(crate) fn orc<I, S>(&self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        Test::new()
            .env("HOME", self.dir.path().join("home"))
            .current_dir(self.dir.path())
            .args(args)
    }

    /// Runs `orc ARGS` and returns what it did.
    #[track_caller]
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.orc(args).run()
    }

    /// `orc runs list --output json EXTRA` (up to 1000 runs unless `EXTRA` says).
    #[track_caller]
    pub(crate) fn runs(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["runs", "list", "--output", "json"];
        if !extra.contains(&"--limit") {
            args.extend(["--limit", "1000"]);
        }
        args.extend_from_slice(extra);
        let out = self.run(&args).success();
        out.json()
            .as_array()
            .unwrap_or_else(|| panic!("not an array: {}", out.stdout))
            .clone()
    }

    /// The status `orc runs list` gives run `id`.
    #[track_caller]
    pub(crate) fn status_of(&self, id: &str) -> String {
        self.runs(&[])
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("run `{id}` is not listed"))["status"]
            .as_str()
            .expect("a status")
            .to_string()
    }

    /// `orc ARGS`, started: its `--output jsonl` events are collected as they come.
    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.orc(args).command().spawn().expect("spawn orc"))
    }

    /// The store, opened directly (to look at it, or to age a run).
    #[track_caller]
    pub(crate) fn sql(&self) -> rusqlite::Connection {
        self.try_sql().expect("open the store")
    }

    /// The store, opened directly if it exists (never created here: orc creates it).
    pub(crate) fn try_sql(&self) -> Option<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            self.store(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .ok()?;
        conn.busy_timeout(Duration::from_secs(10)).ok()?;
        Some(conn)
    }
}

/// A running `orc` whose stdout is JSON lines, read as they come.
pub(crate) struct Running {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn start(mut child: Child) -> Running {
        let out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                sink.lock().expect("not poisoned").push(event);
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Running {
            child,
            events,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// The events printed so far.
    pub(crate) fn events(&self) -> Vec<Value> {
        self.events.lock().expect("not poisoned").clone()
    }

    /// The run id, from the first event.
    #[track_caller]
    pub(crate) fn run_id(&self) -> String {
        wait_until("the run's first event", || !self.events().is_empty());
        self.events()[0]["run_id"]
            .as_str()
            .expect("events carry `run_id`")
            .to_string()
    }

    /// Kills the process with SIGKILL; returns what it printed.
    pub(crate) fn kill9(mut self) -> (Vec<Value>, String) {
        self.child.kill().expect("kill -9 orc");
        let status = self.child.wait().expect("reap orc");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "orc had already ended: {status:?}"
        );
        self.collect()
    }

    fn collect(&mut self) -> (Vec<Value>, String) {
        if let Some(t) = self.stdout.take() {
            t.join().expect("stdout reader");
        }
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default();
        (self.events(), stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` until it holds; fails the test after 30 s.
#[track_caller]
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The events of one type.
pub(crate) fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}
