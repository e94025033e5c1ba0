//! `/api/runs` and `/api/explore`: start, list, show, cancel, stop and resume runs. Runs
//! start on the server's engine and are recorded in its store; everything about a run is
//! read back from the store (after a flush, so it is current), so runs of other `orc`
//! processes sharing the store show up too.

use std::collections::HashMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{self, SourceFile};
use crate::exec::{Phase, RunHandle, RunOptions, RunSource, RunStatus, StartError};
use crate::resume::{self, EnsembleOrigin, ResumeError};
use crate::server::catalog::{self, Loaded};
use crate::server::error::{AppError, AppResult};
use crate::server::{AppState, accepted};
use crate::store::{ListFilter, Store, StoreError};

/// Options of a run, as `POST /api/runs` takes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartOptions {
    /// Seed of the mock provider and retry jitter.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Seconds before the run is stopped (`timed_out`).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Ask providers to stream, so `agent_delta` events carry the text as it arrives.
    #[serde(default)]
    pub stream: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    ensemble: String,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    options: StartOptions,
}

fn unprocessable(code: &'static str, message: impl Into<String>) -> AppError {
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn timeout(seconds: Option<f64>) -> AppResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(AppError::bad_request(format!(
            "`timeout` must be a positive number of seconds, not {s}"
        ))
        .with_code("invalid_option")),
    }
}

pub(crate) fn start_error(e: &StartError) -> AppError {
    match e {
        StartError::Profile { .. } => unprocessable("unusable_profile", e.to_string()),
        StartError::AlreadyRunning(_) => AppError::conflict(e.to_string()),
        StartError::UnknownAgent(_) => unprocessable("unknown_agent", e.to_string()),
    }
}

fn check_runnable(loaded: &Loaded) -> AppResult<()> {
    if loaded.unsupported.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = loaded
        .unsupported
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    Err(unprocessable(
        "not_runnable",
        format!(
            "ensemble `{}` uses {} that this version of orc validates but cannot run yet",
            loaded.plan.ensemble.name,
            keys.join(", ")
        ),
    ))
}

/// Starts a loaded ensemble on the server's engine.
pub(crate) fn launch(
    state: &AppState,
    loaded: &Loaded,
    path: Option<&FsPath>,
    input: String,
    options: &StartOptions,
) -> AppResult<RunHandle> {
    check_runnable(loaded)?;
    let seed = options.seed.unwrap_or(0);
    let run_options = RunOptions {
        run_id: None,
        seed,
        timeout: timeout(options.timeout)?,
        stream: options.stream.unwrap_or(false),
        source: Some(RunSource {
            path: path.and_then(|p| std::fs::canonicalize(p).ok()),
            text: loaded.plan.ensemble.source.text.to_string(),
        }),
        options: json!({
            "seed": seed,
            "timeout": options.timeout,
            "via": "serve",
        }),
        resume: None,
    };
    let pending = state
        .engine
        .prepare(Arc::clone(&loaded.plan), input, run_options)
        .map_err(|e| start_error(&e))?;
    Ok(state.live.start(pending))
}

fn started(handle: &RunHandle) -> Response {
    let id = handle.id();
    accepted(
        format!("/api/runs/{id}"),
        json!({
            "id": id,
            "ensemble": handle.ensemble(),
            "url": format!("/api/runs/{id}"),
            "events": format!("/api/runs/{id}/events"),
            "dashboard": format!("/runs/{id}"),
        }),
    )
}

