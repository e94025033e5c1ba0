//! `orc runs`: list (newest first, filters, limit, JSON), show (the run document with its
//! calls, or the event log), export (JSON, JSON lines, CSV), rm and gc.

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::Session;

const ALPHA: &str = "\
name: alpha
model_profiles:
  priced: {provider: mock, latency_ms: 0, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}
agents:
  - name: first
    model_profile: priced
  - name: second
    model_profile: priced
    depends_on: [first]
";

const BETA: &str = "\
name: beta
model_profiles:
  broken: {provider: mock, fail_rate: 1.0}
agents:
  - name: only
    model_profile: broken
";

/// Three runs: `alpha` (succeeded), `beta` (failed), `alpha` again; their JSON documents
/// in that order.
fn three_runs(session: &Session) -> Vec<Value> {
    session.file("alpha.yaml", ALPHA);
    session.file("beta.yaml", BETA);
    vec![
        session
            .run(&["invoke", "alpha.yaml", "one, with \"quotes\"", "-o", "json"])
            .success()
            .json(),
        session
            .run(&["invoke", "beta.yaml", "two", "-o", "json"])
            .failure()
            .json(),
        session
            .run(&["invoke", "alpha.yaml", "three", "-o", "json"])
            .success()
            .json(),
    ]
}

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter()
        .map(|r| r["id"].as_str().expect("an id"))
        .collect()
}

fn run_id(doc: &Value) -> &str {
    doc["run_id"].as_str().expect("a run id")
}

#[test]
fn list_is_newest_first_and_filters() {
    let session = Session::new();
    // Before anything ran: an empty list, not an error.
    assert!(session.runs(&[]).is_empty());
    session
        .run(&["runs"])
        .success()
        .stderr_contains("no runs recorded");

    let docs = three_runs(&session);
    let all = session.runs(&[]);
    assert_eq!(
        ids(&all),
        [run_id(&docs[2]), run_id(&docs[1]), run_id(&docs[0])]
    );
    for (row, doc) in all.iter().zip(docs.iter().rev()) {
        for key in [
            "id",
            "ensemble",
            "status",
            "started_at",
            "finished_at",
            "tokens",
            "cost_usd",
        ] {
            assert!(row.get(key).is_some(), "no `{key}` in {row:#}");
        }
        assert_eq!(row["ensemble"], doc["ensemble"]);
        assert_eq!(row["status"], doc["status"]);
        let usage = &doc["totals"]["usage"];
        assert_eq!(
            row["tokens"].as_u64(),
            Some(
                usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
            ),
            "{row:#}"
        );
        assert_eq!(row["cost_usd"], doc["totals"]["cost_usd"], "{row:#}");
        for key in ["started_at", "finished_at"] {
            let t = row[key].as_str().expect("a time");
            assert!(
                t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
                "`{key}` is not RFC 3339 UTC: {t}"
            );
        }
        assert!(row["started_at"].as_str() <= row["finished_at"].as_str());
    }
    assert!(
        all[0]["cost_usd"].as_f64().unwrap() > 0.0,
        "priced: {:#}",
        all[0]
    );

    assert_eq!(
        ids(&session.runs(&["--ensemble", "alpha"])),
        [run_id(&docs[2]), run_id(&docs[0])]
    );
    assert_eq!(
        ids(&session.runs(&["--status", "failed"])),
        [run_id(&docs[1])]
    );
    assert_eq!(
        ids(&session.runs(&["--status", "succeeded", "--limit", "1"])),
        [run_id(&docs[2])]
    );
    assert!(session.runs(&["--ensemble", "gamma"]).is_empty());
    assert_eq!(ids(&session.runs(&["--limit", "2"])).len(), 2);
    assert!(session.runs(&["--limit", "0"]).is_empty());

    // The table, for people: a header and one line per run, newest first.
    let table = session.run(&["runs", "list"]).success().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("RUN "), "{table}");
    assert!(
        lines[1].starts_with(run_id(&docs[2])) && lines[1].contains("succeeded"),
        "{table}"
    );
    assert!(
        lines[2].contains("beta") && lines[2].contains("failed"),
        "{table}"
    );
    // `orc runs` alone is the list.
    assert_eq!(session.run(&["runs"]).success().stdout, table);

    let bad = session.run(&["runs", "list", "--status", "done"]).invalid();
    assert!(
        bad.stderr.contains("unknown status `done`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn show_prints_the_run_document_with_its_calls() {
    let session = Session::new();
    let docs = three_runs(&session);
    for doc in &docs {
        let id = run_id(doc);
        // A unique prefix is enough.
        let shown = session
            .run(&["runs", "show", &id[..id.len() - 1], "--output", "json"])
            .success()
            .json();
        // Everything `invoke --output json` printed, as it printed it.
        for (key, value) in doc.as_object().expect("a document") {
            assert_eq!(&shown[key], value, "`{key}` of run {id}");
        }
        let calls = shown["calls"].as_array().expect("calls");
        assert_eq!(
            calls.len() as u64,
            doc["totals"]["attempts"].as_u64().unwrap(),
            "{calls:#?}"
        );
        for call in calls {
            assert!(
                call["request_hash"].as_str().is_some_and(|h| h.len() == 32),
                "{call:#}"
            );
            assert_eq!(call["source"], "provider");
        }
        let text = session.run(&["runs", "show", id]).success().stdout;
        assert!(
            text.contains(id) && text.contains(doc["ensemble"].as_str().unwrap()),
            "{text}"
        );
    }
    let failed = session
        .run(&["runs", "show", run_id(&docs[1]), "-o", "json"])
        .success()
        .json();
    assert_eq!(failed["calls"][0]["status"], "error");
    assert!(failed["calls"][0]["error_kind"].is_string(), "{failed:#}");

    let missing = session.run(&["runs", "show", "run-nope"]).invalid();
    assert!(
        missing.stderr.contains("no run `run-nope` in the store"),
        "{}",
        missing.stderr
    );
    session.run(&["runs", "show", ""]).invalid();
    let ambiguous = session.run(&["runs", "show", "run-"]).invalid();
    assert!(
        ambiguous.stderr.contains("matches 3 runs"),
        "{}",
        ambiguous.stderr
    );
}

#[test]
fn export_writes_json_jsonl_and_csv() {
    let session = Session::new();
    let docs = three_runs(&session);
    let id = run_id(&docs[0]);
    let shown = session
        .run(&["runs", "show", id, "-o", "json"])
        .success()
        .json();
    let events = session
        .run(&["runs", "show", id, "--events"])
        .success()
        .json_lines();

    let json = session
        .run(&["runs", "export", id, "--format", "json"])
        .success()
        .json();
    assert_eq!(json["run_id"], id);
    assert_eq!(json["agents"], shown["agents"]);
    assert_eq!(json["calls"], shown["calls"]);
    assert_eq!(json["events"].as_array().expect("events"), &events);

    let jsonl = session
        .run(&["runs", "export", id, "--format", "jsonl"])
        .success()
        .json_lines();
    assert_eq!(jsonl, events);
    assert_eq!(jsonl.last().unwrap()["type"], "run_finished");

    let csv = session
        .run(&["runs", "export", id, "--format", "csv"])
        .success()
        .stdout;
    let rows = parse_csv(&csv);
    let header = &rows[0];
    assert_eq!(header[0], "seq");
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{row:?}");
    }
    let calls = shown["calls"].as_array().expect("calls");
    assert_eq!(rows.len() - 1, calls.len(), "one row per call:\n{csv}");
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    for (row, call) in rows[1..].iter().zip(calls) {
        assert_eq!(row[col("agent")], call["agent"].as_str().unwrap());
        assert_eq!(
            row[col("request_hash")],
            call["request_hash"].as_str().unwrap()
        );
        assert_eq!(row[col("seq")], call["seq"].to_string());
        assert_eq!(row[col("input_tokens")], call["input_tokens"].to_string());
    }
}

