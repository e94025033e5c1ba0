//! The MCP server: `tools/list` gives one tool per served ensemble plus the two runs tools;
//! `tools/call` on an ensemble runs it through the engine (recorded in the store, like
//! `orc invoke`), sends progress notifications from the run's events while it goes when
//! the client asked for them, cancels the run when the client cancels the request, and
//! answers with the final output as text and the run's `--output json` document as
//! structured content.

use std::collections::HashSet;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use super::catalog::{Catalog, Entry};
use super::runs;
use crate::exec::{
    AgentStatus, Engine, EventKind, RunOptions, RunOutcome, RunSource, RunStatus, Subscription,
};
use crate::plan::Plan;
use crate::store::Store;

/// What every request shares. Cheap to clone.
#[derive(Clone)]
pub struct OrcServer {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    store: Option<Arc<Store>>,
    catalog: Catalog,
}

impl OrcServer {
    /// `store` is the engine's store, read by the runs tools (`None`: runs are not recorded).
    pub fn new(engine: Engine, store: Option<Arc<Store>>, catalog: Catalog) -> OrcServer {
        OrcServer {
            inner: Arc::new(Inner {
                engine,
                store,
                catalog,
            }),
        }
    }

    /// The served ensembles, read again (on a blocking thread: it reads files).
    async fn entries(&self) -> Result<Vec<Entry>, McpError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.catalog.scan().0)
            .await
            .map_err(|e| McpError::internal_error(format!("cannot read the ensembles: {e}"), None))
    }

    async fn run_ensemble(
        &self,
        entry: Entry,
        args: &JsonObject,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let request = match RunRequest::parse(args, entry.default_task.as_deref()) {
            Ok(r) => r,
            Err(message) => return Ok(tool_error(message)),
        };
        let inner = Arc::clone(&self.inner);
        let path = entry.path.clone();
        let loaded = tokio::task::spawn_blocking(move || inner.catalog.load(&path))
            .await
            .map_err(|e| McpError::internal_error(format!("cannot load: {e}"), None))?;
        let ensemble = match loaded {
            Ok(e) => e,
            Err(message) => {
                return Ok(tool_error(format!(
                    "ensemble `{}` does not load: {message}",
                    entry.name
                )));
            }
        };
        let source = RunSource {
            path: std::fs::canonicalize(&ensemble.source.path).ok(),
            text: ensemble.source.text.to_string(),
        };
        let plan = Arc::new(Plan::new(ensemble));
        let options = RunOptions {
            run_id: None,
            seed: request.seed,
            // From the client: a negative, infinite or absurd timeout is ignored, not a panic.
            timeout: request
                .timeout
                .filter(|t| *t > 0.0)
                .and_then(|t| std::time::Duration::try_from_secs_f64(t.min(604_800.0)).ok()),
            stream: false,
            source: Some(source),
            options: json!({"seed": request.seed, "timeout": request.timeout, "via": "mcp"}),
            resume: None,
        };
        let pending = match self
            .inner
            .engine
            .prepare(Arc::clone(&plan), request.input, options)
        {
            Ok(p) => p,
            Err(e) => return Ok(tool_error(e.to_string())),
        };
        let progress = context.meta.get_progress_token().map(|token| {
            tokio::spawn(forward_progress(
                pending.subscribe(),
                context.peer.clone(),
                token,
                plan.len(),
            ))
        });
        let handle = pending.start();
        let outcome = tokio::select! {
            outcome = handle.wait() => outcome,
            () = context.ct.cancelled() => {
                handle.cancel(RunStatus::Cancelled);
                handle.wait().await
            }
        };
        // Every notification goes out before the result.
        if let Some(progress) = progress {
            let _ = progress.await;
        }
        Ok(result_of(&outcome, &plan))
    }
}

/// The arguments of an ensemble tool.
struct RunRequest {
    input: String,
    seed: u64,
    timeout: Option<f64>,
}

