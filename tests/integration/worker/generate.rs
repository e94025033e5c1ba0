//! A `generate` node spread over workers (one job per producer) shares one tracker and one
//! feedback sample through Redis: no item is accepted twice, whichever worker found it.

use std::collections::HashSet;

use pretty_assertions::assert_eq;

use super::{WorkerProc, finish, invoke, redis_or_skip};
use crate::support::{Test, agent};

/// Four producers on a mock whose topic has 150 items: most candidates are repeats,
/// across producers too.
const YAML: &str = "
name: spread
model_profiles:
  small: {provider: mock, vocabulary: 150, latency_ms: 5, jitter_ms: 0}
agents:
  - name: topics
    type: generate
    model_profile: small
    producers: 4
    batch_size: 10
    stop: {iterations: 8}
";

#[test]
fn a_generate_node_spread_over_two_workers_accepts_no_item_twice() {
    let redis = redis_or_skip!(false);
    let w1 = WorkerProc::start(&redis, "w1", 2, &[]);
    let w2 = WorkerProc::start(&redis, "w2", 2, &[]);
    let test = Test::new().ensemble(YAML);
    let (code, doc, stderr) = finish(invoke(&test, &redis, &[]));
    assert_eq!(code, Some(0), "{stderr}");
    let node = agent(&doc, "topics");
    assert_eq!(node["status"], "succeeded", "{node:#}");
    let items = node["items"].as_array().expect("items");
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().expect("text").to_lowercase())
        .collect();
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(
        distinct.len(),
        texts.len(),
        "an item accepted twice: {texts:?}"
    );
    let m = &node["metrics"];
    // 4 producers x 8 calls x 10 candidates, and every repeat was dropped.
    assert_eq!(m["calls"], 32, "{m:#}");
    assert_eq!(m["candidates"], 320, "{m:#}");
    assert_eq!(m["unique"], texts.len(), "{m:#}");
    assert_eq!(
        m["tracker"]["duplicates"].as_u64().expect("duplicates"),
        320 - texts.len() as u64,
        "{m:#}"
    );
    assert!(
        texts.len() < 150,
        "{} items of a 150-item topic",
        texts.len()
    );
    // Every producer contributed, and the parts ran on both workers.
    let producers: HashSet<u64> = items
        .iter()
        .map(|i| i["producer"].as_u64().expect("producer"))
        .collect();
    assert_eq!(producers.len(), 4, "{producers:?}");
    assert_eq!(
        m["per_producer"].as_object().expect("per producer").len(),
        4,
        "{m:#}"
    );
    for w in [&w1, &w2] {
        assert!(
            w.stderr().contains("agent=topics"),
            "a worker ran no part of the node:\n{}",
            w.stderr()
        );
    }
    // Items are in discovery order, each call numbered once across the node.
    let calls: Vec<u64> = items
        .iter()
        .map(|i| i["call"].as_u64().expect("call"))
        .collect();
    assert!(calls.iter().all(|&c| (1..=32).contains(&c)), "{calls:?}");
}
