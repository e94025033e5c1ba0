//! Load and faults (issue 13, "retry time is not call time"): thousands of agents against a
//! fake server that fails often, and what must hold whatever the interleaving: every agent
//! ends succeeded or failed, the totals add up with what the server saw, and no call is
//! reported timed out that was never sent. Waiting for a 429 cool-down or the circuit
//! breaker's probe is not call time, and `--timeout` ends a run whatever it waits for.
//!
//! The server's failures are drawn from the request's number with a fixed seed, so every run
//! sees the same sequence of replies (which agent gets which depends on the interleaving).
//! No test here asserts how long anything took.

use std::collections::HashMap;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::providers::fake::{Fake, Reply};
use crate::support::{ENSEMBLE, Test, agent, wait_with_limit};

const KEY: &str = "sk-test-faults";
/// Tokens the fake reports for every answer.
const INPUT_TOKENS: u64 = 3;
const OUTPUT_TOKENS: u64 = 2;

fn answer(n: usize) -> Reply {
    Reply::json(json!({
        "id": format!("chatcmpl-{n}"),
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": format!("answer {n}")},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": INPUT_TOKENS,
            "completion_tokens": OUTPUT_TOKENS,
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS
        }
    }))
}

fn server_error() -> Reply {
    Reply::status_json(
        500,
        json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}),
    )
}

