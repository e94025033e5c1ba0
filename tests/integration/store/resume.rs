//! `orc resume`: a chain killed with -9 in the middle of a call finishes under its own id
//! with what a fresh run gives, without sending any completed request again; and the runs it
//! refuses.

use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::Value;

use super::model::Model;
use super::{Session, wait_until};
use crate::support::agent;

/// A chain `a -> b -> c -> d -> e` where `c` runs `inner.yaml` (`x -> y`). Each agent's
/// system prompt names it, so its requests can be told apart.
fn chain(model: &Model) -> (String, String) {
    let profile = model.profile("");
    let llm = |name: &str, after: Option<&str>| {
        let mut s = format!(
            "  - name: {name}\n    model_profile: m\n    system_prompt: You are agent {name}.\n"
        );
        if let Some(dep) = after {
            s.push_str(&format!("    depends_on: [{dep}]\n"));
        }
        s
    };
    let outer = format!(
        "name: chain\nmodel_profiles:\n  m: {profile}\nagents:\n{}{}  - name: c\n    ensemble: inner.yaml\n    depends_on: [b]\n{}{}",
        llm("a", None),
        llm("b", Some("a")),
        llm("d", Some("c")),
        llm("e", Some("d")),
    );
    let inner = format!(
        "name: inner\nmodel_profiles:\n  m: {profile}\nagents:\n{}{}",
        llm("x", None),
        llm("y", Some("x")),
    );
    (outer, inner)
}

/// Calls of run `id` in the store that completed.
fn completed_calls(session: &Session, id: &str) -> i64 {
    let Some(conn) = session.try_sql() else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM calls WHERE run_id = ?1 AND status = 'ok'",
        [id],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Tokens of the calls of run `id` that went to the model, from the store.
fn paid_tokens(session: &Session, id: &str) -> u64 {
    session
        .sql()
        .query_row(
            "SELECT sum(input_tokens + output_tokens) FROM calls WHERE run_id = ?1 AND source = 'provider'",
            [id],
            |r| r.get(0),
        )
        .expect("a sum")
}

/// The sequence numbers of the stored events of run `id`.
fn stored_seqs(session: &Session, id: &str) -> Vec<u64> {
    session
        .run(&["runs", "show", id, "--events"])
        .success()
        .json_lines()
        .iter()
        .map(|e| e["seq"].as_u64().expect("a seq"))
        .collect()
}

/// What a user compares between two runs of the same ensemble on the same answers.
fn essentials(doc: &Value) -> Value {
    let agents: Vec<Value> = doc["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a["name"], "status": a["status"], "output": a["output"],
                "usage": a["usage"], "cost_usd": a["cost_usd"], "profile": a["profile"],
                "model": a["model"],
            })
        })
        .collect();
    let t = &doc["totals"];
    serde_json::json!({
        "ensemble": doc["ensemble"], "input": doc["input"], "status": doc["status"],
        "agents": agents,
        "totals": {
            "agents": t["agents"], "succeeded": t["succeeded"], "failed": t["failed"],
            "usage": t["usage"], "cost_usd": t["cost_usd"],
        },
    })
}

