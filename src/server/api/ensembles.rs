//! `/api/ensembles`, `/api/profiles` and `/api/validate`: what can be run, and whether a file
//! is valid (the same diagnostics as `orc validate`, with line and column).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::config::{self, SourceFile};
use crate::server::AppState;
use crate::server::catalog::{self, Entry, Loaded};
use crate::server::error::{AppError, AppResult};

/// An ensemble by name, loaded; 404 (with a suggestion) or 422 (with diagnostics).
pub(crate) fn find(state: &AppState, name: &str) -> AppResult<(Entry, Arc<Loaded>)> {
    let Some(entry) = state.catalog.find(name) else {
        return Err(unknown(state, name));
    };
    match state.catalog.load(&entry) {
        Ok(loaded) => Ok((entry, loaded)),
        Err(invalid) => Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_ensemble",
            format!("ensemble `{name}` is invalid: {}", invalid.message),
        )
        .with_details(invalid.diagnostics.clone())),
    }
}

pub(crate) fn unknown(state: &AppState, name: &str) -> AppError {
    let names = state.catalog.names();
    let mut message = format!("no ensemble named `{name}`");
    if let Some(s) = crate::suggest::closest(name, names.iter().map(String::as_str)) {
        message.push_str(&format!("; did you mean `{s}`?"));
    }
    AppError::not_found(message)
        .with_code("unknown_ensemble")
        .with_details(json!({ "known": names }))
}

fn summary(entry: &Entry, loaded: &Result<Arc<Loaded>, Arc<catalog::Invalid>>) -> Value {
    let mut doc = json!({
        "name": entry.name,
        "source": entry.source,
        "path": entry.path,
    });
    match loaded {
        Ok(l) => {
            let e = &l.plan.ensemble;
            let kinds: BTreeSet<&str> = e
                .agents
                .iter()
                .map(|a| catalog::kind_name(&a.node))
                .collect();
            doc["valid"] = json!(true);
            doc["ensemble"] = json!(e.name);
            doc["description"] = json!(e.description);
            doc["agents"] = json!(e.agents.len());
            doc["kinds"] = json!(kinds);
            doc["default_task"] = json!(e.default_task);
            doc["runnable"] = json!(l.unsupported.is_empty());
        }
        Err(invalid) => {
            doc["valid"] = json!(false);
            doc["error"] = json!(invalid.message);
        }
    }
    doc
}

pub(crate) async fn list(State(state): State<AppState>) -> AppResult<Json<Value>> {
    let list = tokio::task::spawn_blocking(move || {
        state
            .catalog
            .entries()
            .iter()
            .map(|entry| summary(entry, &state.catalog.load(entry)))
            .collect::<Vec<_>>()
    })
    .await?;
    Ok(Json(json!({ "ensembles": list })))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> AppResult<Json<Value>> {
    let (entry, loaded) = tokio::task::spawn_blocking(move || find(&state, &name)).await??;
    let mut doc = catalog::plan_json(&loaded.plan);
    doc["name"] = json!(entry.name);
    doc["source"] = json!(entry.source);
    doc["path"] = json!(entry.path);
    doc["warnings"] = loaded.warnings.clone();
    doc["runnable"] = json!(loaded.unsupported.is_empty());
    Ok(Json(doc))
}

pub(crate) async fn profiles(State(state): State<AppState>) -> Json<Value> {
    let profiles: Vec<Value> = state
        .catalog
        .profiles
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "provider": p.provider.as_str(),
                "model": p.model,
                "description": p.description,
                "origin": p.origin.to_string(),
            })
        })
        .collect();
    Json(json!({ "profiles": profiles }))
}

/// `POST /api/validate`: the YAML of an ensemble in the body. Always 200: the answer is in
/// `valid` and `diagnostics`. Nested ensembles are looked up on the server's search path.
pub(crate) async fn validate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    let body = body?;
    let doc = tokio::task::spawn_blocking(move || {
        let name = "<request body>".to_string();
        let file = match String::from_utf8(body.to_vec()) {
            Ok(text) => SourceFile::new(PathBuf::from(&name), name, text),
            Err(_) => {
                let empty = SourceFile::new(PathBuf::from(&name), name, "");
                let mut report = config::ConfigReport::default();
                report.push(config::ConfigError::new(
                    config::ConfigErrorKind::NotUtf8,
                    &empty,
                    None,
                ));
                return (None, report);
            }
        };
        // References are names the server serves, never paths: a request must not probe
        // the server's files.
        config::load_ensemble_text_with(file, &state.catalog.profiles, &|name| {
            state.catalog.find(name).map(|entry| entry.path)
        })
    })
    .await?;
    let (ensemble, report) = doc;
    Ok(Json(json!({
        "valid": !report.has_errors(),
        "ensemble": ensemble.as_ref().map(|e| &e.name),
        "agents": ensemble.as_ref().map(|e| e.agents.len()),
        "diagnostics": catalog::diagnostics(&report),
        "rendered": crate::diagnostics::Renderer::new(false).render_report(&report),
    })))
}
