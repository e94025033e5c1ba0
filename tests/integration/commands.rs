//! The small commands (list, profiles, init, schema) and where ensembles are found.

use pretty_assertions::assert_eq;

use crate::support::Test;

const NAMED: &str = "\
name: review
description: a one-agent review
agents:
  - name: reviewer
    model_profile: mock-fast
";

#[test]
fn version_and_help() {
    Test::new()
        .arg("--version")
        .run()
        .success()
        .stdout_contains("orc ");
    Test::new()
        .arg("--help")
        .run()
        .success()
        .stdout_contains("Exit codes:");
    Test::new()
        .args(["invoke", "--help"])
        .run()
        .success()
        .stdout_contains("--each-line");
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    Test::new().arg("frobnicate").run().invalid();
    Test::new().run().invalid();
}

#[test]
fn list_without_ensembles() {
    let out = Test::new().arg("list").run().success();
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("no ensembles found"), "{}", out.stderr);
    assert!(out.stderr.contains("orc init"), "{}", out.stderr);
}

#[test]
fn list_shows_project_and_user_ensembles() {
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .file(
            "xdg/orc/ensembles/review.yaml",
            NAMED.replace("a one-agent review", "the user's review"),
        )
        .file(
            "xdg/orc/ensembles/other.yml",
            "name: other\nagents:\n  - name: a\n",
        )
        .arg("list")
        .run()
        .success();
    insta::assert_snapshot!("list", out.stdout_redacted());
}

#[test]
fn profiles_lists_builtin_user_and_project_profiles() {
    let out = Test::new()
        .file("xdg/orc/config.yaml", "model_profiles:\n  mine:\n    provider: mock\n    model: user-model\n  only-user:\n    provider: mock\n")
        .file(".orc/profiles/team.yaml", "model_profiles:\n  mine:\n    provider: mock\n    model: project-model\n")
        .arg("profiles")
        .run()
        .success();
    insta::assert_snapshot!("profiles", out.stdout_redacted());
    let mine = out
        .stdout
        .lines()
        .find(|l| l.starts_with("mine "))
        .expect("a `mine` line");
    assert!(
        mine.contains("project-model"),
        "the project's profile wins: {mine}"
    );
}

#[test]
fn schema_prints_json_schemas() {
    for (kind, title) in [("ensemble", "orc ensemble"), ("profiles", "orc profiles")] {
        let out = Test::new().args(["schema", kind]).run().success();
        let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("schema is JSON");
        assert_eq!(doc["title"], title);
        assert_eq!(doc["type"], "object");
    }
    let default = Test::new().arg("schema").run().success();
    let ensemble = Test::new().args(["schema", "ensemble"]).run().success();
    assert_eq!(default.stdout, ensemble.stdout);
    Test::new().args(["schema", "nonsense"]).run().invalid();
}

#[test]
fn init_creates_a_runnable_project() {
    let test = Test::new().arg("init").run().success();
    let dir = test.test.path().to_path_buf();
    assert!(test.stderr.contains("created"), "{}", test.stderr);
    for file in [
        "config.yaml",
        "ensembles/example.yaml",
        "schemas/ensemble.schema.json",
        "schemas/profiles.schema.json",
    ] {
        assert!(dir.join(".orc").join(file).is_file(), "{file} is created");
    }
    assert!(dir.join(".orc/profiles").is_dir());
    // What init wrote is valid and runs.
    let init_ensemble = std::fs::read_to_string(dir.join(".orc/ensembles/example.yaml")).unwrap();
    let init_config = std::fs::read_to_string(dir.join(".orc/config.yaml")).unwrap();
    Test::new()
        .file(".orc/ensembles/example.yaml", &init_ensemble)
        .file(".orc/config.yaml", &init_config)
        .arg("validate")
        .run()
        .success()
        .stdout_contains("ok  ");
    let out = Test::new()
        .file(
            ".orc/ensembles/example.yaml",
            init_ensemble.replace("model_profile: mock\n", "model_profile: mock-fast\n"),
        )
        .args([
            "invoke",
            "example",
            "fn add(a: i32, b: i32) -> i32 { a - b }",
            "--output",
            "json",
        ])
        .run()
        .success();
    assert_eq!(out.json()["status"], "succeeded");
}

#[test]
fn init_does_not_overwrite_without_force() {
    let out = Test::new()
        .file(".orc/config.yaml", "model_profiles: {}\n# mine\n")
        .arg("init")
        .run()
        .invalid();
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    let kept = std::fs::read_to_string(out.test.path().join(".orc/config.yaml")).unwrap();
    assert_eq!(kept, "model_profiles: {}\n# mine\n");

    let forced = Test::new()
        .file(".orc/config.yaml", "# mine\n")
        .args(["init", "--force"])
        .run()
        .success();
    let replaced = std::fs::read_to_string(forced.test.path().join(".orc/config.yaml")).unwrap();
    assert_ne!(replaced, "# mine\n");
}

#[test]
fn invoke_by_name_walks_up_from_a_subdirectory() {
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .current_dir("src/deep/er")
        .args(["invoke", "review", "hello", "--output", "json"])
        .run()
        .success();
    let doc = out.json();
    assert_eq!(doc["ensemble"], "review");
    assert_eq!(doc["agents"][0]["name"], "reviewer");
}

#[test]
fn plan_by_name() {
    Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .current_dir("sub")
        .args(["plan", "review"])
        .run()
        .success()
        .stdout_contains("reviewer");
}

#[test]
fn project_ensemble_wins_over_user() {
    let user = NAMED.replace("name: reviewer", "name: user_reviewer");
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .file("xdg/orc/ensembles/review.yaml", &user)
        .file("xdg/orc/ensembles/user-only.yaml", &user)
        .args(["invoke", "review", "hello", "--output", "json"])
        .run()
        .success();
    assert_eq!(out.json()["agents"][0]["name"], "reviewer");

    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .file("xdg/orc/ensembles/user-only.yaml", &user)
        .args(["invoke", "user-only", "hello", "--output", "json"])
        .run()
        .success();
    assert_eq!(
        out.json()["agents"][0]["name"],
        "user_reviewer",
        "user ensembles are found too"
    );
}

#[test]
fn user_ensembles_default_to_home_dot_config() {
    let out = Test::new()
        .file("home/.config/orc/ensembles/review.yaml", NAMED)
        .env_remove("XDG_CONFIG_HOME")
        .args(["invoke", "review", "hello", "--output", "json"])
        .run()
        .success();
    assert_eq!(out.json()["ensemble"], "review");
}

#[test]
fn unknown_ensemble_name_suggests_the_closest() {
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .args(["invoke", "reveiw", "hello"])
        .run()
        .invalid();
    insta::assert_snapshot!("unknown_ensemble_name", out.stderr_redacted());
}

#[test]
fn unknown_ensemble_name_without_suggestion() {
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .args(["invoke", "banana", "hello"])
        .run()
        .invalid();
    insta::assert_snapshot!("unknown_ensemble_name_far", out.stderr_redacted());
}

#[test]
fn validate_without_arguments_checks_the_search_path() {
    let out = Test::new()
        .file(".orc/ensembles/review.yaml", NAMED)
        .file(
            "xdg/orc/ensembles/broken.yaml",
            "name: broken\nagents: []\n",
        )
        .arg("validate")
        .run()
        .invalid();
    assert!(out.stdout.contains("review.yaml"), "{}", out.stdout);
    assert!(out.stderr.contains("broken.yaml"), "{}", out.stderr);

    let out = Test::new().arg("validate").run().invalid();
    assert!(out.stderr.contains("no ensembles found"), "{}", out.stderr);
}
