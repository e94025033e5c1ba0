//! Issue 12, part 2: what a new user hits in the first ten minutes, each tried through the
//! real binary: snake_case flag values, partial results, one human line per retry and
//! failure, replay misses in `orc test`, empty and oversized input, help at 80 columns,
//! `orc list` headers, a closed stderr, and the hint to resume a failed run.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use pretty_assertions::assert_eq;

use crate::support::{ENSEMBLE, Test, wait_with_limit};

/// `a` succeeds, `b` always fails (after one retry), `c` needs both: a failure that leaves
/// the final agent skipped.
const BROKEN: &str = "\
name: broken
model_profiles:
  dead: {provider: mock, model: m, fail_rate: 1, fail_with: server_error, latency_ms: 1}
agents:
  - name: a
    model_profile: mock-fast
  - name: b
    model_profile: dead
    retries: 1
    retry_backoff_ms: 1
  - name: c
    model_profile: mock-fast
    depends_on: [a, b]
";

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// No raw `tracing` line: no ISO timestamp, no level column, no module path.
#[track_caller]
fn assert_no_log_lines(stderr: &str) {
    for line in stderr.lines() {
        let timestamp = line.len() > 20
            && line.as_bytes()[4] == b'-'
            && line.as_bytes()[10] == b'T'
            && line[..4].bytes().all(|b| b.is_ascii_digit());
        assert!(
            !timestamp && !line.contains(" WARN ") && !line.contains("orc::"),
            "a raw log line on stderr: {line}\n--- stderr ---\n{stderr}"
        );
    }
}

#[test]
fn enum_flags_accept_the_snake_case_the_yaml_uses() {
    for (optimizer, partition) in [
        ("maximize_uam", "attribute_type"),
        ("maximize-uam", "attribute-type"),
        ("minimize_cost", "none"),
        ("maximize_efficiency", "semantic"),
    ] {
        let out = Test::new()
            .args(["explore", "board games", "--profile", "mock-fast"])
            .args([
                "--profile",
                "mock-fast",
                "--iterations",
                "1",
                "--producers",
                "2",
            ])
            .args(["--optimizer", optimizer, "--partition", partition, "-q"])
            .run()
            .success();
        assert!(!out.stdout.is_empty(), "{optimizer} {partition}: no items");
    }
    // An unknown value is still a usage error that lists the kebab-case spelling.
    Test::new()
        .args(["explore", "x", "--optimizer", "maximize_speed"])
        .run()
        .invalid()
        .stderr_contains("maximize-uam");
}

#[test]
fn a_failure_that_skips_the_final_agent_prints_what_succeeded() {
    let out = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .failure();
    assert!(out.stdout.starts_with("== a ==\n"), "{}", out.stdout);
    assert_eq!(count(&out.stdout, "== "), 1, "{}", out.stdout);
    assert!(out.stdout.contains("On \"hi\""), "{}", out.stdout);
    let stderr = &out.stderr;
    assert_eq!(
        count(stderr, "skipped: agent `c` (dependency `b` failed)"),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "note: no output from the final agent `c` (skipped); stdout has the output of the one agent that succeeded, under its name"
        ),
        "{stderr}"
    );
    // `--output json` is unchanged: the document, whatever happened.
    let json = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi", "-o", "json"])
        .run()
        .failure()
        .json();
    assert_eq!(json["agents"][2]["status"], "skipped");
    // A run that succeeds prints only its final agent, unlabelled, as before.
    Test::new()
        .ensemble("name: ok\nagents:\n  - name: a\n    model_profile: mock-fast\n  - name: b\n    model_profile: mock-fast\n    depends_on: [a]\n")
        .args(["invoke", ENSEMBLE, "hi", "-q"])
        .run()
        .success()
        .stdout_contains("[mock-1 as assistant]");
}