impl RunRequest {
    fn parse(args: &JsonObject, default_task: Option<&str>) -> Result<RunRequest, String> {
        if let Some(key) = args.keys().find(|k| *k != "input" && *k != "options") {
            return Err(format!(
                "unknown argument `{key}`; the arguments are `input` and `options`"
            ));
        }
        let input = match args.get("input") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("`input` must be a string, found `{other}`")),
            None => match default_task {
                Some(task) => task.to_string(),
                None => return Err("`input` is required: the text the ensemble works on".into()),
            },
        };
        let mut request = RunRequest {
            input,
            seed: 0,
            timeout: None,
        };
        let options = match args.get("options") {
            None | Some(Value::Null) => return Ok(request),
            Some(Value::Object(o)) => o,
            Some(other) => return Err(format!("`options` must be an object, found `{other}`")),
        };
        for (key, value) in options {
            match key.as_str() {
                "seed" => {
                    request.seed = value.as_u64().ok_or_else(|| {
                        format!("`options.seed` must be a whole number 0 or more, found `{value}`")
                    })?;
                }
                "timeout" => {
                    let seconds = value
                        .as_f64()
                        .filter(|s| *s > 0.0 && s.is_finite())
                        .ok_or_else(|| {
                            format!("`options.timeout` must be seconds above 0, found `{value}`")
                        })?;
                    request.timeout = Some(seconds);
                }
                other => {
                    return Err(format!(
                        "unknown option `{other}`; the options are `seed` and `timeout`"
                    ));
                }
            }
        }
        Ok(request)
    }
}

/// The tool of an ensemble: its name, its description, `input` and `options`.
fn tool_of(entry: &Entry) -> Tool {
    let mut description = entry.description.as_deref().map_or_else(
        || format!("Runs the orc ensemble `{}`.", entry.name),
        |d| d.trim().to_string(),
    );
    description.push_str(&format!(
        "\n\nAgents: {}. Returns the final output as text and the whole run (status, every agent's output, tokens, cost) as structured content.",
        entry.agents.join(", ")
    ));
    let input_doc = match &entry.default_task {
        Some(task) => format!(
            "The text the ensemble works on (default: {})",
            crate::providers::http::excerpt(task)
        ),
        None => "The text the ensemble works on.".to_string(),
    };
    let mut schema = json!({
        "type": "object",
        "properties": {
            "input": {"type": "string", "description": input_doc},
            "options": {
                "type": "object",
                "description": "Run settings.",
                "properties": {
                    "seed": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Seed for the mock provider and retry jitter; the same seed gives the same run (default 0).",
                    },
                    "timeout": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "Stop the run after this many seconds; completed results are kept.",
                    },
                },
                "additionalProperties": false,
            },
        },
        "additionalProperties": false,
    });
    if entry.default_task.is_none() {
        schema["required"] = json!(["input"]);
    }
    Tool::new(entry.name.clone(), description, object(schema))
}

pub(super) fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("schemas are written as objects"),
    }
}

pub(super) fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// Progress from the run's events: one step when each of its agents starts and one when it
/// finishes, out of two per agent (a skipped agent only finishes).
async fn forward_progress(
    mut events: Subscription,
    peer: Peer<RoleServer>,
    token: ProgressToken,
    agents: usize,
) {
    let total = (2 * agents) as f64;
    let mut step = 0u32;
    let mut started: HashSet<String> = HashSet::new();
    let mut finished = 0usize;
    while let Some(event) = events.recv().await {
        if !event.path.is_empty() {
            continue;
        }
        let message = match &event.kind {
            EventKind::AgentStarted { agent, .. } if started.insert(agent.clone()) => {
                format!("`{agent}` started")
            }
            EventKind::AgentFinished { agent, outcome } => {
                finished += 1;
                format!(
                    "`{agent}` {} ({finished} of {agents} done)",
                    outcome.status.as_str()
                )
            }
            EventKind::RunFinished { .. } => break,
            _ => continue,
        };
        step += 1;
        let param = ProgressNotificationParam::new(token.clone(), f64::from(step))
            .with_total(total)
            .with_message(message);
        if peer.notify_progress(param).await.is_err() {
            // The client is gone; the run goes on and is recorded.
            break;
        }
    }
}

