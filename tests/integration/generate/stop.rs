//! Each stop condition ends the run and is named in `metrics.stop_reason`.

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::fake::{Fake, Reply};
use super::{answer, ensemble, fake_profile, float, num, run_gen};
use crate::support::{ENSEMBLE, Test, agent};

/// Three producers asking for ten items a call.
const PRODUCERS: u64 = 3;
const BATCH: u64 = 10;

/// A generate node with `stop` on a mock of `vocabulary` items, `latency_ms` per call,
/// priced at $10 / $30 per million tokens.
fn stopped_by(stop: &str, vocabulary: u32, latency_ms: u32) -> Value {
    let mock = format!(
        "{{provider: mock, vocabulary: {vocabulary}, latency_ms: {latency_ms}, \
         price: {{input_per_mtok: 10.0, output_per_mtok: 30.0}}}}"
    );
    let yaml = ensemble(
        &[("m", &mock)],
        &[
            &format!("producers: {PRODUCERS}"),
            &format!("batch_size: {BATCH}"),
            &format!("stop: {stop}"),
        ],
    );
    run_gen(&yaml, &[])
}

fn stop_reason(node: &Value) -> &str {
    node["metrics"]["stop_reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no stop_reason in {node:#}"))
}

#[test]
fn iterations_per_producer() {
    let node = stopped_by("{iterations: 3}", 2000, 0);
    assert_eq!(stop_reason(&node), "iterations");
    let m = &node["metrics"];
    assert_eq!(num(m, "calls"), PRODUCERS * 3);
    let per_producer = m["per_producer"].as_object().unwrap();
    assert_eq!(per_producer.len(), PRODUCERS as usize, "{m:#}");
    for (name, tally) in per_producer {
        assert_eq!(num(tally, "calls"), 3, "{name}");
    }
}

#[test]
fn a_generate_node_without_stop_makes_a_few_calls_per_producer() {
    let yaml = ensemble(
        &[("m", "{provider: mock}")],
        &[&format!("producers: {PRODUCERS}")],
    );
    let node = run_gen(&yaml, &[]);
    assert_eq!(stop_reason(&node), "iterations");
    assert_eq!(num(&node["metrics"], "calls"), PRODUCERS * 5);
}

#[test]
fn unique_items() {
    let node = stopped_by("{unique: 45, iterations: 100}", 2000, 0);
    assert_eq!(stop_reason(&node), "unique");
    let unique = num(&node["metrics"], "unique");
    // Calls already under way may finish, at most one batch a producer past the goal.
    assert!(
        (45..45 + PRODUCERS * BATCH).contains(&unique),
        "{unique} unique items"
    );
    assert!(num(&node["metrics"], "calls") < PRODUCERS * 100);
}

#[test]
fn seconds() {
    // No other limit: only the clock ends this run. Its length is not asserted.
    let node = stopped_by("{seconds: 0.3}", 2000, 20);
    assert_eq!(stop_reason(&node), "seconds");
    assert!(num(&node["metrics"], "calls") > 0);
}

#[test]
fn cost() {
    let node = stopped_by("{cost_usd: 0.01, iterations: 100}", 2000, 0);
    assert_eq!(stop_reason(&node), "cost_usd");
    let m = &node["metrics"];
    let cost = float(m, "cost_usd");
    let dearest_call = m["calls_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cost_usd"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(cost >= 0.01, "stopped at ${cost}, before the limit");
    assert!(
        cost < 0.01 + PRODUCERS as f64 * dearest_call,
        "${cost} is more than one call a producer past the limit"
    );
    assert!(num(m, "calls") < PRODUCERS * 100);
    assert_eq!(
        node["cost_usd"], m["cost_usd"],
        "the agent's cost is the node's"
    );
}

/// A topic of 20 items is soon exhausted: calls keep finding nothing new, and after
/// `patience` of them in a row the run stops.
#[test]
fn diminishing_returns() {
    let node = stopped_by("{min_new_per_call: 1, patience: 3, iterations: 100}", 20, 0);
    assert_eq!(stop_reason(&node), "diminishing_returns");
    let m = &node["metrics"];
    assert!(num(m, "unique") <= 20);
    assert!(num(m, "calls") < PRODUCERS * 100, "{m:#}");
    let series: Vec<u64> = m["new_per_call"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert!(series.len() >= 3, "{series:?}");
    assert_eq!(
        series[series.len() - 3..],
        [0, 0, 0],
        "the last three calls found nothing new: {series:?}"
    );
}

/// A rich topic keeps paying: `min_new_per_call` does not end the run before `iterations`.
#[test]
fn min_new_per_call_does_not_stop_a_productive_run() {
    let node = stopped_by("{min_new_per_call: 1, patience: 3, iterations: 4}", 5000, 0);
    assert_eq!(stop_reason(&node), "iterations");
    assert_eq!(num(&node["metrics"], "calls"), PRODUCERS * 4);
}

/// When every call fails, the node gives up instead of retrying forever, and fails.
#[test]
fn all_calls_failed() {
    let yaml = ensemble(
        &[(
            "broken",
            "{provider: mock, fail_rate: 1.0, fail_with: server_error}",
        )],
        &["producers: 2", "stop: {iterations: 100}"],
    );
    let out = Test::new()
        .ensemble(&yaml)
        .args(["invoke", ENSEMBLE, "go", "--output", "json", "-q"])
        .run()
        .failure();
    let doc = out.json();
    let node = agent(&doc, "gen");
    assert_eq!(node["status"], "failed", "{node:#}");
    assert_eq!(stop_reason(node), "all_calls_failed");
    let m = &node["metrics"];
    assert_eq!(num(m, "calls"), num(m, "failed_calls"));
    assert!(num(m, "calls") < 200, "{m:#}");
    assert!(
        node["error"]
            .as_str()
            .unwrap_or("")
            .contains("mock: injected server error"),
        "{node:#}"
    );
}

/// A cost limit cannot be enforced on a profile without a known price. Treating the
/// unknown cost as zero (free) means the limit is never reached and the node calls the
/// model until something else stops it: here, 1,086 calls in the two seconds of
/// `--timeout 2`, ending `cancelled`. Either the configuration is refused (exit 2, naming
/// `cost_usd`) or the node stops on its own with `stop_reason: cost_usd`.
#[test]
fn cost_limit_with_an_unknown_price() {
    let fake = Fake::always(Reply::json(answer("steel whisk\nwooden spoon")));
    let yaml = ensemble(
        &[("unpriced", &fake_profile(&fake, ""))],
        &["producers: 2", "stop: {cost_usd: 0.01}"],
    );
    let out = Test::new()
        .ensemble(&yaml)
        .args([
            "invoke",
            ENSEMBLE,
            "go",
            "--output",
            "json",
            "-q",
            "--timeout",
            "2",
        ])
        .run();
    if out.code == Some(2) {
        assert!(out.stderr.contains("cost_usd"), "{}", out.stderr);
        return;
    }
    let out = out.success();
    let doc = out.json();
    let node = agent(&doc, "gen");
    assert_eq!(stop_reason(node), "cost_usd", "{:#}", node["metrics"]);
    assert!(num(&node["metrics"], "calls") < 10, "{:#}", node["metrics"]);
}
