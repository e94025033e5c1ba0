//! Google Gemini `generateContent` and `streamGenerateContent?alt=sse`.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::fake::{Fake, Reply};
use super::{
    PRICE, RETRYING, assert_cost, assert_failed_once, assert_waited, cost, deltas, invoke,
    one_agent, run_json, run_jsonl, x, x_finished,
};

const KEY: &str = "AIza-test-gemini-key";

fn candidate(text: &str, finish: Option<&str>) -> Value {
    let mut c = json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if let Some(f) = finish {
        c["finishReason"] = json!(f);
    }
    c
}

fn usage(input: u64, output: u64) -> Value {
    json!({"promptTokenCount": input, "candidatesTokenCount": output, "totalTokenCount": input + output})
}

fn answer(text: &str, input: u64, output: u64) -> Value {
    json!({
        "candidates": [candidate(text, Some("STOP"))],
        "usageMetadata": usage(input, output),
        "modelVersion": "gemini-x"
    })
}

/// A streamed answer: one chunk per piece, the last with `finishReason` and usage. Gemini
/// ends its SSE lines with CRLF.
fn stream_events(pieces: &[&str], input: u64, output: u64) -> Vec<String> {
    let n = pieces.len();
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let last = i + 1 == n;
            let mut chunk = json!({"candidates": [candidate(p, last.then_some("STOP"))], "modelVersion": "gemini-x"});
            if last {
                chunk["usageMetadata"] = usage(input, output);
            }
            format!("data: {chunk}\r\n\r\n")
        })
        .collect()
}

fn stream(pieces: &[&str], input: u64, output: u64) -> Reply {
    Reply::sse(stream_events(pieces, input, output))
}

fn error(code: u16, status: &str, message: &str) -> Reply {
    Reply::status_json(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn profile(fake: &Fake, extra: &str) -> String {
    format!(
        "{{provider: gemini, base_url: \"{}/v1beta\", model: gemini-x, {PRICE}{extra}}}",
        fake.url()
    )
}

fn gemini(fake: &Fake, extra: &str, agent: &[&str]) -> crate::support::Test {
    invoke(&one_agent(&profile(fake, extra), agent)).env("GEMINI_API_KEY", KEY)
}

#[test]
fn plain_call_sends_contents_system_instruction_and_key_header() {
    let fake = Fake::always(Reply::json(answer("Hi there", 12, 3)));
    gemini(&fake, "", &["system_prompt: Be brief.", "max_tokens: 64"])
        .run()
        .success()
        .stdout("Hi there\n");
    let r = fake.single();
    assert_eq!(r.method, "POST");
    // The key goes in a header, never in the URL.
    assert_eq!(r.path, "/v1beta/models/gemini-x:generateContent");
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert_eq!(
        r.body["contents"],
        json!([{"role": "user", "parts": [{"text": "hello"}]}])
    );
    assert_eq!(
        r.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(r.body["generationConfig"]["maxOutputTokens"], 64);
}

#[test]
fn google_api_key_is_the_second_choice() {
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    invoke(&one_agent(&profile(&fake, ""), &[]))
        .env("GOOGLE_API_KEY", "AIza-google")
        .run()
        .success();
    assert_eq!(fake.single().header("x-goog-api-key"), Some("AIza-google"));
}

#[test]
fn stream_flag_prints_the_text_as_it_arrives() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 5, 3));
    gemini(&fake, "", &[])
        .arg("--stream")
        .run()
        .success()
        .stdout("Hello world\n");
    let r = fake.single();
    assert_eq!(
        r.path,
        "/v1beta/models/gemini-x:streamGenerateContent?alt=sse"
    );
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
}

#[test]
fn jsonl_has_delta_events_and_streamed_usage() {
    let fake = Fake::always(stream(&["Hel", "lo ", "world"], 8, 6));
    let (all, _) = run_jsonl(gemini(&fake, "", &[]), 0);
    assert_eq!(deltas(&all, 1), "Hello world");
    let x = x_finished(&all);
    assert_eq!(x["output"], "Hello world");
    assert_eq!(x["usage"]["input_tokens"], 8);
    assert_eq!(x["usage"]["output_tokens"], 6);
    assert_cost(&x, cost(8, 6));
}

