//! Providers: the small `Provider` trait the executor calls, and the implementations behind
//! it. `exec` sees only the trait; `Providers` builds the concrete client for a profile with
//! a plain `match`.

mod error;
mod mock;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use error::ProviderError;
pub use mock::MockProvider;

use crate::config::{Profile, spec::ProviderKind};

/// One request to a model.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// The agent making the call (for logs, and the mock's determinism).
    pub agent: String,
    pub system: Option<String>,
    pub prompt: String,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
    pub options: BTreeMap<String, serde_json::Value>,
    /// 1 for the first try.
    pub attempt: u32,
    /// Run seed, for providers that support one.
    pub seed: u64,
}

/// Token counts as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// A model's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
}

#[async_trait]
pub trait Provider: Send + Sync {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError>;
}

/// Builds the provider for a profile.
pub fn for_profile(profile: &Arc<Profile>) -> Result<Arc<dyn Provider>, ProviderError> {
    match profile.provider {
        ProviderKind::Mock => Ok(Arc::new(MockProvider::new(Arc::clone(profile)))),
        other => Err(ProviderError::Unavailable {
            provider: other.to_string(),
        }),
    }
}
