//! Topic exploration (issue 4): `type: generate`, `type: dedup`, the optimizer and
//! `orc explore`, through the real binary on the offline mock (and, where a test needs exact
//! answers such as messy lists, on a local OpenAI-compatible fake).
//!
//! Most runs use mocks without latency: their calls then complete in a fixed order, so a run
//! is a pure function of its seed and two runs can be compared item by item. Durations are
//! never asserted; UAM is checked against the elapsed time the run itself reports.

mod dedup;
mod explore;
mod metrics;
mod optimizer;
mod stop;
mod uniqueness;

/// The scriptable fake model server of the provider tests, compiled in here too (it is
/// private to `providers`).
#[allow(dead_code, unreachable_pub, clippy::duplicate_mod)]
#[path = "../providers/fake.rs"]
mod fake;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::support::{ENSEMBLE, Output, Test, agent};

/// The topic every ensemble here explores.
const TOPIC: &str = "kitchen tools";

/// An ensemble with one `generate` agent `gen` on `topic: kitchen tools`. `profiles` are
/// (name, inline profile) pairs, all of them candidates, in order; `keys` are extra agent
/// keys, one YAML line each.
fn ensemble(profiles: &[(&str, &str)], keys: &[&str]) -> String {
    let mut yaml = String::from("name: explore-test\nmodel_profiles:\n");
    for (name, profile) in profiles {
        yaml.push_str(&format!("  {name}: {profile}\n"));
    }
    let names: Vec<&str> = profiles.iter().map(|(n, _)| *n).collect();
    yaml.push_str(&format!(
        "agents:\n  - name: gen\n    type: generate\n    topic: {TOPIC}\n    profiles: [{}]\n",
        names.join(", ")
    ));
    for key in keys {
        yaml.push_str("    ");
        yaml.push_str(key);
        yaml.push('\n');
    }
    yaml
}

/// `orc invoke ensemble.yaml go --output json -q` plus `extra`; must succeed.
#[track_caller]
fn run_doc(yaml: &str, extra: &[&str]) -> (Value, Output) {
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "go", "--output", "json", "-q"])
        .args(extra)
        .run()
        .success();
    (out.json(), out)
}

/// Agent `gen` of a successful run, after checking that its numbers add up.
#[track_caller]
fn run_gen(yaml: &str, extra: &[&str]) -> Value {
    let (doc, _) = run_doc(yaml, extra);
    let node = agent(&doc, "gen").clone();
    assert_eq!(node["status"], "succeeded", "{node:#}");
    assert_consistent(&node);
    node
}

/// A field as an unsigned number.
#[track_caller]
fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count in {v:#}"))
}

/// A field as a float.
#[track_caller]
fn float(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {v:#}"))
}

/// Calls made with each profile (`metrics.per_profile[NAME].calls`, 0 when absent).
fn calls_by_profile(node: &Value) -> BTreeMap<String, u64> {
    node["metrics"]["per_profile"]
        .as_object()
        .expect("per_profile is an object")
        .iter()
        .map(|(name, tally)| (name.clone(), tally["calls"].as_u64().unwrap_or(0)))
        .collect()
}

/// The item calls of `calls_log` (without the `partition: semantic` call).
fn item_calls(node: &Value) -> Vec<&Value> {
    node["metrics"]["calls_log"]
        .as_array()
        .expect("calls_log is an array")
        .iter()
        .filter(|c| c.get("purpose").is_none_or(Value::is_null))
        .collect()
}

/// `items[].text` of a generate or dedup agent.
#[track_caller]
fn texts(node: &Value) -> Vec<String> {
    node["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {node:#}"))
        .iter()
        .map(|i| i["text"].as_str().expect("item text").to_string())
        .collect()
}

