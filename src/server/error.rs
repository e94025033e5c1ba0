//! `AppError`: every failed request ends here and leaves as JSON with the right status,
//! `{"error": {"code", "message"}}` on the API and OpenAI's `{"error": {"message", "type",
//! "param", "code"}}` under `/v1`. Messages are written for the caller; internals (SQL
//! errors, panics) are logged and replaced by a general sentence, never leaked.

use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Which error shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Api,
    OpenAi,
}

#[derive(Debug)]
pub(crate) struct AppError {
    pub status: StatusCode,
    /// A stable, machine-readable word: `not_found`, `invalid_ensemble`, ...
    pub code: &'static str,
    pub message: String,
    /// More for the caller: diagnostics of an invalid ensemble, the runs a prefix matches.
    pub details: Option<Value>,
    pub shape: Shape,
    /// OpenAI's `param`: the request field at fault.
    pub param: Option<&'static str>,
}

impl AppError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
            shape: Shape::Api,
            param: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        AppError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// Something on our side failed: logged in full, reported in general terms.
    pub(crate) fn internal(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{what}");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{what}; the server log has the details"),
        )
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub(crate) fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    pub(crate) fn openai(mut self) -> Self {
        self.shape = Shape::OpenAi;
        self
    }

    pub(crate) fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Value {
        match self.shape {
            Shape::Api => {
                let mut error = json!({ "code": self.code, "message": self.message });
                if let Some(d) = &self.details {
                    error["details"] = d.clone();
                }
                json!({ "error": error })
            }
            Shape::OpenAi => {
                let kind = match self.status.as_u16() {
                    401 => "authentication_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    s if s >= 500 => "server_error",
                    _ => "invalid_request_error",
                };
                json!({ "error": {
                    "message": self.message,
                    "type": kind,
                    "param": self.param,
                    "code": self.code,
                }})
            }
        }
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.shape == Shape::OpenAi && self.status.is_server_error() {
            // A failed ensemble run is not worth repeating blindly; OpenAI's SDKs honour this.
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// A body that could not be read: too large (413) or cut off.
fn body_error(status: StatusCode, text: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::new(
            status,
            "body_too_large",
            "the request body is larger than the server accepts (`orc serve --max-body`)",
        )
    } else {
        AppError::bad_request(format!("cannot read the request body: {text}"))
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::BytesRejection(b) => body_error(b.status(), b.body_text()),
            JsonRejection::MissingJsonContentType(_) => AppError::bad_request(
                "the request body must be JSON with `Content-Type: application/json`",
            ),
            other => AppError::bad_request(other.body_text().to_lowercase()),
        }
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        body_error(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::bad_request(r.body_text().to_lowercase())
    }
}

impl From<crate::store::StoreError> for AppError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match &e {
            StoreError::NotFound(_) => AppError::not_found(e.to_string()),
            StoreError::Ambiguous { matches, .. } => AppError::bad_request(e.to_string())
                .with_code("ambiguous_run")
                .with_details(json!({ "matches": matches })),
            _ => AppError::internal("the run store failed", &e),
        }
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal("a request task failed", &e)
    }
}

pub(crate) type AppResult<T> = Result<T, AppError>;
