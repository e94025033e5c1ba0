//! `orc mcp` (issue 11) driven by a real MCP client: the official Python SDK (`mcp` on
//! PyPI), installed once into a venv under the target dir. `client.py` lists the tools,
//! makes the calls a test asks for and reports what came back as JSON.
//!
//! The tests need `python3` and PyPI (to install `mcp`); without either they print why and
//! pass, so an offline machine can run the rest of the suite. CI has both.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use crate::support::{ORC, Test, wait_with_limit};

const CLIENT: &str = include_str!("client.py");

/// The venv's Python with `mcp` installed, made once (under a lock: tests run in parallel
/// processes). `None`, with the reason printed, when python3 is missing or pip cannot
/// reach PyPI; any other failure fails the test.
fn python_with_mcp() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mcp-client");
    std::fs::create_dir_all(&dir).expect("create the client's folder");
    let lock = std::fs::File::create(dir.join("lock")).expect("create the lock file");
    lock.lock().expect("lock the client's folder");
    let python = dir.join("venv").join("bin").join("python");
    let has_mcp = |python: &Path| {
        Command::new(python)
            .args(["-c", "import mcp.client.stdio"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_mcp(&python) {
        return Some(python);
    }
    let venv = match Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(dir.join("venv"))
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: python3 is not installed, so the MCP client cannot run");
            return None;
        }
        Err(e) => panic!("cannot run python3: {e}"),
        Ok(out) => out,
    };
    assert!(
        venv.status.success(),
        "python3 -m venv failed:\n{}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "mcp",
        ])
        .output()
        .expect("run pip");
    if !pip.status.success() {
        let stderr = String::from_utf8_lossy(&pip.stderr);
        let offline = [
            "Failed to establish a new connection",
            "Temporary failure in name resolution",
            "Name or service not known",
            "Network is unreachable",
            "Max retries exceeded",
            "No matching distribution found",
            "Could not find a version that satisfies",
        ]
        .iter()
        .any(|sign| stderr.contains(sign));
        if offline {
            eprintln!(
                "skipped: pip cannot reach PyPI to install the MCP client (`mcp`):\n{stderr}"
            );
            return None;
        }
        panic!("pip install mcp failed:\n{stderr}");
    }
    assert!(has_mcp(&python), "`mcp` does not import after pip install");
    Some(python)
}

/// What the client saw, and the client's stderr (which carries the server's).
struct Session {
    report: Value,
    stderr: String,
}

impl Session {
    fn tool(&self, name: &str) -> &Value {
        self.report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("no tool `{name}` in {:#}", self.report["tools"]))
    }

    fn tool_names(&self) -> Vec<&str> {
        self.report["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    /// The `i`th call's result.
    fn result(&self, i: usize) -> &Value {
        let call = &self.report["calls"][i];
        assert!(
            call.get("error").is_none(),
            "call {i} failed: {call:#}\n{}",
            self.stderr
        );
        &call["result"]
    }

    fn text(&self, i: usize) -> &str {
        self.result(i)["content"][0]["text"].as_str().unwrap()
    }
}

/// Runs the client in `test`'s folder against `orc mcp ARGS`, making `calls`. `None` when the
/// client cannot be installed (the reason is printed).
fn session(test: &Test, calls: Value, args: &[&str]) -> Option<Session> {
    let python = python_with_mcp()?;
    let dir = test.path();
    std::fs::write(dir.join("client.py"), CLIENT).expect("write the client");
    let child = Command::new(python)
        .arg(dir.join("client.py"))
        .arg(ORC)
        .arg(calls.to_string())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the MCP client");
    let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(120));
    assert_eq!(code, Some(0), "the client failed:\n{stdout}\n{stderr}");
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the client's report is not JSON ({e}):\n{stdout}\n{stderr}"));
    Some(Session { report, stderr })
}

const REVIEW: &str = "\
name: review
description: Two reviewers and a synthesizer.
agents:
  - name: security
    model_profile: mock-fast
  - name: style
    model_profile: mock-fast
  - name: synthesis
    model_profile: mock-fast
    depends_on: [security, style]
";

const DIGEST: &str = "\
name: digest
default_task: summarize the week
agents:
  - name: summary
    model_profile: mock-fast
";