#[test]
fn a_chain_killed_midway_resumes_without_sending_completed_requests_again() {
    // Requests arrive a, b, x, y, ...: y (the fourth) is held until the run is killed, and
    // held again (the fifth) until the first resume is killed too.
    let ms = Duration::from_millis;
    let held = ms(120_000);
    let model = Model::start(vec![ms(100), ms(100), ms(100), held, held, ms(100)]);
    let session = Session::new();
    let (outer, inner) = chain(&model);
    session.file("chain.yaml", &outer);
    session.file("inner.yaml", &inner);

    let run = session.spawn(&["invoke", "chain.yaml", "hello", "--output", "jsonl"]);
    let id = run.run_id();
    wait_until("y's request", || model.count() == 4);
    // a, b and x have answered, and the store has them.
    wait_until("three completed calls in the store", || {
        completed_calls(&session, &id) == 3
    });
    assert_eq!(session.status_of(&id), "running");
    let (printed, _) = run.kill9();
    assert!(
        !printed.iter().any(|e| e["type"] == "run_finished"),
        "the run was killed before it finished"
    );
    let listed = session.runs(&[]);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["status"], "interrupted", "{listed:#?}");
    // It lists what its three completed calls paid.
    let paid = paid_tokens(&session, &id);
    assert!(paid > 0);
    assert_eq!(listed[0]["tokens"], paid, "{listed:#?}");
    assert!(
        listed[0]["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{listed:#?}"
    );
    assert_eq!(listed[0]["calls"], 3, "{listed:#?}");
    assert!(session.runs(&["--status", "running"]).is_empty());
    assert_eq!(
        session.runs(&["--status", "interrupted"]).len(),
        1,
        "a dead run is found by its settled status"
    );

    // The first resume answers x from the store, sends y, and is killed in turn.
    let stored = stored_seqs(&session, &id);
    let run = session.spawn(&["resume", &id, "--output", "jsonl"]);
    wait_until("y's request again", || model.count() == 5);
    wait_until("x's answer from the store, stored", || {
        completed_calls(&session, &id) == 4
    });
    assert_eq!(session.status_of(&id), "running");
    let (printed, stderr) = run.kill9();
    assert!(
        stderr.contains("2 of 5 agents already succeeded, 1 completed call on record"),
        "{stderr}"
    );
    assert!(printed.iter().all(|e| e["run_id"] == id.as_str()));
    assert_eq!(
        printed[0]["seq"],
        *stored.last().unwrap() + 1,
        "the resumed run numbers its events on from the stored ones"
    );
    assert_eq!(session.status_of(&id), "interrupted");
    // x's answer, given again from the store, was not paid again.
    let listed = session.runs(&[]);
    assert_eq!(listed[0]["tokens"], paid, "{listed:#?}");
    assert_eq!(listed[0]["calls"], 3, "{listed:#?}");

    // A unique prefix is enough. Text output, as `invoke` prints it.
    let out = session.run(&["resume", &id[..id.len() - 2]]).success();
    assert!(
        out.stderr.contains(&format!("run {id}")),
        "the run keeps its id: {}",
        out.stderr
    );
    let resumed = session
        .run(&["runs", "show", &id, "--output", "json"])
        .success()
        .json();
    assert_eq!(resumed["run_id"], id.as_str());
    // x's answer is on record once, however often it was given again.
    assert!(
        out.stderr
            .contains("2 of 5 agents already succeeded, 1 completed call on record"),
        "{}",
        out.stderr
    );
    let seqs = stored_seqs(&session, &id);
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "a gap in the stored events"
    );

    // What a fresh invoke gives on the same answers.
    let fresh_model = Model::with_delay(Duration::ZERO);
    let fresh = Session::new();
    let (outer, inner) = chain(&fresh_model);
    fresh.file("chain.yaml", &outer);
    fresh.file("inner.yaml", &inner);
    let reference = fresh
        .run(&["invoke", "chain.yaml", "hello", "--output", "json"])
        .success()
        .json();
    assert_eq!(essentials(&resumed), essentials(&reference));
    let text = fresh
        .run(&["invoke", "chain.yaml", "hello"])
        .success()
        .stdout;
    assert_eq!(out.stdout, text);
    assert_eq!(
        agent(&resumed, "e")["output"],
        agent(&reference, "e")["output"]
    );

    // Every completed request was sent once; y, cut off by both kills, three times.
    for (name, times) in [("a", 1), ("b", 1), ("x", 1), ("y", 3), ("d", 1), ("e", 1)] {
        assert_eq!(
            model.count_with(&format!("You are agent {name}.")),
            times,
            "requests of agent `{name}`"
        );
    }
    assert_eq!(model.count(), 8);

    // The store: one run, succeeded, whose calls say where each answer came from.
    let listed = session.runs(&[]);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["status"], "succeeded");
    let shown = session
        .run(&["runs", "show", &id, "--output", "json"])
        .success()
        .json();
    let sources = |agent: &str| -> Vec<String> {
        shown["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .filter(|c| c["agent"] == agent)
            .map(|c| c["source"].as_str().expect("a source").to_string())
            .collect()
    };
    assert_eq!(sources("a"), ["provider"]);
    assert_eq!(sources("x"), ["provider", "resume", "resume"]);
    assert_eq!(sources("y"), ["provider"]);
    assert_eq!(shown["status"], "succeeded");

    // Resuming again is refused: there is nothing left to do.
    session.run(&["resume", &id]).invalid();
}

/// `a` is instant; `b` would take a minute unless changed.
const SLOW_SECOND: &str = "\
name: slow
model_profiles:
  slow: {provider: mock, latency_ms: 60000}
agents:
  - name: a
    model_profile: mock-fast
  - name: b
    model_profile: slow
    depends_on: [a]
