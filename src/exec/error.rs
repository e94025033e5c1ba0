//! Why an agent did not succeed, kept typed from the provider (or script, or template) to
//! the result: the kind is what retry policy, metrics and `error_kind` read; the message is
//! what a person reads.

use serde::{Deserialize, Serialize};

use crate::providers::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    /// `timeout`, `rate_limited`, `http`, `auth`, `invalid_output`, `template`, `script`,
    /// `dependency`, `cancelled`, ... (see `ProviderError::kind` for the provider ones).
    pub kind: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
    pub message: String,
}

impl AgentError {
    pub fn new(kind: &str, message: impl Into<String>) -> AgentError {
        AgentError {
            kind: kind.to_string(),
            retryable: false,
            message: message.into(),
        }
    }

    pub fn cancelled() -> AgentError {
        AgentError::new("cancelled", "cancelled")
    }
}

impl From<&ProviderError> for AgentError {
    fn from(e: &ProviderError) -> AgentError {
        AgentError {
            kind: e.kind().to_string(),
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}
