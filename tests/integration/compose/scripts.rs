//! Script agents: what they get on stdin and in the environment, JSON answers read by
//! dependents, and the ways they fail (non-zero exit, `success: false`, an `error`, a
//! timeout that kills the whole process group).

use std::time::{Duration, Instant};

use pretty_assertions::assert_eq;
use serde_json::json;

use super::{error_of, output_json, run_json};
use crate::support::{ENSEMBLE, Test, agent, wait_with_limit};

/// Prints what the script received: its stdin (parsed) and the llm-orc variables.
const ECHO_PY: &str = r#"
import json, os, sys
print(json.dumps({
    "stdin": json.load(sys.stdin),
    "env": {k: os.environ.get(k) for k in ["AGENT_PARAMETERS", "INPUT_TEXT", "INPUT_DATA"]},
}))
"#;

#[test]
fn stdin_carries_input_parameters_and_dependency_outputs() {
    let yaml = r#"
name: stdin
agents:
  - name: facts
    type: script
    run: [python3, -c, "import json; print(json.dumps({'x': 42, 'tags': ['a', 'b']}))"]
  - name: words
    model_profile: mock-fast
  - name: echo
    type: script
    depends_on: [facts, words]
    parameters: {mode: strict, limit: 3, nested: {deep: true}}
    run: [python3, echo.py]
"#;
    let out = Test::new()
        .ensemble(yaml)
        .file("echo.py", ECHO_PY)
        .args(["invoke", ENSEMBLE, "the run input", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    let echo = output_json(agent(&doc, "echo"));
    let stdin = &echo["stdin"];
    assert_eq!(stdin["agent_name"], "echo");
    assert_eq!(stdin["input"], "the run input");
    assert_eq!(stdin["input_data"], "the run input");
    let parameters = json!({"mode": "strict", "limit": 3, "nested": {"deep": true}});
    assert_eq!(stdin["parameters"], parameters);

    let facts = &stdin["dependencies"]["facts"];
    assert_eq!(facts["status"], "success");
    assert_eq!(facts["output"], json!({"x": 42, "tags": ["a", "b"]}));
    let response: serde_json::Value =
        serde_json::from_str(facts["response"].as_str().expect("response is text")).unwrap();
    assert_eq!(response, json!({"x": 42, "tags": ["a", "b"]}));

    // A text answer is passed as text.
    let words = &stdin["dependencies"]["words"];
    let words_output = agent(&doc, "words")["output"].as_str().unwrap();
    assert_eq!(words["response"], words_output);
    assert_eq!(words["output"], words_output);
    assert_eq!(words["status"], "success");

    // The environment llm-orc scripts read.
    let env = &echo["env"];
    let env_parameters: serde_json::Value =
        serde_json::from_str(env["AGENT_PARAMETERS"].as_str().unwrap()).unwrap();
    assert_eq!(env_parameters, parameters);
    assert_eq!(env["INPUT_TEXT"], "the run input");
    let input_data: serde_json::Value =
        serde_json::from_str(env["INPUT_DATA"].as_str().unwrap()).unwrap();
    assert_eq!(&input_data, stdin);
}

#[test]
fn llm_orc_script_path_is_relative_to_the_ensemble_file() {
    // Run from another directory: `script:` resolves against the ensemble's folder, and a
    // `.py` file runs through python3.
    let yaml = "\
name: relative
agents:
  - name: echo
    script: scripts/echo.py
    parameters:
      default_route: question
";
    let out = Test::new()
        .file("project/ensembles/relative.yaml", yaml)
        .file("project/ensembles/scripts/echo.py", ECHO_PY)
        .current_dir("elsewhere")
        .args([
            "invoke",
            "../project/ensembles/relative.yaml",
            "hello",
            "--output",
            "json",
        ])
        .run()
        .success();
    let doc = out.json();
    let echo = agent(&doc, "echo");
    assert_eq!(echo["status"], "succeeded");
    let echo = output_json(echo);
    assert_eq!(
        echo["stdin"]["parameters"],
        json!({"default_route": "question"})
    );
    assert_eq!(echo["stdin"]["input_data"], "hello");
}

#[test]
fn json_output_is_read_by_a_dependent_template() {
    let yaml = r#"
name: consumed
agents:
  - name: facts
    type: script
    run: [python3, -c, "import json; print(json.dumps({'x': 'forty-two', 'nested': {'y': 7}}))"]
  - name: writer
    depends_on: [facts]
    model_profile: mock-fast
    prompt: "x={{ deps[0].json.x }} y={{ deps[0].json.nested.y }}"
  - name: later
    depends_on: [writer]
    model_profile: mock-fast
    prompt: "ancestor={{ agents.facts.json.x }}"
"#;
    let (doc, _) = run_json(yaml, "go", 0);
    let facts = agent(&doc, "facts");
    assert_eq!(facts["status"], "succeeded");
    assert_eq!(
        output_json(facts),
        json!({"x": "forty-two", "nested": {"y": 7}})
    );
    let writer = agent(&doc, "writer");
    assert_eq!(writer["status"], "succeeded");
    let text = writer["output"].as_str().unwrap();
    assert!(text.contains("x=forty-two y=7"), "{text}");
    // An ancestor's parsed output, by name.
    let later = agent(&doc, "later")["output"].as_str().unwrap();
    assert!(later.contains("ancestor=forty-two"), "{later}");
}

#[test]
fn a_non_zero_exit_fails_with_stderr_in_the_error() {
    let yaml = r#"
name: exits
agents:
  - name: broken
    type: script
    run: [sh, -c, "echo partial output; echo 'database unreachable: connection refused' >&2; exit 3"]
  - name: after
    model_profile: mock-fast
    depends_on: [broken]
"#;
    let (doc, stderr) = run_json(yaml, "go", 1);
    assert_eq!(doc["status"], "failed");
    let broken = agent(&doc, "broken");
    assert_eq!(broken["status"], "failed");
    assert!(broken["output"].is_null(), "{broken:#}");
    let error = error_of(broken);
    assert!(error.contains("code 3"), "{error}");
    assert!(
        error.contains("database unreachable: connection refused"),
        "{error}"
    );
    assert_eq!(agent(&doc, "after")["status"], "skipped");
    assert!(stderr.contains("database unreachable"), "{stderr}");
}

#[test]
fn success_false_or_an_error_field_fails_the_agent() {
    let yaml = r#"
name: reports
agents:
  - name: reported
    type: script
    run: [python3, -c, "import json; print(json.dumps({'success': False, 'error': 'no items matched the filter'}))"]
  - name: bare-false
    type: script
    run: [python3, -c, "import json; print(json.dumps({'success': False}))"]
  - name: error-only
    type: script
    run: [python3, -c, "import json, sys; print('careful', file=sys.stderr); print(json.dumps({'data': [], 'error': 'quota exhausted'}))"]
  - name: fine
    type: script
    run: [python3, -c, "import json; print(json.dumps({'success': True, 'error': None, 'data': [1]}))"]
"#;
    let (doc, _) = run_json(yaml, "go", 1);
    let reported = agent(&doc, "reported");
    assert_eq!(reported["status"], "failed");
    assert!(
        error_of(reported).contains("no items matched the filter"),
        "{reported:#}"
    );
    let bare = agent(&doc, "bare-false");
    assert_eq!(bare["status"], "failed");
    assert!(error_of(bare).contains("reported failure"), "{bare:#}");
    let error_only = agent(&doc, "error-only");
    assert_eq!(error_only["status"], "failed");
    let error = error_of(error_only);
    assert!(error.contains("quota exhausted"), "{error}");
    assert!(
        error.contains("careful"),
        "stderr is in the message: {error}"
    );
    let fine = agent(&doc, "fine");
    assert_eq!(fine["status"], "succeeded");
    assert_eq!(
        output_json(fine),
        json!({"success": true, "error": null, "data": [1]})
    );
}

#[test]
fn a_missing_program_fails_the_agent() {
    let yaml = "\
name: missing
agents:
  - name: ghost
    type: script
    run: [orc-test-no-such-program-anywhere, --flag]
";
    let (doc, _) = run_json(yaml, "go", 1);
    let ghost = agent(&doc, "ghost");
    assert_eq!(ghost["status"], "failed");
    assert!(
        error_of(ghost).contains("orc-test-no-such-program-anywhere"),
        "{ghost:#}"
    );
}

#[test]
fn no_shell_is_involved() {
    // Arguments reach the program as written: no expansion, no word splitting.
    let yaml = r#"
name: literal
agents:
  - name: args
    type: script
    run: [python3, -c, "import json, sys; print(json.dumps(sys.argv[1:]))", "$HOME", "two words", "*", "a;b"]
"#;
    let (doc, _) = run_json(yaml, "go", 0);
    assert_eq!(
        output_json(agent(&doc, "args")),
        json!(["$HOME", "two words", "*", "a;b"])
    );
}

#[test]
fn a_large_dependency_output_reaches_the_script() {
    // Ran: a 200 000-character dependency output. Got: `count` failed with "cannot start
    // `python3`: Argument list too long (os error 7)". Expected: the script runs and reads
    // the output from stdin.
    let yaml = r#"
name: large
agents:
  - name: big
    type: script
    run: [python3, -c, "print('x' * 200000)"]
  - name: count
    type: script
    depends_on: [big]
    run: [python3, -c, "import json, sys; d = json.load(sys.stdin); print(len(d['dependencies']['big']['response']))"]
"#;
    let (doc, _) = run_json(yaml, "go", 0);
    let count = agent(&doc, "count");
    assert_eq!(count["status"], "succeeded", "{count:#}");
    assert_eq!(count["output"], "200000");
}

#[test]
fn a_script_may_write_before_it_reads_its_stdin() {
    // Ran: a 30 000-character input (about 90 KB of stdin JSON) to a script that prints
    // 200 000 characters and then reads stdin. Got: "`python3` timed out after 10s and was
    // killed" (orc blocks writing stdin, the script blocks writing stdout). Expected: it
    // succeeds; stdin should be written while stdout and stderr are read.
    let yaml = r#"
name: chatty
agents:
  - name: chatty
    type: script
    timeout_seconds: 10
    run: [python3, -c, "import sys; sys.stdout.write('y' * 200000); sys.stdout.flush(); print(len(sys.stdin.read()), file=sys.stderr)"]
"#;
    let out = Test::new()
        .ensemble(yaml)
        .file("input.txt", "word ".repeat(6000))
        .args([
            "invoke",
            ENSEMBLE,
            "--input-file",
            "input.txt",
            "--output",
            "json",
        ])
        .run()
        .success();
    let doc = out.json();
    let chatty = agent(&doc, "chatty");
    assert_eq!(chatty["status"], "succeeded", "{:#}", chatty["error"]);
    assert_eq!(chatty["output"].as_str().unwrap().len(), 200_000);
}

/// Starts `sleep 30` as a child, writes `PID CHILD_PID` to `pids.txt`, then waits.
const SLOW_PY: &str = r#"
import os, subprocess, sys
child = subprocess.Popen(["sleep", "30"])
with open("pids.txt.tmp", "w") as f:
    f.write(f"{os.getpid()} {child.pid}\n")
os.rename("pids.txt.tmp", "pids.txt")
print("sleeping now", file=sys.stderr, flush=True)
child.wait()
"#;

#[test]
fn a_timeout_kills_the_script_and_what_it_started() {
    let yaml = "\
name: slow
agents:
  - name: slow
    type: script
    run: [python3, slow.py]
    timeout_seconds: 1
  - name: quick
    type: script
    run: [sh, -c, 'echo done']
";
    let out = Test::new()
        .ensemble(yaml)
        .file("slow.py", SLOW_PY)
        .args(["invoke", ENSEMBLE, "go", "--output", "json"])
        .run()
        .failure();
    let doc = out.json();
    let slow = agent(&doc, "slow");
    assert_eq!(slow["status"], "failed");
    assert!(error_of(slow).contains("timed out"), "{slow:#}");
    assert!(slow["output"].is_null(), "{slow:#}");
    assert_eq!(agent(&doc, "quick")["status"], "succeeded");
    assert_eq!(agent(&doc, "quick")["output"], "done");

    let pids = std::fs::read_to_string(out.test.path().join("pids.txt"))
        .expect("the script wrote its pids before the timeout");
    let pids: Vec<u32> = pids
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert_gone(pid);
    }
}

#[test]
fn ctrl_c_kills_the_script_and_what_it_started() {
    let yaml = "\
name: interrupted
agents:
  - name: slow
    type: script
    run: [python3, slow.py]
    timeout_seconds: 60
";
    let test = Test::new()
        .ensemble(yaml)
        .file("slow.py", SLOW_PY)
        .args(["invoke", ENSEMBLE, "go", "--output", "json"]);
    let pids_file = test.path().join("pids.txt");
    let child = test.command().spawn().expect("spawn orc");
    // Interrupt once the script and its child are running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pids_file.exists() {
        assert!(Instant::now() < deadline, "the script never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -INT failed");
    let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(30));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(130), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON document");
    assert_eq!(doc["status"], "interrupted");
    assert_eq!(agent(&doc, "slow")["status"], "cancelled");

    let pids = std::fs::read_to_string(&pids_file).expect("pids.txt");
    for pid in pids.split_whitespace() {
        assert_gone(pid.parse().expect("a pid"));
    }
}

/// Waits (a few seconds at most) for `pid` to be gone. A zombie counts as gone: it no
/// longer runs, and in a container whose init does not reap orphans it stays in `/proc`.
#[track_caller]
fn assert_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = process_state(pid);
        match state {
            None | Some('Z' | 'X') => return,
            Some(_) if Instant::now() > deadline => {
                panic!("process {pid} still runs (state {state:?}) after orc exited")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The state letter of `/proc/PID/stat`, or `None` when there is no such process.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `PID (COMM) STATE ...`; COMM may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}