fn rate_limited(retry_after_ms: u64) -> Reply {
    Reply::status_json(
        429,
        json!({"error": {"message": "slow down", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
    )
    .header("retry-after-ms", &retry_after_ms.to_string())
}

/// Request `n`'s draw in `0..100`: splitmix64 of the number, so the sequence of replies is
/// the same in every run.
fn draw(n: usize) -> u64 {
    let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) % 100
}

/// What the server does: `errors` percent 500s, then `limited` percent 429s (each asking
/// for a short cool-down), the rest answers, after a short latency.
#[derive(Clone, Copy)]
struct Mix {
    errors: u64,
    limited: u64,
}

impl Mix {
    fn is_answer(self, n: usize) -> bool {
        draw(n) >= self.errors + self.limited
    }

    fn reply(self, n: usize) -> Reply {
        let d = draw(n);
        let reply = if d < self.errors {
            server_error()
        } else if d < self.errors + self.limited {
            rate_limited(20)
        } else {
            answer(n)
        };
        reply.delay(Duration::from_millis(2))
    }
}

const RETRIES: u64 = 3;

/// `count` independent agents on one profile on `fake`, each with its own system prompt (its
/// name), so the fake's records say whose request each was.
fn many_agents(fake: &Fake, count: usize, breaker_failures: u32) -> String {
    let mut yaml = format!(
        "name: faults\n\
         model_profiles:\n  \
           p: {{provider: openai, base_url: \"{}/v1\", model: gpt-test, \
                limits: {{max_concurrency: 64}}, \
                circuit_breaker: {{failures: {breaker_failures}, cool_down_seconds: 0.05}}}}\n\
         defaults:\n  model_profile: p\n  retries: {RETRIES}\n  retry_backoff_ms: 10\n  \
           timeout_seconds: 2\n\
         agents:\n",
        fake.url()
    );
    for i in 1..=count {
        yaml.push_str(&format!("  - {{name: a{i}, system_prompt: a{i}}}\n"));
    }
    yaml
}

/// What a fault-mix run came to, for the report.
#[derive(Debug)]
struct Tally {
    succeeded: u64,
    failed: u64,
    attempts: u64,
    requests: usize,
    /// Attempts the breaker held back (their probe failed).
    unsent: usize,
    /// Times the circuit breaker opened.
    breaker_opened: usize,
    /// Attempts held back by the breaker that were retried.
    retried_after_breaker: usize,
}

/// Runs `count` agents against a fake answering with `mix` and checks what must hold
/// whatever the interleaving.
fn run_mix(mix: Mix, count: usize, breaker_failures: u32) -> Tally {
    let fake = Fake::with(move |n| mix.reply(n));
    let out = Test::new()
        .ensemble(&many_agents(&fake, count, breaker_failures))
        .args(["invoke", ENSEMBLE, "go", "--output", "jsonl", "--no-store"])
        .env("OPENAI_API_KEY", KEY)
        // Each time the breaker opens, in a line of its own.
        .env("ORC_LOG", "orc::providers::breaker=debug")
        .run();
    let events = out.json_lines();
    let finished: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 1, "one run_finished\n{}", out.stderr);
    let doc = finished[0]["result"].clone();
    let agents = doc["agents"].as_array().expect("agents").clone();
    let totals = &doc["totals"];

    // Every agent ends in a definite state.
    assert_eq!(agents.len(), count);
    for a in &agents {
        let status = a["status"].as_str().expect("a status");
        assert!(
            status == "succeeded" || status == "failed",
            "agent {} ended {status}: {a:#}",
            a["name"]
        );
    }
    let succeeded = totals["succeeded"].as_u64().expect("succeeded");
    let failed = totals["failed"].as_u64().expect("failed");
    assert_eq!(succeeded + failed, count as u64, "{totals:#}");
    assert_eq!(totals["agents"], count);
    assert_eq!(
        out.code,
        Some(if failed > 0 { 1 } else { 0 }),
        "{}",
        out.stderr
    );

    // Attempts: each is one call, sent or (the breaker's probe failed meanwhile) not.
    let calls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "call_finished")
        .collect();
    let attempts: u64 = agents.iter().map(|a| a["attempts"].as_u64().unwrap()).sum();
    assert_eq!(totals["attempts"], attempts);
    assert_eq!(
        calls.len() as u64,
        attempts,
        "one call_finished per attempt"
    );
    let unsent = calls
        .iter()
        .filter(|c| c["error_kind"] == "circuit_open")
        .count();
    let requests = fake.requests();
    assert_eq!(
        requests.len() + unsent,
        calls.len(),
        "every attempt is a request the server saw, or one the breaker held back"
    );

    // No call timed out that was never sent: per agent, the server saw exactly the calls
    // orc says it sent (a call that timed out while it waited for its turn would be one
    // more call than requests).
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        let system = r.body["messages"][0]["content"]
            .as_str()
            .expect("a system message naming the agent");
        *seen.entry(system.to_string()).or_default() += 1;
    }
    let mut sent: HashMap<String, usize> = HashMap::new();
    for c in &calls {
        if c["error_kind"] != "circuit_open" {
            *sent
                .entry(c["agent"].as_str().expect("agent").to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(
        seen, sent,
        "requests the server saw, per agent, vs calls sent"
    );
    for c in &calls {
        if c["error_kind"] == "timeout" {
            let name = c["agent"].as_str().unwrap();
            assert!(seen.contains_key(name), "{name} timed out unsent: {c:#}");
        }
    }

    // Tokens: the answers the server gave are the successes, and their tokens the totals.
    let answers = (0..requests.len()).filter(|&n| mix.is_answer(n)).count() as u64;
    assert_eq!(succeeded, answers, "one answer per succeeded agent");
    assert_eq!(totals["usage"]["input_tokens"], answers * INPUT_TOKENS);
    assert_eq!(totals["usage"]["output_tokens"], answers * OUTPUT_TOKENS);
    let agent_input: u64 = agents
        .iter()
        .map(|a| a["usage"]["input_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(agent_input, answers * INPUT_TOKENS);

    // A failed agent used every attempt it had: none failed at once on an open breaker.
    for a in agents.iter().filter(|a| a["status"] == "failed") {
        assert_eq!(a["attempts"], RETRIES + 1, "{a:#}");
        let kind = a["error_kind"].as_str().expect("an error kind");
        assert!(
            ["http", "rate_limited", "circuit_open"].contains(&kind),
            "{a:#}"
        );
    }
    assert!(
        agents.iter().all(|a| a["error_kind"] != "timeout"),
        "no call waited out its timeout"
    );
    let tally = Tally {
        succeeded,
        failed,
        attempts,
        requests: requests.len(),
        unsent,
        breaker_opened: out.stderr.matches("circuit breaker open").count(),
        retried_after_breaker: events
            .iter()
            .filter(|e| e["type"] == "agent_retrying" && e["error_kind"] == "circuit_open")
            .count(),
    };
    eprintln!("fault mix of {count} agents: {tally:?}");
    tally
}

#[test]
fn five_thousand_agents_against_500s_and_429s_end_definite_and_add_up() {
    let tally = run_mix(
        Mix {
            errors: 30,
            limited: 10,
        },
        5_000,
        5,
    );
    // With 40% failures and three retries, most succeed and some fail.
    assert!(tally.succeeded > 4_000, "{tally:?}");
    assert!(tally.failed > 0, "{tally:?}");
    assert!(tally.attempts > 5_000, "failures were retried: {tally:?}");
    assert_eq!(tally.requests + tally.unsent, tally.attempts as usize);
}

#[test]
fn five_thousand_agents_against_500s_wait_for_the_breakers_probe() {
    // 500s alone open the breaker (three in a row) again and again; calls that meet it open
    // wait for its probe (or for any call in flight to succeed, which closes it too), and
    // fail only when the probe does: `run_mix` checks that every failed agent used all
    // its attempts, none failed at once.
    let tally = run_mix(
        Mix {
            errors: 30,
            limited: 0,
        },
        5_000,
        3,
    );
    assert!(
        tally.breaker_opened > 0,
        "the breaker never opened: {tally:?}"
    );
    assert!(tally.retried_after_breaker <= tally.unsent, "{tally:?}");
}

#[test]
fn waiting_for_a_cool_down_is_not_call_time() {
    // One agent gets a 429 asking for a second and a half; the other, queued behind it on
    // the profile's one slot, waits that out. Its timeout (one second) bounds its call, not
    // the wait.
    let fake = Fake::with(|n| {
        if n == 0 {
            rate_limited(1_500)
        } else {
            answer(n)
        }
    });
    let yaml = format!(
        "name: t\nmodel_profiles:\n  p: {{provider: openai, base_url: \"{}/v1\", model: gpt-test, limits: {{max_concurrency: 1}}}}\n\
         defaults: {{model_profile: p, timeout_seconds: 1, retries: 2}}\n\
         agents:\n  - {{name: a, system_prompt: a}}\n  - {{name: b, system_prompt: b}}\n",
        fake.url()
    );
    let out = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "go", "--output", "json", "--no-store"])
        .env("OPENAI_API_KEY", KEY)
        .run()
        .success();
    let doc = out.json();
    for name in ["a", "b"] {
        let x = agent(&doc, name);
        assert_eq!(x["status"], "succeeded", "{x:#}");
    }
    // Whichever went first got the 429 and retried; the other waited and never timed out.
    let mut attempts = [
        agent(&doc, "a")["attempts"].clone(),
        agent(&doc, "b")["attempts"].clone(),
    ];
    attempts.sort_by_key(|a| a.as_u64());
    assert_eq!(attempts, [json!(1), json!(2)], "{doc:#}");
    assert_eq!(fake.count(), 3);
    // The cool-down held: nothing reached the server until it was over.
    let gap = fake.gap(0, 1);
    assert!(
        gap >= Duration::from_millis(1_500),
        "a call came {gap:?} after the 429"
    );
}

#[test]
fn timeout_ends_a_run_waiting_on_a_long_cool_down() {
    // The first call gets a 429 asking for an hour; every other agent waits for the profile
    // to cool down, and `a1` for its retry. `--timeout 1` ends the run all the same.
    let fake = Fake::with(|n| {
        if n == 0 {
            rate_limited(3_600_000)
        } else {
            answer(n)
        }
    });
    let mut yaml = format!(
        "name: t\nmodel_profiles:\n  p: {{provider: openai, base_url: \"{}/v1\", model: gpt-test, limits: {{max_concurrency: 1}}}}\n\
         defaults: {{model_profile: p, timeout_seconds: 600, retries: 3}}\nagents:\n",
        fake.url()
    );
    for i in 1..=20 {
        yaml.push_str(&format!("  - {{name: a{i}}}\n"));
    }
    let test = Test::new().ensemble(&yaml).args([
        "invoke",
        ENSEMBLE,
        "go",
        "--output",
        "json",
        "--timeout",
        "1",
        "--no-store",
    ]);
    let child = test
        .command()
        .env("OPENAI_API_KEY", KEY)
        .spawn()
        .expect("spawn orc");
    // Far less than the hour it would wait; a loose bound, not a measurement.
    let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).expect("the JSON document");
    assert_eq!(doc["status"], "timed_out", "{doc:#}");
    assert_eq!(doc["totals"]["cancelled"], 20, "{doc:#}");
    assert_eq!(fake.count(), 1, "nothing was sent during the cool-down");
}