#[test]
fn retries_and_failures_are_said_once_as_short_lines() {
    let out = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .failure();
    let stderr = &out.stderr;
    assert_no_log_lines(stderr);
    assert_eq!(
        count(
            stderr,
            "retry: agent `b` attempt 1 failed: HTTP 500: mock: injected server error; retrying"
        ),
        1,
        "{stderr}"
    );
    assert_eq!(count(stderr, "agent `b` failed"), 1, "{stderr}");
    // The error appears in the retry line and the failure line, nowhere else.
    assert_eq!(count(stderr, "injected server error"), 2, "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
    assert_eq!(
        count(
            stderr,
            "error: agent `b` failed after 2 attempts: HTTP 500: mock: injected server error"
        ),
        1,
        "{stderr}"
    );

    // A fallback is one line too, and the run then succeeds.
    let fallback = "\
name: fallback
model_profiles:
  dead: {provider: mock, model: m, fail_rate: 1, fail_with: server_error, latency_ms: 1}
agents:
  - name: a
    model_profile: dead
    retries: 0
    fallback_model_profile: mock-fast
";
    let out = Test::new()
        .ensemble(fallback)
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .success();
    assert_no_log_lines(&out.stderr);
    assert_eq!(
        count(
            &out.stderr,
            "fallback: agent `a`: profile `dead` failed: HTTP 500: mock: injected server error; trying `mock-fast`"
        ),
        1,
        "{}",
        out.stderr
    );

    // `--quiet`: no retry lines and no summary, but the failure is still said, once.
    let quiet = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi", "-q"])
        .run()
        .failure();
    assert!(!quiet.stderr.contains("retry:"), "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("orc: "), "{}", quiet.stderr);
    assert_eq!(
        count(&quiet.stderr, "agent `b` failed"),
        1,
        "{}",
        quiet.stderr
    );
    assert_eq!(
        count(&quiet.stderr, "injected server error"),
        1,
        "{}",
        quiet.stderr
    );
    assert_no_log_lines(&quiet.stderr);

    // `orc test`: expected against actual on stdout, and no log lines on stderr.
    let test = Test::new()
        .ensemble(&format!(
            "{BROKEN}tests:\n  - name: t\n    input: hi\n    expect:\n      - {{agent: c, status: succeeded}}\n"
        ))
        .args(["test", ENSEMBLE])
        .run()
        .failure();
    assert_no_log_lines(&test.stderr);
    assert!(
        !test.stderr.contains("injected server error"),
        "{}",
        test.stderr
    );
    assert!(test.stdout.contains("FAIL  t"), "{}", test.stdout);

    // `ORC_LOG` is the detailed log, with module paths, as asked.
    let logged = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi"])
        .env("ORC_LOG", "warn")
        .run()
        .failure();
    assert!(
        logged.stderr.contains("orc::exec::call") && logged.stderr.contains("retrying"),
        "{}",
        logged.stderr
    );
}

#[test]
fn each_line_says_which_input_failed() {
    let out = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "--each-line"])
        .stdin("one\ntwo\n")
        .run()
        .failure();
    assert_no_log_lines(&out.stderr);
    for n in [1, 2] {
        assert_eq!(
            count(
                &out.stderr,
                &format!("input {n}: error: agent `b` failed after 2 attempts")
            ),
            1,
            "{}",
            out.stderr
        );
    }
}

const REVIEW: &str = "\
name: review
agents:
  - name: security
    model_profile: mock-fast
    system_prompt: Find vulnerabilities.
  - name: style
    model_profile: mock-fast
    system_prompt: Find style problems.
  - name: synthesis
    model_profile: mock-fast
    depends_on: [security, style]
tests:
  - name: merged
    input: fn add(a, b) { a - b }
    expect:
      - {agent: synthesis, contains: Building on}
";

