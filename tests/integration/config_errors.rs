//! Broken ensemble files: every one is refused with exit code 2 and a located diagnostic,
//! never a panic. `orc validate` output is snapshotted; `orc invoke` must show the same
//! diagnostics and refuse to run.

use std::time::{Duration, Instant};

use crate::support::{ENSEMBLE, Test};

/// Checks that `contents` (as `ensemble.yaml`) is refused by `validate` with the snapshotted
/// diagnostics, and by `invoke` with the same diagnostics.
#[track_caller]
fn config_error(name: &str, contents: impl AsRef<[u8]>) {
    let contents = contents.as_ref();
    let validated = Test::new()
        .file(ENSEMBLE, contents)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert_eq!(
        validated.stdout, "",
        "validate prints nothing on stdout for an invalid file"
    );
    insta::assert_snapshot!(name, validated.stderr);

    let invoked = Test::new()
        .file(ENSEMBLE, contents)
        .args(["invoke", ENSEMBLE, "some input"])
        .run()
        .invalid();
    assert_eq!(
        invoked.stdout, "",
        "nothing ran, so nothing is printed on stdout"
    );
    let diagnostics = validated
        .stderr
        .strip_suffix("1 of 1 file invalid\n")
        .expect("validate ends with a count of invalid files");
    pretty_assertions::assert_eq!(
        invoked.stderr,
        diagnostics,
        "invoke shows the diagnostics of validate"
    );
}

#[test]
fn yaml_syntax_error() {
    config_error(
        "yaml_syntax_error",
        "name: broken\nagents:\n  - name: a\n    system_prompt: role: reviewer\n",
    );
}

#[test]
fn tabs_for_indentation() {
    config_error("tabs", "name: tabs\nagents:\n\t- name: a\n");
}

