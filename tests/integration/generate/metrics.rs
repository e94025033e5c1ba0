//! Honest metrics: every call paid for is counted, UAM is over the wall-clock time of the
//! node, progress is reported live, items are written with their provenance, and the
//! partitions are reported.

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::{TOPIC, ensemble, float, item_calls, num, run_gen, texts};
use crate::support::{ENSEMBLE, Test, agent};

const PRICED: &str = "price: {input_per_mtok: 10.0, output_per_mtok: 30.0}";

/// A topic of five items is exhausted by the first call; every later call finds nothing
/// new, yet its tokens and cost are in the totals like any other call's.
#[test]
fn zero_yield_calls_are_paid_for() {
    let mock = format!("{{provider: mock, vocabulary: 5, {PRICED}}}");
    let yaml = ensemble(
        &[("tiny", &mock)],
        &["producers: 2", "batch_size: 5", "stop: {iterations: 4}"],
    );
    let node = run_gen(&yaml, &[]);
    let m = &node["metrics"];
    assert_eq!(num(m, "unique"), 5);
    assert_eq!(num(m, "calls"), 8);
    let log = m["calls_log"].as_array().unwrap();
    let barren: Vec<&Value> = log.iter().filter(|c| num(c, "new") == 0).collect();
    assert!(barren.len() >= 6, "{log:#?}");
    for c in &barren {
        assert!(c["error"].is_null(), "{c}");
        assert!(num(&c["usage"], "input_tokens") > 0, "{c}");
        assert!(num(&c["usage"], "output_tokens") > 0, "{c}");
        assert!(float(c, "cost_usd") > 0.0, "{c}");
    }
    let fruitful_cost: f64 = log
        .iter()
        .filter(|c| num(c, "new") > 0)
        .map(|c| float(c, "cost_usd"))
        .sum();
    let barren_cost: f64 = barren.iter().map(|c| float(c, "cost_usd")).sum();
    assert!(
        (float(m, "cost_usd") - (fruitful_cost + barren_cost)).abs() < 1e-12,
        "total ${} is not fruitful ${fruitful_cost} + zero-yield ${barren_cost}",
        m["cost_usd"]
    );
    assert!(float(m, "cost_usd") > 2.0 * fruitful_cost);
    assert_eq!(num(&m["per_profile"]["tiny"], "calls"), 8);
    assert_eq!(node["cost_usd"], m["cost_usd"]);
    assert_eq!(node["usage"]["input_tokens"], m["input_tokens"]);
    // The series shows it: one productive call, then nothing.
    let series: Vec<u64> = m["new_per_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(series.len(), 8);
    assert_eq!(series.iter().filter(|n| **n > 0).count(), 8 - barren.len());
}

/// Failed calls are counted as calls (and as failed), with whatever they used.
#[test]
fn failed_calls_are_counted() {
    let yaml = ensemble(
        &[
            ("ok", "{provider: mock}"),
            (
                "broken",
                "{provider: mock, fail_rate: 1.0, fail_with: server_error}",
            ),
        ],
        &["producers: 2", "stop: {iterations: 2}"],
    );
    let node = run_gen(&yaml, &[]);
    let m = &node["metrics"];
    assert_eq!(num(m, "calls"), 4);
    assert_eq!(num(m, "failed_calls"), 2);
    assert_eq!(num(&m["per_profile"]["broken"], "failed_calls"), 2);
    for c in m["calls_log"].as_array().unwrap() {
        assert_eq!(c["error"].is_null(), c["profile"] == "ok", "{c}");
    }
}

/// UAM is the unique count over the whole run's minutes, not over an early window.
#[test]
fn uam_is_over_wall_clock_time() {
    let mock = format!("{{provider: mock, latency_ms: 20, {PRICED}}}");
    let yaml = ensemble(
        &[("m", &mock)],
        &["producers: 2", "batch_size: 10", "stop: {iterations: 4}"],
    );
    let node = run_gen(&yaml, &[]);
    let m = &node["metrics"];
    let elapsed_ms = num(m, "elapsed_ms");
    // Four sequential calls of 20 ms: at least 80 ms (the lower bound is what sleeping
    // guarantees; nothing is assumed about how much longer it took).
    assert!(elapsed_ms >= 80, "{m:#}");
    let minutes = elapsed_ms as f64 / 60_000.0;
    let uam = float(m, "uam");
    let expected = num(m, "unique") as f64 / minutes;
    assert!(
        (uam - expected).abs() <= expected * 0.05,
        "uam {uam} is not unique / minutes = {expected}"
    );
    let per_minute = float(m, "cost_per_minute");
    let expected = float(m, "cost_usd") / minutes;
    assert!(
        (per_minute - expected).abs() <= expected * 0.05,
        "cost_per_minute {per_minute} is not cost / minutes = {expected}"
    );
    // Items are stamped within the run.
    for item in node["items"].as_array().unwrap() {
        assert!(num(item, "at") <= elapsed_ms, "{item}");
    }
}

#[test]
fn progress_events_while_it_runs() {
    let mock = format!("{{provider: mock, {PRICED}}}");
    let yaml = ensemble(&[("m", &mock)], &["producers: 2", "stop: {iterations: 3}"]);
    let out = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "go", "--output", "jsonl"])
        .run()
        .success();
    let events = out.json_lines();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "node_progress")
        .collect();
    assert_eq!(progress.len(), 6, "one per call: {events:#?}");
    let finished = events
        .iter()
        .find(|e| e["type"] == "run_finished")
        .expect("run_finished");
    let node = agent(&finished["result"], "gen");
    let mut last_unique = 0;
    for (i, p) in progress.iter().enumerate() {
        assert_eq!(p["agent"], "gen");
        assert_eq!(num(p, "calls"), i as u64 + 1, "{p}");
        assert!(num(p, "unique") >= last_unique, "{p}");
        assert!(num(p, "candidates") >= num(p, "unique"), "{p}");
        assert!(float(p, "uam") > 0.0, "{p}");
        assert!(p["cost_usd"].is_number(), "{p}");
        last_unique = num(p, "unique");
    }
    let last = progress.last().unwrap();
    assert_eq!(last["unique"], node["metrics"]["unique"]);
    assert_eq!(last["candidates"], node["metrics"]["candidates"]);
    assert!((float(last, "cost_usd") - float(&node["metrics"], "cost_usd")).abs() < 1e-12);
    // The events come before the agent's end.
    let position = |kind: &str| events.iter().position(|e| e["type"] == kind).unwrap();
    assert!(position("node_progress") > position("agent_started"));
    assert!(
        events
            .iter()
            .rposition(|e| e["type"] == "node_progress")
            .unwrap()
            < position("agent_finished")
    );
}

