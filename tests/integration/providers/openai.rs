//! OpenAI Chat Completions (`openai` and the lenient `openai-compatible`).

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::fake::{Fake, Reply};
use super::{
    PRICE, RETRYING, assert_cost, assert_failed_once, assert_waited, cost, deltas, events, invoke,
    one_agent, run_json, run_jsonl, x, x_finished,
};

pub(super) const KEY: &str = "sk-test-openai-key";

/// A non-streamed answer.
pub(super) fn answer(text: &str, input: u64, output: u64) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    })
}

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {c}\n\n")
}

/// A streamed answer: one event per piece, the finish reason, usage, `[DONE]`.
pub(super) fn stream_events(pieces: &[&str], input: u64, output: u64) -> Vec<String> {
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for p in pieces {
        events.push(chunk(json!({"content": p}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    let usage = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output}
    });
    events.push(format!("data: {usage}\n\n"));
    events.push("data: [DONE]\n\n".into());
    events
}

pub(super) fn stream(pieces: &[&str], input: u64, output: u64) -> Reply {
    Reply::sse(stream_events(pieces, input, output))
}

/// An error body as OpenAI sends it.
pub(super) fn error(status: u16, kind: &str, code: &str, message: &str) -> Reply {
    Reply::status_json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// An `openai` profile on the fake, priced.
pub(super) fn profile(fake: &Fake, extra: &str) -> String {
    format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test, {PRICE}{extra}}}",
        fake.url()
    )
}

fn openai(fake: &Fake, extra: &str, agent: &[&str]) -> crate::support::Test {
    invoke(&one_agent(&profile(fake, extra), agent)).env("OPENAI_API_KEY", KEY)
}

#[test]
fn plain_call_sends_model_messages_and_bearer_key() {
    let fake = Fake::always(Reply::json(answer("Hi there", 12, 3)));
    openai(&fake, "", &["system_prompt: Be brief."])
        .run()
        .success()
        .stdout("Hi there\n");
    let r = fake.single();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-openai-key"));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:#?}"
    );
    assert_eq!(r.body["model"], "gpt-test");
    assert_eq!(
        r.body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"}
        ])
    );
    assert!(
        r.body.get("stream").is_none_or(|s| s == false),
        "a plain call does not stream: {}",
        r.body
    );
}

#[test]
fn stream_flag_prints_the_text_as_it_arrives() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 5, 3));
    openai(&fake, "", &[])
        .arg("--stream")
        .run()
        .success()
        .stdout("Hello world\n");
    let r = fake.single();
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.body["stream_options"]["include_usage"], true);
}

#[test]
fn jsonl_has_delta_events_and_streamed_usage() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 7, 3));
    let (all, _) = run_jsonl(openai(&fake, "", &[]), 0);
    assert_eq!(deltas(&all, 1), "Hello world");
    let pieces: Vec<&str> = events(&all, "agent_delta")
        .iter()
        .filter_map(|e| e["text"].as_str().filter(|t| !t.is_empty()))
        .collect();
    assert_eq!(pieces, ["Hel", "lo ", "world"], "one event per piece");
    let x = x_finished(&all);
    assert_eq!(x["output"], "Hello world");
    assert_eq!(x["usage"]["input_tokens"], 7);
    assert_eq!(x["usage"]["output_tokens"], 3);
    assert_cost(&x, cost(7, 3));
    assert_eq!(fake.single().body["stream"], true);
}

#[test]
fn usage_and_cost_in_json_output() {
    let mut body = answer("fine", 1000, 500);
    body["usage"]["prompt_tokens_details"] = json!({"cached_tokens": 400});
    let fake = Fake::always(Reply::json(body));
    let (doc, _) = run_json(openai(&fake, "", &[]), 0);
    let x = x(&doc);
    assert_eq!(x["status"], "succeeded");
    assert_eq!(x["output"], "fine");
    assert_eq!(x["attempts"], 1);
    assert_eq!(x["profile"], "p");
    assert_eq!(
        x["usage"],
        json!({"input_tokens": 1000, "output_tokens": 500, "cached_input_tokens": 400})
    );
    // Cached input costs the input price unless the profile says otherwise.
    assert_cost(x, cost(1000, 500));
    assert_eq!(doc["totals"]["usage"]["input_tokens"], 1000);
}

#[test]
fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fake = Fake::start(vec![
        error(429, "requests", "rate_limit_exceeded", "Rate limit reached")
            .header("retry-after", "1"),
        Reply::json(answer("after the wait", 4, 4)),
    ]);
    let (doc, _) = run_json(openai(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "after the wait");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
    assert_waited(&fake, Duration::from_millis(900));
}

