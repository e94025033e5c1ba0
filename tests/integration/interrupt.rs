//! Ctrl-C: the first SIGINT cancels running calls, keeps completed results and exits 130.

use std::process::Command;
use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test, agent, wait_with_limit};

const ONE_FAST_ONE_SLOW: &str = "\
name: interrupted
model_profiles:
  fast: {provider: mock, latency_ms: 10}
  slow: {provider: mock, latency_ms: 5000}
agents:
  - name: quick
    model_profile: fast
  - name: sluggish
    model_profile: slow
";

fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
}

/// Starts orc, lets the quick agent finish, sends SIGINT, and collects the output.
fn run_and_interrupt(args: &[&str]) -> (Option<i32>, String, String, Duration) {
    let test = Test::new()
        .ensemble(ONE_FAST_ONE_SLOW)
        .args(["invoke", ENSEMBLE, "hello"])
        .args(args);
    let start = Instant::now();
    let child = test.command().spawn().expect("spawn orc");
    // Long enough for start-up and the 10 ms agent, far shorter than the 5 s one.
    std::thread::sleep(Duration::from_millis(700));
    interrupt(child.id());
    let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(30));
    (code, stdout, stderr, start.elapsed())
}

#[test]
fn ctrl_c_keeps_completed_results() {
    let (code, stdout, stderr, elapsed) = run_and_interrupt(&["--output", "json"]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("the JSON document is still printed");
    assert_eq!(doc["status"], "interrupted");
    let quick = agent(&doc, "quick");
    assert_eq!(quick["status"], "succeeded", "{quick:#}");
    assert!(
        quick["output"]
            .as_str()
            .is_some_and(|o| o.contains("\"hello\"")),
        "{quick:#}"
    );
    let slow = agent(&doc, "sluggish");
    assert_eq!(slow["status"], "cancelled", "{slow:#}");
    assert!(slow["output"].is_null());
    assert_eq!(doc["totals"]["cancelled"], 1);
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Loose sanity bound: it stopped instead of waiting for the 5 s agent.
    assert!(elapsed < Duration::from_millis(4500), "took {elapsed:?}");
}

#[test]
fn ctrl_c_text_output_shows_completed_agents() {
    let (code, stdout, stderr, _) = run_and_interrupt(&["-q"]);
    assert_eq!(code, Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("== quick ==\n"), "{stdout}");
    assert!(!stdout.contains("sluggish"), "{stdout}");
}

#[test]
fn ctrl_c_jsonl_ends_with_run_finished() {
    let (code, stdout, stderr, _) = run_and_interrupt(&["--output", "jsonl"]);
    assert_eq!(code, Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("some events")).unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["result"]["status"], "interrupted");
}