";

/// Starts `slow.yaml` and kills it once `a` is stored as succeeded; the run id.
fn killed_after_a(session: &Session) -> String {
    session.file("slow.yaml", SLOW_SECOND);
    let run = session.spawn(&["invoke", "slow.yaml", "go", "--output", "jsonl"]);
    let id = run.run_id();
    wait_until("`a` stored as succeeded", || {
        session
            .run(&["runs", "show", &id, "--output", "json"])
            .stdout
            .contains("\"succeeded\"")
    });
    // While its process lives, it is running, and not to be resumed.
    let busy = session.run(&["resume", &id]).invalid();
    assert!(
        busy.stderr
            .contains(&format!("run `{id}` is still running (process ")),
        "{}",
        busy.stderr
    );
    // Nor removed: its process would go on writing to it.
    let kept = session.run(&["runs", "rm", &id]).invalid();
    assert!(
        kept.stderr
            .contains(&format!("run `{id}` is still running")),
        "{}",
        kept.stderr
    );
    run.kill9();
    id
}

#[test]
fn resume_refuses_changes_to_unfinished_agents_unless_forced() {
    let session = Session::new();
    let id = killed_after_a(&session);
    assert_eq!(session.status_of(&id), "interrupted");

    // A change to `a`, which finished, is no reason to refuse. (`b` is stopped by the
    // timeout: the run stays resumable, now `timed_out`.)
    session.file(
        "slow.yaml",
        &SLOW_SECOND.replace(
            "  - name: a\n    model_profile: mock-fast\n",
            "  - name: a\n    model_profile: mock-fast\n    prompt: something else\n",
        ),
    );
    let out = session
        .run(&["resume", &id, "--timeout", "0.5", "--output", "json"])
        .failure();
    assert_eq!(out.json()["status"], "timed_out");
    assert_eq!(session.status_of(&id), "timed_out");

    // A change to `b`, which did not finish, is refused, naming the change.
    let changed = session.file(
        "slow.yaml",
        &SLOW_SECOND.replace(
            "    model_profile: slow\n",
            "    model_profile: mock-fast\n",
        ),
    );
    let refused = session.run(&["resume", &id]).invalid();
    assert!(
        refused
            .stderr
            .contains("agent `b` changed (`model_profile`)"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(
        session.status_of(&id),
        "timed_out",
        "a refusal changes nothing"
    );

    // --force resumes with the file as it is now.
    let out = session
        .run(&["resume", &id, "--force", "--output", "json"])
        .success();
    assert!(
        out.stderr.contains("agent `b` changed (`model_profile`)"),
        "{}",
        out.stderr
    );
    let doc = out.json();
    assert_eq!(doc["run_id"], id.as_str());
    assert_eq!(agent(&doc, "b")["status"], "succeeded");
    assert_eq!(agent(&doc, "b")["profile"], "mock-fast");
    assert_eq!(session.status_of(&id), "succeeded");
    assert!(changed.is_file());
}

#[test]
fn resume_refuses_succeeded_unknown_and_ambiguous_runs() {
    let session = Session::new();
    session.file(
        "quick.yaml",
        "name: quick\nagents:\n  - name: a\n    model_profile: mock-fast\n",
    );
    // No store yet.
    let none = session.run(&["resume", "run-1"]).invalid();
    assert!(none.stderr.contains("no run store"), "{}", none.stderr);

    let first = session
        .run(&["invoke", "quick.yaml", "one", "--output", "json"])
        .success()
        .json();
    let id = first["run_id"].as_str().expect("a run id").to_string();
    session.run(&["invoke", "quick.yaml", "two"]).success();

    let done = session.run(&["resume", &id]).invalid();
    assert!(
        done.stderr
            .contains(&format!("run `{id}` succeeded; there is nothing to resume")),
        "{}",
        done.stderr
    );
    assert!(done.stdout.is_empty());

    let unknown = session.run(&["resume", "run-0000"]).invalid();
    assert!(
        unknown.stderr.contains("no run `run-0000` in the store"),
        "{}",
        unknown.stderr
    );

    let ambiguous = session.run(&["resume", "run-"]).invalid();
    assert!(
        ambiguous.stderr.contains("`run-` matches 2 runs"),
        "{}",
        ambiguous.stderr
    );
    // Nothing was started by a refusal.
    assert_eq!(session.runs(&[]).len(), 2);
}
