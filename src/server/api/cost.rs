//! `GET /api/cost?days=N`: spend and tokens per profile per day (UTC), from the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::AppState;
use crate::server::error::AppResult;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CostQuery {
    days: Option<u32>,
}

pub(crate) async fn cost(
    State(state): State<AppState>,
    query: Result<Query<CostQuery>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(q) = query?;
    let days = q.days.unwrap_or(30).clamp(1, 3660);
    state.engine.flush().await;
    let store = Arc::clone(&state.store);
    let rows = tokio::task::spawn_blocking(move || store.cost_by_day(days)).await??;
    Ok(Json(json!({ "days": days, "rows": rows })))
}
