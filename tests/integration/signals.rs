//! SIGTERM and SIGHUP (issue 13): handled like Ctrl-C. New calls stop, running calls and
//! script process groups are cancelled, completed results are printed, the recording
//! (`--record`) and the run store are flushed, and orc exits 143 (SIGTERM) or 129 (SIGHUP).
//! Services and CI send SIGTERM, terminals that close send SIGHUP.

use std::process::Command;
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::Value;

use crate::support::{ENSEMBLE, Test, agent, wait_with_limit};

/// `quick` answers at once; `sluggish` would take five seconds; `script` starts once
/// `quick` is done and runs `sleep 30` in its own process group.
const MIXED: &str = "\
name: signalled
model_profiles:
  fast: {provider: mock, latency_ms: 10}
  slow: {provider: mock, latency_ms: 5000}
agents:
  - name: quick
    model_profile: fast
  - name: sluggish
    model_profile: slow
  - name: script
    type: script
    depends_on: [quick]
    run: [sh, slow.sh]
    timeout_seconds: 60
";

/// Starts `sleep 30` in the background, writes `SHELL_PID SLEEP_PID` to `pids.txt`, waits.
const SLOW_SH: &str = "\
sleep 30 &
echo \"$$ $!\" > pids.txt.tmp
mv pids.txt.tmp pids.txt
wait
";

/// Only `quick`, to replay what the interrupted run recorded.
const QUICK_ONLY: &str = "\
name: signalled
model_profiles:
  fast: {provider: mock, latency_ms: 10}
agents:
  - name: quick
    model_profile: fast
";

fn send(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// What came of a run stopped by a signal.
struct Stopped {
    test: Test,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    pids: Vec<u32>,
}

/// Runs `MIXED` with `args`, sends `signal` once `quick` is done and the script's `sleep`
/// runs, and collects what orc printed.
fn run_and_signal(signal: &str, args: &[&str]) -> Stopped {
    // No arguments of its own, so that later commands run in the same place.
    let test = Test::new()
        .ensemble(MIXED)
        .file("slow.sh", SLOW_SH)
        .file("quick.yaml", QUICK_ONLY);
    let pids_file = test.path().join("pids.txt");
    let child = test
        .command()
        .args(["invoke", ENSEMBLE, "go"])
        .args(args)
        .spawn()
        .expect("spawn orc");
    // The script runs after `quick` succeeded, so both are true once it wrote its pids.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pids_file.exists() {
        assert!(Instant::now() < deadline, "the script never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    send(signal, child.id());
    let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(30));
    assert!(!stderr.contains("panicked"), "{stderr}");
    let pids = std::fs::read_to_string(&pids_file)
        .expect("pids.txt")
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    Stopped {
        test,
        code,
        stdout,
        stderr,
        pids,
    }
}

/// The completed agent kept its result; the others were cancelled.
#[track_caller]
fn assert_interrupted_document(doc: &Value) {
    assert_eq!(doc["status"], "interrupted", "{doc:#}");
    let quick = agent(doc, "quick");
    assert_eq!(quick["status"], "succeeded", "{quick:#}");
    assert!(
        quick["output"].as_str().is_some_and(|o| o.contains("go")),
        "{quick:#}"
    );
    for name in ["sluggish", "script"] {
        let a = agent(doc, name);
        assert_eq!(a["status"], "cancelled", "{a:#}");
        assert!(a["output"].is_null(), "{a:#}");
    }
}

/// Waits (a few seconds at most) for `pid` to be gone. A zombie counts as gone: it no
/// longer runs, and in a container whose init does not reap orphans it stays in `/proc`.
#[track_caller]
fn assert_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // `PID (COMM) STATE ...`; COMM may hold spaces and parentheses.
                let after = &stat[stat.rfind(')')? + 1..];
                after.trim_start().chars().next()
            });
        match state {
            None | Some('Z' | 'X') => return,
            Some(_) if Instant::now() > deadline => {
                panic!("process {pid} still runs (state {state:?}) after orc exited")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `orc ARGS` in the test's directory and environment (same store).
fn orc(test: &Test, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = test.command();
    command.args(args);
    let child = command.spawn().expect("spawn orc");
    wait_with_limit(child, Duration::from_secs(30))
}

#[test]
fn sigterm_keeps_results_flushes_the_recording_and_the_store_and_exits_143() {
    let run = run_and_signal("TERM", &["--output", "json", "--record", "rec.jsonl"]);
    assert_eq!(
        run.code,
        Some(143),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let doc: Value = serde_json::from_str(&run.stdout).expect("the JSON document is printed");
    assert_interrupted_document(&doc);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);

    // The script and the `sleep` it started are gone.
    assert_eq!(run.pids.len(), 2, "{:?}", run.pids);
    for pid in &run.pids {
        assert_gone(*pid);
    }

    // The recording holds `quick`'s answer, and replays it.
    let recording = std::fs::read_to_string(run.test.path().join("rec.jsonl")).expect("rec.jsonl");
    assert!(!recording.trim().is_empty(), "the recording is empty");
    for line in recording.lines() {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a recorded response ({e}): {line}"));
        assert_eq!(
            entry["agent"], "quick",
            "only `quick` completed a call: {line}"
        );
    }
    let (code, stdout, stderr) = orc(
        &run.test,
        &[
            "invoke",
            "quick.yaml",
            "go",
            "--output",
            "json",
            "--replay",
            "rec.jsonl",
            "--no-store",
        ],
    );
    assert_eq!(code, Some(0), "replay: {stderr}");
    let replayed: Value = serde_json::from_str(&stdout).expect("the replay's document");
    assert_eq!(
        agent(&replayed, "quick")["output"],
        agent(&doc, "quick")["output"]
    );

    // The store recorded the run's end, not just a run whose process went away.
    let (code, stdout, stderr) = orc(&run.test, &["runs", "list", "--output", "json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rows: Value = serde_json::from_str(&stdout).expect("runs list JSON");
    let row = rows
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["id"] == doc["run_id"])
        .unwrap_or_else(|| panic!("run {} not listed: {rows:#}", doc["run_id"]));
    assert_eq!(row["status"], "interrupted", "{row:#}");
    assert!(
        row["finished_at"].is_string(),
        "the end was stored: {row:#}"
    );
    let usage = &doc["totals"]["usage"];
    assert!(
        usage["output_tokens"].as_u64().is_some_and(|t| t > 0),
        "{doc:#}"
    );
    assert_eq!(row["input_tokens"], usage["input_tokens"], "{row:#}");
    assert_eq!(row["output_tokens"], usage["output_tokens"], "{row:#}");
}

#[test]
fn sighup_is_handled_like_ctrl_c_and_exits_129() {
    let run = run_and_signal("HUP", &["--output", "json"]);
    assert_eq!(
        run.code,
        Some(129),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let doc: Value = serde_json::from_str(&run.stdout).expect("the JSON document is printed");
    assert_interrupted_document(&doc);
    for pid in &run.pids {
        assert_gone(*pid);
    }
}

#[test]
fn sigterm_with_text_output_prints_the_completed_agents() {
    let run = run_and_signal("TERM", &["--quiet"]);
    assert_eq!(run.code, Some(143), "stderr:\n{}", run.stderr);
    assert!(run.stdout.starts_with("== quick ==\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("sluggish"), "{}", run.stdout);
    for pid in &run.pids {
        assert_gone(*pid);
    }
}
