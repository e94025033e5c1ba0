//! The two tools over the run store: `orc_runs` lists recorded runs (newest first,
//! filtered by ensemble and status) and `orc_run` fetches one by id or unique prefix: its
//! record and the run rebuilt from its events, the same document `orc runs show --output
//! json` prints. Blocking (SQLite reads): called on a blocking thread.

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::server::{object, tool_error};
use crate::exec::RunStatus;
use crate::store::{ListFilter, Store};

pub(super) const LIST: &str = "orc_runs";
pub(super) const GET: &str = "orc_run";

/// Most runs `orc_runs` returns at once.
const MAX_LIMIT: u64 = 200;

pub(super) fn tools() -> Vec<Tool> {
    let statuses = [
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "budget_exceeded",
        "interrupted",
        "cancelled",
    ];
    let read_only = ToolAnnotations::new().read_only(true);
    vec![
        Tool::new(
            LIST,
            "Lists the runs orc recorded (from any front end: this server, `orc invoke`, `orc serve`), newest first: id, ensemble, status, times, tokens and cost.",
            object(json!({
                "type": "object",
                "properties": {
                    "ensemble": {"type": "string", "description": "Only runs of this ensemble."},
                    "status": {"type": "string", "enum": statuses, "description": "Only runs with this status."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": "At most this many runs (default 20)."},
                },
                "additionalProperties": false,
            })),
        )
        .with_annotations(read_only.clone()),
        Tool::new(
            GET,
            "Fetches one recorded run by its id (or a unique prefix of it): status, input, every agent's status, output, tokens, cost and error.",
            object(json!({
                "type": "object",
                "properties": {
                    "run": {"type": "string", "description": "The run's id, or a unique prefix of it."},
                },
                "required": ["run"],
                "additionalProperties": false,
            })),
        )
        .with_annotations(read_only),
    ]
}

pub(super) fn call(name: &str, store: Option<&Store>, args: &JsonObject) -> CallToolResult {
    let Some(store) = store else {
        return tool_error(
            "the run store is off (`orc mcp --no-store` or `ORC_STORE=off`): no run is recorded"
                .into(),
        );
    };
    let result = if name == LIST {
        list(store, args)
    } else {
        get(store, args)
    };
    result.unwrap_or_else(tool_error)
}

fn list(store: &Store, args: &JsonObject) -> Result<CallToolResult, String> {
    if let Some(key) = args
        .keys()
        .find(|k| !["ensemble", "status", "limit"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown argument `{key}`; the arguments are `ensemble`, `status` and `limit`"
        ));
    }
    let text_arg = |key: &str| -> Result<Option<String>, String> {
        match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("`{key}` must be a string, found `{other}`")),
        }
    };
    let ensemble = text_arg("ensemble")?;
    let status = text_arg("status")?;
    if let Some(s) = &status {
        if RunStatus::parse(s).is_none() && s != "running" {
            return Err(format!(
                "unknown status `{s}`; one of running, succeeded, failed, timed_out, budget_exceeded, interrupted, cancelled"
            ));
        }
    }
    let limit = match args.get("limit") {
        None | Some(Value::Null) => 20,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| format!("`limit` must be a whole number from 1 to {MAX_LIMIT}"))?,
    };
    let rows = store
        .list(&ListFilter {
            ensemble,
            status,
            limit: usize::try_from(limit).ok(),
            offset: 0,
        })
        .map_err(|e| e.to_string())?;
    let text = if rows.is_empty() {
        "no runs recorded".to_string()
    } else {
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {}  {}  {}  {} tokens  {}",
                    r.id,
                    r.ensemble,
                    r.status,
                    r.started_at,
                    r.tokens,
                    r.cost_usd
                        .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json!({ "runs": rows }));
    Ok(result)
}

fn get(store: &Store, args: &JsonObject) -> Result<CallToolResult, String> {
    if let Some(key) = args.keys().find(|k| *k != "run") {
        return Err(format!("unknown argument `{key}`; the argument is `run`"));
    }
    let Some(Value::String(prefix)) = args.get("run") else {
        return Err("`run` is required: a run's id or a unique prefix of it".into());
    };
    let id = store.resolve(prefix).map_err(|e| e.to_string())?;
    let row = store.run(&id).map_err(|e| e.to_string())?;
    let state = store.state(&id).map_err(|e| e.to_string())?;
    let status = RunStatus::parse(&row.status).unwrap_or(RunStatus::Interrupted);
    let outcome = state.to_outcome(status);
    let mut doc = serde_json::to_value(&outcome).expect("run outcomes serialize");
    if let Some(map) = doc.as_object_mut() {
        // A run that did not finish has no document of its own: the store's word counts.
        map.insert("status".into(), json!(row.status));
        map.insert("started_at".into(), json!(row.started_at));
        map.insert("finished_at".into(), json!(row.finished_at));
        map.insert("ensemble_path".into(), json!(row.ensemble_path));
    }
    let mut lines = vec![format!(
        "run {} of `{}`: {} (started {}, {} tokens, {})",
        row.id,
        row.ensemble,
        row.status,
        row.started_at,
        row.tokens,
        row.cost_usd
            .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"))
    )];
    for a in &outcome.agents {
        lines.push(format!(
            "  {}: {}{}",
            a.name,
            a.status.as_str(),
            a.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(lines.join("\n"))]);
    result.structured_content = Some(doc);
    Ok(result)
}
