//! API keys never reach stdout or stderr: not in results, not in errors, not in the most
//! verbose logs (`ORC_LOG=trace`), whatever the server answers.

use serde_json::json;

use super::fake::{Fake, Reply};
use super::{invoke, one_agent};
use crate::support::{Output, Test};

const SECRET: &str = "sk-test-SECRET-123";

#[track_caller]
fn assert_no_secret(out: &Output) {
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(SECRET) && !text.contains("SECRET-123"),
            "the key appears on {name}:\n{text}"
        );
    }
}

/// Runs with the key in `var`, trace logs on, and every output format.
#[track_caller]
fn check_every_format(fake: &Fake, profile: &str, var: &str, code: i32) {
    let yaml = one_agent(profile, &["retries: 1", "retry_backoff_ms: 10"]);
    for format in [
        &["--output", "json"][..],
        &["--output", "jsonl"],
        &["--output", "text"],
        &["--stream"],
    ] {
        let before = fake.count();
        let out = invoke(&yaml)
            .env(var, SECRET)
            .env("ORC_LOG", "trace")
            .args(format)
            .run()
            .code(code);
        assert_no_secret(&out);
        assert!(fake.count() > before, "{format:?}: the fake was called");
    }
    // The key did go to the server.
    let sent = fake.requests()[0]
        .headers
        .values()
        .any(|v| v.contains(SECRET));
    assert!(sent, "the key was sent: {:#?}", fake.requests()[0].headers);
    assert!(
        fake.requests()
            .iter()
            .all(|r| !r.raw.contains(SECRET) && !r.path.contains(SECRET)),
        "the key goes in a header only, never in the URL or the body"
    );
}

fn openai_profile(fake: &Fake) -> String {
    format!(
        "{{provider: openai, base_url: \"{}/v1\", model: gpt-test}}",
        fake.url()
    )
}

#[test]
fn openai_key_stays_out_of_output_on_success() {
    let fake = Fake::start(vec![
        Reply::json(super::openai::answer("fine", 1, 1)),
        super::openai::stream(&["fine"], 1, 1),
        Reply::json(super::openai::answer("fine", 1, 1)),
        super::openai::stream(&["fine"], 1, 1),
    ]);
    check_every_format(&fake, &openai_profile(&fake), "OPENAI_API_KEY", 0);
}

#[test]
fn openai_key_stays_out_of_output_on_401() {
    let fake = Fake::always(super::openai::error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-tes*********-123.",
    ));
    check_every_format(&fake, &openai_profile(&fake), "OPENAI_API_KEY", 1);
}

#[test]
fn openai_key_stays_out_of_output_on_500() {
    let fake = Fake::always(super::openai::error(
        500,
        "server_error",
        "server_error",
        "The server had an error while processing your request.",
    ));
    check_every_format(&fake, &openai_profile(&fake), "OPENAI_API_KEY", 1);
}

#[test]
fn anthropic_key_stays_out_of_output_on_failures() {
    for status in [401, 500] {
        let fake = Fake::always(Reply::status_json(
            status,
            json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
        ));
        let profile = format!(
            "{{provider: anthropic, base_url: \"{}\", model: claude-x}}",
            fake.url()
        );
        check_every_format(&fake, &profile, "ANTHROPIC_API_KEY", 1);
    }
}

#[test]
fn gemini_key_stays_out_of_output_on_failures() {
    for status in [401, 500] {
        let fake = Fake::always(Reply::status_json(
            status,
            json!({"error": {"code": status, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}),
        ));
        let profile = format!(
            "{{provider: gemini, base_url: \"{}/v1beta\", model: gemini-x}}",
            fake.url()
        );
        check_every_format(&fake, &profile, "GEMINI_API_KEY", 1);
    }
}

#[test]
fn key_from_api_key_env_stays_out_of_output() {
    let fake = Fake::always(super::openai::error(
        500,
        "server_error",
        "server_error",
        "boom",
    ));
    let profile = format!(
        "{{provider: openai-compatible, base_url: \"{}/v1\", model: local, api_key_env: MY_SECRET_KEY}}",
        fake.url()
    );
    check_every_format(&fake, &profile, "MY_SECRET_KEY", 1);
}

/// Some gateways quote the key they were given in their error message.
#[test]
fn key_echoed_by_the_server_is_redacted() {
    for status in [401, 500] {
        let fake = Fake::always(super::openai::error(
            status,
            "auth_error",
            "invalid_api_key",
            &format!(
                "Authentication Error, Invalid proxy server token passed. Received API Key = {SECRET}"
            ),
        ));
        check_every_format(&fake, &openai_profile(&fake), "OPENAI_API_KEY", 1);
    }
}

#[test]
fn profiles_listing_does_not_show_keys() {
    let out = Test::new()
        .env("OPENAI_API_KEY", SECRET)
        .env("ANTHROPIC_API_KEY", SECRET)
        .env("GEMINI_API_KEY", SECRET)
        .env("ORC_LOG", "trace")
        .arg("profiles")
        .run();
    assert_no_secret(&out);
}

#[test]
fn auth_list_names_sources_not_keys() {
    let out = Test::new()
        .env("OPENAI_API_KEY", SECRET)
        .env("ORC_LOG", "trace")
        .args(["auth", "list"])
        .run()
        .success()
        .stdout_contains("OPENAI_API_KEY");
    assert_no_secret(&out);
}

#[test]
fn stored_key_is_sent_and_stays_out_of_output() {
    let fake = Fake::always(super::openai::error(
        401,
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided.",
    ));
    let test = Test::new()
        .args(["auth", "set", "openai"])
        .stdin(format!("{SECRET}\n"));
    let dir = test.path().to_path_buf();
    let out = test.run().success();
    assert_no_secret(&out);
    // The same HOME and XDG_CONFIG_HOME: the key store written above.
    let out = Test::new()
        .ensemble(&one_agent(&openai_profile(&fake), &[]))
        .env("XDG_CONFIG_HOME", dir.join("xdg"))
        .env("ORC_LOG", "trace")
        .args([
            "invoke",
            crate::support::ENSEMBLE,
            "hello",
            "--output",
            "json",
        ])
        .run()
        .failure();
    assert_no_secret(&out);
    assert_eq!(
        fake.single().header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[test]
fn profiles_check_keeps_the_key_out_of_output() {
    let fake = Fake::always(super::openai::error(
        500,
        "server_error",
        "server_error",
        "boom",
    ));
    let profiles = format!(
        "model_profiles:\n  fk: {{provider: openai, base_url: \"{}/v1\", model: gpt-test}}\n",
        fake.url()
    );
    let out = Test::new()
        .file(".orc/profiles/fake.yaml", profiles)
        .env("OPENAI_API_KEY", SECRET)
        .env("ORC_LOG", "trace")
        .args(["profiles", "check", "fk"])
        .run();
    assert_no_secret(&out);
    assert!(
        fake.count() >= 1,
        "the check called the fake: {}",
        out.stderr
    );
}
