//! Across protocols: fallback profiles, the per-endpoint circuit breaker, and the
//! per-profile limits (calls in flight, requests per minute), as the fake server sees them.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::fake::{Fake, Reply};
use super::openai::{KEY, answer, error};
use super::{PRICE, invoke, run_json, x};
use crate::support::agent;

fn openai_profile(fake: &Fake, extra: &str) -> String {
    format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test, {PRICE}{extra}}}",
        fake.url()
    )
}

/// `count` agents `a1`, `a2`, ... on profile `p`, each with `agent` keys.
fn agents(profiles: &str, count: usize, agent: &[&str]) -> String {
    let mut yaml = format!("name: t\nmodel_profiles:\n{profiles}agents:\n");
    for i in 1..=count {
        yaml.push_str(&format!("  - name: a{i}\n    model_profile: p\n"));
        for line in agent {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    yaml
}

#[test]
fn fallback_profile_answers_when_the_primary_keeps_failing() {
    let dead = Fake::always(error(503, "server_error", "server_error", "unavailable"));
    let good = Fake::always(Reply::json(answer("from the fallback", 5, 5)));
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {}\n  q: {}\nagents:\n  - name: x\n    model_profile: p\n    retries: 1\n    retry_backoff_ms: 10\n",
        openai_profile(&dead, ", fallback_model_profile: q"),
        openai_profile(&good, ""),
    );
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 0);
    let x = x(&doc);
    assert_eq!(x["status"], "succeeded", "{x:#}");
    assert_eq!(x["output"], "from the fallback");
    assert_eq!(x["profile"], "q", "the profile that answered");
    assert_eq!(x["attempts"], 3, "two on the primary, one on the fallback");
    assert_eq!(dead.count(), 2);
    assert_eq!(good.count(), 1);
}

#[test]
fn fallback_after_a_non_retryable_error_skips_the_retries() {
    // The fallback may speak another protocol.
    let denied = Fake::always(error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "bad key",
    ));
    let good = Fake::always(Reply::json(serde_json::json!({
        "type": "message", "role": "assistant",
        "content": [{"type": "text", "text": "from the fallback"}],
        "usage": {"input_tokens": 1, "output_tokens": 1}
    })));
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {}\n  q: {{provider: anthropic, base_url: \"{}\", model: claude-x}}\nagents:\n  - name: x\n    model_profile: p\n    retries: 3\n    retry_backoff_ms: 10\n",
        openai_profile(&denied, ", fallback_model_profile: q"),
        good.url(),
    );
    let (doc, _) = run_json(
        invoke(&yaml)
            .env("OPENAI_API_KEY", KEY)
            .env("ANTHROPIC_API_KEY", "sk-ant"),
        0,
    );
    let x = x(&doc);
    assert_eq!(x["output"], "from the fallback", "{x:#}");
    assert_eq!(x["profile"], "q");
    assert_eq!(x["attempts"], 2);
    assert_eq!(denied.count(), 1, "an auth failure is not retried");
    assert_eq!(good.count(), 1);
}

/// The profile `p` on `fake` with a breaker that opens after two failures and probes after
/// `cool_down` seconds.
fn breaker_profile(fake: &Fake, cool_down: f64, extra: &str) -> String {
    format!(
        "  p: {}\n",
        openai_profile(
            fake,
            &format!(", circuit_breaker: {{failures: 2, cool_down_seconds: {cool_down}}}{extra}")
        )
    )
}

/// Every request from `from` on came at least `cool_down` after the one before: the
/// breaker let one probe through per cool-down.
#[track_caller]
fn assert_probes_spaced(fake: &Fake, from: usize, cool_down: Duration) {
    for i in from..fake.count().saturating_sub(1) {
        let gap = fake.gap(i, i + 1);
        assert!(
            gap >= cool_down,
            "request {} came {gap:?} after request {i}, within the breaker's cool-down",
            i + 1
        );
    }
}

