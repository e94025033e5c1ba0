//! An llm-orc project run as it is (issue 11): the fixture `tests/fixtures/llm-orc-project`
//! (a `.llm-orc/` directory written for these tests) is copied into the temp dir, which is
//! then the project root. Ensembles are found in subfolders by name, profiles come from
//! llm-orc's files with its provider names, scripts are found and run as llm-orc finds and
//! runs them; and the conventional base-URL variables are honoured, checked against a
//! local fake server.

use std::path::{Path, PathBuf};

use pretty_assertions::assert_eq;
use serde_json::{Value, json};

use super::output_json;
use crate::providers::fake::{Fake, Reply};
use crate::support::{ENSEMBLE, Test, agent};

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm-orc-project")
}

/// Every file under `dir`, relative to `root`.
fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read fixture dir") {
        let path = entry.expect("fixture entry").path();
        if path.is_dir() {
            files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

/// A test whose temp dir is a copy of the fixture project, run from its root.
fn project() -> Test {
    let root = fixture_root();
    let mut all = Vec::new();
    files(&root, &root, &mut all);
    all.into_iter().fold(Test::new(), |test, rel| {
        let text = std::fs::read(root.join(&rel)).expect("read fixture file");
        test.file(rel, text)
    })
}

/// The fixture's primitives library, for `ORC_SCRIPT_PATH`.
fn lib(test: &Test) -> String {
    test.path().join("lib").display().to_string()
}

/// Diagnostics with their wrapping undone: margins and `│` go, and a line break becomes one
/// space (none after a `-` or `/`, where the renderer also breaks).
fn flat(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim().trim_start_matches('│').trim();
        if line.is_empty() {
            continue;
        }
        if !(out.is_empty() || out.ends_with('-') || out.ends_with('/')) {
            out.push(' ');
        }
        out.push_str(line);
    }
    out
}

/// An OpenAI Chat Completions answer.
fn chat(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    })
}

#[test]
fn list_shows_llm_orc_ensembles_from_subfolders_by_name() {
    let out = project().arg("list").run().success();
    let rows: Vec<(String, String)> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| {
            let mut cols = l.split_whitespace();
            (
                cols.next().unwrap().to_string(),
                cols.next().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        "summary",
        "broken/missing-script",
        "cloud/pro-max",
        "team/code-review",
    ]
    .iter()
    .map(|n| (n.to_string(), "llm-orc".to_string()))
    .collect();
    assert_eq!(rows, expected, "{}", out.stdout);
}

#[test]
fn an_ensemble_in_a_subfolder_runs_by_name_with_scripts_found_as_llm_orc_finds_them() {
    let fake = Fake::always(Reply::json(chat("looks fine")));
    for name in ["code-review", "team/code-review", "review", "team/review"] {
        let test = project();
        let lib = lib(&test);
        let root = test.path().canonicalize().unwrap();
        let out = test
            .env("ORC_SCRIPT_PATH", lib)
            .env("LLAMA_SERVER_URL", format!("{}/v1", fake.url()))
            .args(["invoke", name, "two words", "--output", "json"])
            .run()
            .success();
        let doc = out.json();
        assert_eq!(doc["ensemble"], "code-review", "`{name}`");
        // `.llm-orc/scripts/` (with and without the `scripts/` prefix).
        assert_eq!(output_json(agent(&doc, "counter")), json!({"words": 2}));
        // `primitives/text-ops/` is the library's `primitives/text_ops/`.
        assert_eq!(agent(&doc, "shout")["output"], "TWO WORDS!");
        // Scripts run in the project root: a relative path there opens.
        let place = output_json(agent(&doc, "where"));
        assert_eq!(
            PathBuf::from(place["cwd"].as_str().unwrap())
                .canonicalize()
                .unwrap(),
            root
        );
        assert_eq!(place["notes"], "notes kept at the project root");
        // The `llama-server` profile went to LLAMA_SERVER_URL with its own system prompt.
        let reviewer = agent(&doc, "reviewer");
        assert_eq!(reviewer["output"], "looks fine");
        assert_eq!(reviewer["provider"], "openai-compatible");
        // Ignored top-level keys are warnings at their lines.
        for (key, line) in [("topaz_skill", 3), ("serves", 4), ("seat_contract", 17)] {
            assert!(
                out.stderr
                    .contains(&format!("unknown top-level key `{key}` is ignored")),
                "{}",
                out.stderr
            );
            assert!(
                out.stderr.contains(&format!("review.yaml:{line}:1]")),
                "`{key}` located at line {line}:\n{}",
                out.stderr
            );
        }
    }
    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.body["model"], "qwen3-8b");
        assert_eq!(
            r.body["messages"][0],
            json!({"role": "system", "content": "You are a careful local reviewer."}),
            "the profile's system prompt, as llm-orc applies it"
        );
    }
}