#[test]
fn every_ensemble_is_a_tool_and_a_call_runs_it_with_progress() {
    let test = Test::new()
        .file(".orc/ensembles/review.yaml", REVIEW)
        .file(".orc/ensembles/digest.yaml", DIGEST);
    let calls = json!([
        {"tool": "review", "arguments": {"input": "fn add(a, b) { a - b }", "options": {"seed": 3}}, "progress": true},
        {"tool": "orc_runs", "arguments": {"ensemble": "review"}},
        {"tool": "orc_run", "arguments": {"run": "{{run_id}}"}},
        {"tool": "digest", "arguments": {}},
    ]);
    let Some(s) = session(&test, calls, &[]) else {
        return;
    };
    assert_eq!(s.report["server"]["name"], "orc");
    let mut names = s.tool_names();
    names.sort_unstable();
    assert_eq!(names, ["digest", "orc_run", "orc_runs", "review"]);
    let review = s.tool("review");
    assert!(
        review["description"]
            .as_str()
            .unwrap()
            .starts_with("Two reviewers and a synthesizer."),
        "{review:#}"
    );
    let schema = &review["input_schema"];
    assert_eq!(schema["required"], json!(["input"]));
    assert_eq!(schema["properties"]["input"]["type"], "string");
    assert_eq!(
        schema["properties"]["options"]["properties"]["seed"]["type"],
        "integer"
    );
    assert_eq!(
        schema["properties"]["options"]["properties"]["timeout"]["type"],
        "number"
    );
    // With a default task, `input` may be left out.
    assert!(s.tool("digest")["input_schema"].get("required").is_none());

    // The call: the final output as text, the run as structured content.
    let result = s.result(0);
    assert_eq!(result["is_error"], false);
    let run = &result["structured_content"];
    assert_eq!(run["ensemble"], "review");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["input"], "fn add(a, b) { a - b }");
    assert_eq!(run["agents"].as_array().unwrap().len(), 3);
    let synthesis = run["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "synthesis")
        .unwrap();
    assert_eq!(s.text(0), synthesis["output"].as_str().unwrap());
    assert!(
        s.text(0).contains("Building on security, style"),
        "{}",
        s.text(0)
    );
    assert!(run["totals"]["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Progress arrived while it ran: a start and an end per agent.
    let progress = s.report["calls"][0]["progress"].as_array().unwrap();
    assert_eq!(progress.len(), 6, "{progress:#?}");
    let values: Vec<f64> = progress
        .iter()
        .map(|p| p["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert!(progress.iter().all(|p| p["total"] == 6.0));
    let last = progress.last().unwrap()["message"].as_str().unwrap();
    assert_eq!(last, "`synthesis` succeeded (3 of 3 done)");

    // The default task was used.
    assert_eq!(
        s.result(3)["structured_content"]["input"],
        "summarize the week"
    );

    // The runs tools read the store the run was recorded in.
    let run_id = run["run_id"].as_str().unwrap();
    let runs = s.result(1)["structured_content"]["runs"]
        .as_array()
        .unwrap();
    assert_eq!(runs.len(), 1, "only runs of `review`: {runs:#?}");
    assert_eq!(runs[0]["id"], run_id);
    assert_eq!(runs[0]["status"], "succeeded");
    assert!(s.text(1).contains(run_id), "{}", s.text(1));
    let fetched = &s.result(2)["structured_content"];
    assert_eq!(fetched["run_id"], run_id);
    assert_eq!(fetched["status"], "succeeded");
    assert_eq!(fetched["agents"][2]["output"], synthesis["output"]);
    assert!(s.text(2).contains("synthesis: succeeded"), "{}", s.text(2));
    // The server says what it serves on stderr, never on stdout (the protocol's).
    assert!(
        s.stderr
            .contains("orc mcp: serving 2 ensembles over stdio: digest, review"),
        "{}",
        s.stderr
    );
}

#[test]
fn failures_come_back_as_tool_errors_with_the_run() {
    let failing = "\
name: failing
agents:
  - name: ok
    model_profile: mock-fast
  - name: broken
    run: [sh, -c, 'echo disk on fire >&2; exit 3']
";
    let test = Test::new().file("served/failing.yaml", failing);
    let calls = json!([
        {"tool": "failing", "arguments": {"input": "go"}},
        {"tool": "failing", "arguments": {"input": "go", "options": {"stream": true}}},
        {"tool": "failing", "arguments": {}},
        {"tool": "nonesuch", "arguments": {"input": "go"}},
        {"tool": "orc_run", "arguments": {"run": "run-nope"}},
    ]);
    let Some(s) = session(&test, calls, &["served"]) else {
        return;
    };
    let failed = s.result(0);
    assert_eq!(failed["is_error"], true);
    assert_eq!(failed["structured_content"]["status"], "failed");
    let text = s.text(0);
    assert!(text.contains("agent `broken` failed"), "{text}");
    assert!(text.contains("disk on fire"), "{text}");
    assert_eq!(s.result(1)["is_error"], true);
    assert!(
        s.text(1).contains("unknown option `stream`"),
        "{}",
        s.text(1)
    );
    assert!(s.text(2).contains("`input` is required"), "{}", s.text(2));
    let unknown = &s.report["calls"][3];
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("no tool `nonesuch`"),
        "{unknown:#}"
    );
    assert_eq!(s.result(4)["is_error"], true);
    assert!(s.text(4).contains("no run `run-nope`"), "{}", s.text(4));
}

#[test]
fn given_folders_are_served_and_invalid_files_left_out() {
    let test = Test::new()
        .file("served/review.yaml", REVIEW)
        .file(
            "served/broken.yaml",
            "name: broken\nagents:\n  - name: a\n    depends_on: [ghost]\n",
        )
        .file(
            "served/again.yaml",
            REVIEW.replace("Two reviewers", "Another two"),
        )
        .file(".orc/ensembles/digest.yaml", DIGEST);
    let Some(s) = session(&test, json!([]), &["served", "--no-store"]) else {
        return;
    };
    let mut names = s.tool_names();
    names.sort_unstable();
    assert_eq!(
        names,
        ["orc_run", "orc_runs", "review"],
        "only the given folder"
    );
    assert!(
        s.stderr
            .contains("not served: `served/broken.yaml`: served/broken.yaml:4:18: agent `a` depends on unknown agent `ghost`"),
        "{}",
        s.stderr
    );
    assert!(
        s.stderr.contains(
            "not served: `served/review.yaml`: an ensemble named `review` comes first on the search path"
        ),
        "{}",
        s.stderr
    );
}

#[test]
fn a_loop_runs_through_mcp_and_its_tokens_roll_up() {
    let test = Test::new()
        .file(
            "served/body.yaml",
            "name: body\nmodel_profiles:\n  priced: {provider: mock, latency_ms: 0, price: {input_per_mtok: 1.0, output_per_mtok: 2.0}}\nagents:\n  - name: draft\n    model_profile: priced\n",
        )
        .file(
            "served/redraft.yaml",
            "name: redraft\nagents:\n  - name: rounds\n    loop: {body: body.yaml, until: \"${never}\", max_iterations: 2}\n",
        );
    let calls = json!([{"tool": "redraft", "arguments": {"input": "an essay"}, "progress": true}]);
    let Some(s) = session(&test, calls, &["served/redraft.yaml"]) else {
        return;
    };
    let run = &s.result(0)["structured_content"];
    assert_eq!(run["status"], "succeeded");
    let rounds = &run["agents"][0];
    assert_eq!(rounds["metrics"]["iterations"], 2);
    assert!(rounds["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(run["totals"]["cost_usd"], rounds["cost_usd"]);
    let loop_output: Value = serde_json::from_str(s.text(0)).unwrap();
    assert_eq!(loop_output["terminated"], "exhausted");
    let progress = s.report["calls"][0]["progress"].as_array().unwrap();
    assert_eq!(
        progress.len(),
        2,
        "the loop agent starts and finishes: {progress:#?}"
    );
}

#[test]
fn a_cancelled_call_cancels_its_run() {
    let slow = "\
name: slow
model_profiles:
  glacial: {provider: mock, latency_ms: 30000}
agents:
  - name: quick
    model_profile: mock-fast
  - name: sluggish
    model_profile: glacial
    depends_on: [quick]
";
    let test = Test::new().file(".orc/ensembles/slow.yaml", slow);
    let calls = json!([
        {"tool": "slow", "arguments": {"input": "go"}, "timeout": 0.8},
        {"tool": "orc_runs", "arguments": {"ensemble": "slow"}, "sleep": 3},
    ]);
    let Some(s) = session(&test, calls, &[]) else {
        return;
    };
    let gave_up = &s.report["calls"][0];
    assert!(gave_up.get("error").is_some(), "{gave_up:#}");
    let runs = s.result(1)["structured_content"]["runs"]
        .as_array()
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "cancelled", "{runs:#?}");
}
