//! Provider responses are capped (#13 item 3): a body past the profile's
//! `max_response_bytes` (default 32 MiB), plain or streamed, is a clear error that is not
//! retried, and it is never read whole: a gigabyte response leaves orc within a memory
//! limit far below it (`prlimit --as`).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::fake::{Fake, Reply};
use super::{RETRYING, invoke, one_agent, run_json, x};
use crate::support::{Test, wait_with_limit};

const KEY: &str = "sk-test-cap";

fn openai(fake: &Fake, extra: &str) -> Test {
    let profile = format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test{extra}}}",
        fake.url()
    );
    invoke(&one_agent(&profile, RETRYING)).env("OPENAI_API_KEY", KEY)
}

/// A plain answer whose text goes on and on: `total` bytes in all, never ending.
fn endless_plain(total: u64) -> Reply {
    Reply::raw(
        200,
        "application/json",
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":""#,
    )
    .then_repeat("All work and no play. ", total)
}

/// A stream of well-formed events that never ends: `total` bytes in all.
fn endless_stream(total: u64) -> Reply {
    let piece = json!({"choices": [{"index": 0, "delta": {"content": "x".repeat(8000)}}]});
    Reply::raw(200, "text/event-stream", "").then_repeat(&format!("data: {piece}\n\n"), total)
}

#[track_caller]
fn assert_too_large(doc: &serde_json::Value, fake: &Fake) {
    let x = x(doc);
    assert_eq!(x["status"], "failed", "{x:#}");
    assert_eq!(x["error_kind"], "response_too_large", "{x:#}");
    assert!(
        x["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_response_bytes")),
        "{x:#}"
    );
    assert_eq!(x["attempts"], 1, "never retried: {x:#}");
    assert_eq!(fake.count(), 1);
}

#[test]
fn a_response_past_max_response_bytes_fails_and_is_not_retried() {
    for (reply, streamed) in [
        (endless_plain(100_000), false),
        (endless_stream(100_000), true),
    ] {
        let fake = Fake::always(reply);
        let test = openai(&fake, ", max_response_bytes: 20000");
        let test = if streamed { test.arg("--stream") } else { test };
        let (doc, _) = run_json(test, 1);
        assert_too_large(&doc, &fake);
        assert!(
            x(&doc)["error"].as_str().unwrap().contains("20000 bytes"),
            "{doc:#}"
        );
    }
}

#[test]
fn an_answer_within_max_response_bytes_is_read() {
    let fake = Fake::always(Reply::json(super::openai::answer("small", 1, 1)));
    let (doc, _) = run_json(openai(&fake, ", max_response_bytes: 2048"), 0);
    assert_eq!(x(&doc)["output"], "small");
}

/// Address space orc may use in the test below: half the 1 GiB response. It is address
/// space, not memory: mimalloc reserves 32 MiB segments per thread that are mostly never
/// touched (peak RSS for a 1 GiB stream cut at the default 32 MiB cap is about 100 MiB).
const MEMORY_LIMIT: u64 = 512 * 1024 * 1024;

#[test]
fn a_gigabyte_response_stays_within_a_memory_limit() {
    if Command::new("prlimit")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: `prlimit` (util-linux) is not installed, so memory cannot be limited");
        return;
    }
    for (reply, streamed) in [
        (endless_plain(1 << 30), false),
        (endless_stream(1 << 30), true),
    ] {
        let fake = Fake::always(reply);
        let test = openai(&fake, "").args(["--output", "json"]);
        let test = if streamed { test.arg("--stream") } else { test };
        // The same command, run under `prlimit --as`. Few threads and malloc arenas, so the
        // limit measures what orc allocates, not address space reserved per core.
        let inner = test.command();
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--as={MEMORY_LIMIT}"))
            .arg("--")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in inner.get_envs() {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        command
            .env("TOKIO_WORKER_THREADS", "2")
            .env("MALLOC_ARENA_MAX", "2")
            // mimalloc (our allocator) otherwise reserves address space 1 GiB at a time.
            .env("MIMALLOC_ARENA_RESERVE", "16MiB");
        if let Some(dir) = inner.get_current_dir() {
            command.current_dir(dir);
        }
        let child = command.spawn().expect("spawn prlimit");
        let (code, stdout, stderr) = wait_with_limit(child, Duration::from_secs(120));
        assert_eq!(
            code,
            Some(1),
            "orc must fail the agent, not run out of memory ({} streamed: {streamed})\n--- stderr ---\n{stderr}",
            "1 GiB response"
        );
        let doc: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout}\n{stderr}"));
        assert_too_large(&doc, &fake);
    }
}
