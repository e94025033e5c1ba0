//! Anthropic Messages.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::fake::{Fake, Reply};
use super::{
    PRICE, RETRYING, assert_cost, assert_failed_once, assert_waited, cost, deltas, invoke,
    one_agent, run_json, run_jsonl, x, x_finished,
};

const KEY: &str = "sk-ant-test-key";

fn answer(text: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": input, "output_tokens": output}
    })
}

fn event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

/// A streamed answer, as the Messages API sends it (with a `ping` in the middle).
fn stream_events(pieces: &[&str], input: u64, output: u64) -> Vec<String> {
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [],
                "model": "claude-x", "stop_reason": null,
                "usage": {"input_tokens": input, "output_tokens": 1}
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for p in pieces {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

fn stream(pieces: &[&str], input: u64, output: u64) -> Reply {
    Reply::sse(stream_events(pieces, input, output))
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::status_json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

fn profile(fake: &Fake, extra: &str) -> String {
    format!(
        "{{provider: anthropic, base_url: \"{}\", model: claude-x, {PRICE}{extra}}}",
        fake.url()
    )
}

fn anthropic(fake: &Fake, extra: &str, agent: &[&str]) -> crate::support::Test {
    invoke(&one_agent(&profile(fake, extra), agent)).env("ANTHROPIC_API_KEY", KEY)
}

#[test]
fn plain_call_sends_version_key_system_and_max_tokens() {
    let fake = Fake::always(Reply::json(answer("Hi there", 12, 3)));
    anthropic(&fake, "", &["system_prompt: Be brief."])
        .run()
        .success()
        .stdout("Hi there\n");
    let r = fake.single();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.body["model"], "claude-x");
    assert_eq!(r.body["system"], "Be brief.");
    assert_eq!(
        r.body["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert!(
        r.body["max_tokens"].as_u64().is_some_and(|n| n > 0),
        "max_tokens is required: {}",
        r.body
    );
    assert!(
        r.body.get("stream").is_none_or(|s| s == false),
        "{}",
        r.body
    );
}

#[test]
fn api_key_env_and_a_base_url_ending_in_v1() {
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    let yaml = one_agent(
        &format!(
            "{{provider: anthropic, base_url: \"{}/v1\", model: claude-x, api_key_env: MY_KEY}}",
            fake.url()
        ),
        &["max_tokens: 77"],
    );
    invoke(&yaml).env("MY_KEY", "sk-ant-mine").run().success();
    let r = fake.single();
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some("sk-ant-mine"));
    assert_eq!(r.body["max_tokens"], 77);
}

#[test]
fn stream_flag_prints_the_text_as_it_arrives() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 5, 3));
    anthropic(&fake, "", &[])
        .arg("--stream")
        .run()
        .success()
        .stdout("Hello world\n");
    assert_eq!(fake.single().body["stream"], true);
}

#[test]
fn jsonl_has_delta_events_and_streamed_usage() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 21, 9));
    let (all, _) = run_jsonl(anthropic(&fake, "", &[]), 0);
    assert_eq!(deltas(&all, 1), "Hello world");
    let x = x_finished(&all);
    assert_eq!(x["output"], "Hello world");
    // Input from `message_start`, output from the cumulative count in `message_delta`.
    assert_eq!(x["usage"]["input_tokens"], 21);
    assert_eq!(x["usage"]["output_tokens"], 9);
    assert_cost(&x, cost(21, 9));
}

#[test]
fn usage_with_cache_reads_and_cost_in_json_output() {
    let mut body = answer("cached", 10, 40);
    body["usage"]["cache_read_input_tokens"] = json!(100);
    body["usage"]["cache_creation_input_tokens"] = json!(50);
    let fake = Fake::always(Reply::json(body));
    let (doc, _) = run_json(anthropic(&fake, "", &[]), 0);
    let x = x(&doc);
    assert_eq!(x["output"], "cached");
    // Anthropic reports cache reads and writes apart from `input_tokens`; orc adds them up.
    assert_eq!(
        x["usage"],
        json!({"input_tokens": 160, "output_tokens": 40, "cached_input_tokens": 100})
    );
    assert_cost(x, cost(160, 40));
}

#[test]
fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fake = Fake::start(vec![
        error(
            429,
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        )
        .header("retry-after", "1"),
        Reply::json(answer("after the wait", 1, 1)),
    ]);
    let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "after the wait");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
    assert_waited(&fake, Duration::from_millis(900));
}

#[test]
fn server_errors_and_overloaded_529_are_retried() {
    for (status, kind) in [(500, "api_error"), (529, "overloaded_error")] {
        let fake = Fake::start(vec![
            error(status, kind, "Overloaded"),
            Reply::json(answer("recovered", 1, 1)),
        ]);
        let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 0);
        assert_eq!(x(&doc)["output"], "recovered", "HTTP {status}: {doc:#}");
        assert_eq!(x(&doc)["attempts"], 2, "HTTP {status}");
        assert_eq!(fake.count(), 2, "HTTP {status}");
    }
}