#[test]
fn usage_with_thoughts_and_cache_and_cost_in_json_output() {
    let mut body = answer("thought about it", 100, 20);
    body["usageMetadata"]["thoughtsTokenCount"] = json!(30);
    body["usageMetadata"]["cachedContentTokenCount"] = json!(60);
    let fake = Fake::always(Reply::json(body));
    let (doc, _) = run_json(gemini(&fake, "", &[]), 0);
    let x = x(&doc);
    assert_eq!(x["output"], "thought about it");
    // Thinking tokens are reported apart from the answer's, and billed as output.
    assert_eq!(
        x["usage"],
        json!({"input_tokens": 100, "output_tokens": 20, "reasoning_tokens": 30, "cached_input_tokens": 60})
    );
    assert_cost(x, cost(100, 50));
}

#[test]
fn retry_info_delay_is_honoured() {
    let fake = Fake::start(vec![
        Reply::status_json(
            429,
            json!({"error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.2s"}
                ]
            }}),
        ),
        Reply::json(answer("after the wait", 1, 1)),
    ]);
    let (doc, _) = run_json(gemini(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["output"], "after the wait");
    assert_eq!(x(&doc)["attempts"], 2);
    assert_eq!(fake.count(), 2);
    assert_waited(&fake, Duration::from_millis(1100));
}

#[test]
fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fake = Fake::start(vec![
        error(429, "RESOURCE_EXHAUSTED", "slow down").header("retry-after", "1"),
        Reply::json(answer("after the wait", 1, 1)),
    ]);
    let (doc, _) = run_json(gemini(&fake, "", RETRYING), 0);
    assert_eq!(x(&doc)["attempts"], 2);
    assert_waited(&fake, Duration::from_millis(900));
}

#[test]
fn server_errors_are_retried() {
    for (status, kind) in [(500, "INTERNAL"), (503, "UNAVAILABLE")] {
        let fake = Fake::start(vec![
            error(status, kind, "The model is overloaded."),
            Reply::json(answer("recovered", 1, 1)),
        ]);
        let (doc, _) = run_json(gemini(&fake, "", RETRYING), 0);
        assert_eq!(x(&doc)["output"], "recovered", "HTTP {status}: {doc:#}");
        assert_eq!(x(&doc)["attempts"], 2);
        assert_eq!(fake.count(), 2);
    }
}

#[test]
fn client_errors_are_not_retried() {
    for (status, kind, words) in [
        (400, "INVALID_ARGUMENT", &["400"][..]),
        (
            401,
            "UNAUTHENTICATED",
            &["authentication failed", "401"][..],
        ),
        (
            403,
            "PERMISSION_DENIED",
            &["authentication failed", "403"][..],
        ),
        (404, "NOT_FOUND", &["404"][..]),
    ] {
        let fake = Fake::always(error(status, kind, "nope"));
        let (doc, _) = run_json(gemini(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, words);
    }
}

#[test]
fn malformed_body_is_a_decode_error() {
    for body in [
        Reply::raw(200, "application/json", "{\"candidates\": ["),
        Reply::json(json!({"modelVersion": "gemini-x"})),
    ] {
        let fake = Fake::always(body);
        let (doc, _) = run_json(gemini(&fake, "", RETRYING), 1);
        assert_failed_once(&fake, &doc, &["decode"]);
    }
}

#[test]
fn stream_cut_midway_is_retried_from_the_start() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half ", "and"], 3, 3).cut_after(2),
        stream(&["The complete ", "second answer"], 3, 4),
    ]);
    let (all, _) = run_jsonl(gemini(&fake, "", RETRYING), 0);
    let x = x_finished(&all);
    assert_eq!(x["output"], "The complete second answer");
    assert_eq!(x["attempts"], 2);
    assert_eq!(deltas(&all, 2), "The complete second answer");
    assert_eq!(fake.count(), 2);
}

