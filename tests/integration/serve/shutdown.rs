//! SIGTERM stops the server gracefully: running runs are cancelled, stored as
//! `interrupted`, and can be resumed, with `orc resume` or over the API.

use super::{SLOW, Server};
use crate::support::Test;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_running_runs_as_interrupted_and_they_resume() {
    let test = Test::new().file(".orc/ensembles/slow.yaml", SLOW);
    let mut server = Server::start(test, &[]);
    let id = server.start_run("slow", "go").await;
    // Let the first agent finish.
    loop {
        let (_, doc) = server.get(&format!("/api/runs/{id}")).await;
        if doc["agents"][0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
    // The run is on record as interrupted, with what it finished.
    let out = server
        .test
        .command()
        .args(["runs", "show", &id, "--output", "json"])
        .output()
        .expect("run orc runs show");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "interrupted", "{doc}");
    assert_eq!(doc["agents"][0]["status"], "succeeded");
    // A new server resumes it over the API.
    let test = std::mem::replace(&mut server.test, Test::new());
    let server = Server::start(test, &[]);
    let (status, body) = server
        .post(&format!("/api/runs/{id}/resume"), serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let doc = server.wait_run(&id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let one_calls = doc["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["agent"] == "one")
        .count();
    assert_eq!(one_calls, 1, "the finished agent is not run again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orc_resume_continues_a_run_the_server_was_stopped_in() {
    let test = Test::new().file(".orc/ensembles/slow.yaml", SLOW);
    let mut server = Server::start(test, &[]);
    let id = server.start_run("slow", "go").await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(server.terminate(), Some(0));
    let out = server
        .test
        .command()
        .args(["resume", &id, "--output", "json", "--quiet"])
        .output()
        .expect("run orc resume");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["run_id"], id.as_str());
}