/// The answer to an ensemble tool: the final output as text (with what failed), the run
/// document as structured content, an error when the run did not succeed.
fn result_of(outcome: &RunOutcome, plan: &Plan) -> CallToolResult {
    let finals: Vec<usize> = plan
        .sinks
        .iter()
        .copied()
        .filter(|&i| outcome.agents[i].status == AgentStatus::Succeeded)
        .collect();
    let mut text = match finals.as_slice() {
        [only] => outcome.agents[*only].output.clone().unwrap_or_default(),
        many => many
            .iter()
            .map(|&i| {
                let a = &outcome.agents[i];
                format!("== {} ==\n{}", a.name, a.output.as_deref().unwrap_or(""))
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    };
    if outcome.status != RunStatus::Succeeded {
        let mut lines = vec![format!(
            "run {} {}",
            outcome.run_id,
            outcome.status.as_str()
        )];
        for a in &outcome.agents {
            if matches!(a.status, AgentStatus::Failed | AgentStatus::Cancelled)
                || (a.status == AgentStatus::Skipped && !a.neutral_skip)
            {
                lines.push(format!(
                    "agent `{}` {}: {}",
                    a.name,
                    a.status.as_str(),
                    a.error.as_deref().unwrap_or("no output")
                ));
            }
        }
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&lines.join("\n"));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content =
        Some(serde_json::to_value(outcome).expect("run outcomes serialize"));
    result.is_error = Some(outcome.status != RunStatus::Succeeded);
    result
}

impl ServerHandler for OrcServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("orc", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool but two runs an orc ensemble (a graph of LLM agents) on `input` and returns its final output, with the whole run as structured content. `orc_runs` lists recorded runs and `orc_run` fetches one.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools: Vec<Tool> = self.entries().await?.iter().map(tool_of).collect();
        tools.extend(runs::tools());
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        let name = request.name.as_ref();
        if super::is_reserved(name) {
            let store = self.inner.store.clone();
            let name = name.to_string();
            return tokio::task::spawn_blocking(move || runs::call(&name, store.as_deref(), &args))
                .await
                .map(CallToolResponse::from)
                .map_err(|e| McpError::internal_error(format!("cannot read runs: {e}"), None));
        }
        let entries = self.entries().await?;
        let Some(entry) = entries.into_iter().find(|e| e.name == name) else {
            return Err(McpError::invalid_params(
                format!("no tool `{name}`; `tools/list` shows the ensembles served"),
                None,
            ));
        };
        self.run_ensemble(entry, &args, context)
            .await
            .map(CallToolResponse::from)
    }
}

/// Serves `server` over stdin and stdout until the client closes them or a signal asks
/// orc to stop; then running runs are cancelled (`interrupted`, kept in the store).
pub async fn serve_stdio(server: OrcServer) -> Result<(), String> {
    let engine = server.inner.engine.clone();
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP session did not start: {e}"))?;
    tokio::select! {
        quit = service.waiting() => {
            quit.map_err(|e| format!("the MCP session failed: {e}"))?;
        }
        () = shutdown_signal() => {}
    }
    engine.cancel_all(RunStatus::Interrupted);
    engine.flush().await;
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(value: Value) -> JsonObject {
        match value {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn run_arguments_are_checked() {
        let r = RunRequest::parse(
            &args(json!({"input": "hi", "options": {"seed": 7, "timeout": 2.5}})),
            None,
        )
        .unwrap();
        assert_eq!((r.input.as_str(), r.seed, r.timeout), ("hi", 7, Some(2.5)));
        let r = RunRequest::parse(&args(json!({})), Some("the task")).unwrap();
        assert_eq!(r.input, "the task");
        for (bad, expected) in [
            (json!({}), "`input` is required"),
            (json!({"input": 3}), "`input` must be a string"),
            (json!({"input": "x", "seed": 1}), "unknown argument `seed`"),
            (
                json!({"input": "x", "options": {"seed": -1}}),
                "`options.seed`",
            ),
            (
                json!({"input": "x", "options": {"timeout": 0}}),
                "`options.timeout`",
            ),
            (
                json!({"input": "x", "options": {"stream": true}}),
                "unknown option `stream`",
            ),
        ] {
            let err = RunRequest::parse(&args(bad), None).err().unwrap();
            assert!(err.contains(expected), "{err}");
        }
    }
}