#[test]
fn bad_indentation() {
    config_error(
        "bad_indentation",
        "name: indent\nagents:\n  - name: a\n   model_profile: mock-fast\n",
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    config_error(
        "unknown_key",
        "name: typo\nagents:\n  - name: a\n    model_profil: mock-fast\n",
    );
}

#[test]
fn wrong_type() {
    config_error(
        "wrong_type",
        "name: types\nagents:\n  - name: a\n    retries: many\n",
    );
}

#[test]
fn empty_file() {
    config_error("empty_file", "");
}

#[test]
fn comments_only_is_empty() {
    config_error("comments_only", "# nothing here yet\n\n");
}

#[test]
fn list_document() {
    config_error("list_document", "- name: a\n- name: b\n");
}

#[test]
fn duplicate_agent_names() {
    config_error(
        "duplicate_agent_names",
        "name: dup\nagents:\n  - name: a\n  - name: b\n  - name: a\n",
    );
}

#[test]
fn unknown_dependency_suggests_the_closest() {
    config_error(
        "unknown_dependency",
        "name: deps\nagents:\n  - name: research\n  - name: summary\n    depends_on: [reserch]\n",
    );
}

#[test]
fn self_dependency() {
    config_error(
        "self_dependency",
        "name: me\nagents:\n  - name: a\n    depends_on: [a]\n",
    );
}

#[test]
fn three_agent_cycle() {
    config_error(
        "three_agent_cycle",
        "name: cycle
agents:
  - name: a
    depends_on: [b]
  - name: b
    depends_on: [c]
  - name: c
    depends_on: [a]
",
    );
    let out = Test::new()
        .ensemble("name: cycle\nagents:\n  - name: a\n    depends_on: [b]\n  - name: b\n    depends_on: [c]\n  - name: c\n    depends_on: [a]\n")
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(out.stderr.contains("`a -> b -> c -> a`"), "{}", out.stderr);
}

#[test]
fn unknown_profile_suggests_the_closest() {
    config_error(
        "unknown_profile",
        "name: profiles\nagents:\n  - name: a\n    model_profile: mock-fsat\n",
    );
}

#[test]
fn unknown_profile_lists_the_known_ones() {
    config_error(
        "unknown_profile_far",
        "name: profiles\nagents:\n  - name: a\n    model_profile: gpt-5-turbo-max\n",
    );
}

#[test]
fn unknown_provider() {
    config_error(
        "unknown_provider",
        "name: providers\nagents:\n  - name: a\n    provider: opnai\n    model: gpt-4o\n",
    );
}

#[test]
fn model_profile_and_model() {
    config_error(
        "model_profile_and_model",
        "name: both\nagents:\n  - name: a\n    model_profile: mock-fast\n    model: gpt-4o\n",
    );
}

#[test]
fn template_syntax_error() {
    config_error(
        "template_syntax_error",
        "name: tmpl\nagents:\n  - name: a\n    prompt: \"Review {% for d in deps %}{{ d.output }}\"\n",
    );
}

#[test]
fn template_undefined_variable() {
    config_error(
        "template_undefined_variable",
        "name: tmpl\nagents:\n  - name: a\n    prompt: \"Review: {{ inptu }}\"\n",
    );
}

/// Regression: the caret used to point at the indentation, columns before the variable.
#[test]
fn template_undefined_variable_in_block_scalar_is_located() {
    let out = Test::new()
        .ensemble("name: tmpl\nagents:\n  - name: a\n    prompt: |\n      Review this:\n      {{ inptu }}\n")
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    // `inptu` starts on line 6, column 10.
    assert!(
        out.stderr.contains(&format!("[{ENSEMBLE}:6:10]")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(" 6 │       {{ inptu }}\n   ·          ──┬──\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn template_reads_an_agent_that_is_not_a_dependency() {
    config_error(
        "template_not_dependency",
        "name: tmpl\nagents:\n  - name: a\n  - name: b\n    prompt: \"{{ agents.a.output }}\"\n",
    );
}

#[test]
fn several_errors_are_all_reported() {
    config_error(
        "several_errors",
        "name: many
agents:
  - name: a
    model_profil: mock-fast
    retries: lots
  - name: a
  - name: b
    depends_on: [zzz]
    model_profile: nope
",
    );
}

#[test]
fn binary_junk() {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\x01\0\0\0\x01\0\x08\x06\0\0\0".to_vec();
    png.extend((0u8..=255).cycle().take(2048));
    config_error("binary_junk", png);
}

#[test]
fn invalid_utf8_is_located() {
    config_error(
        "invalid_utf8",
        b"name: latin1\nagents:\n  - name: a\n    system_prompt: caf\xe9 reviewer\n",
    );
}

#[test]
fn file_larger_than_16_mib() {
    let mut text = String::from("name: big\nagents:\n  - name: a\n");
    let line = format!("# {}\n", "x".repeat(1023));
    while text.len() <= 16 * 1024 * 1024 {
        text.push_str(&line);
    }
    config_error("too_large", text);
}

#[test]
fn deeply_nested_yaml() {
    let text = format!(
        "name: deep\nagents:\n{}{}",
        "  [\n".repeat(1000),
        "  ]\n".repeat(1000)
    );
    config_error("deeply_nested", text);
}

#[test]
fn deeply_nested_yaml_on_one_line() {
    let depth = 2_000;
    let text = format!(
        "name: deep\nagents: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let out = Test::new()
        .ensemble(&text)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(out.stderr.contains("too deeply nested"), "{}", out.stderr);
}

#[test]
fn very_deeply_nested_yaml_is_refused_quickly() {
    let depth = 100_000;
    let text = format!(
        "name: deep\nagents: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let start = Instant::now();
    let out = Test::new()
        .ensemble(&text)
        .args(["validate", ENSEMBLE])
        .run()
        .invalid();
    assert!(out.stderr.contains("too deeply nested"), "{}", out.stderr);
    // A loose sanity bound: a 200 kB file must not take tens of seconds to refuse.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn alias_bomb() {
    let mut text = String::from(
        "name: bomb\nagents:\n  - name: a\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..12 {
        let refs = vec![format!("*x{}", i - 1); 9].join(", ");
        text.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    let start = Instant::now();
    config_error("alias_bomb", text);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn missing_file() {
    let out = Test::new().args(["validate", "nope.yaml"]).run().invalid();
    insta::assert_snapshot!("missing_file", out.stderr);
    Test::new()
        .args(["invoke", "nope.yaml", "x"])
        .run()
        .invalid()
        .stderr_contains("no ensemble file `nope.yaml`");
}

#[test]
fn plan_refuses_an_invalid_ensemble() {
    Test::new()
        .ensemble("name: me\nagents:\n  - name: a\n    depends_on: [a]\n")
        .args(["plan", ENSEMBLE])
        .run()
        .invalid()
        .stderr_contains("agent `a` depends on itself");
}

#[test]
fn validate_reports_every_file() {
    let out = Test::new()
        .file(
            "good.yaml",
            "name: good\nagents:\n  - name: a\n    model_profile: mock-fast\n",
        )
        .file(
            "bad.yaml",
            "name: bad\nagents:\n  - name: a\n    depends_on: [a]\n",
        )
        .args(["validate", "good.yaml", "bad.yaml"])
        .run()
        .invalid();
    assert_eq!(out.stdout, "ok  good.yaml  (ensemble `good`, 1 agent)\n");
    assert!(
        out.stderr.ends_with("1 of 2 files invalid\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn validate_accepts_a_valid_file() {
    Test::new()
        .ensemble("name: good\nagents:\n  - name: a\n    model_profile: mock-fast\n  - name: b\n    depends_on: [a]\n    model_profile: mock-fast\n")
        .args(["validate", ENSEMBLE])
        .run()
        .success()
        .stdout("ok  ensemble.yaml  (ensemble `good`, 2 agents)\n")
        .stderr("");
}

#[test]
fn broken_user_profiles_are_reported() {
    let out = Test::new()
        .file(
            "xdg/orc/config.yaml",
            "model_profiles:\n  mine:\n    provider: mock\n    latency_ms: soon\n",
        )
        .args(["profiles"])
        .run()
        .invalid();
    assert!(out.stderr.contains("latency_ms"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn yaml_limit_errors_do_not_blame_indentation() {
    let mut bomb = String::from(
        "name: bomb\nagents:\n  - name: a\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..12 {
        let refs = vec![format!("*x{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("x{i}: &x{i} [{refs}]\n"));
    }
    let deep = format!(
        "name: deep\nagents:\n{}{}",
        "  [\n".repeat(1000),
        "  ]\n".repeat(1000)
    );
    for text in [bomb, deep] {
        let out = Test::new()
            .ensemble(&text)
            .args(["validate", ENSEMBLE])
            .run()
            .invalid();
        assert!(
            out.stderr.contains("YAML too large or too deeply nested"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("indentation"), "{}", out.stderr);
    }
}
