//! A store that cannot be used never stops a run: a read-only directory and a corrupt file
//! each give one warning, and the run prints what it would have printed. `--no-store` and
//! `ORC_STORE=off` record nothing; `ORC_STORE` and `XDG_DATA_HOME` move the store.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use pretty_assertions::assert_eq;

use super::Session;
use crate::support::wait_with_limit;

const CHAIN: &str = "\
name: steady
agents:
  - name: a
    model_profile: mock-fast
  - name: b
    model_profile: mock-fast
    depends_on: [a]
";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The warnings on stderr.
fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("warning")).collect()
}

/// What `orc invoke steady.yaml hello` prints with no store at all.
fn reference(session: &Session) -> String {
    session
        .run(&["invoke", "steady.yaml", "hello", "--no-store"])
        .success()
        .stdout
}

/// Whether this process can write into a directory whose permissions say it cannot (root).
fn ignores_permissions(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let wrote = std::fs::write(&probe, "x").is_ok();
    let _ = std::fs::remove_file(&probe);
    wrote
}

/// Runs `orc ARGS` as a user the permissions apply to: as root, as `nobody`.
fn run_as_user(
    session: &Session,
    args: &[&str],
    privileged: bool,
) -> (Option<i32>, String, String) {
    let mut command = session
        .orc(args)
        .env("XDG_CONFIG_HOME", session.path().join("xdg"))
        .command();
    if privileged {
        command.uid(65_534).gid(65_534);
    }
    wait_with_limit(command.spawn().expect("spawn orc"), Duration::from_secs(60))
}

#[test]
fn a_read_only_store_directory_warns_once_and_the_run_goes_on() {
    let session = Session::new();
    session.file("steady.yaml", CHAIN);
    let expected = reference(&session);
    let dir = session.store().parent().expect("a directory").to_path_buf();
    std::fs::create_dir_all(&dir).expect("create the store's directory");
    // Everything readable by anyone; the store's directory writable by no one.
    for d in [session.path(), &session.path().join("home")] {
        chmod(d, 0o755);
    }
    for d in [
        dir.parent().unwrap().parent().unwrap(),
        dir.parent().unwrap(),
    ] {
        chmod(d, 0o755);
    }
    chmod(&session.path().join("steady.yaml"), 0o644);
    chmod(&dir, 0o555);
    let privileged = ignores_permissions(&dir);
    let invoke = || run_as_user(&session, &["invoke", "steady.yaml", "hello"], privileged);

    // No store yet, and none can be created.
    let (code, stdout, stderr) = invoke();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, expected);
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(
        warned[0].contains(&format!("`{}`", session.store().display()))
            && warned[0].contains("is its directory writable?"),
        "{stderr}"
    );
    assert!(!session.store().exists());

    // A store written earlier, in a directory (and file) that are read-only now.
    chmod(&dir, 0o755);
    session.run(&["invoke", "steady.yaml", "earlier"]).success();
    chmod(&session.store(), 0o444);
    chmod(&dir, 0o555);
    let (code, stdout, stderr) = invoke();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, expected);
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "{stderr}");
    assert!(warned[0].contains("read-only"), "{stderr}");

    // It can still be read.
    let (code, stdout, stderr) = run_as_user(&session, &["runs", "list", "-o", "json"], privileged);
    assert_eq!(code, Some(0), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["status"], "succeeded");
    let id = listed[0]["id"].as_str().expect("an id");
    let (code, stdout, stderr) = run_as_user(&session, &["runs", "show", id], privileged);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(id), "{stdout}");
    // But not changed.
    let (code, _, stderr) = run_as_user(&session, &["runs", "rm", id], privileged);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    chmod(&dir, 0o755);
    assert_eq!(session.runs(&[]).len(), 1);
}

#[test]
fn a_corrupt_store_file_warns_once_and_the_run_goes_on() {
    let session = Session::new();
    session.file("steady.yaml", CHAIN);
    let expected = reference(&session);
    let store = session.store();
    std::fs::create_dir_all(store.parent().unwrap()).unwrap();
    let junk = "this is not a database\n".repeat(200);
    std::fs::write(&store, &junk).unwrap();

    let out = session.run(&["invoke", "steady.yaml", "hello"]).success();
    assert_eq!(out.stdout, expected);
    let warned = warnings(&out.stderr);
    assert_eq!(warned.len(), 1, "{}", out.stderr);
    assert!(
        warned[0].contains("not an orc store") && warned[0].contains(&store.display().to_string()),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&store).unwrap(),
        junk,
        "the file is left alone"
    );
    let listed = session.run(&["runs"]).invalid();
    assert!(
        listed.stderr.contains("not an orc store"),
        "{}",
        listed.stderr
    );

    // A real store whose pages were overwritten: its header is right, the rest is not.
    std::fs::remove_file(&store).unwrap();
    for input in ["one", "two", "three"] {
        session.run(&["invoke", "steady.yaml", input]).success();
    }
    let mut bytes = std::fs::read(&store).unwrap();
    assert!(bytes.len() > 8192);
    bytes[4096..].fill(0xff);
    std::fs::write(&store, &bytes).unwrap();
    let out = session.run(&["invoke", "steady.yaml", "hello"]).success();
    assert_eq!(out.stdout, expected);
    let warned = warnings(&out.stderr);
    assert_eq!(warned.len(), 1, "{}", out.stderr);
    assert!(warned[0].contains("damaged"), "{}", out.stderr);
}

#[test]
fn a_store_turned_off_records_nothing() {
    let session = Session::new();
    session.file("steady.yaml", CHAIN);
    let off = session
        .orc(["invoke", "steady.yaml", "hello"])
        .env("ORC_STORE", "off")
        .run()
        .success();
    assert!(warnings(&off.stderr).is_empty(), "{}", off.stderr);
    session
        .run(&["invoke", "steady.yaml", "hello", "--no-store"])
        .success();
    assert!(
        !session.store().exists(),
        "nothing recorded, nothing created"
    );

    session.run(&["invoke", "steady.yaml", "hello"]).success();
    assert_eq!(session.runs(&[]).len(), 1);
    session
        .orc(["invoke", "steady.yaml", "hello"])
        .env("ORC_STORE", "off")
        .run()
        .success();
    session
        .run(&["invoke", "steady.yaml", "hello", "--no-store"])
        .success();
    assert_eq!(
        session.runs(&[]).len(),
        1,
        "runs with the store off are not recorded"
    );

    let refused = session
        .orc(["runs"])
        .env("ORC_STORE", "off")
        .run()
        .invalid();
    assert!(refused.stderr.contains("turned off"), "{}", refused.stderr);
}

#[test]
fn the_store_lives_where_orc_store_or_xdg_data_home_say() {
    let session = Session::new();
    session.file("steady.yaml", CHAIN);
    let data = session.path().join("data");
    session
        .orc(["invoke", "steady.yaml", "hello"])
        .env("XDG_DATA_HOME", &data)
        .run()
        .success();
    assert!(data.join("orc/orc.db").is_file());
    let custom = session.path().join("elsewhere/runs.db");
    session
        .orc(["invoke", "steady.yaml", "hello"])
        .env("ORC_STORE", &custom)
        .env("XDG_DATA_HOME", &data)
        .run()
        .success();
    assert!(custom.is_file());
    let listed = session
        .orc(["runs", "-o", "json"])
        .env("ORC_STORE", &custom)
        .run()
        .success()
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(!session.store().exists());
}
