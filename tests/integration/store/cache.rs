//! `cache:`: an identical request answered from the store in a later run (within its `ttl`),
//! identical cacheable requests in flight together sent once, `--no-cache`, and requests that
//! are not cacheable sent every time.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::Session;
use super::model::Model;
use crate::support::agent;

/// One agent `ask` on the model; `cache` is its `cache:` setting.
fn one_agent(model: &Model, cache: &str) -> String {
    format!(
        "name: cached\nmodel_profiles:\n  m: {}\nagents:\n  - name: ask\n    model_profile: m\n    cache: {cache}\n",
        model.profile("")
    )
}

/// Whether an agent of a JSON document says it was answered without a call (`cached` is
/// left out when false).
fn cached(doc: &Value, name: &str) -> bool {
    let a = agent(doc, name);
    match &a["cached"] {
        Value::Bool(b) => *b,
        Value::Null => false,
        other => panic!("`cached` is {other} in {a:#}"),
    }
}

/// The sources of a run's calls, from `orc runs show`.
fn sources(session: &Session, doc: &Value) -> Vec<String> {
    let id = doc["run_id"].as_str().expect("a run id");
    let shown = session
        .run(&["runs", "show", id, "-o", "json"])
        .success()
        .json();
    let mut sources: Vec<String> = shown["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["source"].as_str().expect("a source").to_string())
        .collect();
    sources.sort();
    sources
}

#[test]
fn a_cached_answer_serves_the_next_run() {
    let model = Model::with_delay(Duration::ZERO);
    let session = Session::new();
    session.file("cached.yaml", &one_agent(&model, "true"));
    let invoke = |extra: &[&str]| {
        let mut args = vec!["invoke", "cached.yaml", "hello", "-o", "json"];
        args.extend_from_slice(extra);
        session.run(&args).success().json()
    };

    let first = invoke(&[]);
    let ask = agent(&first, "ask");
    assert!(!cached(&first, "ask"), "{ask:#}");
    assert!(ask["cost_usd"].as_f64().unwrap() > 0.0, "{ask:#}");
    assert_eq!(first["totals"]["calls_saved"], 0);
    assert_eq!(model.count(), 1);

    let second = invoke(&[]);
    let again = agent(&second, "ask");
    assert!(cached(&second, "ask"), "{again:#}");
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["output"], ask["output"]);
    assert_eq!(
        again["cost_usd"], 0.0,
        "a cached answer costs nothing: {again:#}"
    );
    assert_eq!(second["totals"]["calls_saved"], 1, "{:#}", second["totals"]);
    assert_eq!(model.count(), 1, "answered from the store");
    assert_eq!(sources(&session, &second), ["cache"]);

    // --no-cache sends it.
    let third = invoke(&["--no-cache"]);
    assert!(!cached(&third, "ask"));
    assert_eq!(third["totals"]["calls_saved"], 0);
    assert_eq!(model.count(), 2);
    assert_eq!(sources(&session, &third), ["provider"]);

    // Another input is another request.
    let other = session
        .run(&["invoke", "cached.yaml", "goodbye", "-o", "json"])
        .success()
        .json();
    assert!(!cached(&other, "ask"));
    assert_eq!(model.count(), 3);
}

#[test]
fn a_cached_answer_older_than_its_ttl_is_not_used() {
    let model = Model::with_delay(Duration::ZERO);
    let session = Session::new();
    session.file("cached.yaml", &one_agent(&model, "{ttl: 1h}"));
    let invoke = || {
        session
            .run(&["invoke", "cached.yaml", "hello", "-o", "json"])
            .success()
            .json()
    };
    invoke();
    assert!(cached(&invoke(), "ask"));
    assert_eq!(model.count(), 1);
    // Two hours ago.
    session
        .sql()
        .execute("UPDATE calls SET created_at = created_at - 7200000", [])
        .expect("age the calls");
    assert!(!cached(&invoke(), "ask"));
    assert_eq!(model.count(), 2);
}

/// Four agents sending the same request at once; `cache` is the profile's extra keys.
fn four_alike(model: &Model, cache: &str) -> String {
    let mut yaml = format!(
        "name: alike\nmodel_profiles:\n  m: {}\nagents:\n",
        model.profile(cache)
    );
    for i in 1..=4 {
        yaml.push_str(&format!(
            "  - name: a{i}\n    model_profile: m\n    prompt: the same question\n"
        ));
    }
    yaml
}

#[test]
fn identical_cacheable_requests_in_flight_are_sent_once() {
    // Slow enough that all four are in flight together.
    let model = Model::with_delay(Duration::from_millis(500));
    let session = Session::new();
    session.file("alike.yaml", &four_alike(&model, ", cache: true"));
    let doc = session
        .run(&["invoke", "alike.yaml", "hello", "-o", "json"])
        .success()
        .json();
    assert_eq!(model.count(), 1, "one request for four agents");
    let outputs: Vec<&Value> = (1..=4)
        .map(|i| &agent(&doc, &format!("a{i}"))["output"])
        .collect();
    assert!(
        outputs.iter().all(|o| *o == outputs[0] && o.is_string()),
        "{outputs:?}"
    );
    let shared = (1..=4).filter(|i| cached(&doc, &format!("a{i}"))).count();
    assert_eq!(shared, 3, "{doc:#}");
    assert_eq!(doc["totals"]["calls_saved"], 3);
    assert_eq!(
        sources(&session, &doc),
        ["coalesced", "coalesced", "coalesced", "provider"]
    );
}

#[test]
fn requests_that_are_not_cacheable_are_sent_every_time() {
    let model = Model::with_delay(Duration::from_millis(200));
    let session = Session::new();
    session.file("alike.yaml", &four_alike(&model, ""));
    for run in 1..=2 {
        let doc = session
            .run(&["invoke", "alike.yaml", "hello", "-o", "json"])
            .success()
            .json();
        assert_eq!(model.count(), 4 * run, "four samples are four calls");
        assert_eq!(doc["totals"]["calls_saved"], 0);
        for i in 1..=4 {
            assert!(!cached(&doc, &format!("a{i}")));
        }
    }
}