#[test]
fn orc_project_files_win_over_llm_orc() {
    let out = project()
        .file(
            ".orc/ensembles/summary.yaml",
            "name: summary\nagents:\n  - name: mine\n    model_profile: local\n",
        )
        .file(
            ".orc/profiles/mine.yaml",
            "model_profiles:\n  local: {provider: mock, latency_ms: 0}\n",
        )
        .args(["invoke", "summary", "hi", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    assert_eq!(agent(&doc, "mine")["provider"], "mock");
}

#[test]
fn profiles_come_from_llm_orc_files_with_their_origin() {
    let test = project();
    let dot = test.path().join(".llm-orc").display().to_string();
    let out = test.arg("profiles").run().success();
    let row = |name: &str| -> Vec<String> {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` in\n{}", out.stdout))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let config = format!("{dot}/config.yaml");
    for (name, provider, model, origin) in [
        ("local", "openai-compatible", "qwen3-8b", config.clone()),
        ("claude", "anthropic", "claude-sonnet-4-5", config.clone()),
        ("gemini", "gemini", "gemini-2.5-flash", config.clone()),
        ("llama", "ollama", "llama3:8b", config.clone()),
        (
            "compatible",
            "openai-compatible",
            "served-model",
            config.clone(),
        ),
        (
            "fast",
            "openai-compatible",
            "qwen3-4b",
            format!("{dot}/profiles/fast.local.yaml"),
        ),
    ] {
        assert_eq!(
            row(name)[..4],
            [name, provider, model, &origin],
            "{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("never-read"), "{}", out.stdout);
    // The OAuth-only profile is listed apart, with where it is and why.
    let (_, unusable) = out
        .stdout
        .split_once("llm-orc profiles orc cannot run:")
        .expect("an unusable section");
    assert!(
        unusable.contains("pro-max") && unusable.contains(&format!("{config}:35:15")),
        "{unusable}"
    );
}

#[test]
fn an_oauth_only_provider_is_refused_where_it_is_defined_with_what_to_use() {
    let out = project()
        .args(["invoke", "cloud/pro-max", "hi"])
        .run()
        .invalid();
    for needle in [
        "model profile `pro-max` cannot be used: orc does not run its provider `anthropic-claude-pro-max`",
        "pro-max.yaml:5:20]",
        "profile `pro-max` uses provider `anthropic-claude-pro-max`, which orc cannot run",
        "OAuth",
        ".llm-orc/config.yaml:35:15]",
        "use `provider: anthropic-api` with a key in `ANTHROPIC_API_KEY`",
    ] {
        assert!(
            flat(&out.stderr).contains(needle),
            "lacks {needle:?}:\n{}",
            out.stderr
        );
    }
    // `orc validate` of the configuration says the same, and the mapped profile runs.
    let out = project()
        .args(["validate", ".llm-orc/config.yaml"])
        .run()
        .invalid();
    assert!(
        out.stderr.contains("anthropic-claude-pro-max"),
        "{}",
        out.stderr
    );
    let doc = project()
        .args(["invoke", "cloud/pro-max", "hi", "--output", "json"])
        .args(["--profile-map", "pro-max=mock-fast"])
        .run()
        .success()
        .json();
    assert_eq!(agent(&doc, "thinker")["profile"], "mock-fast");
}

#[test]
fn a_missing_script_lists_every_place_looked() {
    let test = project();
    let lib = lib(&test);
    let out = test
        .file(".orc/config.yaml", "script_path: [../tools]\n")
        .env("ORC_SCRIPT_PATH", &lib)
        .args(["validate", ".llm-orc/ensembles/broken/missing-script.yaml"])
        .run()
        .invalid();
    let stderr = out.stderr_redacted();
    assert!(
        stderr.contains("script `scripts/nowhere-to-be-found.py` of agent `ghost` was not found"),
        "{stderr}"
    );
    assert!(stderr.contains("missing-script.yaml:5:13]"), "{stderr}");
    let places = [
        "`.llm-orc/ensembles/broken`",
        "`.llm-orc/scripts`",
        "`.llm-orc`",
        "`.`",
        "`lib`",
        "`tools`",
    ];
    // The help wraps; compare it with its line breaks and margins taken out.
    let help: String = stderr
        .split("help:")
        .nth(1)
        .expect("a help")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut from = 0;
    for place in places {
        let at = help[from..]
            .find(place)
            .unwrap_or_else(|| panic!("{place} not listed in order in: {help}"));
        from += at + place.len();
    }
}

#[test]
fn script_path_and_orc_script_path_are_searched() {
    let yaml = "name: stamps\nagents:\n  - name: stamp\n    script: stamp.py\n";
    // Without either, the script is not found ...
    project()
        .file(".llm-orc/ensembles/stamps.yaml", yaml)
        .args(["invoke", "stamps", "x"])
        .run()
        .invalid()
        .stderr_contains("script `stamp.py` of agent `stamp` was not found");
    // ... with `script_path:` in .orc/config.yaml (relative to that file) it is,
    let out = project()
        .file(".llm-orc/ensembles/stamps.yaml", yaml)
        .file(".orc/config.yaml", "script_path: [../tools]\n")
        .args(["invoke", "stamps", "x"])
        .run()
        .success();
    assert_eq!(out.stdout, "stamped\n");
    // ... and with ORC_SCRIPT_PATH (colon-separated; empty entries skipped).
    let test = project().file(".llm-orc/ensembles/stamps.yaml", yaml);
    let tools = test.path().join("tools").display().to_string();
    let out = test
        .env("ORC_SCRIPT_PATH", format!("/nonexistent::{tools}"))
        .args(["invoke", "stamps", "x"])
        .run()
        .success();
    assert_eq!(out.stdout, "stamped\n");
}

#[test]
fn a_script_path_is_never_read_or_echoed() {
    let yaml = "name: peek\nagents:\n  - name: peek\n    script: /proc/self/environ\n";
    let out = Test::new()
        .ensemble(yaml)
        .env("ORC_SECRET_MARKER", "do-not-print-me")
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("script `/proc/self/environ` of agent `peek` is not executable"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("do-not-print-me"), "{}", out.stderr);
    assert!(!out.stderr.contains("HOME="), "{}", out.stderr);
    // A device is no script either, and nothing is read from it.
    let yaml = "name: zero\nagents:\n  - name: zero\n    script: /dev/zero\n";
    let out = Test::new()
        .ensemble(yaml)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("script `/dev/zero` of agent `zero` was not found")
            && flat(&out.stderr).contains("an absolute `script:` path must name a regular file"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_top_level_keys_warn_and_unknown_agent_keys_stay_errors() {
    let yaml = "\
name: keys
descripton: a near miss of a real key
serves: somewhere
agents:
  - name: a
    model_profile: mock-fast
";
    let out = Test::new()
        .ensemble(yaml)
        .args(["validate", ENSEMBLE])
        .run()
        .success();
    assert!(
        out.stderr
            .contains("unknown top-level key `descripton` is ignored"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("did you mean `description`?"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{ENSEMBLE}:2:1]")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{ENSEMBLE}:3:1]")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("did you mean `tests`"),
        "{}",
        out.stderr
    );
    let out = Test::new()
        .ensemble(&yaml.replace("model_profile", "modle_profile"))
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(
        out.stderr
            .contains("unknown key `modle_profile` in agent `a`")
            && out.stderr.contains("did you mean `model_profile`?"),
        "{}",
        out.stderr
    );
}

/// The base URL and key env vars of OpenAI's, Anthropic's and Ollama's own clients, used
/// when an inline agent (or an llm-orc profile) names no `base_url`.
#[test]
fn conventional_base_url_variables() {
    let ensemble = |provider: &str, model: &str| {
        format!("name: t\nagents:\n  - name: x\n    provider: {provider}\n    model: {model}\n")
    };
    // openai-compatible and openai: OPENAI_BASE_URL, with OPENAI_API_KEY.
    for provider in ["openai-compatible", "openai"] {
        let fake = Fake::always(Reply::json(chat("via OPENAI_BASE_URL")));
        Test::new()
            .ensemble(&ensemble(provider, "gpt-x"))
            .env("OPENAI_BASE_URL", format!("{}/v1", fake.url()))
            .env("OPENAI_API_KEY", "sk-test")
            .args(["invoke", ENSEMBLE, "hi"])
            .run()
            .success()
            .stdout("via OPENAI_BASE_URL\n");
        let r = fake.single();
        assert_eq!(r.path, "/v1/chat/completions", "{provider}");
        assert_eq!(
            r.header("authorization"),
            Some("Bearer sk-test"),
            "{provider}"
        );
    }
    // openai-compatible needs no key.
    let fake = Fake::always(Reply::json(chat("keyless")));
    Test::new()
        .ensemble(&ensemble("openai-compatible", "local"))
        .env("OPENAI_BASE_URL", format!("{}/v1", fake.url()))
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .success()
        .stdout("keyless\n");
    assert_eq!(fake.single().header("authorization"), None);
    // anthropic: ANTHROPIC_BASE_URL.
    let fake = Fake::always(Reply::json(json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "via ANTHROPIC_BASE_URL"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 3, "output_tokens": 2}
    })));
    Test::new()
        .ensemble(&ensemble("anthropic", "claude-x"))
        .env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .success()
        .stdout("via ANTHROPIC_BASE_URL\n");
    assert_eq!(fake.single().path, "/v1/messages");
    // ollama: OLLAMA_HOST as Ollama reads it (`:PORT` is 127.0.0.1:PORT).
    let fake = Fake::always(Reply::json(json!({
        "model": "llama-x", "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "via OLLAMA_HOST"},
        "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 2
    })));
    let port = fake.host_port().rsplit_once(':').unwrap().1.to_string();
    Test::new()
        .ensemble(&ensemble("ollama", "llama-x"))
        .env("OLLAMA_HOST", format!(":{port}"))
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .success()
        .stdout("via OLLAMA_HOST\n");
    assert_eq!(fake.single().path, "/api/chat");
}

#[test]
fn llm_orc_profiles_follow_the_same_variables() {
    // `openai-compatible` without base_url: OPENAI_BASE_URL; `llama-server`: LLAMA_SERVER_URL
    // only (never OPENAI_BASE_URL).
    let openai = Fake::always(Reply::json(chat("from the OpenAI URL")));
    let llama = Fake::always(Reply::json(chat("from llama-server")));
    let yaml = "\
name: both
agents:
  - name: compatible
    model_profile: compatible
  - name: local
    model_profile: local
";
    let doc = project()
        .file(".llm-orc/ensembles/both.yaml", yaml)
        .env("OPENAI_BASE_URL", format!("{}/v1", openai.url()))
        .env("LLAMA_SERVER_URL", format!("{}/v1", llama.url()))
        .args(["invoke", "both", "hi", "--output", "json"])
        .run()
        .success()
        .json();
    assert_eq!(agent(&doc, "compatible")["output"], "from the OpenAI URL");
    assert_eq!(agent(&doc, "local")["output"], "from llama-server");
    assert_eq!(openai.single().body["model"], "served-model");
    assert_eq!(llama.single().body["model"], "qwen3-8b");
}

#[test]
fn validate_and_test_find_llm_orc_ensembles_in_subfolders() {
    let tested = "\
name: tested
agents:
  - name: a
    model_profile: mock-fast
tests:
  - name: runs
    input: hello
    expect:
      - {agent: a, status: succeeded}
";
    let flat = "name: flat\nagents:\n  - name: b\n    model_profile: mock-fast\n";
    let out = Test::new()
        .file(".llm-orc/ensembles/checks/deeper/tested.yaml", tested)
        .file(".orc/ensembles/flat.yaml", flat)
        .arg("validate")
        .run()
        .success();
    let listed = out.stdout_redacted();
    assert!(
        listed.contains("ok  [TEMP]/.llm-orc/ensembles/checks/deeper/tested.yaml"),
        "{listed}"
    );
    assert!(
        listed.contains("ok  [TEMP]/.orc/ensembles/flat.yaml"),
        "{listed}"
    );
    // A folder inside `.llm-orc` is searched with its subfolders.
    let out = Test::new()
        .file(".llm-orc/ensembles/checks/deeper/tested.yaml", tested)
        .args(["validate", ".llm-orc/ensembles"])
        .run()
        .success();
    assert!(out.stdout.contains("tested.yaml"), "{}", out.stdout);
    let out = Test::new()
        .file(".llm-orc/ensembles/checks/deeper/tested.yaml", tested)
        .arg("test")
        .run()
        .success();
    assert!(out.stdout.contains("1 passed, 0 failed"), "{}", out.stdout);
}