#[test]
fn open_circuit_breaker_lets_one_probe_through_per_cool_down() {
    let dead = Fake::always(error(503, "server_error", "server_error", "unavailable"));
    // A chain, so the agents call one after another and each sees the breaker's state.
    let mut yaml = format!(
        "name: t\nmodel_profiles:\n{}agents:\n",
        breaker_profile(&dead, 0.3, "")
    );
    for i in 1..=4 {
        yaml.push_str(&format!(
            "  - name: a{i}\n    model_profile: p\n    retries: 0\n"
        ));
        if i > 1 {
            yaml.push_str(&format!(
                "    depends_on: [a{}]\n    on_dependency_failure: run\n",
                i - 1
            ));
        }
    }
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 1);
    // Two failures open the breaker; a3 and a4 each waited for it and went as its probe.
    assert_eq!(dead.count(), 4, "{:#?}", dead.requests());
    assert_probes_spaced(&dead, 1, Duration::from_millis(300));
    for i in 1..=4 {
        let a = agent(&doc, &format!("a{i}"));
        assert_eq!(a["status"], "failed", "{a:#}");
        let error = a["error"].as_str().expect("an error");
        assert!(error.contains("503"), "a{i} reached the endpoint: {error}");
    }
}

#[test]
fn retries_wait_for_the_breakers_probe_instead_of_failing_at_once() {
    // Issue 13: retries that met an open breaker failed at once.
    let dead = Fake::always(error(503, "server_error", "server_error", "unavailable"));
    let yaml = agents(
        &breaker_profile(&dead, 0.2, ""),
        6,
        &["retries: 3", "retry_backoff_ms: 10"],
    );
    let (all, _) = super::run_jsonl(
        invoke(&yaml)
            .env("OPENAI_API_KEY", KEY)
            .args(["--max-concurrency", "1"]),
        1,
    );
    let finished = super::events(&all, "run_finished");
    let doc = &finished[0]["result"];
    assert_eq!(doc["totals"]["failed"], 6, "{doc:#}");
    for i in 1..=6 {
        assert_eq!(agent(doc, &format!("a{i}"))["attempts"], 4, "{doc:#}");
    }
    // 24 attempts; without the breaker all 24 reach the endpoint. With it, two open it,
    // then one probe goes per cool-down and a failed probe fails the attempts waiting for
    // it, unsent.
    let calls = super::events(&all, "call_finished");
    assert_eq!(calls.len(), 24);
    let unsent = calls
        .iter()
        .filter(|c| c["error_kind"] == "circuit_open")
        .count();
    assert_eq!(
        unsent + dead.count(),
        24,
        "every attempt was either sent or failed on the breaker"
    );
    assert!(
        dead.count() <= 12,
        "the breaker should stop calls to a dead endpoint; {} requests were made",
        dead.count()
    );
    assert!(unsent > 0);
    assert_probes_spaced(&dead, 1, Duration::from_millis(200));
}

#[test]
fn open_circuit_breaker_holds_back_calls_queued_on_profile_limits() {
    let dead = Fake::always(
        error(503, "server_error", "server_error", "unavailable").delay(Duration::from_millis(50)),
    );
    let yaml = agents(
        &breaker_profile(&dead, 0.2, ", limits: {max_concurrency: 1}"),
        6,
        &["retries: 0"],
    );
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 1);
    assert_eq!(doc["totals"]["failed"], 6);
    // Two open the breaker; the four queued behind them wait for one probe, which fails.
    assert_eq!(
        dead.count(),
        3,
        "the breaker opened after two failures, yet {} requests reached the endpoint",
        dead.count()
    );
    assert_probes_spaced(&dead, 1, Duration::from_millis(200));
}

#[test]
fn max_concurrency_holds() {
    let slow = Fake::always(Reply::json(answer("ok", 1, 1)).delay(Duration::from_millis(200)));
    let profiles = format!(
        "  p: {}\n",
        openai_profile(&slow, ", limits: {max_concurrency: 2}")
    );
    let (doc, _) = run_json(
        invoke(&agents(&profiles, 6, &[])).env("OPENAI_API_KEY", KEY),
        0,
    );
    assert_eq!(doc["totals"]["succeeded"], 6);
    assert_eq!(slow.count(), 6);
    let peak = slow.peak_in_flight();
    assert!(peak <= 2, "{peak} requests in flight at once, limit 2");
    assert_eq!(peak, 2, "the limit still allows two at once");
}