/// The normal form the issue defines, written independently of orc's: lowercase, anything
/// but letters, digits and apostrophes separates words, simple English plurals folded
/// (`batteries`, `boxes`, `cars`; not `glass`, `bus`, `analysis` or words of three letters).
fn normal_form(item: &str) -> String {
    item.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
        .map(|w| singular(&w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn singular(word: &str) -> String {
    if word.chars().count() <= 3 || !word.is_ascii() {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    if ["sses", "shes", "ches", "xes", "zzes"]
        .iter()
        .any(|e| word.ends_with(e))
    {
        return word[..word.len() - 2].to_string();
    }
    if word.ends_with('s') && !["ss", "us", "is"].iter().any(|e| word.ends_with(e)) {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

/// Fails when two of `items` have the same normal form.
#[track_caller]
fn assert_distinct_after_normalising(items: &[String]) {
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for item in items {
        if let Some(first) = seen.insert(normal_form(item), item) {
            panic!(
                "`{first}` and `{item}` are the same item (`{}`), both kept",
                normal_form(item)
            );
        }
    }
}

/// The metrics of a generate agent agree with themselves, its items and its calls: the
/// totals are the sums of the calls (zero-yield and failed calls included), of the
/// per-profile and per-producer tallies, and every item names the call that found it.
#[track_caller]
fn assert_consistent(node: &Value) {
    let m = &node["metrics"];
    let items = node["items"].as_array().expect("items is an array");
    let log = m["calls_log"].as_array().expect("calls_log is an array");
    let sum =
        |rows: &[&Value], f: &dyn Fn(&Value) -> u64| -> u64 { rows.iter().map(|r| f(r)).sum() };
    let all: Vec<&Value> = log.iter().collect();
    let tokens_in = |c: &Value| c["usage"]["input_tokens"].as_u64().unwrap_or(0);
    let tokens_out = |c: &Value| c["usage"]["output_tokens"].as_u64().unwrap_or(0);

    assert_eq!(num(m, "unique"), items.len() as u64, "unique vs items");
    assert_eq!(num(m, "calls"), log.len() as u64, "calls vs calls_log");
    assert_eq!(
        sum(&all, &|c| num(c, "new")),
        num(m, "unique"),
        "new of calls vs unique"
    );
    assert_eq!(
        sum(&all, &|c| num(c, "candidates")),
        num(m, "candidates"),
        "candidates of calls"
    );
    assert_eq!(
        sum(&all, &tokens_in),
        num(m, "input_tokens"),
        "input tokens of calls"
    );
    assert_eq!(
        sum(&all, &tokens_out),
        num(m, "output_tokens"),
        "output tokens of calls"
    );
    assert_eq!(
        node["usage"]["input_tokens"], m["input_tokens"],
        "agent usage vs metrics"
    );
    assert_eq!(
        node["usage"]["output_tokens"], m["output_tokens"],
        "agent usage vs metrics"
    );
    let new_per_call: Vec<u64> = m["new_per_call"]
        .as_array()
        .expect("new_per_call is an array")
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .collect();
    assert_eq!(
        new_per_call.iter().sum::<u64>(),
        num(m, "unique"),
        "new_per_call adds up to unique"
    );
    let failed = log.iter().filter(|c| !c["error"].is_null()).count() as u64;
    assert_eq!(num(m, "failed_calls"), failed, "failed calls");
    if num(m, "candidates") > 0 {
        let ratio = num(m, "unique") as f64 / num(m, "candidates") as f64;
        assert!(
            (float(m, "uniqueness_ratio") - ratio).abs() < 1e-3,
            "uniqueness_ratio {} != unique / candidates {ratio}",
            m["uniqueness_ratio"]
        );
    }
    // Cost: the sum of every call's cost, when all are known.
    let costs: Option<Vec<f64>> = log.iter().map(|c| c["cost_usd"].as_f64()).collect();
    match costs {
        Some(costs) => {
            let total: f64 = costs.iter().sum();
            assert!(
                (float(m, "cost_usd") - total).abs() < 1e-9,
                "cost_usd {} != sum of calls {total}",
                m["cost_usd"]
            );
        }
        None => assert!(m["cost_usd"].is_null(), "a call of unknown cost: {m:#}"),
    }
    // Per profile: every call under its profile.
    let per_profile = m["per_profile"].as_object().expect("per_profile");
    let mut profiles: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for c in log {
        profiles
            .entry(c["profile"].as_str().expect("profile"))
            .or_default()
            .push(c);
    }
    assert_eq!(
        per_profile.keys().map(String::as_str).collect::<Vec<_>>(),
        profiles.keys().copied().collect::<Vec<_>>(),
        "profiles of per_profile vs calls_log"
    );
    for (name, calls) in &profiles {
        let t = &per_profile[*name];
        assert_eq!(num(t, "calls"), calls.len() as u64, "calls of {name}");
        assert_eq!(
            num(t, "new"),
            sum(calls, &|c| num(c, "new")),
            "new of {name}"
        );
        assert_eq!(
            num(t, "input_tokens"),
            sum(calls, &tokens_in),
            "input tokens of {name}"
        );
        assert_eq!(
            num(t, "output_tokens"),
            sum(calls, &tokens_out),
            "output tokens of {name}"
        );
    }
    // Per producer: the item calls, by producer.
    let per_producer = m["per_producer"].as_object().expect("per_producer");
    let item_calls = item_calls(node);
    assert_eq!(
        per_producer.values().map(|t| num(t, "calls")).sum::<u64>(),
        item_calls.len() as u64,
        "calls of per_producer"
    );
    assert_eq!(
        per_producer.values().map(|t| num(t, "new")).sum::<u64>(),
        num(m, "unique"),
        "new of per_producer"
    );
    // Provenance: each item names a call of its producer and profile; each call found as
    // many items as name it.
    let by_number: BTreeMap<u64, &Value> = log.iter().map(|c| (num(c, "call"), c)).collect();
    assert_eq!(by_number.len(), log.len(), "call numbers are unique");
    let mut found: BTreeMap<u64, u64> = BTreeMap::new();
    for item in items {
        let call = by_number
            .get(&num(item, "call"))
            .unwrap_or_else(|| panic!("item {item} names no logged call"));
        assert_eq!(item["profile"], call["profile"], "{item} vs {call}");
        assert_eq!(item["producer"], call["producer"], "{item} vs {call}");
        assert!(
            num(item, "at") <= num(m, "elapsed_ms") + 1,
            "{item} after the end"
        );
        *found.entry(num(item, "call")).or_default() += 1;
    }
    for c in log {
        let n = found.get(&num(c, "call")).copied().unwrap_or(0);
        assert_eq!(num(c, "new"), n, "items naming call {c}");
    }
}

/// A chat completion in OpenAI's shape.
fn answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}
    })
}

/// An inline `openai-compatible` profile on `fake`; `extra` adds keys (`, price: ...`).
fn fake_profile(fake: &fake::Fake, extra: &str) -> String {
    format!(
        "{{provider: openai-compatible, base_url: \"{}/v1\", model: fake{extra}}}",
        fake.url()
    )
}
