//! `/v1` as any OpenAI client sees it: the official OpenAI Python SDK, installed with pip
//! into a venv in a temp dir, lists the ensembles as models, calls one plainly and
//! streamed, and gets OpenAI-shaped errors. Also the same over raw HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::{PAIR, Server};
use crate::support::Test;

const FAILING: &str = "\
name: failing
model_profiles:
  dead: { provider: mock, model: mock-1, fail_rate: 1.0, fail_with: server_error }
agents:
  - name: only
    model_profile: dead
    retries: 0
";

const CLIENT: &str = r#"
import json, sys
import openai
from openai import OpenAI

base, token = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base + "/v1", api_key=token)
out = {"version": openai.__version__}
out["models"] = sorted(m.id for m in client.models.list().data)
out["retrieved"] = client.models.retrieve("pair").id
r = client.chat.completions.create(
    model="pair",
    messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "green tea"}],
)
out["plain"] = {
    "content": r.choices[0].message.content,
    "role": r.choices[0].message.role,
    "finish": r.choices[0].finish_reason,
    "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
    "run": r.system_fingerprint,
    "object": r.object,
}
pieces, usage, finish = [], None, None
stream = client.chat.completions.create(
    model="pair",
    messages=[{"role": "user", "content": "green tea"}],
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage.total_tokens
    for c in chunk.choices:
        if c.delta.content:
            pieces.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
out["stream"] = {"text": "".join(pieces), "chunks": len(pieces), "usage": usage, "finish": finish}
try:
    client.chat.completions.create(model="piar", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "code": e.code, "message": e.message}
try:
    client.chat.completions.create(model="failing", messages=[{"role": "user", "content": "x"}])
except openai.APIStatusError as e:
    out["failed"] = {"status": e.status_code, "code": e.code}
try:
    OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0).models.list()
except openai.AuthenticationError as e:
    out["auth"] = {"status": e.status_code, "code": e.code}
print(json.dumps(out))
"#;

/// A venv with the `openai` package, or why there cannot be one here. In CI this must
/// work: CI has python3 and reaches PyPI.
fn openai_venv(dir: &Path) -> Result<PathBuf, String> {
    let venv = dir.join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("python3 is missing ({e})"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 cannot make a venv: {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let python = venv.join("bin/python");
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openai",
        ])
        .output()
        .map_err(|e| format!("pip cannot run ({e})"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip cannot install `openai` (is PyPI reachable?): {}",
            String::from_utf8_lossy(&pip.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_calls_an_ensemble() {
    let test = Test::new()
        .file(".orc/ensembles/pair.yaml", PAIR)
        .file(".orc/ensembles/failing.yaml", FAILING);
    let python = match openai_venv(test.path()) {
        Ok(p) => p,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: the OpenAI SDK test needs python3 and PyPI: {why}");
            return;
        }
        Err(why) => panic!("CI must run the OpenAI SDK test: {why}"),
    };
    let server = Server::start(test, &["--token", "sdk-token"]);
    let script = server.test.path().join("client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args([&base, "sdk-token"])
            .output()
            .expect("run the SDK client")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["models"], json!(["failing", "pair"]));
    assert_eq!(got["retrieved"], "pair");
    let plain = &got["plain"];
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["role"], "assistant");
    assert_eq!(plain["finish"], "stop");
    // The answer is the final agent's output, with the run's usage.
    let run = plain["run"].as_str().unwrap();
    let doc = server.wait_run(run).await;
    assert_eq!(
        doc["input"], "green tea",
        "the last user message is the input"
    );
    assert_eq!(plain["content"], doc["agents"][1]["output"]);
    let usage = plain["usage"].as_array().unwrap();
    assert_eq!(usage[0], doc["totals"]["usage"]["input_tokens"]);
    assert_eq!(usage[1], doc["totals"]["usage"]["output_tokens"]);
    // Streamed: the same answer (same seed), in several chunks, with usage at the end.
    let stream = &got["stream"];
    assert_eq!(stream["text"], plain["content"], "{got}");
    assert!(stream["chunks"].as_u64().unwrap() > 1, "{got}");
    assert_eq!(stream["finish"], "stop");
    assert_eq!(stream["usage"], usage[2]);
    assert_eq!(got["not_found"]["status"], 404);
    assert_eq!(got["not_found"]["code"], "model_not_found");
    assert!(
        got["not_found"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `pair`?")
    );
    assert_eq!(got["failed"]["status"], 502);
    assert_eq!(got["failed"]["code"], "run_failed");
    assert_eq!(got["auth"]["status"], 401);
    // A failed run is not retried by the SDK.
    let (_, runs) = server.get("/api/runs?ensemble=failing").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_over_raw_http() {
    let server = Server::start(Test::new().file(".orc/ensembles/pair.yaml", PAIR), &[]);
    let (status, models) = server.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "pair");
    assert_eq!(models["data"][0]["owned_by"], "orc");

    let (status, r) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "pair", "messages": [{"role": "user", "content": [{"type": "text", "text": "tea"}]}]}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-run-"));
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let resp = server
        .http
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"model": "pair", "stream": true, "messages": [{"role": "user", "content": "tea"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.text().await.unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    body.truncate(body.rfind("data: [DONE]").unwrap());
    let chunks: Vec<Value> = body
        .split("\n\n")
        .filter_map(|b| b.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty());

    // Errors in OpenAI's shape.
    let (status, err) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["type"], "not_found_error");
    assert_eq!(err["error"]["param"], "model");
    let (status, err) = server
        .post(
            "/v1/chat/completions",
            json!({"model": "pair", "messages": [{"role": "system", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(err["error"]["param"], "messages");
    let (status, err) = server.get("/v1/nothing").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["type"], "not_found_error");
}
