//! A run's events over SSE: stored then live, `id:` = seq, reconnects with `Last-Event-ID`
//! continuing right after that event, a client that stops reading never holding up the run
//! (and catching up from the store, gap-free), and generation control.

use std::time::Duration;

use serde_json::json;

use super::{PAIR, SLOW, Server, SseStream};
use crate::support::Test;

/// Seqs must be 1, 2, 3, ... with nothing missing or repeated.
#[track_caller]
fn assert_contiguous(seqs: &[u64]) {
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected.as_slice(), "events missing or repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_replays_and_resumes_after_last_event_id() {
    let server = Server::start(Test::new().file(".orc/ensembles/pair.yaml", PAIR), &[]);
    let id = server.start_run("pair", "x").await;
    server.wait_run(&id).await;
    let all = server.events(&id, None).await;
    let seqs: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_contiguous(&seqs);
    assert_eq!(all[0].1["type"], "run_started");
    assert_eq!(all.last().unwrap().1["type"], "run_finished");
    for (seq, event) in &all {
        assert_eq!(event["seq"], *seq, "the SSE id is the event's seq");
    }
    let types: Vec<&str> = all
        .iter()
        .map(|(_, e)| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"agent_prompt"), "{types:?}");
    let rest = server.events(&id, Some(5)).await;
    assert_eq!(rest.first().map(|(s, _)| *s), Some(6));
    assert_eq!(rest.len(), all.len() - 5);
    assert_eq!(rest.last().unwrap().1, all.last().unwrap().1);
    // After the last event there is nothing more, and the stream ends.
    let none = server.events(&id, Some(all.len() as u64)).await;
    assert!(none.is_empty());
    // `?after=` does the same for clients that cannot set headers.
    let r = server
        .http
        .get(server.url(&format!("/api/runs/{id}/events?after=3")))
        .send()
        .await
        .unwrap();
    let mut s = SseStream::new(r);
    assert_eq!(s.next().await.map(|(n, _)| n), Some(4));
    // A malformed Last-Event-ID is a 400.
    let r = server
        .http
        .get(server.url(&format!("/api/runs/{id}/events")))
        .header("Last-Event-ID", "soon")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_reconnects_where_it_broke() {
    let server = Server::start(Test::new().file(".orc/ensembles/slow.yaml", SLOW), &[]);
    let id = server.start_run("slow", "x").await;
    let r = server
        .http
        .get(server.url(&format!("/api/runs/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut first = SseStream::new(r);
    let mut seen = Vec::new();
    while seen.len() < 6 {
        seen.push(first.next().await.expect("events while the run goes on"));
    }
    drop(first);
    let last = seen.last().unwrap().0;
    let run = server.get(&format!("/api/runs/{id}")).await.1;
    assert_eq!(
        run["status"], "running",
        "the run is still going when the client comes back"
    );
    let rest = server.events(&id, Some(last)).await;
    seen.extend(rest);
    let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
    assert_contiguous(&seqs);
    assert_eq!(seen.last().unwrap().1["type"], "run_finished");
    assert_eq!(seen.last().unwrap().1["result"]["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_never_holds_up_the_run() {
    // 2,000 instant agents make far more events than a stalled client's buffers hold.
    let mut yaml = String::from("name: wide\ndefaults: { model_profile: mock-fast }\nagents:\n");
    for i in 0..2000 {
        yaml.push_str(&format!("  - name: a{i}\n"));
    }
    let server = Server::start(Test::new().file(".orc/ensembles/wide.yaml", &yaml), &[]);
    let id = server.start_run("wide", "x").await;
    let stalled = server
        .http
        .get(server.url(&format!("/api/runs/{id}/events")))
        .send()
        .await
        .unwrap();
    // Not read while the run goes on.
    let doc = server.wait_run(&id).await;
    assert_eq!(doc["status"], "succeeded");
    let mut stream = SseStream::new(stalled);
    let mut seqs = Vec::new();
    let mut last = None;
    while let Some((seq, event)) = stream.next().await {
        seqs.push(seq);
        last = Some(event);
    }
    assert_contiguous(&seqs);
    assert_eq!(last.unwrap()["type"], "run_finished");
    assert!(seqs.len() > 10_000, "{} events", seqs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_streams_items_and_stops_on_request() {
    let server = Server::start(
        Test::new().file(
            ".orc/profiles/slow.yaml",
            "model_profiles:\n  mock-steady: { provider: mock, model: mock-1, latency_ms: 50 }\n",
        ),
        &[],
    );
    let (status, body) = server
        .post(
            "/api/explore",
            json!({"topic": "kitchen tools", "producers": 2, "profiles": ["mock-steady"], "stop": {"iterations": 100000}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let r = server
        .http
        .get(server.url(&format!("/api/runs/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::new(r);
    let (mut items, mut points) = (0, 0);
    while items < 20 || points < 3 {
        let (_, e) = stream.next().await.expect("events while exploring");
        match e["type"].as_str().unwrap() {
            "item_accepted" => items += 1,
            "node_progress" if e["call"].is_u64() && e["new"].is_u64() => points += 1,
            _ => {}
        }
    }
    let (status, _) = server
        .post(&format!("/api/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 202);
    let mut finished = None;
    while let Some((_, e)) = stream.next().await {
        if e["type"] == "run_finished" {
            finished = Some(e);
        }
    }
    let finished = finished.expect("the run finishes after a stop");
    assert_eq!(finished["result"]["status"], "succeeded", "{finished}");
    let agent = &finished["result"]["agents"][0];
    assert_eq!(agent["metrics"]["stop_reason"], "stopped", "{agent}");
    assert!(agent["items"].as_array().unwrap().len() >= 20);

    // A topic-less or profile-less request is refused before anything runs.
    let (status, err) = server.post("/api/explore", json!({"topic": " "})).await;
    assert_eq!(status, 400, "{err}");
    let (status, err) = server
        .post(
            "/api/explore",
            json!({"topic": "x", "profiles": ["mock-stedy"]}),
        )
        .await;
    assert_eq!(status, 422);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `mock-steady`?"),
        "{err}"
    );
    let (status, err) = server
        .post(
            "/api/explore",
            json!({"topic": "x", "stop": {"iteratons": 3}}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_explore")),
        "{err}"
    );
    // Stopping a finished run is a conflict.
    let (status, _) = server
        .post(&format!("/api/runs/{id}/stop"), json!({}))
        .await;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