#[test]
fn requests_per_minute_spreads_the_requests() {
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    let profiles = format!(
        "  p: {}\n",
        openai_profile(&fake, ", limits: {requests_per_minute: 120}")
    );
    let (doc, _) = run_json(
        invoke(&agents(&profiles, 6, &[])).env("OPENAI_API_KEY", KEY),
        0,
    );
    assert_eq!(doc["totals"]["succeeded"], 6);
    assert_eq!(fake.count(), 6);
    // Two a second: six requests need about two seconds, whatever the burst.
    let spread = fake.gap(0, 5);
    assert!(
        spread >= Duration::from_millis(1800),
        "six requests at 120/min arrived within {spread:?}"
    );
    let requests = fake.requests();
    for w in requests.windows(3) {
        let gap = w[2].at.saturating_sub(w[0].at);
        assert!(
            gap >= Duration::from_millis(400),
            "three requests within {gap:?}: {:?}",
            requests.iter().map(|r| r.at).collect::<Vec<_>>()
        );
    }
}

#[test]
fn rate_limit_cools_down_the_whole_profile() {
    // The first request is told to wait a second; every other call on the profile waits too.
    let fake = Fake::start(vec![
        error(429, "requests", "rate_limit_exceeded", "slow down").header("retry-after", "1"),
        Reply::json(answer("ok", 1, 1)),
    ]);
    let profiles = format!(
        "  p: {}\n",
        openai_profile(&fake, ", limits: {max_concurrency: 1}")
    );
    let yaml = agents(&profiles, 3, &["retries: 2", "retry_backoff_ms: 10"]);
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 0);
    assert_eq!(doc["totals"]["succeeded"], 3);
    assert_eq!(fake.count(), 4);
    let gap = fake.gap(0, 1);
    assert!(
        gap >= Duration::from_millis(900),
        "the next call came {gap:?} after the 429"
    );
}

#[test]
fn connection_refused_is_retried_then_fails() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {{provider: openai, base_url: \"http://127.0.0.1:{port}/v1\", model: m}}\nagents:\n  - name: x\n    model_profile: p\n    retries: 1\n    retry_backoff_ms: 10\n"
    );
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 1);
    let x = x(&doc);
    assert_eq!(x["status"], "failed");
    assert_eq!(x["attempts"], 2);
    assert!(
        x["error"].as_str().unwrap().contains("connection failed"),
        "{x:#}"
    );
}

#[test]
fn a_missing_key_stops_the_run_before_any_request() {
    let openai = Fake::always(Reply::json(answer("unused", 1, 1)));
    let anthropic = Fake::always(Reply::json(answer("unused", 1, 1)));
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {}\n  q: {{provider: anthropic, base_url: \"{}\", model: claude-x, api_key_env: MY_ANTHROPIC_KEY}}\nagents:\n  - name: a\n    model_profile: p\n  - name: b\n    model_profile: q\n",
        openai_profile(&openai, ""),
        anthropic.url(),
    );
    let out = invoke(&yaml).env("OPENAI_API_KEY", KEY).run().invalid();
    assert!(
        out.stderr.contains("profile `q`") && out.stderr.contains("MY_ANTHROPIC_KEY"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    assert_eq!(openai.count() + anthropic.count(), 0, "no request at all");
}

#[test]
fn missing_key_help_points_at_the_key_not_at_mock_only() {
    let fake = Fake::always(Reply::json(answer("unused", 1, 1)));
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {}\nagents:\n  - name: x\n    model_profile: p\n",
        openai_profile(&fake, "")
    );
    let out = invoke(&yaml).run().invalid();
    assert!(
        out.stderr.contains(
            "error: profile `p`: no API key: set OPENAI_API_KEY or run `orc auth set openai`"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("mock` provider only"),
        "the help contradicts the error:\n{}",
        out.stderr
    );
}
