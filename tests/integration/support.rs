//! The `Test` builder: a temp dir with files, the real `orc` binary run in it, and
//! assertions on what came back (modelled on casey/just `tests/test.rs`).
//!
//! Every run gets a clean environment: `HOME` and `XDG_CONFIG_HOME` point into the temp dir
//! so the user's configuration never leaks in, `NO_COLOR=1` and `--color never` keep the
//! output plain, and `ORC_*` variables of the caller are not inherited.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::Value;
use tempfile::TempDir;

/// Path of the binary under test.
pub(crate) const ORC: &str = env!("CARGO_BIN_EXE_orc");

/// Longest any single run may take before the test fails instead of hanging.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The usual file name of the ensemble under test.
pub(crate) const ENSEMBLE: &str = "ensemble.yaml";

#[must_use]
pub(crate) struct Test {
    dir: TempDir,
    current_dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    stdin: Option<Vec<u8>>,
}

impl Test {
    pub(crate) fn new() -> Test {
        let dir = tempfile::Builder::new()
            .prefix("orc-test-")
            .tempdir()
            .expect("create temp dir");
        let current_dir = dir.path().to_path_buf();
        Test {
            dir,
            current_dir,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            stdin: None,
        }
    }

    /// The temp dir every file is relative to.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` to `name` (relative to the temp dir), creating parent directories.
    pub(crate) fn file(self, name: impl AsRef<Path>, text: impl AsRef<[u8]>) -> Test {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        std::fs::write(&path, text).expect("write file");
        self
    }

    /// Writes the ensemble under test to `ensemble.yaml`.
    pub(crate) fn ensemble(self, yaml: &str) -> Test {
        self.file(ENSEMBLE, yaml)
    }

    /// Runs orc in this directory (relative to the temp dir; created if missing).
    pub(crate) fn current_dir(mut self, name: impl AsRef<Path>) -> Test {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).expect("create current dir");
        self.current_dir = path;
        self
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Test {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn stdin(mut self, text: impl Into<Vec<u8>>) -> Test {
        self.stdin = Some(text.into());
        self
    }

    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Test {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Leaves a variable of the clean environment (`XDG_CONFIG_HOME`, ...) unset.
    pub(crate) fn env_remove(mut self, key: impl Into<OsString>) -> Test {
        self.env_remove.push(key.into());
        self
    }

    /// The command this test would run, for tests that drive the process themselves
    /// (signals). Stdin is null; stdout and stderr are piped.
    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new(ORC);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env("NO_COLOR", "1")
            .current_dir(&self.current_dir)
            .arg("--color")
            .arg("never")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        for k in &self.env_remove {
            command.env_remove(k);
        }
        command
    }

    /// Runs orc and returns what it did. Fails the test if it runs for more than a minute.
    #[track_caller]
    pub(crate) fn run(self) -> Output {
        let mut command = self.command();
        if self.stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("spawn orc");
        if let Some(input) = self.stdin.clone() {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            std::thread::spawn(move || {
                // orc may legitimately exit without reading stdin (config errors).
                let _ = pipe.write_all(&input);
            });
        }
        let (code, stdout, stderr) = wait_with_limit(child, RUN_LIMIT);
        Output {
            code,
            stdout,
            stderr,
            test: self,
        }
    }
}

/// Collects a child's output, killing it (and failing) if it outlives `limit`.
#[track_caller]
pub(crate) fn wait_with_limit(mut child: Child, limit: Duration) -> (Option<i32>, String, String) {
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for orc") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("orc did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_reader.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().expect("stderr reader")).into_owned();
    (status.code(), stdout, stderr)
}

/// What a run of orc produced. Keeps the temp dir alive for follow-up checks.
pub(crate) struct Output {
    /// `None` when killed by a signal.
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) test: Test,
}

impl Output {
    #[track_caller]
    pub(crate) fn code(self, expected: i32) -> Output {
        assert!(
            !self.stderr.contains("panicked"),
            "orc panicked:\n--- stderr ---\n{}",
            self.stderr
        );
        assert!(
            self.code == Some(expected),
            "expected exit code {expected}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub(crate) fn success(self) -> Output {
        self.code(0)
    }

    /// Exit code 1: some agent failed, was skipped or cancelled.
    #[track_caller]
    pub(crate) fn failure(self) -> Output {
        self.code(1)
    }

    /// Exit code 2: invalid usage or configuration.
    #[track_caller]
    pub(crate) fn invalid(self) -> Output {
        self.code(2)
    }

    #[track_caller]
    pub(crate) fn stdout(self, expected: &str) -> Output {
        assert_eq!(self.stdout, expected, "stdout differs");
        self
    }

    #[track_caller]
    pub(crate) fn stderr(self, expected: &str) -> Output {
        assert_eq!(self.stderr, expected, "stderr differs");
        self
    }

    #[track_caller]
    pub(crate) fn stdout_contains(self, needle: &str) -> Output {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    #[track_caller]
    pub(crate) fn stderr_contains(self, needle: &str) -> Output {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// stdout parsed as JSON lines.
    #[track_caller]
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// stderr with the temp dir replaced by `[TEMP]`, for snapshots.
    pub(crate) fn stderr_redacted(&self) -> String {
        redact(&self.stderr, self.test.path())
    }

    /// stdout with the temp dir replaced by `[TEMP]`, for snapshots.
    pub(crate) fn stdout_redacted(&self) -> String {
        redact(&self.stdout, self.test.path())
    }
}

/// Replaces the temp dir (as given and canonicalized) with `[TEMP]`.
pub(crate) fn redact(text: &str, dir: &Path) -> String {
    let mut out = text.to_string();
    let mut forms = vec![dir.display().to_string()];
    if let Ok(canonical) = dir.canonicalize() {
        forms.push(canonical.display().to_string());
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for form in forms {
        out = out.replace(&form, "[TEMP]");
    }
    out
}

/// The agent of a `--output json` document with this name.
#[track_caller]
pub(crate) fn agent<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["agents"]
        .as_array()
        .expect("`agents` is an array")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no agent `{name}` in {doc:#}"))
}
