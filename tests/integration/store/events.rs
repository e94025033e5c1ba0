//! The event stream (`--output jsonl`): every event numbered and stamped, a `call_started`
//! and a `call_finished` for every request the model saw (nested ensembles and `generate`
//! producers included), and the same events in the store.

use std::collections::BTreeMap;
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::model::Model;
use super::{Session, of_type};

fn ensemble(model: &Model) -> (String, String) {
    let profile = model.profile("");
    let outer = format!(
        "\
name: watched
model_profiles:
  m: {profile}
agents:
  - name: left
    model_profile: m
    system_prompt: left
  - name: right
    model_profile: m
    system_prompt: right
  - name: nested
    ensemble: inner.yaml
    depends_on: [left]
  - name: ideas
    type: generate
    topic: \"{{{{ input }}}}\"
    model_profile: m
    producers: 2
    batch_size: 3
    stop: {{iterations: 2}}
  - name: last
    model_profile: m
    depends_on: [nested, right, ideas]
"
    );
    let inner = format!(
        "name: inner\nmodel_profiles:\n  m: {profile}\nagents:\n  - name: x\n    model_profile: m\n  - name: y\n    model_profile: m\n    depends_on: [x]\n"
    );
    (outer, inner)
}

#[test]
fn every_event_is_numbered_and_every_call_is_announced() {
    let model = Model::with_delay(Duration::from_millis(20));
    let session = Session::new();
    let (outer, inner) = ensemble(&model);
    session.file("watched.yaml", &outer);
    session.file("inner.yaml", &inner);
    let out = session
        .run(&["invoke", "watched.yaml", "hello", "--output", "jsonl"])
        .success();
    let events = out.json_lines();
    let id = events[0]["run_id"].as_str().expect("a run id").to_string();

    let mut elapsed = 0;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["run_id"], id.as_str(), "{e}");
        assert_eq!(e["seq"], i as u64 + 1, "seq without gaps: {e}");
        let ts = e["ts"].as_str().unwrap_or_else(|| panic!("no ts: {e}"));
        assert!(ts.ends_with('Z'), "not UTC: {ts}");
        humantime::parse_rfc3339(ts).unwrap_or_else(|err| panic!("`{ts}` is not RFC 3339: {err}"));
        let ms = e["elapsed_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no elapsed_ms: {e}"));
        assert!(ms >= elapsed, "elapsed_ms went back: {e}");
        elapsed = ms;
        assert!(e["type"].is_string(), "{e}");
    }
    assert_eq!(events[0]["type"], "run_started");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["result"]["status"], "succeeded");

    // One call_started and one call_finished per request the model saw: 4 plain agents
    // (left, right, last and x, y inside `nested`) and 4 producer calls.
    let started = of_type(&events, "call_started");
    let finished = of_type(&events, "call_finished");
    assert_eq!(model.count(), 9);
    assert_eq!(started.len(), model.count(), "{started:#?}");
    assert_eq!(finished.len(), model.count(), "{finished:#?}");
    let key = |e: &Value| {
        (
            e["path"].to_string(),
            e["agent"].as_str().unwrap().to_string(),
            e["call"].as_u64().unwrap(),
            e["attempt"].as_u64().unwrap(),
            e["request_hash"].as_str().unwrap().to_string(),
        )
    };
    let mut open: BTreeMap<_, u64> = BTreeMap::new();
    for e in &events {
        match e["type"].as_str() {
            Some("call_started") => {
                assert!(
                    open.insert(key(e), e["seq"].as_u64().unwrap()).is_none(),
                    "{e}"
                );
            }
            Some("call_finished") => {
                let opened = open
                    .remove(&key(e))
                    .unwrap_or_else(|| panic!("finished before it started: {e}"));
                assert!(opened < e["seq"].as_u64().unwrap());
                assert_eq!(e["status"], "ok", "{e}");
                assert_eq!(e["source"], "provider", "{e}");
                assert_eq!(e["profile"], "m", "{e}");
                assert_eq!(e["model"], "fake-1", "{e}");
                assert!(e["latency_ms"].is_u64(), "{e}");
                assert_eq!(e["usage"]["output_tokens"], 3, "{e}");
                assert!(e["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{e}");
                assert_eq!(e["finish_reason"], "stop", "{e}");
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "calls never finished: {open:?}");
    let nested: Vec<&&Value> = finished
        .iter()
        .filter(|e| e["path"] == serde_json::json!(["nested"]))
        .collect();
    assert_eq!(nested.len(), 2, "x and y, forwarded with their path");
    let producers = finished.iter().filter(|e| e["producer"].is_u64()).count();
    assert_eq!(producers, 4, "two calls of each of two producers");
    assert!(!of_type(&events, "item_accepted").is_empty());

    // The store has exactly these events.
    let stored = session
        .run(&["runs", "show", &id, "--events"])
        .success()
        .json_lines();
    assert_eq!(stored, events);
    let exported = session
        .run(&["runs", "export", &id, "--format", "jsonl"])
        .success()
        .json_lines();
    assert_eq!(exported, events);
}
