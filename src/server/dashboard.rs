//! The dashboard: one page of plain HTML, CSS and JavaScript embedded in the binary
//! (`include_str!`, no CDN, no build step), served at `/` and at its client-side routes
//! (`/runs/{id}`, `/explore`, `/cost`). These static files need no token; the page asks for
//! one when the API answers 401 and keeps it in the browser session. Everything it shows
//! comes from the API and the event streams.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON: &str = include_str!("assets/favicon.svg");

/// Scripts and styles only from this server: nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(index))
        .route("/explore", get(index))
        .route("/cost", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/assets/favicon.svg", get(favicon))
}

async fn index() -> Response {
    let mut r = asset(INDEX, "text/html; charset=utf-8", &HeaderMap::new());
    if let Ok(v) = HeaderValue::from_str(CSP) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn app_js(headers: HeaderMap) -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8", &headers)
}

async fn app_css(headers: HeaderMap) -> Response {
    asset(APP_CSS, "text/css; charset=utf-8", &headers)
}

async fn favicon(headers: HeaderMap) -> Response {
    asset(FAVICON, "image/svg+xml", &headers)
}

/// An embedded file, revalidated by its content hash.
fn asset(body: &'static str, content_type: &'static str, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    response
}
