//! A worker killed with -9 in the middle of a run: its jobs are claimed by the other
//! worker once it stops heart-beating, every agent succeeds, and no result is counted
//! twice.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::{
    Fake, WorkerProc, agents_yaml, answer, finish, invoke, redis_or_skip, requests_per_agent,
    wait_until,
};
use crate::support::{Test, agent};

#[test]
fn a_worker_killed_midway_loses_nothing_and_counts_nothing_twice() {
    let redis = redis_or_skip!(false);
    const AGENTS: usize = 300;
    const CONCURRENCY: u32 = 8;
    // Every answer takes 20 ms and costs 7 tokens in, 3 out.
    let fake = Fake::always(answer("done", 7, 3).delay(Duration::from_millis(20)));
    let args = ["--visibility-timeout", "1"];
    let mut doomed = WorkerProc::start(&redis, "doomed", CONCURRENCY, &args);
    let survivor = WorkerProc::start(&redis, "survivor", CONCURRENCY, &args);
    let test = Test::new().ensemble(&agents_yaml(&fake, AGENTS, ""));
    let child = invoke(&test, &redis, &[]);
    // Midway, with jobs running on both workers.
    wait_until("a third of the requests arrived", || {
        fake.count() >= AGENTS / 3
    });
    doomed.kill();
    let at_kill = fake.count();
    let (code, doc, stderr) = finish(child);
    assert_eq!(code, Some(0), "{stderr}");

    // Every agent succeeded, each with the usage of exactly one call.
    let totals = &doc["totals"];
    assert_eq!(totals["agents"], AGENTS, "{totals:#}");
    assert_eq!(totals["succeeded"], AGENTS, "{totals:#}");
    for i in 1..=AGENTS {
        let a = agent(&doc, &format!("a{i}"));
        assert_eq!(a["status"], "succeeded", "{a:#}");
        assert_eq!(a["output"], "done", "{a:#}");
        assert_eq!(a["attempts"], 1, "{a:#}");
        assert_eq!(a["usage"]["input_tokens"], 7, "{a:#}");
    }
    assert_eq!(totals["usage"]["input_tokens"], 7 * AGENTS, "{totals:#}");
    assert_eq!(totals["usage"]["output_tokens"], 3 * AGENTS, "{totals:#}");
    let cost = totals["cost_usd"].as_f64().expect("a cost");
    let expected = AGENTS as f64 * (7.0 + 2.0 * 3.0) / 1e6;
    assert!((cost - expected).abs() < 1e-9, "cost {cost} != {expected}");

    // The fake saw every agent; the only requests made twice are those of jobs the killed
    // worker was holding (at most its concurrency), run again by the survivor.
    let per_agent = requests_per_agent(&fake);
    assert_eq!(per_agent.len(), AGENTS, "{per_agent:?}");
    let extra = fake.count() - AGENTS;
    assert!(
        extra <= CONCURRENCY as usize,
        "{extra} requests made twice, more than the killed worker held ({at_kill} when killed)"
    );
    if extra > 0 {
        assert!(
            survivor
                .stderr()
                .contains("claimed a job whose worker stopped heart-beating"),
            "{}",
            survivor.stderr()
        );
    }
    eprintln!(
        "killed at {at_kill} requests; {extra} requests made again; survivor claimed {} jobs",
        survivor
            .stderr()
            .matches("claimed a job whose worker stopped heart-beating")
            .count()
    );
}
