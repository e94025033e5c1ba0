//! The optimizer routes the calls of a node with several candidate profiles by what each
//! has shown so far, under the strategy asked for, and records every decision.

use std::collections::BTreeMap;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::fake::{Fake, Reply};
use super::{answer, calls_by_profile, ensemble, fake_profile, num, run_gen};

const PRODUCERS: u64 = 4;
const ITERATIONS: u64 = 15;
const CALLS: u64 = PRODUCERS * ITERATIONS;

/// Every candidate answers in 5 ms unless its profile says otherwise.
fn optimized(profiles: &[(&str, &str)], optimizer: &str) -> Value {
    let yaml = ensemble(
        profiles,
        &[
            &format!("producers: {PRODUCERS}"),
            "batch_size: 10",
            &format!("stop: {{iterations: {ITERATIONS}}}"),
            &format!("optimizer: {optimizer}"),
        ],
    );
    let node = run_gen(&yaml, &[]);
    assert_decisions_recorded(&node);
    node
}

/// One decision per call, naming the profile the call used; every candidate is tried
/// first, and later decisions carry the score of every candidate.
#[track_caller]
fn assert_decisions_recorded(node: &Value) {
    let m = &node["metrics"];
    let decisions = m["optimizer_decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no optimizer_decisions in {m:#}"));
    let calls: BTreeMap<u64, &Value> = m["calls_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (num(c, "call"), c))
        .collect();
    assert_eq!(
        decisions.len() as u64,
        num(m, "calls"),
        "one decision a call"
    );
    let candidates = m["per_profile"].as_object().unwrap().len();
    for d in decisions {
        let call = calls
            .get(&num(d, "call"))
            .unwrap_or_else(|| panic!("decision {d} names no call"));
        assert_eq!(d["profile"], call["profile"], "decision {d} vs call {call}");
        assert_eq!(
            d["producer"], call["producer"],
            "decision {d} vs call {call}"
        );
        match d["reason"].as_str() {
            Some("explore") => {}
            Some("exploit") => assert_eq!(
                d["scores"].as_object().map(|s| s.len()),
                Some(candidates),
                "scores of every candidate: {d}"
            ),
            other => panic!("unknown reason {other:?} in {d}"),
        }
    }
    let explored: Vec<&Value> = decisions
        .iter()
        .take(candidates)
        .map(|d| &d["profile"])
        .collect();
    let mut distinct = explored.clone();
    distinct.sort_by_key(|v| v.to_string());
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        candidates,
        "each candidate tried first: {explored:?}"
    );
}

/// Most calls: at least two thirds.
#[track_caller]
fn assert_most_calls_to(node: &Value, profile: &str) {
    let calls = calls_by_profile(node);
    let to = calls.get(profile).copied().unwrap_or(0);
    assert!(
        to * 3 >= CALLS * 2,
        "`{profile}` got {to} of {CALLS} calls: {calls:?}"
    );
}

#[test]
fn maximize_uam_prefers_the_larger_vocabulary() {
    let node = optimized(
        &[
            ("poor", "{provider: mock, vocabulary: 20, latency_ms: 10}"),
            ("rich", "{provider: mock, vocabulary: 5000, latency_ms: 10}"),
        ],
        "{strategy: maximize_uam}",
    );
    assert_most_calls_to(&node, "rich");
}

#[test]
fn maximize_uam_prefers_the_higher_yield() {
    let node = optimized(
        &[
            ("thin", "{provider: mock, yield: 0.2, latency_ms: 10}"),
            ("full", "{provider: mock, yield: 1.0, latency_ms: 10}"),
        ],
        "{strategy: maximize_uam}",
    );
    assert_most_calls_to(&node, "full");
}

const DEAR: &str =
    "{provider: mock, latency_ms: 5, price: {input_per_mtok: 10.0, output_per_mtok: 30.0}}";
const MID: &str =
    "{provider: mock, latency_ms: 5, price: {input_per_mtok: 1.0, output_per_mtok: 3.0}}";
const CHEAP: &str =
    "{provider: mock, latency_ms: 5, price: {input_per_mtok: 0.1, output_per_mtok: 0.3}}";