#[test]
fn a_replay_miss_names_the_request_and_what_was_skipped() {
    let test = Test::new().ensemble(REVIEW);
    let recording = test.path().join("rec.jsonl");
    // Kept until the end: the recording lives in its temp dir.
    let _recorded = test
        .arg("test")
        .arg(ENSEMBLE)
        .arg("--record")
        .arg(&recording)
        .run()
        .success();
    // The prompt changes after the recording: `security`'s request is no longer in it.
    let out = Test::new()
        .ensemble(&REVIEW.replace("Find vulnerabilities.", "Find security holes."))
        .file("rec.jsonl", std::fs::read(&recording).unwrap())
        .args(["test", ENSEMBLE, "--replay", "rec.jsonl"])
        .run()
        .failure();
    let stdout = &out.stdout;
    for needle in [
        "the recording has no response for the request of agent `security`",
        "profile `mock-fast`, model `mock-1`, request key ",
        "system prompt: \"Find security holes.\"",
        "prompt: \"fn add(a, b) { a - b }\"",
        "so `synthesis` was skipped",
        "record it again with `--record FILE`",
        "agent `synthesis`: output should contain \"Building on\"",
        "actual: no output (skipped: dependency `security` failed)",
    ] {
        assert!(
            stdout.contains(needle),
            "stdout lacks {needle:?}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("actual: \"\""), "{stdout}");
    assert_no_log_lines(&out.stderr);
}

const NO_TASK: &str = "name: plain\nagents:\n  - name: a\n    model_profile: mock-fast\n";

#[test]
fn empty_stdin_is_not_an_input() {
    // The builder's stdin is /dev/null, as `< /dev/null`.
    let out = Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE])
        .run()
        .invalid();
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains(
            "error: stdin is empty, and the ensemble has no `default_task` to run instead"
        ) && out.stderr.contains("help: pipe text on stdin"),
        "{}",
        out.stderr
    );
    // A pipe with only a line break in it is empty too.
    Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE])
        .stdin("\n")
        .run()
        .invalid()
        .stderr_contains("stdin is empty");
    // With a `default_task`, that runs, and a note says so.
    let out = Test::new()
        .ensemble(&format!("default_task: the default task\n{NO_TASK}"))
        .args(["invoke", ENSEMBLE])
        .run()
        .success()
        .stdout_contains("On \"the default task\"");
    assert!(
        out.stderr
            .contains("note: stdin is empty; the input is the ensemble's `default_task`"),
        "{}",
        out.stderr
    );
    // An empty input asked for explicitly still runs.
    Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "", "-q"])
        .run()
        .success()
        .stdout_contains("On \"\"");
    // `orc explore` says it in its own terms.
    Test::new()
        .arg("explore")
        .run()
        .invalid()
        .stderr_contains("stdin is empty: no topic to explore");
}

#[test]
fn an_argument_wins_over_piped_stdin_and_says_so() {
    let out = Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "from the argument"])
        .stdin("from stdin\n")
        .run()
        .success()
        .stdout_contains("On \"from the argument\"");
    assert_eq!(
        count(
            &out.stderr,
            "note: the input is the argument; piped stdin is not read"
        ),
        1,
        "{}",
        out.stderr
    );
    // No stdin piped (here /dev/null): nothing to say.
    let out = Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "from the argument"])
        .run()
        .success();
    assert!(!out.stderr.contains("note:"), "{}", out.stderr);
}