#[test]
fn overloaded_error_in_the_stream_is_retried() {
    let mut broken = stream_events(&["par", "tial"], 3, 3);
    broken.truncate(5); // message_start, block start, ping, two deltas
    broken.push(event(
        "error",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    ));
    let fake = Fake::start(vec![Reply::sse(broken), stream(&["whole answer"], 3, 3)]);
    let (all, _) = run_jsonl(anthropic(&fake, "", RETRYING), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "whole answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn client_errors_are_not_retried() {
    for (status, kind, words) in [
        (400, "invalid_request_error", &["400"][..]),
        (
            401,
            "authentication_error",
            &["authentication failed", "401"][..],
        ),
        (
            403,
            "permission_error",
            &["authentication failed", "403"][..],
        ),
        (404, "not_found_error", &["404"][..]),
    ] {
        let fake = Fake::always(error(status, kind, "nope"));
        let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, words);
    }
}

#[test]
fn enforced_spend_limit_is_not_retried() {
    for status in [400, 429] {
        let fake = Fake::always(
            error(
                status,
                "enforced_spend_limit_reached",
                "Your workspace has reached its spend limit",
            )
            .header("retry-after", "0"),
        );
        let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, &["spend limit"]);
    }
}

#[test]
fn malformed_body_is_a_decode_error() {
    for body in [
        Reply::raw(200, "application/json", "{\"content\": [{\"type\""),
        Reply::json(json!({"type": "message", "role": "assistant"})),
    ] {
        let fake = Fake::always(body);
        let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, &["decode"]);
    }
}

#[test]
fn stream_cut_midway_is_retried_from_the_start() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half"], 3, 3).cut_after(5),
        stream(&["The complete ", "second answer"], 3, 4),
    ]);
    let (all, _) = run_jsonl(anthropic(&fake, "", RETRYING), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "The complete second answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(deltas(&all, 2), "The complete second answer");
    assert_eq!(fake.count(), 2);
}

#[test]
fn stream_ending_before_message_stop_is_retried() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half"], 3, 3).end_after(5),
        stream(&["whole"], 3, 4),
    ]);
    let (all, _) = run_jsonl(anthropic(&fake, "", RETRYING), 0);
    assert_eq!(x_finished(&all)["output"], "whole");
    assert_eq!(fake.count(), 2);
}

#[test]
fn slow_first_byte_times_out_and_is_retried() {
    let fake = Fake::start(vec![
        Reply::json(answer("too late", 1, 1)).delay(Duration::from_secs(5)),
        Reply::json(answer("in time", 1, 1)),
    ]);
    let (doc, _) = run_json(
        anthropic(&fake, ", first_byte_timeout_seconds: 0.3", RETRYING),
        0,
    );
    assert_eq!(x(&doc)["output"], "in time");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn missing_key_names_the_variable_and_sends_nothing() {
    let fake = Fake::always(Reply::json(answer("unused", 1, 1)));
    let out = invoke(&one_agent(&profile(&fake, ""), &[])).run().invalid();
    assert!(out.stderr.contains("ANTHROPIC_API_KEY"), "{}", out.stderr);
    let out = invoke(&one_agent(&profile(&fake, ", api_key_env: MY_KEY"), &[]))
        .run()
        .invalid();
    assert!(out.stderr.contains("MY_KEY"), "{}", out.stderr);
    assert_eq!(fake.count(), 0);
}

#[test]
fn stop_reason_refusal_fails_the_agent_as_refused() {
    let mut body = answer("", 10, 2);
    body["stop_reason"] = json!("refusal");
    let fake = Fake::always(Reply::json(body));
    let (doc, _) = run_json(anthropic(&fake, "", RETRYING), 1);
    assert_failed_once(&fake, &doc, &["refused"]);
    assert_eq!(x(&doc)["error_kind"], "refused");
    assert_eq!(x(&doc)["finish_reason"], "refused");
    assert_eq!(x(&doc)["finish_reason_raw"], "refusal");
}

#[test]
fn a_cut_off_answer_is_flagged_with_a_warning() {
    let mut body = answer("1. Oak\n2.", 10, 4);
    body["stop_reason"] = json!("max_tokens");
    let fake = Fake::always(Reply::json(body));
    let (doc, out) = run_json(anthropic(&fake, "", &[]), 0);
    let x = x(&doc);
    assert_eq!(x["output"], "1. Oak\n2.");
    assert_eq!(x["truncated"], true);
    assert_eq!(x["finish_reason"], "length");
    assert_eq!(x["finish_reason_raw"], "max_tokens");
    assert!(
        out.stderr
            .contains("warning: the answer of agent `x` was cut off at the token limit"),
        "{}",
        out.stderr
    );
}
