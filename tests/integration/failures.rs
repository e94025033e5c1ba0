//! When agents fail: timeouts, retries, fallbacks, dependency failures, the run timeout and
//! the budget.

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test, agent};

#[track_caller]
fn run_json(yaml: &str, extra: &[&str], code: i32) -> (serde_json::Value, String) {
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "some input", "--output", "json"])
        .args(extra)
        .run()
        .code(code);
    (out.json(), out.stderr)
}

#[test]
fn agent_timeout_shorter_than_the_model_latency() {
    let yaml = "\
name: slowpoke
model_profiles:
  slow: {provider: mock, latency_ms: 2000}
agents:
  - name: slow
    model_profile: slow
    timeout_seconds: 0.05
    retries: 0
  - name: quick
    model_profile: mock-fast
";
    let (doc, stderr) = run_json(yaml, &[], 1);
    assert_eq!(doc["status"], "failed");
    let slow = agent(&doc, "slow");
    assert_eq!(slow["status"], "failed");
    assert!(
        slow["error"].as_str().unwrap().contains("timed out"),
        "{slow:#}"
    );
    assert_eq!(slow["attempts"], 1);
    assert!(slow["output"].is_null());
    assert_eq!(agent(&doc, "quick")["status"], "succeeded");
    assert!(
        stderr.contains("error: agent `slow` failed after 1 attempt: timed out"),
        "{stderr}"
    );
}

#[test]
fn timeouts_are_retried() {
    let yaml = "\
name: slowpoke
model_profiles:
  slow: {provider: mock, latency_ms: 2000}
agents:
  - name: slow
    model_profile: slow
    timeout_seconds: 0.02
    retries: 2
    retry_backoff_ms: 1
";
    let (doc, _) = run_json(yaml, &[], 1);
    let slow = agent(&doc, "slow");
    assert_eq!(slow["status"], "failed");
    assert_eq!(slow["attempts"], 3, "{slow:#}");
}

const STOPPED: &str = "\
name: stopped
model_profiles:
  slow: {provider: mock, latency_ms: 5000}
agents:
  - name: quick
    model_profile: mock-fast
  - name: slow
    model_profile: slow
  - name: after
    model_profile: mock-fast
    depends_on: [slow]
";

#[test]
fn run_timeout_keeps_completed_agents() {
    let (doc, stderr) = run_json(STOPPED, &["--timeout", "0.3"], 1);
    assert_eq!(doc["status"], "timed_out");
    let quick = agent(&doc, "quick");
    assert_eq!(quick["status"], "succeeded");
    assert!(quick["output"].as_str().is_some_and(|o| !o.is_empty()));
    assert_eq!(agent(&doc, "slow")["status"], "cancelled");
    assert_eq!(agent(&doc, "after")["status"], "cancelled");
    assert_eq!(doc["totals"]["succeeded"], 1);
    assert_eq!(doc["totals"]["cancelled"], 2);
    assert!(stderr.contains("timed out (--timeout)"), "{stderr}");
}

#[test]
fn run_timeout_text_output_shows_completed_agents() {
    let out = Test::new()
        .ensemble(STOPPED)
        .args(["invoke", ENSEMBLE, "some input", "--timeout", "0.3", "-q"])
        .run()
        .failure();
    assert!(out.stdout.starts_with("== quick ==\n"), "{}", out.stdout);
}

#[test]
fn invalid_run_timeout_is_a_usage_error() {
    for bad in ["0", "-1", "soon", "inf"] {
        Test::new()
            .ensemble(STOPPED)
            .args(["invoke", ENSEMBLE, "x", "--timeout", bad])
            .run()
            .invalid();
    }
}

const RETRIES: &str = "\
name: retries
model_profiles:
  twice: {provider: mock, fail_attempts: 2, fail_with: server_error}
  refuses: {provider: mock, fail_attempts: 1, fail_with: bad_request}
  limited: {provider: mock, fail_attempts: 1, fail_with: rate_limit}
defaults:
  retry_backoff_ms: 1
agents:
  - name: enough
    model_profile: twice
    retries: 2
  - name: too_few
    model_profile: twice
    retries: 1
  - name: bad_request
    model_profile: refuses
    retries: 3
  - name: rate_limited
    model_profile: limited
    retries: 1
";