#[test]
fn minimize_cost_prefers_the_cheapest() {
    let node = optimized(
        &[("dear", DEAR), ("mid", MID), ("cheap", CHEAP)],
        "{strategy: minimize_cost}",
    );
    assert_most_calls_to(&node, "cheap");
    let calls = calls_by_profile(&node);
    assert!(calls["mid"] >= 1 && calls["dear"] >= 1, "{calls:?}");
}

#[test]
fn maximize_efficiency_prefers_more_items_per_dollar() {
    let node = optimized(
        &[("dear", DEAR), ("cheap", CHEAP)],
        "{strategy: maximize_efficiency}",
    );
    assert_most_calls_to(&node, "cheap");
}

#[test]
fn weighted_follows_its_weights() {
    let profiles = [("dear", DEAR), ("cheap", CHEAP)];
    let node = optimized(
        &profiles,
        "{strategy: weighted, weights: {uam: 0.0, cost: 1.0, efficiency: 0.0}}",
    );
    assert_most_calls_to(&node, "cheap");
    let node = optimized(
        &[
            ("poor", "{provider: mock, vocabulary: 20, latency_ms: 10}"),
            ("rich", "{provider: mock, vocabulary: 5000, latency_ms: 10}"),
        ],
        "{strategy: weighted, weights: {uam: 1.0, cost: 0.0, efficiency: 0.0}}",
    );
    assert_most_calls_to(&node, "rich");
}

#[test]
fn a_profile_that_always_fails_gets_almost_no_calls() {
    let node = optimized(
        &[
            (
                "broken",
                "{provider: mock, latency_ms: 5, fail_rate: 1.0, fail_with: server_error}",
            ),
            ("ok", "{provider: mock, latency_ms: 5}"),
        ],
        "{strategy: maximize_uam}",
    );
    let calls = calls_by_profile(&node);
    assert!(calls["broken"] >= 1, "explored once at least: {calls:?}");
    assert!(
        calls["broken"] <= CALLS / 10,
        "`broken` got {} of {CALLS} calls",
        calls["broken"]
    );
    let m = &node["metrics"];
    assert_eq!(
        num(&m["per_profile"]["broken"], "failed_calls"),
        calls["broken"]
    );
    assert_eq!(num(m, "failed_calls"), calls["broken"]);
    assert!(num(m, "unique") > 0);
}

/// An unknown price is never taken for free: a profile without one does not win
/// `minimize_cost` against a cheap priced one, and the node's cost is reported as unknown.
#[test]
fn an_unknown_price_is_not_free() {
    let fake = Fake::always(Reply::json(answer(
        "steel whisk\nwooden spoon\nsilicone spatula",
    )));
    let unknown = fake_profile(&fake, "");
    let node = optimized(
        &[("unknown", &unknown), ("cheap", CHEAP)],
        "{strategy: minimize_cost}",
    );
    assert_most_calls_to(&node, "cheap");
    assert!(
        node["metrics"]["cost_usd"].is_null(),
        "{:#}",
        node["metrics"]
    );
    assert!(node["metrics"]["per_profile"]["unknown"]["cost_usd"].is_null());
    assert!(node["metrics"]["per_profile"]["cheap"]["cost_usd"].is_number());
}

#[test]
fn one_profile_needs_no_optimizer() {
    let yaml = ensemble(
        &[("m", "{provider: mock}")],
        &[
            "producers: 2",
            "stop: {iterations: 2}",
            "optimizer: {strategy: maximize_uam}",
        ],
    );
    let node = run_gen(&yaml, &[]);
    let m = &node["metrics"];
    assert!(
        m.get("optimizer_decisions")
            .is_none_or(|d| d.as_array().is_some_and(Vec::is_empty)),
        "{m:#}"
    );
}

/// Without an optimizer, producers use the candidates in turn.
#[test]
fn without_an_optimizer_producers_use_the_candidates_in_turn() {
    let yaml = ensemble(
        &[("a", "{provider: mock}"), ("b", "{provider: mock}")],
        &["producers: 4", "stop: {iterations: 3}"],
    );
    let node = run_gen(&yaml, &[]);
    let calls = calls_by_profile(&node);
    assert_eq!(calls, BTreeMap::from([("a".into(), 6), ("b".into(), 6)]));
}
