//! Several `orc` processes share one store: two `--each-line` runs of 50 lines each,
//! started together, both succeed and every one of their runs is recorded whole.

use std::collections::BTreeSet;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::Session;
use crate::support::wait_with_limit;

const LINES: usize = 50;

const ENSEMBLE: &str = "\
name: shared
model_profiles:
  quick: {provider: mock, latency_ms: 20, jitter_ms: 20}
agents:
  - name: a
    model_profile: quick
  - name: b
    model_profile: quick
  - name: c
    model_profile: quick
    depends_on: [a, b]
";

#[test]
fn two_processes_write_one_store_at_once() {
    let session = Session::new();
    session.file("shared.yaml", ENSEMBLE);
    let mut inputs = BTreeSet::new();
    let children: Vec<_> = ["left", "right"]
        .iter()
        .map(|side| {
            let lines: Vec<String> = (1..=LINES).map(|i| format!("{side} line {i}")).collect();
            inputs.extend(lines.iter().cloned());
            let file = session.file(&format!("{side}.txt"), &(lines.join("\n") + "\n"));
            let mut command = session
                .orc(["invoke", "shared.yaml", "--each-line", "--output", "jsonl"])
                .command();
            command.stdin(std::fs::File::open(file).expect("open the input"));
            command.spawn().expect("spawn orc")
        })
        .collect();
    let mut ids = BTreeSet::new();
    for child in children {
        let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(60));
        assert_eq!(code, Some(0), "{stderr}");
        assert!(!stderr.contains("warning"), "{stderr}");
        let docs: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(docs.len(), LINES);
        for doc in docs {
            assert_eq!(doc["status"], "succeeded");
            ids.insert(doc["run_id"].as_str().expect("a run id").to_string());
        }
    }
    assert_eq!(ids.len(), 2 * LINES, "run ids are unique across processes");

    // Every run is listed, succeeded, with its input and its whole event log.
    let listed = session.runs(&[]);
    let listed_ids: BTreeSet<String> = listed
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_ids, ids);
    assert!(
        listed.iter().all(|r| r["status"] == "succeeded"),
        "{listed:#?}"
    );
    let conn = session.sql();
    let stored: BTreeSet<String> = conn
        .prepare("SELECT input FROM runs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, inputs);
    let calls: i64 = conn
        .query_row("SELECT count(*) FROM calls", [], |r| r.get(0))
        .unwrap();
    assert_eq!(calls, 3 * 2 * LINES as i64, "three calls per run");
    for id in ids.iter().step_by(10) {
        let events = session
            .run(&["runs", "show", id, "--events"])
            .success()
            .json_lines();
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "run {id}"
        );
        assert_eq!(events.last().unwrap()["type"], "run_finished");
    }
}
