//! Streaming as a user sees it (#12): `--stream` asks the provider to stream whatever the
//! output format, a retried stream never prints the same text twice, and the offline mock
//! streams its answer word by word.

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::fake::{Fake, Reply};
use super::openai::{KEY, stream_events};
use super::{RETRYING, events, invoke, one_agent, run_json, run_jsonl, x};
use crate::support::Test;

fn openai(fake: &Fake) -> Test {
    let profile = format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test}}",
        fake.url()
    );
    invoke(&one_agent(&profile, RETRYING)).env("OPENAI_API_KEY", KEY)
}

/// A stream of `pieces` that breaks off after `sent` of its events.
fn broken(pieces: &[&str], sent: usize) -> Reply {
    Reply::sse(stream_events(pieces, 3, 3)).cut_after(sent)
}

#[test]
fn stream_with_json_output_streams_the_request() {
    let fake = Fake::always(Reply::sse(stream_events(&["Hel", "lo"], 2, 2)));
    let (doc, _) = run_json(openai(&fake).arg("--stream"), 0);
    assert_eq!(x(&doc)["output"], "Hello");
    assert_eq!(fake.single().body["stream"], true);
}

#[test]
fn a_retried_stream_that_repeats_itself_is_printed_once() {
    // The first attempt breaks after "The answer ", the retry sends the same answer whole.
    let fake = Fake::start(vec![
        broken(&["The answer ", "is 42."], 2),
        Reply::sse(stream_events(&["The answer ", "is 42."], 3, 3)),
    ]);
    let out = openai(&fake).arg("--stream").run().success();
    assert_eq!(out.stdout, "The answer is 42.\n");
    assert_eq!(fake.count(), 2);
}

#[test]
fn a_retried_stream_that_says_something_else_is_not_mixed_with_the_first() {
    let fake = Fake::start(vec![
        broken(&["The first ", "half"], 3),
        Reply::sse(stream_events(&["A different ", "answer"], 3, 3)),
    ]);
    let out = openai(&fake)
        .arg("--stream")
        .run()
        .success()
        .stderr_contains("its retry differs");
    // What was printed stays; the new answer follows on its own line, printed once.
    assert_eq!(out.stdout, "The first half\nA different answer\n");
}

#[test]
fn a_stream_that_fails_every_time_leaves_its_text_once() {
    let fake = Fake::always(broken(&["Partial ", "text ", "more"], 3));
    let out = openai(&fake).arg("--stream").run().failure();
    assert_eq!(out.stdout, "Partial text \n");
    assert_eq!(fake.count(), 3, "two retries");
}

/// A mock profile that takes its time, so streaming has something to spread.
const SLOW_MOCK: &str = "{provider: mock, latency_ms: 300}";

fn mock_deltas(seed: &str) -> (Vec<String>, Value) {
    let (all, _) = run_jsonl(invoke(&one_agent(SLOW_MOCK, &[])).args(["--seed", seed]), 0);
    let pieces = events(&all, "agent_delta")
        .iter()
        .map(|e| e["text"].as_str().expect("delta text").to_string())
        .collect();
    let finished = events(&all, "run_finished")[0]["result"].clone();
    (pieces, finished)
}

#[test]
fn the_mock_streams_its_answer_word_by_word() {
    let (pieces, result) = mock_deltas("7");
    let output = result["agents"][0]["output"].as_str().expect("an output");
    assert_eq!(pieces.concat(), output);
    assert_eq!(
        pieces.len(),
        output.split_inclusive(' ').count(),
        "one delta per word: {pieces:?}"
    );
    assert!(pieces.len() > 5, "{pieces:?}");
    // Deterministic per seed, as the rest of the mock.
    assert_eq!(mock_deltas("7").0, pieces);
    assert_eq!(result["agents"][0]["finish_reason"], "stop");
}

#[test]
fn the_mock_flags_an_answer_cut_by_max_tokens() {
    let (doc, out) = run_json(
        invoke(&one_agent("{provider: mock}", &["max_tokens: 3"])),
        0,
    );
    let x = x(&doc);
    assert_eq!(x["truncated"], true, "{x:#}");
    assert_eq!(x["finish_reason"], "length");
    assert!(out.stderr.contains("cut off"), "{}", out.stderr);
}

#[test]
fn a_cut_off_response_format_answer_is_retried_like_invalid_json() {
    let cut = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"n\": 1"},
                     "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4}
    });
    let fake = Fake::start(vec![
        Reply::json(cut),
        Reply::json(super::openai::answer("{\"n\": 12}", 5, 5)),
    ]);
    let profile = format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test}}",
        fake.url()
    );
    let yaml = one_agent(&profile, &["retries: 2", "response_format: json"]);
    let (doc, _) = run_json(invoke(&yaml).env("OPENAI_API_KEY", KEY), 0);
    let x = x(&doc);
    assert_eq!(x["output"], "{\"n\":12}");
    assert_eq!(x["attempts"], 2);
    assert_eq!(x["truncated"], false, "the accepted answer is whole: {x:#}");
    // Usage of the rejected answer counts too.
    assert_eq!(x["usage"]["input_tokens"], 10);
    let retry = &fake.requests()[1].body["messages"][0]["content"];
    assert!(
        retry.as_str().is_some_and(|p| p.contains("cut off")),
        "the retry says why: {retry}"
    );
}
