//! The shipped files: schemas in sync with the Rust types, every shipped ensemble and profile
//! valid and starting with the yaml-language-server modeline, every ensemble runnable offline.

use std::path::{Path, PathBuf};
use std::process::Command;

fn orc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orc"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("HOME", std::env::temp_dir().join("orc-shipped-home"))
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no yaml files in {dir}");
    files
}

#[test]
fn committed_schemas_match_the_generated_ones() {
    for kind in ["ensemble", "profiles", "prices"] {
        let out = orc().args(["schema", kind]).output().unwrap();
        assert!(out.status.success());
        let generated = String::from_utf8(out.stdout).unwrap();
        let path = root().join(format!("schemas/{kind}.schema.json"));
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            generated == committed,
            "{} is out of date; regenerate it with `cargo run -- schema {kind} > schemas/{kind}.schema.json`",
            path.display()
        );
    }
}

#[test]
fn shipped_files_start_with_the_schema_modeline() {
    for (dir, schema) in [("ensembles", "ensemble"), ("profiles", "profiles")] {
        for file in yaml_files(dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let schema = if file.ends_with("prices.yaml") {
                "prices"
            } else {
                schema
            };
            let expected =
                format!("# yaml-language-server: $schema=../schemas/{schema}.schema.json");
            assert_eq!(
                text.lines().next(),
                Some(expected.as_str()),
                "{}",
                file.display()
            );
        }
    }
}

#[test]
fn shipped_files_validate() {
    let out = orc()
        .args(["validate", "ensembles", "profiles"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.is_empty(), "warnings on shipped files: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let count = yaml_files("ensembles").len() + yaml_files("profiles").len();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        count,
        "{stdout}"
    );
}

#[test]
fn shipped_ensembles_run_offline() {
    for file in yaml_files("ensembles") {
        let out = orc()
            .args([
                "invoke",
                file.to_str().unwrap(),
                "--quiet",
                "--output",
                "json",
                "--input",
                "a topic",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["status"], "succeeded", "{}", file.display());
    }
}
