//! Redis going away mid-run: when it comes back, coordinator and workers carry on; when it
//! does not, the run fails cleanly after `--redis-timeout` with what completed stored, and
//! `orc resume` finishes it.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::{
    Fake, WorkerProc, agents_yaml, answer, finish, invoke, redis_or_skip, requests_per_agent,
    wait_until,
};
use crate::support::Test;

#[test]
fn a_run_goes_on_after_redis_restarts() {
    let mut redis = redis_or_skip!(true);
    const AGENTS: usize = 40;
    let fake = Fake::always(answer("ok", 5, 5).delay(Duration::from_millis(100)));
    // A visibility timeout longer than the outage: nobody takes over a job meanwhile.
    let args = ["--visibility-timeout", "10"];
    let _w1 = WorkerProc::start(&redis, "w1", 4, &args);
    let _w2 = WorkerProc::start(&redis, "w2", 4, &args);
    let test = Test::new().ensemble(&agents_yaml(&fake, AGENTS, ""));
    let child = invoke(&test, &redis, &["--redis-timeout", "30"]);
    wait_until("ten requests arrived", || fake.count() >= 10);
    redis.stop(false);
    let during = fake.count();
    std::thread::sleep(Duration::from_millis(1000));
    redis.restart();
    let (code, doc, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["totals"]["succeeded"], AGENTS, "{:#}", doc["totals"]);
    assert_eq!(doc["totals"]["usage"]["input_tokens"], 5 * AGENTS);
    let per_agent = requests_per_agent(&fake);
    assert_eq!(per_agent.len(), AGENTS);
    assert!(
        per_agent.values().all(|&n| n == 1),
        "an agent was called twice: {per_agent:?}"
    );
    assert!(
        during < AGENTS,
        "the outage came too late to test anything ({during} requests)"
    );
}

/// A run that failed because Redis stayed away: its ensemble, the fake server, its id and the
/// agents that had succeeded, with the requests the fake had seen by then.
struct Stranded {
    test: Test,
    fake: Fake,
    run_id: String,
    succeeded: Vec<String>,
    before: std::collections::BTreeMap<String, usize>,
}

const STRANDED_AGENTS: usize = 20;

/// Invokes 20 agents through one worker and stops Redis (for good) six requests in.
fn strand(redis: &mut super::Redis) -> Stranded {
    let fake = Fake::always(answer("ok", 5, 5).delay(Duration::from_millis(150)));
    let worker = WorkerProc::start(redis, "w1", 2, &[]);
    let test = Test::new().ensemble(&agents_yaml(&fake, STRANDED_AGENTS, ""));
    let child = invoke(&test, redis, &["--redis-timeout", "2"]);
    wait_until("six requests arrived", || fake.count() >= 6);
    redis.stop(true);
    let (code, doc, stderr) = finish(child);
    drop(worker);
    assert_eq!(code, Some(1), "{stderr}");
    let agents = doc["agents"].as_array().expect("agents");
    let succeeded: Vec<String> = agents
        .iter()
        .filter(|a| a["status"] == "succeeded")
        .map(|a| a["name"].as_str().expect("name").to_string())
        .collect();
    assert!(
        !succeeded.is_empty() && succeeded.len() < STRANDED_AGENTS,
        "{succeeded:?}"
    );
    for a in agents.iter().filter(|a| a["status"] != "succeeded") {
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("was unreachable for 2s") && error.contains("orc resume"),
            "{a:#}"
        );
    }
    Stranded {
        run_id: doc["run_id"].as_str().expect("a run id").to_string(),
        before: requests_per_agent(&fake),
        test,
        fake,
        succeeded,
    }
}

impl Stranded {
    /// `orc resume RUN` with `extra` arguments: every agent succeeds, and none that had
    /// succeeded is called again.
    fn resume(&self, extra: &[&str]) {
        let out = crate::support::wait_with_limit(
            {
                let mut command = self.test.command();
                command
                    .args(["resume", &self.run_id, "--output", "json"])
                    .args(extra);
                command.spawn().expect("start orc resume")
            },
            Duration::from_secs(60),
        );
        assert_eq!(out.0, Some(0), "{}", out.2);
        let doc: serde_json::Value = serde_json::from_str(&out.1).expect("JSON");
        assert_eq!(
            doc["totals"]["succeeded"], STRANDED_AGENTS,
            "{:#}",
            doc["totals"]
        );
        let after = requests_per_agent(&self.fake);
        for name in &self.succeeded {
            assert_eq!(
                after.get(name),
                self.before.get(name),
                "agent `{name}` succeeded before and was called again"
            );
        }
        assert_eq!(after.len(), STRANDED_AGENTS);
    }
}

#[test]
fn a_run_fails_cleanly_when_redis_stays_away_and_resumes_later() {
    let mut redis = redis_or_skip!(false);
    // What completed is in the store: `orc resume` runs only the rest (here, in-process).
    strand(&mut redis).resume(&[]);
}

#[test]
fn a_redis_that_comes_back_empty_gets_the_outstanding_jobs_again() {
    // No persistence: the restarted Redis has lost the queue, the group and the replies.
    let mut redis = redis_or_skip!(false);
    const AGENTS: usize = 40;
    let fake = Fake::always(answer("ok", 5, 5).delay(Duration::from_millis(100)));
    let _w1 = WorkerProc::start(&redis, "w1", 4, &[]);
    let _w2 = WorkerProc::start(&redis, "w2", 4, &[]);
    let test = Test::new().ensemble(&agents_yaml(&fake, AGENTS, ""));
    let child = invoke(&test, &redis, &["--redis-timeout", "30"]);
    wait_until("ten requests arrived", || fake.count() >= 10);
    redis.restart();
    let (code, doc, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Redis lost its data"), "{stderr}");
    assert_eq!(doc["totals"]["succeeded"], AGENTS, "{:#}", doc["totals"]);
    // Counted once each, whatever was called again after the loss.
    assert_eq!(doc["totals"]["usage"]["input_tokens"], 5 * AGENTS);
    assert_eq!(requests_per_agent(&fake).len(), AGENTS);
}

#[test]
fn orc_resume_with_redis_runs_the_rest_on_the_workers() {
    let mut redis = redis_or_skip!(false);
    let stranded = strand(&mut redis);
    // Redis is back (empty); `orc resume --redis` hands the rest to a new worker.
    redis.restart();
    let worker = WorkerProc::start(&redis, "w2", 4, &[]);
    stranded.resume(&["--redis", &redis.url()]);
    let ran: Vec<String> = worker
        .stderr()
        .lines()
        .filter(|l| l.contains(" running") && l.contains("agent="))
        .map(String::from)
        .collect();
    assert_eq!(
        ran.len(),
        STRANDED_AGENTS - stranded.succeeded.len(),
        "the worker ran exactly the agents left:\n{}",
        ran.join("\n")
    );
}
