//! Nested ensembles: `ensemble: NAME|PATH` runs another ensemble as one agent; usage and
//! cost roll up; cycles across files are load errors showing the whole path.

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test, agent};

const CHILD: &str = "\
name: child
model_profiles:
  priced: {provider: mock, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
defaults: {model_profile: priced}
agents:
  - name: inner-a
  - name: inner-b
    depends_on: [inner-a]
";

const PARENT: &str = "\
name: parent
model_profiles:
  priced: {provider: mock, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
defaults: {model_profile: priced}
agents:
  - name: first
  - name: sub
    depends_on: [first]
    ensemble: child
  - name: last
    depends_on: [sub]
";

#[test]
fn a_nested_ensemble_runs_and_its_usage_rolls_up() {
    let out = Test::new()
        .ensemble(PARENT)
        .file("child.yaml", CHILD)
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let sub = agent(&doc, "sub");
    assert_eq!(sub["status"], "succeeded");
    assert_eq!(sub["provider"], "ensemble");
    let inner = &sub["metrics"]["run"];
    assert_eq!(inner["ensemble"], "child");
    let inner_b = inner["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "inner-b")
        .unwrap();
    // The nested ensemble's final output is the agent's output.
    assert_eq!(sub["output"], inner_b["output"]);
    assert!(
        inner_b["output"]
            .as_str()
            .unwrap()
            .contains("Building on first, inner-a")
    );
    // Its usage and cost are the agent's, and count in the parent's totals.
    assert_eq!(sub["usage"], inner["totals"]["usage"]);
    assert_eq!(sub["attempts"], 2);
    let sum = |key: &str| -> u64 {
        doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["usage"][key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        doc["totals"]["usage"]["input_tokens"].as_u64().unwrap(),
        sum("input_tokens")
    );
    let cost: f64 = doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["cost_usd"].as_f64().unwrap())
        .sum();
    assert!((doc["totals"]["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
    assert!(sub["cost_usd"].as_f64().unwrap() > 0.0);
    // The parent's last agent built on it.
    assert!(
        agent(&doc, "last")["output"]
            .as_str()
            .unwrap()
            .contains("Building on sub")
    );
}

#[test]
fn a_cycle_across_files_is_a_load_error_with_its_path() {
    let out = Test::new()
        .ensemble("name: a\nagents:\n  - name: x\n    ensemble: b.yaml\n")
        .file("b.yaml", "name: b\nagents:\n  - name: y\n    ensemble: c\n")
        .file(
            "c.yaml",
            "name: c\nagents:\n  - name: z\n    ensemble: ensemble.yaml\n",
        )
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(
        out.stderr.contains(
            "nested ensembles form a cycle: ensemble.yaml -> b.yaml -> c.yaml -> ensemble.yaml"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("c.yaml:4:"), "{}", out.stderr);
}

#[test]
fn an_unknown_nested_ensemble_is_a_load_error() {
    Test::new()
        .ensemble("name: a\nagents:\n  - name: x\n    ensemble: nowhere\n")
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .invalid()
        .stderr_contains("runs ensemble `nowhere`, which cannot be found");
}

#[test]
fn the_budget_counts_a_nested_ensembles_calls_as_they_happen() {
    let child = "\
name: child
model_profiles:
  pricey: {provider: mock, price: {input_per_mtok: 1000, output_per_mtok: 1000}}
defaults: {model_profile: pricey}
agents:
  - name: c1
  - name: c2
    depends_on: [c1]
  - name: c3
    depends_on: [c2]
  - name: c4
    depends_on: [c3]
";
    let parent = "\
name: parent
budget: {max_cost_usd: 0.001}
agents:
  - name: sub
    ensemble: child
";
    let out = Test::new()
        .ensemble(parent)
        .file("child.yaml", child)
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .code(1);
    let doc = out.json();
    assert_eq!(doc["status"], "budget_exceeded", "{doc:#}");
    // The first inner call spent the budget: the nested run stopped there, not after all
    // four calls.
    let inner = &agent(&doc, "sub")["metrics"]["run"]["agents"];
    let status = |name: &str| {
        inner
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["status"].clone())
    };
    assert_eq!(status("c1"), Some("succeeded".into()), "{doc:#}");
    for name in ["c2", "c3", "c4"] {
        assert_ne!(status(name), Some("succeeded".into()), "{name}: {doc:#}");
    }
    assert!(out.stderr.contains("budget.max_cost_usd"), "{}", out.stderr);
}
