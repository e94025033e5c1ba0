//! `script` agents: run a program (an argv list, never a shell) with the agent's input,
//! parameters and dependency outputs as JSON on stdin; its stdout is the output. A non-zero
//! exit, a timeout, or a JSON answer with `"success": false` or an `error` is a failure, with
//! stderr in the message. The program gets its own process group, which is killed on timeout
//! and on cancellation, so nothing it started outlives the run.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::Script;

/// How a script run ended badly.
#[derive(Debug)]
pub enum ScriptError {
    Failed(String),
    Cancelled,
}

/// Output kept from stderr in error messages.
const STDERR_EXCERPT: usize = 2000;

pub async fn run(
    script: &Script,
    stdin_json: &serde_json::Value,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<String, ScriptError> {
    let (program, args) = script
        .argv
        .split_first()
        .ok_or_else(|| ScriptError::Failed("empty `run` list".into()))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &script.cwd {
        command.current_dir(dir);
    }
    // llm-orc scripts read these too.
    let text = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    // Linux refuses a single environment variable over 128 KiB; large inputs travel on
    // stdin only.
    const ENV_LIMIT: usize = 64 * 1024;
    for (name, value) in [
        ("AGENT_PARAMETERS", text(stdin_json.get("parameters"))),
        ("INPUT_DATA", stdin_json.to_string()),
        ("INPUT_TEXT", text(stdin_json.get("input_data"))),
    ] {
        if value.len() <= ENV_LIMIT {
            command.env(name, value);
        }
    }
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command
        .spawn()
        .map_err(|e| ScriptError::Failed(format!("cannot start `{program}`: {e}")))?;
    let pid = child.id();
    let input = serde_json::to_vec(stdin_json).expect("JSON values serialize");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let io = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        // Feed stdin while draining stdout and stderr: a script may write before it reads,
        // and with full pipes on both sides neither could go on.
        let feed = async {
            // A script that ignores its stdin may close it early; that is not an error.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let _ = tokio::join!(
            feed,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err)
        );
        let status = child.wait().await;
        (status, out, err)
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, io) => r.ok(),
        () = cancel.cancelled() => {
            kill_group(pid);
            return Err(ScriptError::Cancelled);
        }
    };
    let Some((status, out, err)) = outcome else {
        kill_group(pid);
        return Err(ScriptError::Failed(format!(
            "`{program}` timed out after {}s and was killed",
            timeout.as_secs_f64()
        )));
    };
    // Whatever the script left running in its group goes with it.
    kill_group(pid);
    let stderr_text = excerpt(&String::from_utf8_lossy(&err));
    let status =
        status.map_err(|e| ScriptError::Failed(format!("waiting for `{program}`: {e}")))?;
    let stdout_text = String::from_utf8_lossy(&out).trim().to_string();
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("code {c}"));
        return Err(ScriptError::Failed(format!(
            "`{program}` exited with {code}{}",
            if stderr_text.is_empty() {
                String::new()
            } else {
                format!(": {stderr_text}")
            }
        )));
    }
    if let Ok(serde_json::Value::Object(map)) =
        serde_json::from_str::<serde_json::Value>(&stdout_text)
    {
        // llm-orc's contract: a falsy `success` or a truthy `error` is a failure.
        let falsy = |v: &serde_json::Value| match v {
            serde_json::Value::Null => true,
            serde_json::Value::Bool(b) => !b,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
        };
        let failed = map.get("success").is_some_and(falsy);
        let error = map.get("error").filter(|e| !falsy(e));
        if failed || error.is_some() {
            let message = error
                .map(|e| e.as_str().map_or_else(|| e.to_string(), String::from))
                .unwrap_or_else(|| "the script reported failure".into());
            return Err(ScriptError::Failed(if stderr_text.is_empty() {
                message
            } else {
                format!("{message} (stderr: {stderr_text})")
            }));
        }
    }
    Ok(stdout_text)
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    if text.len() <= STDERR_EXCERPT {
        return text.to_string();
    }
    let mut end = STDERR_EXCERPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: killpg only sends a signal; the group was created for this child
        // (`process_group(0)`), so no unrelated process is hit.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}
