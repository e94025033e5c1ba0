//! `--each-line`: one run per line of stdin.

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test};

const CHAIN: &str = "\
name: chain
defaults:
  model_profile: mock-fast
agents:
  - name: first
  - name: second
    depends_on: [first]
";

#[test]
fn jsonl_has_one_result_per_input() {
    let out = Test::new()
        .ensemble(CHAIN)
        .args(["invoke", ENSEMBLE, "--each-line", "--output", "jsonl"])
        .stdin("alpha\nbeta\n\n  \ngamma\r\n")
        .run()
        .success();
    let results = out.json_lines();
    assert_eq!(
        results.len(),
        3,
        "blank lines are not inputs:\n{}",
        out.stdout
    );
    let mut inputs: Vec<&str> = results
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    inputs.sort_unstable();
    assert_eq!(inputs, ["alpha", "beta", "gamma"]);
    let mut ids: Vec<&str> = results
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every run has its own id");
    for r in &results {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["agents"].as_array().unwrap().len(), 2, "{r}");
    }
    assert!(
        out.stderr.contains("3 inputs: 3 succeeded, 0 failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn text_keeps_input_order() {
    let input: String = (1..=12).map(|i| format!("topic {i}\n")).collect();
    let out = Test::new()
        .ensemble(CHAIN)
        .args(["invoke", ENSEMBLE, "--each-line", "-q"])
        .stdin(input)
        .run()
        .success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 12, "{}", out.stdout);
    for (i, line) in lines.iter().enumerate() {
        assert!(
            line.contains(&format!("On \"topic {}\"", i + 1)),
            "line {i}: {line}"
        );
        assert!(line.contains("Building on first."), "{line}");
    }
}

#[test]
fn each_line_matches_single_runs() {
    let batch = Test::new()
        .ensemble(CHAIN)
        .args(["invoke", ENSEMBLE, "--each-line", "-q", "--seed", "3"])
        .stdin("one\ntwo\n")
        .run()
        .success();
    let single = |input: &str| {
        Test::new()
            .ensemble(CHAIN)
            .args(["invoke", ENSEMBLE, input, "-q", "--seed", "3"])
            .run()
            .success()
            .stdout
    };
    assert_eq!(batch.stdout, format!("{}{}", single("one"), single("two")));
}

/// Regression: runs were sorted by run id as strings, so input 10 came before input 2.
#[test]
fn json_array_keeps_input_order() {
    let input: String = (1..=12).map(|i| format!("{i}\n")).collect();
    let out = Test::new()
        .ensemble(CHAIN)
        .args(["invoke", ENSEMBLE, "--each-line", "--output", "json", "-q"])
        .stdin(input)
        .run()
        .success();
    let doc = out.json();
    let inputs: Vec<&str> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    assert_eq!(inputs, expected);
}

#[test]
fn each_line_conflicts_with_other_inputs() {
    Test::new()
        .ensemble(CHAIN)
        .args(["invoke", ENSEMBLE, "--each-line", "--input", "x"])
        .stdin("a\n")
        .run()
        .invalid();
}

#[test]
fn a_failing_line_fails_the_batch() {
    let yaml = "\
name: picky
model_profiles:
  broken: {provider: mock, fail_attempts: 9, fail_with: bad_request}
agents:
  - name: a
    model_profile: broken
";
    let out = Test::new()
        .ensemble(yaml)
        .args(["invoke", ENSEMBLE, "--each-line", "--output", "jsonl"])
        .stdin("one\ntwo\n")
        .run()
        .failure();
    let results = out.json_lines();
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|r| r["status"] == "failed"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("2 inputs: 0 succeeded, 2 failed"),
        "{}",
        out.stderr
    );
}
