//! What a run on workers looks like from outside: the same results as in one process, an
//! agent no worker can serve, and a job that keeps crashing its workers.

use pretty_assertions::assert_eq;

use super::{Fake, WorkerProc, answer, finish, invoke, redis_or_skip};
use crate::support::{ENSEMBLE, Test, agent};

const DAG: &str = "
name: dag
agents:
  - name: a
    model_profile: mock-fast
    system_prompt: one
  - name: b
    model_profile: mock-fast
    system_prompt: two
  - name: c
    model_profile: mock-fast
    depends_on: [a, b]
  - name: d
    model_profile: mock-fast
    depends_on: [c]
";

#[test]
fn a_run_on_workers_matches_a_local_run() {
    let redis = redis_or_skip!(false);
    let _w1 = WorkerProc::start(&redis, "w1", 2, &[]);
    let _w2 = WorkerProc::start(&redis, "w2", 2, &[]);
    let test = Test::new().ensemble(DAG);
    let (code, remote, stderr) = finish(invoke(&test, &redis, &[]));
    assert_eq!(code, Some(0), "{stderr}");
    let local = Test::new()
        .ensemble(DAG)
        .args(["invoke", ENSEMBLE, "hello", "--output", "json"])
        .run()
        .success()
        .json();
    for name in ["a", "b", "c", "d"] {
        let (r, l) = (agent(&remote, name), agent(&local, name));
        assert_eq!(r["status"], "succeeded", "{r:#}");
        assert_eq!(r["output"], l["output"], "agent `{name}`");
        assert_eq!(r["usage"], l["usage"], "agent `{name}`");
    }
    assert_eq!(remote["totals"]["succeeded"], 4);
}

#[test]
fn an_agent_waits_for_a_worker_that_has_its_key() {
    let redis = redis_or_skip!(false);
    let fake = Fake::always(answer("served", 3, 2));
    let yaml = format!(
        "name: keyed\nmodel_profiles:\n  k: {{provider: openai, base_url: \"{}/v1\", model: gpt-test, api_key_env: ORC_TEST_WORKER_KEY}}\nagents:\n  - name: x\n    model_profile: k\n",
        fake.url()
    );
    // The first worker has no key: it puts the job back until one that has it comes.
    let without = WorkerProc::start(&redis, "keyless", 1, &[]);
    let test = Test::new().ensemble(&yaml);
    let child = invoke(&test, &redis, &[]);
    without.wait_for_stderr("cannot serve");
    let with = {
        let test = Test::new()
            .args(["worker", "--redis", &redis.url(), "--name", "keyed"])
            .env("ORC_TEST_WORKER_KEY", "sk-worker-only")
            .env("ORC_LOG", "orc::worker=debug");
        let child = test.command().spawn().expect("start the keyed worker");
        (child, test)
    };
    let (code, doc, stderr) = finish(child);
    let (mut keyed, _test) = with;
    let _ = keyed.kill();
    let _ = keyed.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(agent(&doc, "x")["output"], "served");
    // The key went from the worker's environment to the provider, never through Redis.
    assert_eq!(
        fake.single().header("authorization"),
        Some("Bearer sk-worker-only")
    );
    assert!(
        without.stderr().contains("ORC_TEST_WORKER_KEY"),
        "the keyless worker says which key it lacks:\n{}",
        without.stderr()
    );
}

#[test]
fn an_agent_no_worker_can_serve_fails_with_a_clear_error() {
    let redis = redis_or_skip!(false);
    let _w = WorkerProc::start(&redis, "keyless", 2, &[]);
    let yaml = "name: keyed\nmodel_profiles:\n  k: {provider: openai, model: gpt-test, api_key_env: ORC_TEST_NOBODY_HAS_THIS}\nagents:\n  - name: x\n    model_profile: k\n  - name: y\n    model_profile: mock-fast\n";
    let test = Test::new().ensemble(yaml);
    let (code, doc, stderr) = finish(invoke(&test, &redis, &["--redis-timeout", "1"]));
    assert_eq!(code, Some(1), "{stderr}");
    let x = agent(&doc, "x");
    assert_eq!(x["status"], "failed", "{x:#}");
    let error = x["error"].as_str().expect("an error");
    assert!(
        error.contains("no worker could run agent `x` within 1s")
            && error.contains("`keyless`")
            && error.contains("ORC_TEST_NOBODY_HAS_THIS"),
        "{error}"
    );
    assert_eq!(agent(&doc, "y")["status"], "succeeded");
}

#[test]
fn a_job_that_keeps_crashing_its_workers_fails_instead_of_cycling() {
    let redis = redis_or_skip!(false);
    // The script kills the worker running it (its parent), every time.
    let yaml = r#"
name: crashing
agents:
  - name: boom
    type: script
    run: [python3, -c, "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"]
  - name: fine
    model_profile: mock-fast
"#;
    let args = ["--visibility-timeout", "1", "--max-crashes", "1"];
    let w1 = WorkerProc::start(&redis, "w1", 2, &args);
    let w2 = WorkerProc::start(&redis, "w2", 2, &args);
    let test = Test::new().ensemble(yaml);
    let (code, doc, stderr) = finish(invoke(&test, &redis, &[]));
    assert_eq!(code, Some(1), "{stderr}");
    let boom = agent(&doc, "boom");
    assert_eq!(boom["status"], "failed", "{boom:#}");
    assert_eq!(boom["error_kind"], "crashed", "{boom:#}");
    let error = boom["error"].as_str().expect("an error");
    assert!(
        error.contains("was taken by 1 worker that stopped without finishing it"),
        "{error}"
    );
    assert_eq!(agent(&doc, "fine")["status"], "succeeded");
    // One worker died running it; the other one failed it instead of running it.
    let logs = [w1.stderr(), w2.stderr()];
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains("failing a job that keeps crashing workers"))
            .count(),
        1,
        "{logs:#?}"
    );
}