pub(crate) async fn start(
    State(state): State<AppState>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> AppResult<Response> {
    let Json(request) = body?;
    let s = state.clone();
    let name = request.ensemble.clone();
    let (entry, loaded) =
        tokio::task::spawn_blocking(move || super::ensembles::find(&s, &name)).await??;
    let input = match request
        .input
        .or_else(|| loaded.plan.ensemble.default_task.clone())
    {
        Some(input) => input,
        None => {
            return Err(AppError::bad_request(format!(
                "no `input` given, and ensemble `{}` has no `default_task`",
                entry.name
            ))
            .with_code("missing_input"));
        }
    };
    let handle = launch(&state, &loaded, Some(&entry.path), input, &request.options)?;
    Ok(started(&handle))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    ensemble: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(q) = query?;
    if let Some(s) = &q.status {
        if RunStatus::parse(s).is_none() && s != "running" {
            return Err(AppError::bad_request(format!(
                "unknown status `{s}`: one of running, succeeded, failed, timed_out, budget_exceeded, interrupted, cancelled"
            )));
        }
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let offset = q.offset.unwrap_or(0);
    let filter = ListFilter {
        ensemble: q.ensemble,
        status: q.status,
        // One more than asked, to know whether there is a next page.
        limit: Some(limit + 1),
        offset,
    };
    state.engine.flush().await;
    let store = Arc::clone(&state.store);
    let mut runs = tokio::task::spawn_blocking(move || store.list(&filter)).await??;
    let more = runs.len() > limit;
    runs.truncate(limit);
    let runs: Vec<Value> = runs
        .into_iter()
        .map(|r| {
            let live = state.engine.running(&r.id).is_some();
            let mut v = serde_json::to_value(&r).expect("rows serialize");
            v["live"] = json!(live);
            v
        })
        .collect();
    Ok(Json(json!({
        "runs": runs,
        "limit": limit,
        "offset": offset,
        "next_offset": more.then_some(offset + limit),
    })))
}

/// The full id of `run` (a unique prefix is enough).
pub(crate) async fn resolve(state: &AppState, run: String) -> AppResult<String> {
    if state.engine.running(&run).is_some() {
        // Just started: its row may still be on its way to the store.
        state.engine.flush().await;
        return Ok(run);
    }
    let store = Arc::clone(&state.store);
    Ok(tokio::task::spawn_blocking(move || store.resolve(&run)).await??)
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> AppResult<Json<Value>> {
    let id = resolve(&state, run).await?;
    state.engine.flush().await;
    let live = state.engine.running(&id).is_some();
    let store = Arc::clone(&state.store);
    let doc = tokio::task::spawn_blocking(move || document(&store, &id, live)).await??;
    Ok(Json(doc))
}

/// A run as `orc runs show --output json` prints it, plus what the dashboard draws: each
/// agent's phase, prompt and live numbers, and the graph of the ensemble.
fn document(store: &Store, id: &str, live: bool) -> Result<Value, StoreError> {
    let row = store.run(id)?;
    let state = store.state(id)?;
    let status = RunStatus::parse(&row.status).unwrap_or(RunStatus::Interrupted);
    let mut doc = serde_json::to_value(state.to_outcome(status)).expect("outcomes serialize");
    if let Some(agents) = doc["agents"].as_array_mut() {
        for (a, s) in agents.iter_mut().zip(&state.agents) {
            if s.outcome.is_none() && row.status == "running" {
                a["status"] = json!(match s.phase {
                    Phase::Waiting => "waiting",
                    Phase::Queued => "queued",
                    Phase::Running | Phase::Done => "running",
                });
            }
            a["system_prompt"] = json!(s.system_prompt);
            a["prompt"] = json!(s.prompt);
            if let Some(p) = &s.progress {
                a["progress"] = serde_json::to_value(p).expect("progress serializes");
            }
        }
    }
    let names: Vec<String> = state.agents.iter().map(|a| a.name.clone()).collect();
    doc["run_id"] = json!(row.id);
    doc["ensemble"] = json!(row.ensemble);
    doc["input"] = json!(row.input);
    doc["status"] = json!(row.status);
    doc["live"] = json!(live);
    doc["started_at"] = json!(row.started_at);
    doc["finished_at"] = json!(row.finished_at);
    doc["duration_ms"] = json!(row.duration_ms);
    doc["ensemble_path"] = json!(row.ensemble_path);
    doc["options"] = row.options.clone();
    doc["usage"] = json!({
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": row.cost_usd,
        "calls": row.calls,
        "calls_saved": row.calls_saved,
    });
    doc["last_seq"] = json!(state.last_seq);
    doc["graph"] = graph(row.ensemble_source.as_deref(), &names);
    doc["calls"] = serde_json::to_value(store.calls(id)?).expect("calls serialize");
    Ok(doc)
}

/// The run's agents with their dependencies and phases, read from the ensemble text
/// recorded with the run (so it needs neither the file nor its profiles any more). Agents
/// the text does not describe stand alone in the first phase.
fn graph(source: Option<&str>, names: &[String]) -> Value {
    let doc: Value = source
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(t).ok())
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(Value::Null);
    let mut specs: HashMap<String, (Vec<String>, &'static str)> = HashMap::new();
    for a in doc["agents"].as_array().into_iter().flatten() {
        let Some(name) = a["name"].as_str() else {
            continue;
        };
        let deps = a["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                d.as_str()
                    .or_else(|| d["agent_name"].as_str())
                    .map(String::from)
            })
            .collect();
        let kind = match a["type"].as_str() {
            Some("generate") => "generate",
            Some("dedup") => "dedup",
            Some("script") => "script",
            _ if a.get("ensemble").is_some() => "ensemble",
            _ if a.get("script").is_some() || a.get("run").is_some() => "script",
            _ => "llm",
        };
        specs.insert(name.to_string(), (deps, kind));
    }
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            specs.get(n).map_or_else(Vec::new, |(d, _)| {
                d.iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect()
            })
        })
        .collect();
    // Dependency depth; the recorded ensemble ran, so it has no cycle, but a damaged copy
    // must not loop: depth is capped at the number of agents.
    let mut depth = vec![0usize; names.len()];
    for _ in 0..names.len() {
        let mut changed = false;
        for i in 0..names.len() {
            let d = deps[i].iter().map(|&j| depth[j] + 1).max().unwrap_or(0);
            if d != depth[i] && d < names.len() {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let phases = depth.iter().max().map_or(0, |m| m + 1);
    let mut by_phase: Vec<Vec<&str>> = vec![Vec::new(); phases];
    for (i, n) in names.iter().enumerate() {
        by_phase[depth[i]].push(n);
    }
    let agents: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({
                "name": n,
                "kind": specs.get(n).map_or("llm", |s| s.1),
                "phase": depth[i] + 1,
                "depends_on": deps[i].iter().map(|&j| &names[j]).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "agents": agents, "phases": by_phase })
}

/// A run of this server that is still going, or why there is none (409, 404).
async fn running(state: &AppState, run: String, what: &str) -> AppResult<RunHandle> {
    let id = resolve(state, run).await?;
    if let Some(handle) = state.engine.running(&id) {
        return Ok(handle);
    }
    let store = Arc::clone(&state.store);
    let row = tokio::task::spawn_blocking(move || store.run(&id)).await??;
    if row.status == "running" {
        return Err(AppError::conflict(format!(
            "run `{}` is running in another process{}; {what} it there",
            row.id,
            row.owner_pid.map(|p| format!(" ({p})")).unwrap_or_default()
        ))
        .with_code("not_here"));
    }
    Err(AppError::conflict(format!(
        "run `{}` is not running (it is {})",
        row.id, row.status
    ))
    .with_code("not_running"))
}

pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> AppResult<Response> {
    let handle = running(&state, run, "cancel").await?;
    handle.cancel(RunStatus::Cancelled);
    Ok(accepted(
        format!("/api/runs/{}", handle.id()),
        json!({ "id": handle.id(), "status": "cancelling" }),
    ))
}

/// A graceful stop: `generate` nodes finish with what they found, other agents go on.
pub(crate) async fn stop(
    State(state): State<AppState>,
    Path(run): Path<String>,
) -> AppResult<Response> {
    let handle = running(&state, run, "stop").await?;
    handle.stop();
    Ok(accepted(
        format!("/api/runs/{}", handle.id()),
        json!({ "id": handle.id(), "status": "stopping" }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
    /// Resume even if the ensemble changed in ways that touch unfinished agents.
    #[serde(default)]
    force: bool,
    #[serde(default)]
    timeout: Option<f64>,
}

/// A body that may be empty, else JSON.
fn optional_json<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> AppResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the request body is not valid: {e}")))
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(run): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Response> {
    let request: ResumeRequest = optional_json(&body?)?;
    let timeout = timeout(request.timeout)?;
    let id = resolve(&state, run).await?;
    if state.engine.running(&id).is_some() {
        return Err(AppError::conflict(format!("run `{id}` is still running")).with_code("running"));
    }
    let s = state.clone();
    let (row, loaded, path, data) = tokio::task::spawn_blocking(move || -> AppResult<_> {
        let row = s.store.run(&id)?;
        resume::check_status(&row).map_err(refused)?;
        let map = resume::profile_map(&row, &[]);
        let mut profiles = (*s.catalog.profiles).clone();
        resume::apply_profile_map(&mut profiles, &map)
            .map_err(|m| unprocessable("invalid_profile_map", m))?;
        let origin = resume::origin(&row).map_err(refused)?;
        let (path, (ensemble, report)) = match origin {
            EnsembleOrigin::File(p) => {
                let loaded = config::load_ensemble_with(&p, &profiles, &|name| {
                    s.catalog.dirs().find_ensemble(name)
                });
                (Some(p), loaded)
            }
            EnsembleOrigin::Recorded(text) => {
                (None, resume::load_recorded(&row.ensemble, text, &profiles))
            }
        };
        let Some(ensemble) = ensemble else {
            let invalid = catalog::invalid(&report);
            return Err(unprocessable(
                "invalid_ensemble",
                format!(
                    "ensemble `{}` is invalid: {}",
                    row.ensemble, invalid.message
                ),
            )
            .with_details(invalid.diagnostics));
        };
        let data = s.store.resume_data(&row.id)?;
        resume::check_changes(&row, &ensemble, &data, request.force).map_err(refused)?;
        Ok((row, catalog::loaded(ensemble, &report), path, data))
    })
    .await??;
    check_runnable(&loaded)?;
    let restored = data.succeeded.len();
    let answers = data.answers.len();
    let options = resume::run_options(&row, &loaded.plan, path.as_deref(), data, timeout);
    let pending = state
        .engine
        .prepare(Arc::clone(&loaded.plan), row.input.clone(), options)
        .map_err(|e| start_error(&e))?;
    let handle = state.live.start(pending);
    let id = handle.id();
    Ok(accepted(
        format!("/api/runs/{id}"),
        json!({
            "id": id,
            "ensemble": handle.ensemble(),
            "restored_agents": restored,
            "answers_on_record": answers,
            "events": format!("/api/runs/{id}/events"),
        }),
    ))
}

fn refused(e: ResumeError) -> AppError {
    let message = e.to_string();
    match e {
        ResumeError::Store(s) => s.into(),
        ResumeError::Succeeded { .. } => AppError::conflict(message).with_code("succeeded"),
        ResumeError::Running { .. } => AppError::conflict(message).with_code("running"),
        ResumeError::NoCopy { .. } => unprocessable("no_ensemble", message),
        ResumeError::Changed { changes, .. } => AppError::conflict(format!(
            "{message}; send `{{\"force\": true}}` to resume with the ensemble as it is now"
        ))
        .with_code("ensemble_changed")
        .with_details(json!({ "changes": changes })),
    }
}

/// `POST /api/explore`: a one-node `generate` run, as `orc explore` builds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExploreRequest {
    topic: String,
    #[serde(default)]
    producers: Option<u32>,
    #[serde(default)]
    batch_size: Option<u32>,
    /// Candidate profiles (default `mock`).
    #[serde(default)]
    profiles: Vec<String>,
    /// `maximize_uam`, `minimize_cost`, `maximize_efficiency` or `weighted`.
    #[serde(default)]
    optimizer: Option<String>,
    /// `none`, `semantic` or `attribute_type`.
    #[serde(default)]
    partition: Option<String>,
    #[serde(default)]
    feedback: Option<u32>,
    /// Stop conditions, as the `stop:` of a `generate` agent.
    #[serde(default)]
    stop: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    options: StartOptions,
}

pub(crate) async fn explore(
    State(state): State<AppState>,
    body: Result<Json<ExploreRequest>, JsonRejection>,
) -> AppResult<Response> {
    let Json(request) = body?;
    if request.topic.trim().is_empty() {
        return Err(AppError::bad_request("`topic` is empty").with_code("missing_topic"));
    }
    let profiles = if request.profiles.is_empty() {
        vec!["mock".to_string()]
    } else {
        request.profiles.clone()
    };
    for name in &profiles {
        if state.catalog.profiles.get(name).is_none() {
            let mut message = format!("unknown profile `{name}`");
            if let Some(s) = crate::suggest::closest(name, state.catalog.profiles.names()) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            return Err(unprocessable("unknown_profile", message));
        }
    }
    let mut agent = json!({
        "name": "explore",
        "type": "generate",
        "profiles": profiles,
        "model_profile": profiles[0],
        "producers": request.producers.unwrap_or(4),
        "batch_size": request.batch_size.unwrap_or(10),
        "feedback": request.feedback.unwrap_or(20),
        "partition": request.partition.as_deref().unwrap_or("none"),
        "stop": request.stop.clone().map_or_else(|| json!({ "iterations": 5 }), Value::Object),
    });
    if let Some(o) = &request.optimizer {
        agent["optimizer"] = json!({ "strategy": o });
    }
    let doc = json!({
        "name": "explore",
        "description": format!("explore: {}", request.topic),
        "agents": [agent],
    });
    let yaml = serde_yaml::to_string(&doc).expect("JSON values serialize as YAML");
    let s = state.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let file = SourceFile::new(
            "<POST /api/explore>".into(),
            "<POST /api/explore>".into(),
            yaml,
        );
        config::load_ensemble_source(file, &s.catalog.profiles)
    })
    .await?;
    let (ensemble, report) = loaded;
    let Some(ensemble) = ensemble else {
        let invalid = catalog::invalid(&report);
        return Err(unprocessable(
            "invalid_explore",
            format!("the exploration is invalid: {}", invalid.message),
        )
        .with_details(invalid.diagnostics));
    };
    let loaded = catalog::loaded(ensemble, &report);
    let handle = launch(&state, &loaded, None, request.topic, &request.options)?;
    Ok(started(&handle))
}
