//! The JSON API under `/api`: one router per area. Handlers do blocking work (the store,
//! loading ensemble files) on the blocking pool, never on the async workers.

mod cost;
mod ensembles;
pub(crate) mod runs;

use axum::Router;
use axum::routing::{get, post};

use super::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/ensembles", get(ensembles::list))
        .route("/api/ensembles/{name}", get(ensembles::show))
        .route("/api/profiles", get(ensembles::profiles))
        .route("/api/validate", post(ensembles::validate))
        .route("/api/runs", get(runs::list).post(runs::start))
        .route("/api/runs/{id}", get(runs::show))
        .route("/api/runs/{id}/cancel", post(runs::cancel))
        .route("/api/runs/{id}/stop", post(runs::stop))
        .route("/api/runs/{id}/resume", post(runs::resume))
        .route("/api/explore", post(runs::explore))
        .route("/api/cost", get(cost::cost))
}
