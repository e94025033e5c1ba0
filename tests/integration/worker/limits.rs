//! A profile's requests-per-minute limit holds across all workers together: the fake
//! records when each request arrived.

use std::time::Duration;

use pretty_assertions::assert_eq;

use super::{Fake, WorkerProc, agents_yaml, answer, finish, invoke, redis_or_skip};
use crate::support::Test;

#[test]
fn requests_per_minute_hold_across_three_workers() {
    let redis = redis_or_skip!(false);
    const AGENTS: usize = 30;
    // 600 a minute: 10 a second, with a burst of one second's worth (10).
    let fake = Fake::always(answer("ok", 1, 1));
    let _workers: Vec<WorkerProc> = ["w1", "w2", "w3"]
        .iter()
        .map(|name| WorkerProc::start(&redis, name, 10, &[]))
        .collect();
    let yaml = agents_yaml(&fake, AGENTS, ", limits: {requests_per_minute: 600}");
    let test = Test::new().ensemble(&yaml);
    let (code, doc, stderr) = finish(invoke(&test, &redis, &[]));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["totals"]["succeeded"], AGENTS);
    let at: Vec<Duration> = fake.requests().iter().map(|r| r.at).collect();
    assert_eq!(at.len(), AGENTS);
    // After the burst of 10, one request every 100 ms: the 30 take about two seconds.
    // Each worker alone would allow its own burst and rate: 30 requests almost at once.
    let span = at[AGENTS - 1].saturating_sub(at[0]);
    assert!(
        span >= Duration::from_millis(1500),
        "30 requests at 600/min across three workers arrived within {span:?}: {at:?}"
    );
    // No second holds more than the burst and the second's rate (with a margin).
    for (i, start) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|t| t.saturating_sub(*start) < Duration::from_secs(1))
            .count();
        assert!(
            within <= 22,
            "{within} requests within one second from request {i}: {at:?}"
        );
    }
}

#[test]
fn the_runs_budget_stops_every_worker() {
    let redis = redis_or_skip!(false);
    const AGENTS: usize = 40;
    // Each call costs $0.001 (1000 input tokens at $1 a million); the budget is $0.005.
    let fake = Fake::always(answer("ok", 1000, 0).delay(Duration::from_millis(50)));
    let _w1 = WorkerProc::start(&redis, "w1", 2, &[]);
    let _w2 = WorkerProc::start(&redis, "w2", 2, &[]);
    let yaml = agents_yaml(&fake, AGENTS, "").replacen(
        "agents:\n",
        "budget: {max_cost_usd: 0.005}\nagents:\n",
        1,
    );
    let test = Test::new().ensemble(&yaml);
    let (code, doc, stderr) = finish(invoke(&test, &redis, &[]));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(doc["status"], "budget_exceeded", "{:#}", doc["totals"]);
    // Five calls spend the budget; at most the calls in flight on the two workers (four)
    // come after.
    let calls = fake.count();
    assert!(
        (5..=9).contains(&calls),
        "{calls} calls for a budget of five"
    );
    assert!(
        doc["totals"]["cancelled"].as_u64().expect("cancelled") >= (AGENTS - 9) as u64,
        "{:#}",
        doc["totals"]
    );
}