#[test]
fn retries() {
    let (doc, stderr) = run_json(RETRIES, &[], 1);
    let enough = agent(&doc, "enough");
    assert_eq!(enough["status"], "succeeded", "{enough:#}");
    assert_eq!(enough["attempts"], 3);
    assert!(enough["output"].is_string());

    let too_few = agent(&doc, "too_few");
    assert_eq!(too_few["status"], "failed", "{too_few:#}");
    assert_eq!(too_few["attempts"], 2);
    assert!(
        too_few["error"].as_str().unwrap().contains("500"),
        "{too_few:#}"
    );

    let bad = agent(&doc, "bad_request");
    assert_eq!(bad["status"], "failed", "{bad:#}");
    assert_eq!(bad["attempts"], 1, "a bad request is not retried");
    assert!(bad["error"].as_str().unwrap().contains("400"), "{bad:#}");

    let limited = agent(&doc, "rate_limited");
    assert_eq!(limited["status"], "succeeded", "{limited:#}");
    assert_eq!(limited["attempts"], 2);

    assert_eq!(doc["totals"]["attempts"], 3 + 2 + 1 + 2);
    assert!(
        stderr.contains("agent `too_few` failed after 2 attempts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("agent `bad_request` failed after 1 attempt:"),
        "{stderr}"
    );
}

#[test]
fn retries_are_events() {
    let out = Test::new()
        .ensemble(RETRIES)
        .args(["invoke", ENSEMBLE, "x", "--output", "jsonl"])
        .run()
        .failure();
    let events = out.json_lines();
    let retrying = |name: &str| {
        events
            .iter()
            .filter(|e| e["type"] == "agent_retrying" && e["agent"] == name)
            .count()
    };
    assert_eq!(retrying("enough"), 2, "{}", out.stdout);
    assert_eq!(retrying("too_few"), 1);
    assert_eq!(retrying("bad_request"), 0);
    assert_eq!(events.last().unwrap()["type"], "run_finished");
    assert_eq!(events.last().unwrap()["result"]["status"], "failed");
}

#[test]
fn fallback_profile_takes_over() {
    let yaml = "\
name: fallback
model_profiles:
  down: {provider: mock, fail_attempts: 100, fail_with: server_error}
  backup: {provider: mock, model: backup-1}
agents:
  - name: a
    model_profile: down
    retries: 1
    retry_backoff_ms: 1
    fallback_model_profile: backup
";
    let (doc, _) = run_json(yaml, &[], 0);
    let a = agent(&doc, "a");
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["profile"], "backup");
    assert_eq!(a["model"], "backup-1");
    assert_eq!(
        a["attempts"], 3,
        "two calls to the primary, then the fallback"
    );
    assert!(
        a["output"].as_str().unwrap().starts_with("[backup-1 "),
        "{a:#}"
    );
}

#[test]
fn fallback_is_an_event() {
    let yaml = "\
name: fallback
model_profiles:
  down: {provider: mock, fail_attempts: 100, fail_with: bad_request}
agents:
  - name: a
    model_profile: down
    fallback_model_profile: mock-fast
";
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "x", "--output", "jsonl"])
        .run()
        .success();
    let events = out.json_lines();
    let fallback = events
        .iter()
        .find(|e| e["type"] == "agent_fallback")
        .expect("a fallback event");
    assert_eq!(fallback["from"], "down");
    assert_eq!(fallback["to"], "mock-fast");
}

#[test]
fn unknown_fallback_profile_is_a_config_error() {
    let yaml = "name: fb\nagents:\n  - name: a\n    model_profile: mock-fast\n    fallback_model_profile: mock-fsat\n";
    Test::new()
        .ensemble(yaml)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("unknown model profile `mock-fsat`");
}

const DEPENDENCY_FAILURE: &str = "\
name: deps
model_profiles:
  broken: {provider: mock, fail_attempts: 100, fail_with: bad_request}
defaults:
  model_profile: mock-fast
agents:
  - name: source
    model_profile: broken
  - name: skipper
    depends_on: [source]
  - name: runner
    depends_on: [source]
    on_dependency_failure: run
  - name: grandchild
    depends_on: [skipper]
";

#[test]
fn dependents_of_a_failed_agent() {
    let (doc, stderr) = run_json(DEPENDENCY_FAILURE, &[], 1);
    assert_eq!(doc["status"], "failed");
    assert_eq!(agent(&doc, "source")["status"], "failed");

    let skipper = agent(&doc, "skipper");
    assert_eq!(skipper["status"], "skipped", "{skipper:#}");
    assert_eq!(skipper["attempts"], 0);
    assert!(skipper["output"].is_null());
    assert!(
        skipper["error"].as_str().unwrap().contains("source"),
        "{skipper:#}"
    );

    let runner = agent(&doc, "runner");
    assert_eq!(runner["status"], "succeeded", "{runner:#}");
    assert_eq!(runner["attempts"], 1);
    assert!(
        runner["output"]
            .as_str()
            .unwrap()
            .contains("Building on source."),
        "{runner:#}"
    );

    assert_eq!(
        agent(&doc, "grandchild")["status"],
        "skipped",
        "skips propagate"
    );
    assert_eq!(doc["totals"]["skipped"], 2);
    assert!(stderr.contains("skipped: agent `skipper`"), "{stderr}");
}

#[test]
fn on_dependency_failure_run_from_defaults() {
    let yaml = DEPENDENCY_FAILURE.replace(
        "  model_profile: mock-fast\n",
        "  model_profile: mock-fast\n  on_dependency_failure: run\n",
    );
    let (doc, _) = run_json(&yaml, &[], 1);
    for name in ["skipper", "runner", "grandchild"] {
        assert_eq!(agent(&doc, name)["status"], "succeeded", "{name}");
    }
}

