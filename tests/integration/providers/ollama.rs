//! Ollama's native `/api/chat`, streaming as NDJSON.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::fake::{Fake, Reply};
use super::{
    PRICE, RETRYING, assert_cost, assert_failed_once, assert_waited, cost, deltas, invoke,
    one_agent, run_json, run_jsonl, x, x_finished,
};

fn answer(text: &str, input: u64, output: u64) -> Value {
    json!({
        "model": "llama-test",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": text},
        "done": true,
        "done_reason": "stop",
        "total_duration": 1000,
        "prompt_eval_count": input,
        "eval_count": output
    })
}

fn stream_lines(pieces: &[&str], input: u64, output: u64) -> Vec<Value> {
    let mut lines: Vec<Value> = pieces
        .iter()
        .map(|p| {
            json!({
                "model": "llama-test",
                "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": p},
                "done": false
            })
        })
        .collect();
    lines.push(answer("", input, output));
    lines
}

fn stream(pieces: &[&str], input: u64, output: u64) -> Reply {
    Reply::ndjson(stream_lines(pieces, input, output))
}

fn error(status: u16, message: &str) -> Reply {
    Reply::status_json(status, json!({"error": message}))
}

fn profile(fake: &Fake, extra: &str) -> String {
    format!(
        "{{provider: ollama, base_url: \"{}\", model: llama-test, {PRICE}{extra}}}",
        fake.url()
    )
}

fn ollama(fake: &Fake, extra: &str, agent: &[&str]) -> crate::support::Test {
    invoke(&one_agent(&profile(fake, extra), agent))
}

#[test]
fn plain_call_sends_model_messages_and_no_key() {
    let fake = Fake::always(Reply::json(answer("Hi there", 12, 3)));
    ollama(&fake, "", &["system_prompt: Be brief.", "max_tokens: 50"])
        .run()
        .success()
        .stdout("Hi there\n");
    let r = fake.single();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/chat");
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.body["model"], "llama-test");
    assert_eq!(r.body["stream"], false, "Ollama streams unless told not to");
    assert_eq!(
        r.body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"}
        ])
    );
    assert_eq!(r.body["options"]["num_predict"], 50);
}

#[test]
fn ollama_host_without_scheme() {
    let fake = Fake::always(Reply::json(answer("from OLLAMA_HOST", 1, 1)));
    let yaml = one_agent("{provider: ollama, model: llama-test}", &[]);
    invoke(&yaml)
        .env("OLLAMA_HOST", fake.host_port())
        .run()
        .success()
        .stdout("from OLLAMA_HOST\n");
    assert_eq!(fake.single().path, "/api/chat");
}

#[test]
fn stream_flag_prints_the_text_as_it_arrives() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 5, 3));
    ollama(&fake, "", &[])
        .arg("--stream")
        .run()
        .success()
        .stdout("Hello world\n");
    assert_eq!(fake.single().body["stream"], true);
}

#[test]
fn jsonl_has_delta_events_and_streamed_usage() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 26, 4));
    let (all, _) = run_jsonl(ollama(&fake, "", &[]), 0);
    assert_eq!(deltas(&all, 1), "Hello world");
    let x = x_finished(&all);
    assert_eq!(x["output"], "Hello world");
    assert_eq!(x["usage"]["input_tokens"], 26);
    assert_eq!(x["usage"]["output_tokens"], 4);
    assert_cost(&x, cost(26, 4));
}

#[test]
fn usage_and_cost_in_json_output() {
    let fake = Fake::always(Reply::json(answer("counted", 300, 70)));
    let (doc, _) = run_json(ollama(&fake, "", &[]), 0);
    let x = x(&doc);
    assert_eq!(x["output"], "counted");
    assert_eq!(
        x["usage"],
        json!({"input_tokens": 300, "output_tokens": 70})
    );
    assert_cost(x, cost(300, 70));
}

#[test]
fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fake = Fake::start(vec![
        error(429, "too many requests").header("retry-after", "1"),
        Reply::json(answer("after the wait", 1, 1)),
    ]);
    let (doc, _) = run_json(ollama(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "after the wait");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_waited(&fake, Duration::from_millis(900));
}

#[test]
fn server_errors_are_retried() {
    let fake = Fake::start(vec![
        error(500, "llama runner process has terminated"),
        error(503, "server busy"),
        Reply::json(answer("recovered", 1, 1)),
    ]);
    let (doc, _) = run_json(ollama(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "recovered");
    assert_eq!(x(&doc)["attempts"], 3);
    assert_eq!(fake.count(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    for (status, message, words) in [
        (400, "invalid options", &["400", "invalid options"][..]),
        (401, "unauthorized", &["authentication failed", "401"][..]),
        (403, "forbidden", &["authentication failed", "403"][..]),
        (
            404,
            "model \"llama-test\" not found, try pulling it first",
            &["404", "not found"][..],
        ),
    ] {
        let fake = Fake::always(error(status, message));
        let (doc, _) = run_json(ollama(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, words);
    }
}

#[test]
fn malformed_body_is_a_decode_error() {
    for body in [
        Reply::raw(200, "application/json", "{\"message\": {\"con"),
        Reply::json(json!({"model": "llama-test", "done": true})),
    ] {
        let fake = Fake::always(body);
        let (doc, _) = run_json(ollama(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, &["decode"]);
    }
}

#[test]
fn stream_cut_midway_is_retried_from_the_start() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half ", "and"], 3, 3).cut_after(2),
        stream(&["The complete ", "second answer"], 3, 4),
    ]);
    let (all, _) = run_jsonl(ollama(&fake, "", RETRYING), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "The complete second answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(deltas(&all, 2), "The complete second answer");
    assert_eq!(fake.count(), 2);
}

#[test]
fn stream_ending_before_done_is_retried() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half ", "and"], 3, 3).end_after(2),
        stream(&["whole"], 3, 4),
    ]);
    let (all, _) = run_jsonl(ollama(&fake, "", RETRYING), 0);
    assert_eq!(x_finished(&all)["output"], "whole");
    assert_eq!(fake.count(), 2);
}

#[test]
fn error_line_in_the_stream_is_retried() {
    let mut lines = stream_lines(&["par", "tial"], 1, 1);
    lines.truncate(2);
    lines.push(json!({"error": "an error was encountered while running the model"}));
    let fake = Fake::start(vec![Reply::ndjson(lines), stream(&["whole"], 1, 1)]);
    let (all, _) = run_jsonl(ollama(&fake, "", RETRYING), 0);
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
        ollama(&fake, ", first_byte_timeout_seconds: 0.3", RETRYING),
        0,
    );
    assert_eq!(x(&doc)["output"], "in time");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn api_key_env_missing_is_an_error_naming_it() {
    let fake = Fake::always(Reply::json(answer("unused", 1, 1)));
    let out = ollama(&fake, ", api_key_env: OLLAMA_API_KEY", &[])
        .run()
        .invalid();
    assert!(out.stderr.contains("OLLAMA_API_KEY"), "{}", out.stderr);
    assert_eq!(fake.count(), 0);
}

#[test]
fn api_key_env_is_sent_as_a_bearer_token() {
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    ollama(&fake, ", api_key_env: OLLAMA_API_KEY", &[])
        .env("OLLAMA_API_KEY", "ollama-secret")
        .run()
        .success();
    assert_eq!(
        fake.single().header("authorization"),
        Some("Bearer ollama-secret")
    );
}
