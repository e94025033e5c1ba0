//! Resuming a `generate` node killed with -9 midway: it keeps what it had found, rebuilds
//! its uniqueness tracker from it (no item twice across the whole node), and goes on to its
//! stop condition.

use std::collections::BTreeSet;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::{Session, of_type, wait_until};
use crate::support::agent;

const PRODUCERS: u64 = 2;
const ITERATIONS: u64 = 20;

/// `extra`: more keys of the node, one indented line each.
fn ensemble(extra: &str) -> String {
    format!(
        "\
name: gen
model_profiles:
  slowmock: {{provider: mock, latency_ms: 200}}
agents:
  - name: ideas
    type: generate
    topic: kitchen tools
    model_profile: slowmock
    producers: {PRODUCERS}
    batch_size: 5
    stop: {{iterations: {ITERATIONS}}}
{extra}"
    )
}

/// The texts of the `item_accepted` events of `events`.
fn accepted(events: &[Value]) -> Vec<String> {
    of_type(events, "item_accepted")
        .into_iter()
        .map(|e| e["text"].as_str().expect("an item's text").to_string())
        .collect()
}

/// The stored event log of a run.
fn stored_events(session: &Session, id: &str) -> Vec<Value> {
    session
        .run(&["runs", "show", id, "--events"])
        .success()
        .json_lines()
}

/// How many `item_accepted` events of run `id` the store has, read straight from the file
/// (quick enough to catch the run well before it ends).
fn stored_items(session: &Session, id: &str) -> usize {
    let Some(conn) = session.try_sql() else {
        return 0;
    };
    let Ok(mut stmt) = conn.prepare("SELECT data FROM events WHERE run_id = ?1") else {
        return 0;
    };
    let blobs: Vec<String> = stmt
        .query_map([id], |r| r.get(0))
        .and_then(Iterator::collect)
        .unwrap_or_default();
    blobs
        .iter()
        .map(|b| b.matches("\"type\":\"item_accepted\"").count())
        .sum()
}

/// The normal form orc keeps items unique by (itself checked, independently, by the
/// `generate::uniqueness` tests).
fn normal(text: &str) -> String {
    orc::nodes::normalize::normalize(text, true)
}

#[test]
fn a_generate_node_killed_midway_resumes_without_duplicates() {
    killed_and_resumed("");
}

/// Without feedback every call of the node sends the same request: the answers of calls
/// made before the kill must not be handed out again for the calls made after it.
#[test]
fn a_generate_node_without_feedback_resumes_with_new_calls() {
    killed_and_resumed("    feedback: 0\n");
}

fn killed_and_resumed(extra: &str) {
    let session = Session::new();
    session.file("gen.yaml", &ensemble(extra));
    let run = session.spawn(&["invoke", "gen.yaml", "", "--output", "jsonl"]);
    let id = run.run_id();
    wait_until("ten items in the store", || {
        stored_items(&session, &id) >= 10
    });
    let (printed, _) = run.kill9();
    assert!(
        !printed.iter().any(|e| e["type"] == "run_finished"),
        "killed before the node finished"
    );
    assert_eq!(session.status_of(&id), "interrupted");
    let before = accepted(&stored_events(&session, &id));
    assert!(before.len() >= 10);

    let out = session.run(&["resume", &id, "--output", "json"]).success();
    let doc = out.json();
    assert_eq!(doc["run_id"], id.as_str());
    let node = agent(&doc, "ideas");
    assert_eq!(node["status"], "succeeded", "{node:#}");
    let items: Vec<String> = node["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["text"].as_str().expect("text").to_string())
        .collect();

    // The earlier items are kept, first and in order; more were found after them.
    assert_eq!(items[..before.len()], before[..]);
    assert!(items.len() > before.len(), "{} items", items.len());
    let m = &node["metrics"];
    assert_eq!(m["resumed_items"], before.len() as u64, "{m:#}");
    assert_eq!(m["unique"], items.len() as u64, "{m:#}");

    // No item twice, by normal form, across the whole node.
    let mut seen = BTreeSet::new();
    for item in &items {
        assert!(
            seen.insert(normal(item)),
            "`{item}` was kept twice (as `{}`)",
            normal(item)
        );
    }
    // The whole event log, both processes together, accepted each item once.
    let logged = accepted(&stored_events(&session, &id));
    assert_eq!(
        logged
            .iter()
            .map(|t| normal(t))
            .collect::<BTreeSet<_>>()
            .len(),
        logged.len(),
        "an item accepted twice in the log"
    );
    assert_eq!(
        logged.into_iter().collect::<BTreeSet<_>>(),
        items.iter().cloned().collect::<BTreeSet<_>>()
    );

    // It went on to its stop condition: every producer made all its calls, counting those
    // made before the kill.
    assert_eq!(m["stop_reason"], "iterations", "{m:#}");
    assert_eq!(m["calls"], PRODUCERS * ITERATIONS, "{m:#}");
    assert_eq!(session.status_of(&id), "succeeded");
    // Every item call was sent: the items found before the kill are restored, not their
    // answers replayed.
    let shown = session
        .run(&["runs", "show", &id, "-o", "json"])
        .success()
        .json();
    let calls = shown["calls"].as_array().expect("calls");
    assert_eq!(calls.len() as u64, PRODUCERS * ITERATIONS, "{calls:#?}");
    assert!(
        calls.iter().all(|c| c["source"] == "provider"),
        "{calls:#?}"
    );
}
