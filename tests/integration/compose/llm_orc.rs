//! Ensemble files written for llm-orc (tests/fixtures/llm-orc) run unchanged, their profile
//! names mapped with `--profile-map`; llm-orc keys orc does not use are warnings.

use std::path::PathBuf;

use pretty_assertions::assert_eq;

use super::output_json;
use crate::support::{ENSEMBLE, Test, agent};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llm-orc")
        .join(name)
}

const PROFILE_MAP: [&str; 6] = [
    "--profile-map",
    "default-local=mock-fast",
    "--profile-map",
    "micro-local=mock-fast",
    "--profile-map",
    "default=mock-fast",
];

/// Runs a fixture (with its `default_task` when `input` is `None`) and returns the result.
#[track_caller]
fn invoke_fixture(name: &str, input: Option<&str>) -> serde_json::Value {
    let mut test = Test::new()
        .arg("invoke")
        .arg(fixture(name))
        .args(PROFILE_MAP)
        .args(["--output", "json"]);
    if let Some(input) = input {
        test = test.arg(input);
    }
    test.run().success().json()
}

#[track_caller]
fn statuses<'a>(doc: &'a serde_json::Value, names: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .map(|n| (*n, agent(doc, n)["status"].as_str().unwrap()))
        .collect()
}

#[test]
fn reviewers_and_synthesizer() {
    let doc = invoke_fixture("reviewers.yaml", None);
    assert_eq!(doc["status"], "succeeded");
    assert!(
        doc["input"].as_str().unwrap().contains("def get_user"),
        "the default_task is the input: {}",
        doc["input"]
    );
    let names = [
        "security-reviewer",
        "performance-reviewer",
        "maintainability-reviewer",
        "synthesizer",
    ];
    let expected: Vec<_> = names.iter().map(|n| (*n, "succeeded")).collect();
    assert_eq!(statuses(&doc, &names), expected);
    for name in names {
        assert_eq!(
            agent(&doc, name)["profile"],
            "mock-fast",
            "{name} was mapped"
        );
    }
}

const SPECIALISTS: [&str; 6] = [
    "classify",
    "bug-specialist",
    "feature-specialist",
    "question-specialist",
    "escalation-notice",
    "reply-writer",
];

#[test]
fn conditional_route_runs_exactly_the_right_specialist() {
    // (input, the specialist that runs, whether the escalation notice runs)
    let cases = [
        (None, "bug-specialist", false),
        (
            Some("Could you add support for dark mode? It would be nice."),
            "feature-specialist",
            false,
        ),
        (
            Some("How do I change the export folder?"),
            "question-specialist",
            false,
        ),
        (
            Some("Production down for all users: the app crashes on login with an exception"),
            "bug-specialist",
            true,
        ),
    ];
    for (input, specialist, escalate) in cases {
        let doc = invoke_fixture("conditional-route.yaml", input);
        assert_eq!(doc["status"], "succeeded", "input {input:?}");
        let expected: Vec<(&str, &str)> = SPECIALISTS
            .iter()
            .map(|&name| {
                let runs = matches!(name, "classify" | "reply-writer")
                    || name == specialist
                    || (name == "escalation-notice" && escalate);
                (name, if runs { "succeeded" } else { "skipped" })
            })
            .collect();
        assert_eq!(statuses(&doc, &SPECIALISTS), expected, "input {input:?}");
        let route = output_json(agent(&doc, "classify"));
        assert_eq!(
            format!("{}-specialist", route["route"].as_str().unwrap()),
            specialist
        );
        assert_eq!(route["escalate"], escalate);
        assert_eq!(doc["totals"]["failed"], 0);
    }
}

#[test]
fn planner_fan_out_has_one_instance_per_planned_item() {
    let check = |doc: &serde_json::Value, items: usize| {
        assert_eq!(doc["status"], "succeeded");
        let planned = output_json(agent(doc, "planner"));
        assert_eq!(planned.as_array().unwrap().len(), items, "{planned}");
        let analyst = agent(doc, "analyst");
        assert_eq!(analyst["status"], "succeeded");
        assert_eq!(analyst["metrics"]["instances"], items);
        assert_eq!(analyst["metrics"]["failed_instances"], 0);
        let gathered = output_json(analyst);
        let gathered = gathered.as_array().unwrap();
        assert_eq!(gathered.len(), items);
        for (i, answer) in gathered.iter().enumerate() {
            let answer = answer.as_str().expect("each instance answered text");
            let marker = format!("chunk {} of {items}", i + 1);
            assert!(answer.contains(&marker), "instance {i} in order: {answer}");
        }
        assert_eq!(agent(doc, "synthesizer")["status"], "succeeded");
    };
    // The default task lists four items.
    check(&invoke_fixture("planner-fanout.yaml", None), 4);
    // Eight bullets, capped by the planner's `max_items: 6` parameter.
    let eight = "Plan the offsite.\n- venue\n- food\n- travel\n- agenda\n- budget\n- speakers\n- swag\n- photos\n";
    check(&invoke_fixture("planner-fanout.yaml", Some(eight)), 6);
}

#[test]
fn unmapped_llm_orc_profiles_are_a_load_error() {
    let out = Test::new()
        .arg("invoke")
        .arg(fixture("reviewers.yaml"))
        .run()
        .invalid();
    assert!(out.stderr.contains("default-local"), "{}", out.stderr);
}

#[test]
fn ignored_llm_orc_keys_are_warnings_with_their_location() {
    let yaml = "\
name: legacy
description: keys llm-orc has and orc does not use
validation:
  required_agents: [a]
test_mode: false
agents:
  - name: a
    model_profile: mock-fast
    system_prompt: Be brief.
  - name: b
    model_profile: mock-fast
    depends_on: [a]
    output_format: json
";
    let out = Test::new()
        .ensemble(yaml)
        .args(["validate", ENSEMBLE])
        .run()
        .success();
    for (key, line) in [("validation", 3), ("test_mode", 5), ("output_format", 13)] {
        assert!(
            out.stderr.contains(&format!("`{key}`")),
            "a warning names `{key}`:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("{ENSEMBLE}:{line}:")),
            "a warning points at line {line} (`{key}`):\n{}",
            out.stderr
        );
    }
    assert!(out.stdout.contains("ok"), "{}", out.stdout);

    // And the file runs.
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "hi", "--output", "json"])
        .run()
        .success();
    assert_eq!(out.json()["status"], "succeeded");
    assert!(out.stderr.contains("`output_format`"), "{}", out.stderr);
}