/// `output:` writes the unique items as JSON lines as they are found, with provenance.
#[test]
fn output_file_has_one_item_per_line() {
    let yaml = ensemble(
        &[("a", "{provider: mock}"), ("b", "{provider: mock}")],
        &[
            "producers: 3",
            "batch_size: 8",
            "stop: {iterations: 3}",
            "output: found/items.jsonl",
        ],
    );
    let test = Test::new().ensemble(&yaml).file("found/.keep", "");
    let out = test
        .args(["invoke", ENSEMBLE, "go", "--output", "json", "-q"])
        .run()
        .success();
    let node = agent(&out.json(), "gen").clone();
    let text =
        std::fs::read_to_string(out.test.path().join("found/items.jsonl")).expect("the items file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len() as u64, num(&node["metrics"], "unique"));
    assert_eq!(
        lines
            .iter()
            .map(|l| l["text"].as_str().unwrap())
            .collect::<Vec<_>>(),
        texts(&node),
        "the same items in the same order"
    );
    for (line, item) in lines.iter().zip(node["items"].as_array().unwrap()) {
        for key in ["text", "producer", "profile", "call", "at"] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
            assert_eq!(line[key], item[key], "`{key}` of {line}");
        }
    }
    let profiles: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["profile"].as_str().unwrap())
        .collect();
    assert_eq!(profiles, ["a", "b"].into());
}

#[test]
fn an_unwritable_output_file_fails_the_node() {
    let yaml = ensemble(
        &[("m", "{provider: mock}")],
        &["stop: {iterations: 1}", "output: no/such/dir/items.jsonl"],
    );
    let out = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "go", "--output", "json", "-q"])
        .run()
        .failure();
    let node = agent(&out.json(), "gen").clone();
    assert_eq!(node["status"], "failed");
    assert!(
        node["error"].as_str().unwrap_or("").contains("items.jsonl"),
        "{node:#}"
    );
}

/// `partition: attribute_type` works through fixed facets, no call needed.
#[test]
fn attribute_type_partitions() {
    let yaml = ensemble(
        &[("m", "{provider: mock}")],
        &[
            "producers: 3",
            "partition: attribute_type",
            "stop: {iterations: 4}",
        ],
    );
    let node = run_gen(&yaml, &[]);
    let subtopics: Vec<&str> = node["metrics"]["subtopics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(subtopics.len() >= 3, "{subtopics:?}");
    for facet in ["physical", "functional"] {
        assert!(subtopics.contains(&facet), "{subtopics:?}");
    }
    assert_eq!(item_calls(&node).len(), 12);
    assert_eq!(
        num(&node["metrics"], "calls"),
        12,
        "no call to find the facets"
    );
    // The producers worked through the facets; items say which.
    let used: std::collections::BTreeSet<&str> = node["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["subtopic"].as_str())
        .collect();
    assert!(used.len() >= 3, "{used:?}");
    assert!(used.iter().all(|s| subtopics.contains(s)), "{used:?}");
}

/// `partition: semantic` asks a model for subtopics first; that call is paid for too.
#[test]
fn semantic_partitions() {
    let mock = format!("{{provider: mock, {PRICED}}}");
    let yaml = ensemble(
        &[("m", &mock)],
        &[
            "producers: 2",
            "partition: semantic",
            "stop: {iterations: 3}",
        ],
    );
    let node = run_gen(&yaml, &[]);
    let m = &node["metrics"];
    let subtopics: Vec<&str> = m["subtopics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(subtopics.len() >= 2, "{subtopics:?}");
    assert!(
        subtopics.iter().all(|s| s.contains(TOPIC)),
        "the mock's subtopics name the topic: {subtopics:?}"
    );
    let used: std::collections::BTreeSet<&str> = node["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["subtopic"].as_str())
        .collect();
    assert!(used.len() >= 2, "{used:?}");
    assert!(used.iter().all(|s| subtopics.contains(s)), "{used:?}");
    // Six item calls, and the partition call, which used tokens and cost money.
    assert_eq!(item_calls(&node).len(), 6);
    assert_eq!(num(m, "calls"), 7, "{m:#}");
    let partition = m["calls_log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["purpose"] == "partition")
        .expect("the partition call is logged");
    assert!(float(partition, "cost_usd") > 0.0, "{partition}");
}