#[test]
fn stream_ending_without_finish_reason_is_retried() {
    let fake = Fake::start(vec![
        stream(&["The first ", "half ", "and"], 3, 3).end_after(2),
        stream(&["whole"], 3, 4),
    ]);
    let (all, _) = run_jsonl(gemini(&fake, "", RETRYING), 0);
    assert_eq!(x_finished(&all)["output"], "whole");
    assert_eq!(fake.count(), 2);
}

#[test]
fn slow_first_byte_times_out_and_is_retried() {
    let fake = Fake::start(vec![
        stream(&["too late"], 1, 1).delay(Duration::from_secs(5)),
        stream(&["in time"], 1, 1),
    ]);
    let (all, _) = run_jsonl(
        gemini(&fake, ", first_byte_timeout_seconds: 0.3", RETRYING),
        0,
    );
    let x = x_finished(&all);
    assert_eq!(x["output"], "in time");
    assert_eq!(x["attempts"], 2);
    assert_eq!(fake.count(), 2);
}

#[test]
fn missing_key_names_the_variable_and_sends_nothing() {
    let fake = Fake::always(Reply::json(answer("unused", 1, 1)));
    let out = invoke(&one_agent(&profile(&fake, ""), &[])).run().invalid();
    assert!(out.stderr.contains("GEMINI_API_KEY"), "{}", out.stderr);
    assert_eq!(fake.count(), 0);
}

#[test]
fn options_merge_deeply_into_the_request_body() {
    // A `generationConfig` in options adds to the one orc builds (and the agent's options
    // add to the profile's), never replacing it (#12).
    let fake = Fake::always(Reply::json(answer("ok", 1, 1)));
    gemini(
        &fake,
        ", options: {generationConfig: {topK: 20, thinkingConfig: {thinkingBudget: 512}}}",
        &[
            "max_tokens: 64",
            "temperature: 0.5",
            "options: {generationConfig: {thinkingConfig: {includeThoughts: true}}, labels: {team: data}}",
        ],
    )
    .run()
    .success();
    let r = fake.single();
    assert_eq!(
        r.body["generationConfig"],
        json!({
            "temperature": 0.5,
            "maxOutputTokens": 64,
            "topK": 20,
            "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": true}
        })
    );
    assert_eq!(r.body["labels"], json!({"team": "data"}));
}

#[test]
fn a_stream_without_usage_keeps_its_text_and_reports_usage_unknown() {
    let chunk = |text: &str| {
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [candidate(text, Some("STOP"))]})
        )
    };
    let fake = Fake::always(Reply::sse(vec![chunk("no usage "), chunk("here")]));
    let out = gemini(&fake, "", &[])
        .arg("--stream")
        .run()
        .success()
        .stdout("no usage here\n")
        .stderr_contains("usage unknown for 1 agent");
    assert!(!out.stderr.contains("0 tokens in"), "{}", out.stderr);
    let fake = Fake::always(Reply::sse(vec![chunk("no usage "), chunk("here")]));
    let (doc, _) = run_json(gemini(&fake, "", &[]).arg("--stream"), 0);
    assert!(x(&doc)["usage"].is_null(), "{doc:#}");
    assert!(x(&doc)["cost_usd"].is_null(), "{doc:#}");
    assert_eq!(doc["totals"]["usage_unknown_agents"], 1);
    assert!(doc["totals"]["cost_usd"].is_null(), "{doc:#}");
}

#[test]
fn a_blocked_answer_is_a_blocked_error() {
    // A candidate stopped by the safety filter with no text at all.
    let body = json!({
        "candidates": [{"content": {"role": "model"}, "finishReason": "SAFETY", "index": 0}],
        "usageMetadata": usage(5, 0)
    });
    let fake = Fake::always(Reply::json(body));
    let (doc, _) = run_json(gemini(&fake, "", RETRYING), 1);
    assert_failed_once(&fake, &doc, &["blocked", "answer", "SAFETY"]);
    assert_eq!(x(&doc)["error_kind"], "blocked");
    assert_eq!(x(&doc)["finish_reason"], "content_filter");
}