#[test]
fn inputs_are_capped_and_devices_refused() {
    let big = "x".repeat(2000);
    Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "--max-input-bytes", "1KiB"])
        .stdin(big.clone())
        .run()
        .invalid()
        .stderr_contains("error: stdin is larger than 1 KiB, the limit for inputs")
        .stderr_contains("--max-input-bytes (or ORC_MAX_INPUT_BYTES)");
    Test::new()
        .ensemble(NO_TASK)
        .file("big.txt", &big)
        .args(["invoke", ENSEMBLE, "--input-file", "big.txt"])
        .env("ORC_MAX_INPUT_BYTES", "1000")
        .run()
        .invalid()
        .stderr_contains("error: `big.txt` is larger than 1000 bytes, the limit for inputs");
    // Under the cap, the same file is the input.
    Test::new()
        .ensemble(NO_TASK)
        .file("big.txt", &big)
        .args(["invoke", ENSEMBLE, "--input-file", "big.txt", "-q"])
        .run()
        .success();
    Test::new()
        .ensemble(NO_TASK)
        .args([
            "invoke",
            ENSEMBLE,
            "--each-line",
            "--max-input-bytes",
            "100",
        ])
        .stdin(format!("short\n{big}\n"))
        .run()
        .invalid()
        .stderr_contains("error: line 2 of stdin is longer than 100 bytes, the limit for inputs");
    Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "--max-input-bytes", "lots"])
        .run()
        .invalid()
        .stderr_contains("`lots` is not a size");

    #[cfg(unix)]
    {
        Test::new()
            .ensemble(NO_TASK)
            .args(["invoke", ENSEMBLE, "--input-file", "/dev/zero"])
            .run()
            .invalid()
            .stderr_contains(
                "error: `/dev/zero` is a character device, not a regular file or a pipe",
            );
        // `< /dev/zero`: refused at once, not read forever.
        let test = Test::new().ensemble(NO_TASK).args(["invoke", ENSEMBLE]);
        let mut command = test.command();
        command.stdin(std::fs::File::open("/dev/zero").unwrap());
        let (code, _, stderr) = wait_with_limit(command.spawn().unwrap(), Duration::from_secs(30));
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("error: stdin is a character device, not a file or a pipe"),
            "{stderr}"
        );
    }
}

/// `--input-file <(cmd)` and named pipes are inputs like files.
#[cfg(unix)]
#[test]
fn a_pipe_is_an_input_file() {
    let test = Test::new().ensemble(NO_TASK);
    let fifo = test.path().join("in.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the file.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(b"from a pipe\n").unwrap();
        })
    };
    test.args(["invoke", ENSEMBLE, "-q", "--input-file"])
        .arg(&fifo)
        .run()
        .success()
        .stdout_contains("On \"from a pipe\"");
    writer.join().unwrap();
}