#[test]
fn retry_after_ms_is_honoured() {
    let fake = Fake::start(vec![
        error(429, "requests", "rate_limit_exceeded", "slow down").header("retry-after-ms", "600"),
        Reply::json(answer("ok", 1, 1)),
    ]);
    let (doc, _) = run_json(openai(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["attempts"], 2);
    assert_waited(&fake, Duration::from_millis(550));
}

#[test]
fn server_errors_are_retried() {
    for status in [408, 500, 502, 503, 504] {
        let fake = Fake::start(vec![
            error(
                status,
                "server_error",
                "server_error",
                "The server had an error",
            ),
            Reply::json(answer("recovered", 2, 2)),
        ]);
        let (doc, _) = run_json(openai(&fake, "", RETRYING), 0);
        assert_eq!(x(&doc)["status"], "succeeded", "HTTP {status}: {doc:#}");
        assert_eq!(x(&doc)["output"], "recovered");
        assert_eq!(x(&doc)["attempts"], 2, "HTTP {status}");
        assert_eq!(fake.count(), 2, "HTTP {status}");
    }
}

#[test]
fn client_errors_are_not_retried() {
    for (status, kind, words) in [
        (400, "invalid_request_error", &["400"][..]),
        (
            401,
            "invalid_api_key",
            &["authentication failed", "401"][..],
        ),
        (
            403,
            "permission_denied",
            &["authentication failed", "403"][..],
        ),
        (404, "model_not_found", &["404"][..]),
        (422, "unprocessable", &["422"][..]),
    ] {
        let fake = Fake::always(error(status, "invalid_request_error", kind, "nope"));
        let (doc, out) = run_json(openai(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, words);
        assert!(
            out.stderr.contains("agent `x` failed after 1 attempt"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn insufficient_quota_is_not_retried() {
    let fake = Fake::always(
        error(
            429,
            "insufficient_quota",
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )
        .header("retry-after", "0"),
    );
    let (doc, _) = run_json(openai(&fake, "", RETRYING), 1);
    assert_failed_once(&fake, &doc, &["quota"]);
}

#[test]
fn malformed_body_is_a_decode_error() {
    for body in [
        Reply::raw(200, "application/json", "{\"choices\": [{\"mess"),
        Reply::raw(200, "text/html", "<html>gateway</html>"),
        Reply::json(json!({"object": "chat.completion", "choices": []})),
    ] {
        let fake = Fake::always(body);
        let (doc, _) = run_json(openai(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, &["decode"]);
    }
}

#[test]
fn stream_cut_midway_is_retried_from_the_start() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half ", "and then"], 3, 3).cut_after(3),
        stream(&["The complete ", "second answer"], 3, 4),
    ]);
    let (all, _) = run_jsonl(openai(&fake, "", RETRYING), 0);
    assert_eq!(fake.count(), 2);
    let x = x_finished(&all);
    assert_eq!(x["output"], "The complete second answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(deltas(&all, 2), "The complete second answer");
    let finished = events(&all, "agent_finished");
    assert_eq!(finished[0]["output"], "The complete second answer");
}

#[test]
fn json_body_cut_midway_is_retried() {
    let whole = answer("never seen", 1, 1).to_string();
    let (head, tail) = whole.split_at(whole.len() / 2);
    let fake = Fake::start(vec![
        Reply::stream(
            "application/json",
            vec![head.to_string(), tail.to_string()],
            Duration::from_millis(5),
        )
        .cut_after(1),
        Reply::json(answer("the whole body", 1, 1)),
    ]);
    let (doc, _) = run_json(openai(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "the whole body");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let when = std::time::SystemTime::now() + Duration::from_secs(3);
    let fake = Fake::start(vec![
        error(429, "requests", "rate_limit_exceeded", "slow down")
            .header("retry-after", &httpdate::fmt_http_date(when)),
        Reply::json(answer("ok", 1, 1)),
    ]);
    let (doc, _) = run_json(openai(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["attempts"], 2);
    // The date has whole seconds and orc needs a moment to start: at least one second.
    assert_waited(&fake, Duration::from_millis(900));
}

#[test]
fn error_event_in_the_stream_is_retried() {
    let mut broken = stream_events(&["par", "tial"], 1, 1);
    broken.truncate(3);
    broken.push(format!(
        "data: {}\n\n",
        json!({"error": {"message": "The server had an error", "type": "server_error"}})
    ));
    let fake = Fake::start(vec![Reply::sse(broken), stream(&["whole"], 1, 1)]);
    let (all, _) = run_jsonl(openai(&fake, "", RETRYING), 0);
    assert_eq!(x_finished(&all)["output"], "whole");
    assert_eq!(fake.count(), 2);
}

#[test]
fn stream_ending_without_done_is_retried() {
    // The body ends normally, but before the finish reason and `[DONE]`.
    let fake = Fake::start(vec![
        stream(&["half an ", "answer"], 3, 3).end_after(2),
        stream(&["whole answer"], 3, 3),
    ]);
    let (all, _) = run_jsonl(openai(&fake, "", RETRYING), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "whole answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn stream_flag_after_a_cut_ends_with_the_whole_second_answer() {
    let fake = Fake::start(vec![
        stream(&["broken ", "half"], 3, 3).cut_after(2),
        stream(&["The whole ", "answer"], 3, 3),
    ]);
    let out = openai(&fake, "", RETRYING).arg("--stream").run().success();
    assert!(
        out.stdout.ends_with("\nThe whole answer\n"),
        "the second answer is printed whole, on its own line: {:?}",
        out.stdout
    );
    assert_eq!(fake.count(), 2);
}

#[test]
fn slow_first_byte_times_out_and_is_retried() {
    let fake = Fake::start(vec![
        Reply::json(answer("too late", 1, 1)).delay(Duration::from_secs(5)),
        Reply::json(answer("in time", 1, 1)),
    ]);
    let (doc, _) = run_json(
        openai(&fake, ", first_byte_timeout_seconds: 0.3", RETRYING),
        0,
    );
    assert_eq!(x(&doc)["output"], "in time");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
    // The retry came once the first byte was overdue, not after the fake's five seconds.
    let gap = fake.gap(0, 1);
    assert!(
        gap >= Duration::from_millis(250) && gap < Duration::from_secs(4),
        "{gap:?}"
    );
}

#[test]
fn stalled_stream_times_out_and_is_retried() {
    let fake = Fake::start(vec![
        stream(&["a ", "stall"], 1, 1).pause_before(2, Duration::from_secs(5)),
        stream(&["no stall"], 1, 1),
    ]);
    let (all, _) = run_jsonl(
        openai(&fake, ", first_byte_timeout_seconds: 0.3", RETRYING),
        0,
    );
    let x = x_finished(&all);
    assert_eq!(x["output"], "no stall");
    assert_eq!(x["attempts"], 2);
}

#[test]
fn missing_key_names_the_variable_and_sends_nothing() {
    let fake = Fake::always(Reply::json(answer("unused", 1, 1)));
    let out = invoke(&one_agent(&profile(&fake, ""), &[])).run().invalid();
    assert!(out.stderr.contains("OPENAI_API_KEY"), "{}", out.stderr);
    assert_eq!(fake.count(), 0);

    let out = invoke(&one_agent(
        &profile(&fake, ", api_key_env: MY_OPENAI_KEY"),
        &[],
    ))
    .env("OPENAI_API_KEY", KEY)
    .run()
    .invalid();
    assert!(out.stderr.contains("MY_OPENAI_KEY"), "{}", out.stderr);
    assert_eq!(fake.count(), 0);
}

#[test]
fn api_key_env_names_the_key() {
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    invoke(&one_agent(
        &profile(&fake, ", api_key_env: MY_OPENAI_KEY"),
        &[],
    ))
    .env("MY_OPENAI_KEY", "sk-from-my-var")
    .env("OPENAI_API_KEY", KEY)
    .run()
    .success();
    assert_eq!(
        fake.single().header("authorization"),
        Some("Bearer sk-from-my-var")
    );
}

/// `openai-compatible`: no key, missing usage estimated, no `[DONE]` after a finish reason.
#[test]
fn compatible_server_without_key_usage_or_done() {
    let fake = Fake::always(Reply::json(json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "local answer"}}]
    })));
    let yaml = one_agent(
        &format!(
            "{{provider: openai-compatible, base_url: \"{}/v1\", model: local, {PRICE}}}",
            fake.url()
        ),
        &[],
    );
    let (doc, _) = run_json(invoke(&yaml), 0);
    assert_eq!(x(&doc)["output"], "local answer");
    assert_eq!(x(&doc)["usage"]["estimated"], true, "{doc:#}");
    let r = fake.single();
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), None);

    let mut events = stream_events(&["streamed ", "locally"], 0, 0);
    events.truncate(events.len() - 2); // no usage, no [DONE]
    let fake = Fake::always(Reply::sse(events));
    let yaml = one_agent(
        &format!(
            "{{provider: openai-compatible, base_url: \"{}/v1\", model: local}}",
            fake.url()
        ),
        &[],
    );
    invoke(&yaml)
        .arg("--stream")
        .run()
        .success()
        .stdout("streamed locally\n");
}

/// Lenient, but not to the point of taking half an answer: without a finish reason a
/// stream that stops is broken.
#[test]
fn compatible_stream_ending_before_the_finish_reason_is_retried() {
    let fake = Fake::start(vec![
        stream(&["half ", "an answer"], 1, 1).end_after(2),
        stream(&["the whole answer"], 1, 1),
    ]);
    let yaml = one_agent(
        &format!(
            "{{provider: openai-compatible, base_url: \"{}/v1\", model: local}}",
            fake.url()
        ),
        RETRYING,
    );
    let (all, _) = run_jsonl(invoke(&yaml), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "the whole answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(fake.count(), 2);
}
