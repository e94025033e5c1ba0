//! The JSON API: ensembles, validation, runs (start, list, show, cancel, resume), errors
//! with the right status and shape, tokens, the refused non-loopback bind, metrics.

use serde_json::json;

use super::{PAIR, SLOW, Server};
use crate::support::Test;

fn serve(files: &[(&str, &str)], args: &[&str]) -> Server {
    let mut test = Test::new();
    for (name, text) in files {
        test = test.file(name, text);
    }
    Server::start(test, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_shows_ensembles() {
    let server = serve(
        &[
            (".orc/ensembles/pair.yaml", PAIR),
            ("extra/slow.yaml", SLOW),
            (
                "extra/broken.yaml",
                "name: broken\nagents:\n  - name: a\n    depends_on: [nobody]\n",
            ),
        ],
        &["extra"],
    );
    let (status, body) = server.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = server.get("/api/ensembles").await;
    assert_eq!(status, 200);
    let list = body["ensembles"].as_array().unwrap();
    let by = |n: &str| {
        list.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} in {body}"))
    };
    assert_eq!(by("pair")["source"], "project");
    assert_eq!(by("pair")["agents"], 2);
    assert_eq!(by("pair")["description"], "a writer and an editor");
    assert_eq!(by("slow")["source"], "path");
    assert_eq!(by("broken")["valid"], false);
    assert!(
        by("broken")["error"]
            .as_str()
            .unwrap()
            .contains("unknown agent `nobody`")
    );

    let (status, plan) = server.get("/api/ensembles/pair").await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["phases"], json!([["writer"], ["editor"]]));
    assert_eq!(plan["edges"], json!([{"from": "writer", "to": "editor"}]));
    assert_eq!(plan["agents"][1]["kind"], "llm");

    let (status, err) = server.get("/api/ensembles/piar").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "unknown_ensemble");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `pair`?"),
        "{err}"
    );

    let (status, err) = server.get("/api/ensembles/broken").await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "invalid_ensemble");
    let d = &err["error"]["details"]["diagnostics"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(18)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validates_yaml_with_lines_and_columns() {
    let server = serve(&[], &[]);
    let r = server
        .http
        .post(server.url("/api/validate"))
        .body("name: v\nagents:\n  - name: a\n  - name: b\n    depends_on: [c]\n")
        .send()
        .await
        .unwrap();
    let (status, body) = super::status_json(r).await;
    assert_eq!(status, 200);
    assert_eq!(body["valid"], false);
    let d = &body["diagnostics"][0];
    assert_eq!(d["message"], "agent `b` depends on unknown agent `c`");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(5), Some(18))
    );
    assert!(
        body["rendered"]
            .as_str()
            .unwrap()
            .contains("5 │     depends_on: [c]"),
        "{body}"
    );

    let r = server
        .http
        .post(server.url("/api/validate"))
        .body(PAIR)
        .send()
        .await
        .unwrap();
    let (_, body) = super::status_json(r).await;
    assert_eq!(body["valid"], true);
    assert_eq!(body["agents"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_loads_the_ensembles_an_agent_runs() {
    let server = serve(&[(".orc/ensembles/pair.yaml", PAIR)], &[]);
    let post = |yaml: &'static str| {
        let request = server.http.post(server.url("/api/validate")).body(yaml);
        async move { super::status_json(request.send().await.unwrap()).await }
    };
    let (status, body) = post("name: outer\nagents:\n  - name: inner\n    ensemble: pair\n").await;
    assert_eq!(status, 200);
    assert_eq!(body["valid"], true, "{body}");

    let (_, body) = post("name: outer\nagents:\n  - name: inner\n    ensemble: nowhere\n").await;
    assert_eq!(body["valid"], false, "{body}");
    let d = &body["diagnostics"][0];
    assert!(d["message"].as_str().unwrap().contains("nowhere"), "{body}");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(4), Some(15)),
        "{body}"
    );

    // Names only, never paths: a request cannot probe the server's files.
    let unknown = d["message"]
        .as_str()
        .unwrap()
        .replace("nowhere", "/etc/passwd");
    let (_, body) =
        post("name: outer\nagents:\n  - name: inner\n    ensemble: /etc/passwd\n").await;
    assert_eq!(body["valid"], false, "{body}");
    assert_eq!(body["diagnostics"][0]["message"], unknown, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_start_list_show_and_filter() {
    let server = serve(&[(".orc/ensembles/pair.yaml", PAIR)], &[]);
    let r = server
        .http
        .post(server.url("/api/runs"))
        .json(&json!({"ensemble": "pair", "input": "tea", "options": {"seed": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (_, started) = super::status_json(r).await;
    let id = started["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/runs/{id}"));
    let doc = server.wait_run(&id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["input"], "tea");
    assert_eq!(doc["agents"][1]["name"], "editor");
    assert_eq!(doc["agents"][1]["status"], "succeeded");
    assert!(
        doc["agents"][1]["prompt"]
            .as_str()
            .unwrap()
            .contains("writer"),
        "{doc}"
    );
    assert_eq!(doc["agents"][1]["system_prompt"], "Tighten the sentence.");
    assert_eq!(doc["graph"]["phases"], json!([["writer"], ["editor"]]));
    assert_eq!(doc["calls"].as_array().unwrap().len(), 2);
    assert_eq!(doc["options"]["seed"], 3);

    let second = server.start_run("pair", "coffee").await;
    server.wait_run(&second).await;
    let (status, list) = server.get("/api/runs?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    assert_eq!(list["runs"][0]["id"], second.as_str());
    assert_eq!(list["next_offset"], 1);
    let (_, page2) = server.get("/api/runs?limit=1&offset=1").await;
    assert_eq!(page2["runs"][0]["id"], id.as_str());
    let (_, none) = server.get("/api/runs?status=failed").await;
    assert_eq!(none["runs"], json!([]));
    let (status, err) = server.get("/api/runs?status=bogus").await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown status `bogus`")
    );
    // A unique prefix names a run, as on the command line.
    let (status, doc) = server
        .get(&format!("/api/runs/{}", &id[..id.len() - 1]))
        .await;
    assert_eq!((status, doc["run_id"].as_str()), (200, Some(id.as_str())));
    let (status, err) = server.get("/api/runs/run-nope").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let server = serve(
        &[
            (".orc/ensembles/pair.yaml", PAIR),
            (
                ".orc/ensembles/broken.yaml",
                "name: broken\nagents:\n  - name: a\n    model_profile: nope\n",
            ),
        ],
        &["--max-body", "2048"],
    );
    // Not JSON.
    let r = server
        .http
        .post(server.url("/api/runs"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    let (status, err) = super::status_json(r).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["code"], "bad_request");
    // An unknown field.
    let (status, err) = server
        .post(
            "/api/runs",
            json!({"ensemble": "pair", "input": "x", "colour": "red"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("colour"),
        "{err}"
    );
    // Unknown and invalid ensembles.
    let (status, err) = server
        .post("/api/runs", json!({"ensemble": "nope", "input": "x"}))
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = server
        .post("/api/runs", json!({"ensemble": "broken", "input": "x"}))
        .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["code"], "invalid_ensemble");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown model profile `nope`")
    );
    assert_eq!(err["error"]["details"]["diagnostics"][0]["line"], 4);
    // No input and no default task.
    let (status, err) = server.post("/api/runs", json!({"ensemble": "pair"})).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("missing_input"))
    );
    // Too large: 413, in the same shape as every other error.
    let big = "x".repeat(10_000);
    let (status, err) = server
        .post("/api/runs", json!({"ensemble": "pair", "input": big}))
        .await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "body_too_large");
    // Unknown routes and methods.
    let (status, err) = server.get("/api/nothing").await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let r = server
        .http
        .delete(server.url("/api/runs"))
        .send()
        .await
        .unwrap();
    let (status, err) = super::status_json(r).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_then_resume_a_run() {
    let server = serve(&[(".orc/ensembles/slow.yaml", SLOW)], &[]);
    let id = server.start_run("slow", "go").await;
    // Wait until the first agent is done, then cancel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, doc) = server.get(&format!("/api/runs/{id}")).await;
        if doc["agents"][0]["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{doc}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = server
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!((status, body["status"].as_str()), (202, Some("cancelling")));
    let doc = server.wait_run(&id).await;
    assert_eq!(doc["status"], "cancelled", "{doc}");
    assert_eq!(doc["agents"][0]["status"], "succeeded");
    assert_eq!(doc["agents"][3]["status"], "cancelled");
    // Cancelling a finished run is a conflict.
    let (status, err) = server
        .post(&format!("/api/runs/{id}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("not_running")),
        "{err}"
    );

    let (status, body) = server
        .post(&format!("/api/runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert!(body["restored_agents"].as_u64().unwrap() >= 1, "{body}");
    let doc = server.wait_run(&id).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    // The first agent was not run again: one call for each of the four agents in all.
    let calls = doc["calls"].as_array().unwrap();
    assert_eq!(
        calls.iter().filter(|c| c["agent"] == "one").count(),
        1,
        "{doc}"
    );
    // A succeeded run has nothing to resume.
    let (status, err) = server
        .post(&format!("/api/runs/{id}/resume"), json!({}))
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("succeeded"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_health_and_the_page() {
    let server = serve(
        &[(".orc/ensembles/pair.yaml", PAIR)],
        &["--token", "s3cret"],
    );
    let anonymous = super::client();
    for path in [
        "/api/ensembles",
        "/api/runs",
        "/metrics",
        "/v1/models",
        "/api/runs/x/events",
    ] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let (_, err) = super::status_json(r).await;
        assert!(
            err["error"]["message"].as_str().unwrap().contains("Bearer"),
            "{path}: {err}"
        );
    }
    let r = anonymous
        .get(server.url("/api/runs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    let (status, err) = super::status_json(r).await;
    assert_eq!(
        (status, err["error"]["message"].as_str()),
        (401, Some("the bearer token is wrong"))
    );
    // /v1 answers in OpenAI's shape.
    let r = anonymous
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let (_, err) = super::status_json(r).await;
    assert_eq!(err["error"]["code"], "invalid_api_key");
    assert_eq!(err["error"]["type"], "authentication_error");
    for path in [
        "/healthz",
        "/",
        "/runs/abc",
        "/assets/app.js",
        "/assets/app.css",
    ] {
        let r = anonymous.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let (status, _) = server.get("/api/ensembles").await;
    assert_eq!(status, 200);
}

#[test]
fn refuses_a_public_address_without_a_token() {
    let out = Test::new()
        .args(["serve", "--bind", "0.0.0.0:0"])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("refusing to listen on `0.0.0.0:0` without a token"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--token or ORC_TOKEN"),
        "{}",
        out.stderr
    );
    let out = Test::new()
        .args(["serve", "--bind", "nowhere:99999"])
        .run()
        .invalid();
    assert!(
        out.stderr.contains("cannot listen on `nowhere:99999`"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_with_a_token_is_served() {
    let test = Test::new().env("ORC_TOKEN", "t0ken");
    let mut server = Server::start(test, &["--bind", "0.0.0.0:0"]);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    server.base = format!("http://127.0.0.1:{port}");
    server.token = Some("t0ken".into());
    let (status, _) = server.get("/api/runs").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_agents_and_calls() {
    let server = serve(&[(".orc/ensembles/pair.yaml", PAIR)], &[]);
    let id = server.start_run("pair", "x").await;
    server.wait_run(&id).await;
    let r = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    for line in [
        "orc_runs_started_total 1",
        "orc_runs_finished_total{status=\"succeeded\"} 1",
        "orc_agents_finished_total{status=\"succeeded\"} 2",
        "orc_provider_calls_total{provider=\"mock\",profile=\"mock-fast\",status=\"ok\",error_kind=\"\"} 2",
        "orc_provider_calls_in_flight 0",
        "orc_runs_running 0",
        "orc_provider_call_duration_seconds_count{provider=\"mock\",profile=\"mock-fast\"} 2",
        "# TYPE orc_sse_clients gauge",
        "# TYPE orc_cache_hits counter",
    ] {
        assert!(text.contains(line), "no `{line}` in\n{text}");
    }
    assert!(
        text.contains("orc_input_tokens_total{profile=\"mock-fast\"}"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_per_profile_per_day() {
    let server = serve(&[(".orc/ensembles/pair.yaml", PAIR)], &[]);
    let id = server.start_run("pair", "x").await;
    server.wait_run(&id).await;
    let (status, body) = server.get("/api/cost?days=7").await;
    assert_eq!(status, 200);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["profile"], "mock-fast");
    assert_eq!(rows[0]["calls"], 2);
}