#[test]
fn budget_stops_the_run() {
    let yaml = "\
name: budget
budget: {max_cost_usd: 0.001}
model_profiles:
  pricey:
    provider: mock
    price: {input_per_mtok: 1000, output_per_mtok: 1000}
defaults:
  model_profile: pricey
agents:
  - name: first
  - name: second
    depends_on: [first]
  - name: third
    depends_on: [second]
";
    let (doc, stderr) = run_json(yaml, &[], 1);
    assert_eq!(doc["status"], "budget_exceeded");
    assert_eq!(agent(&doc, "first")["status"], "succeeded");
    assert!(agent(&doc, "first")["output"].is_string());
    assert_eq!(agent(&doc, "second")["status"], "cancelled");
    assert_eq!(agent(&doc, "third")["status"], "cancelled");
    assert!(doc["totals"]["cost_usd"].as_f64().unwrap() > 0.001);
    assert!(stderr.contains("budget.max_cost_usd"), "{stderr}");
}

#[test]
fn generous_budget_does_not_stop_the_run() {
    let yaml = "\
name: budget
budget: {max_cost_usd: 100}
model_profiles:
  pricey:
    provider: mock
    price: {input_per_mtok: 1, output_per_mtok: 1}
defaults:
  model_profile: pricey
agents:
  - name: first
  - name: second
    depends_on: [first]
";
    let (doc, _) = run_json(yaml, &[], 0);
    assert_eq!(doc["status"], "succeeded");
}

#[test]
fn max_concurrency_one_serialises_calls() {
    let yaml = "\
name: parallel
model_profiles:
  m: {provider: mock, latency_ms: 30}
defaults:
  model_profile: m
agents:
  - name: a
  - name: b
  - name: c
";
    let (doc, _) = run_json(yaml, &["--max-concurrency", "1"], 0);
    let mut spans: Vec<(u64, u64)> = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["started_ms"].as_u64().unwrap(),
                a["finished_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    spans.sort_unstable();
    // Each call takes 30 ms, so overlapping calls would overlap by about that much.
    // `finished_ms` is taken when the scheduler receives the result, a moment after the
    // slot is freed, so allow a few milliseconds of slack.
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0 + 5, "calls overlap: {spans:?}");
        assert!(pair[1].0 + 5 >= pair[0].0 + 30, "calls overlap: {spans:?}");
    }

    let (doc, _) = run_json(yaml, &[], 0);
    let starts: Vec<u64> = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["started_ms"].as_u64().unwrap())
        .collect();
    let first_finish = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["finished_ms"].as_u64().unwrap())
        .min()
        .unwrap();
    assert!(
        starts.iter().all(|&s| s < first_finish),
        "without a limit independent agents overlap: {doc:#}"
    );
}

/// A run starts at most max(`--max-concurrency`, 1,024) agents at once and queues the rest:
/// every agent still runs, and each after its dependencies.
#[test]
fn agents_beyond_what_may_start_at_once_wait_their_turn() {
    let mut yaml = String::from(
        "name: many\nmodel_profiles:\n  m: {provider: mock, latency_ms: 0, jitter_ms: 0}\n\
         defaults:\n  model_profile: m\nagents:\n",
    );
    for i in 0..2000 {
        yaml.push_str(&format!("  - name: a{i}\n"));
    }
    for i in 0..100 {
        yaml.push_str(&format!(
            "  - name: b{i}\n    depends_on: [a{}]\n",
            1999 - i
        ));
    }
    let out = Test::new()
        .ensemble(&yaml)
        .args([
            "invoke",
            ENSEMBLE,
            "x",
            "--output",
            "jsonl",
            "--max-concurrency",
            "2",
        ])
        .run()
        .code(0);
    let events = out.json_lines();
    // Started (queued) and not yet finished, at most 1,024 at any point of the stream.
    let (mut started, mut most) = (0i64, 0i64);
    for e in &events {
        match e["type"].as_str().unwrap() {
            "agent_queued" => started += 1,
            "agent_finished" => started -= 1,
            _ => {}
        }
        most = most.max(started);
    }
    assert_eq!(most, 1024, "agents started at once");
    let doc = &events.last().unwrap()["result"];
    assert_eq!(doc["totals"]["succeeded"], 2100, "{}", doc["totals"]);
    let agents = doc["agents"].as_array().unwrap();
    let at = |name: &str, key: &str| {
        agents
            .iter()
            .find(|a| a["name"] == name)
            .and_then(|a| a[key].as_u64())
            .unwrap()
    };
    for i in 0..100 {
        let dep = format!("a{}", 1999 - i);
        assert!(at(&format!("b{i}"), "started_ms") >= at(&dep, "finished_ms"));
    }
}

#[test]
fn max_concurrency_zero_is_a_usage_error() {
    Test::new()
        .ensemble("name: x\nagents:\n  - name: a\n    model_profile: mock-fast\n")
        .args(["invoke", ENSEMBLE, "x", "--max-concurrency", "0"])
        .run()
        .invalid();
}