#[test]
fn help_reads_well_at_80_columns() {
    let commands: &[&[&str]] = &[
        &[],
        &["invoke"],
        &["explore"],
        &["validate"],
        &["plan"],
        &["list"],
        &["profiles"],
        &["profiles", "check"],
        &["auth", "set"],
        &["schema"],
        &["test"],
        &["runs"],
        &["runs", "show"],
        &["resume"],
        &["mcp"],
        &["worker"],
        &["serve"],
        &["init"],
    ];
    let help = |command: &[&str], columns: &str| {
        Test::new()
            .args(command.iter().copied())
            .arg("--help")
            .env("COLUMNS", columns)
            .run()
            .success()
            .stdout
    };
    for command in commands {
        let narrow = help(command, "80");
        for line in narrow.lines() {
            assert!(
                line.chars().count() <= 80,
                "`orc {} --help` has a line of {} columns:\n{line}",
                command.join(" "),
                line.chars().count()
            );
        }
        // The blocks after the options (examples, exit codes, notes) are laid out by
        // hand: at 80 columns clap must not rewrap them into unindented pieces.
        let after = |text: &str| {
            text.find("\nExamples:")
                .map(|i| text[i..].to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            after(&narrow),
            after(&help(command, "200")),
            "`orc {} --help` rewraps its examples at 80 columns",
            command.join(" ")
        );
        if let Some(i) = narrow.find("\nExamples:\n") {
            for line in narrow[i + 11..].lines().take_while(|l| !l.is_empty()) {
                assert!(line.starts_with("  "), "an unindented example line: {line}");
            }
        }
    }
}

#[test]
fn init_writes_no_typo() {
    let out = Test::new().arg("init").run().success();
    let schema =
        std::fs::read_to_string(out.test.path().join(".orc/schemas/profiles.schema.json")).unwrap();
    assert!(schema.contains("A file of model profiles"), "{schema}");
    assert!(!schema.contains("A files of"));
    let list = Test::new()
        .file(
            ".orc/ensembles/a.yaml",
            "name: a\ndescription: the a\nagents:\n  - name: x\n",
        )
        .arg("list")
        .run()
        .success();
    assert!(
        list.stdout
            .starts_with("NAME  SCOPE    DESCRIPTION  PATH\na     project  the a        "),
        "{}",
        list.stdout
    );
}

/// `eprintln!` panicked (exit 101) on a closed stderr and took the result with it.
#[cfg(unix)]
#[test]
fn a_closed_stderr_never_stops_a_run() {
    // A pipe nobody reads: every write to it fails with EPIPE.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe() writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here alone.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    let test = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi"]);
    let mut command = test.command();
    command.stderr(Stdio::from(write));
    let mut child = command.spawn().unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("== a ==\n"), "{stdout}");

    // `2>&-`: stderr closed outright. A usage error too exits with its own code.
    let sh = |args: &str| {
        let test = Test::new().ensemble(BROKEN);
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("\"$ORC\" --color never {args} 2>&-"))
            .env("ORC", crate::support::ORC)
            .env("HOME", test.path().join("home"))
            .current_dir(test.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, stdout) = sh(&format!("invoke {ENSEMBLE} hi"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.starts_with("== a ==\n"), "{stdout}");
    let (code, _) = sh("invoke missing.yaml hi");
    assert_eq!(code, Some(2));
}

#[test]
fn a_run_that_did_not_succeed_says_how_to_find_and_resume_it() {
    let store = tempfile::tempdir().unwrap();
    let db = store.path().join("orc.db");
    let out = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi"])
        .env("ORC_STORE", &db)
        .run()
        .failure();
    let summary = out
        .stderr
        .lines()
        .find(|l| l.starts_with("orc: finished with failures"))
        .unwrap_or_else(|| panic!("no summary:\n{}", out.stderr));
    let id = summary.rsplit(" · run ").next().unwrap();
    assert!(id.starts_with("run-"), "{summary}");
    assert_eq!(count(&out.stderr, "help: "), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "  help: `orc runs show {id}` shows what happened; `orc resume {id}` continues it"
        )),
        "{}",
        out.stderr
    );
    // The run is there under that id (a prefix is enough) and listed with it.
    let shown = Test::new()
        .args(["runs", "show", &id[..id.len() - 2]])
        .env("ORC_STORE", &db)
        .run()
        .success();
    assert!(shown.stdout.contains(id), "{}", shown.stdout);

    // Not recorded (--no-store): nothing to resume, so no hint.
    let out = Test::new()
        .ensemble(BROKEN)
        .args(["invoke", ENSEMBLE, "hi", "--no-store"])
        .run()
        .failure();
    assert!(!out.stderr.contains("help:"), "{}", out.stderr);
    // A run that succeeded needs none.
    let out = Test::new()
        .ensemble(NO_TASK)
        .args(["invoke", ENSEMBLE, "hi"])
        .run()
        .success();
    assert!(!out.stderr.contains("help:"), "{}", out.stderr);
}

/// More agents than the terminal has rows: the totals line stays, with the rest counted.
/// Needs a terminal, so it runs under util-linux `script` where that exists.
#[cfg(target_os = "linux")]
#[test]
fn the_progress_view_fits_a_short_terminal() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: no util-linux `script` to run orc in a terminal");
        return;
    }
    let mut yaml = String::from(
        "name: wide\nmodel_profiles:\n  slow: {provider: mock, latency_ms: 2000}\nagents:\n",
    );
    for i in 0..30 {
        yaml.push_str(&format!(
            "  - name: agent-{i:02}\n    model_profile: slow\n"
        ));
    }
    let test = Test::new().ensemble(&yaml);
    let out = std::process::Command::new("script")
        .arg("-q")
        .arg("-e")
        .arg("-c")
        .arg(format!(
            "stty rows 8 cols 100; \"$ORC\" --color never invoke {ENSEMBLE} hi > /dev/null"
        ))
        .arg("/dev/null")
        .env("ORC", crate::support::ORC)
        .env("HOME", test.path().join("home"))
        .env("ORC_STORE", "off")
        .current_dir(test.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("/30 agents"), "{screen}");
    // 8 rows: 6 agent lines, the totals line counting the other 24.
    assert!(screen.contains("· +24 more running ·"), "{screen}");
}