/// RFC 4180: fields separated by commas, quoted fields may hold commas, quotes (doubled)
/// and line breaks. Written here so the test does not trust the writer's own rules.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "an unterminated quoted field");
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row has no line break"
    );
    rows
}

#[test]
fn rm_and_gc_remove_runs() {
    let session = Session::new();
    let docs = three_runs(&session);
    let (old, failed, recent) = (run_id(&docs[0]), run_id(&docs[1]), run_id(&docs[2]));

    session
        .run(&["runs", "rm", &failed[..failed.len() - 1]])
        .success()
        .stderr_contains(&format!("removed {failed}"));
    assert_eq!(ids(&session.runs(&[])), [recent, old]);
    session.run(&["runs", "show", failed]).invalid();
    session.run(&["runs", "rm", failed]).invalid();

    // Nothing is old enough yet.
    let none = session
        .run(&["runs", "gc", "--older-than", "30d", "-o", "json"])
        .success()
        .json();
    assert_eq!(none["removed"], serde_json::json!([]));

    // Forty days ago.
    let conn = session.sql();
    let forty_days_ms: i64 = 40 * 86_400_000;
    conn.execute(
        "UPDATE runs SET started_at = started_at - ?2, finished_at = finished_at - ?2 WHERE id = ?1",
        rusqlite::params![old, forty_days_ms],
    )
    .expect("age a run");
    drop(conn);
    let gone = session
        .run(&["runs", "gc", "--older-than", "30d", "-o", "json"])
        .success()
        .json();
    assert_eq!(gone["removed"], serde_json::json!([old]));
    assert_eq!(ids(&session.runs(&[])), [recent]);
    // Its events and calls went with it.
    let conn = session.sql();
    for table in ["events", "calls"] {
        let left: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE run_id IN (?1, ?2)"),
                [old, failed],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(left, 0, "rows of removed runs left in `{table}`");
    }
    let kept: i64 = conn
        .query_row(
            "SELECT count(*) FROM calls WHERE run_id = ?1",
            [recent],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(kept, 2);

    let bad = session
        .run(&["runs", "gc", "--older-than", "soon"])
        .invalid();
    assert!(
        bad.stderr.contains("`soon` is not an age"),
        "{}",
        bad.stderr
    );
}
