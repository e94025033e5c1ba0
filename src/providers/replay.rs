//! Recording and replaying provider responses, keyed by the exact request, so a test suite
//! recorded once against a real provider runs offline and deterministically in CI. A request
//! missing from a recording is a clear, non-retryable failure naming the agent, never a call.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    Completion, CompletionRequest, FinishKind, FinishReason, Provider, ProviderError, Usage,
};
use crate::config::Profile;

/// One recorded exchange (a JSON line of the recording file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub agent: String,
    pub profile: String,
    pub model: String,
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cached_input_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// The provider did not report usage (the token counts are then zero).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_unknown: bool,
    /// The provider's finish reason, and its normalised kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_kind: Option<FinishKind>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The identity of a request: everything that shapes the answer, nothing that does not
/// (attempt numbers, streaming). Keys never include credentials.
///
/// The key hashes the compact JSON of these fields in this order; it is streamed into the
/// hasher (no intermediate value or string), since every call computes one.
pub fn request_key(profile: &Profile, request: &CompletionRequest) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        provider: &'a str,
        model: &'a str,
        system: &'a Option<String>,
        prompt: &'a str,
        temperature: Option<f64>,
        max_tokens: Option<u32>,
        options: &'a std::collections::BTreeMap<String, serde_json::Value>,
        response_format: &'a Option<crate::config::ResponseFormat>,
    }
    struct Hashing(xxhash_rust::xxh3::Xxh3);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let identity = Identity {
        provider: profile.provider.as_str(),
        model: &profile.model,
        system: &request.system,
        prompt: &request.prompt,
        temperature: request.temperature,
        max_tokens: request.max_tokens,
        options: &request.options,
        response_format: &request.response_format,
    };
    let mut hashing = Hashing(xxhash_rust::xxh3::Xxh3::new());
    serde_json::to_writer(&mut hashing, &identity).expect("requests serialize");
    format!("{:032x}", hashing.0.digest128())
}

/// Appends every successful exchange to a recording file shared by the whole process.
pub struct Recorder {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Arc<Recorder>> {
        let file = std::fs::File::create(path)?;
        Ok(Arc::new(Recorder {
            file: Mutex::new(std::io::BufWriter::new(file)),
        }))
    }

    fn write(&self, entry: &Entry) {
        let line = serde_json::to_string(entry).expect("entries serialize");
        let mut file = self.file.lock().expect("not poisoned");
        // A recording that cannot be written is reported by `flush` at the end.
        let _ = writeln!(file, "{line}");
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.file.lock().expect("not poisoned").flush()
    }
}

pub struct Recording {
    pub inner: Arc<dyn Provider>,
    pub profile: Arc<Profile>,
    pub recorder: Arc<Recorder>,
}

#[async_trait]
impl Provider for Recording {
    async fn admit(&self, request: &CompletionRequest) -> Result<super::Admission, ProviderError> {
        self.inner.admit(request).await
    }

    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let key = request_key(&self.profile, &request);
        let agent = request.agent.clone();
        let completion = self.inner.complete(request).await?;
        self.recorder.write(&Entry {
            key,
            agent,
            profile: self.profile.name.clone(),
            model: self.profile.model.clone(),
            text: completion.text.clone(),
            input_tokens: completion.usage.input_tokens,
            output_tokens: completion.usage.output_tokens,
            cached_input_tokens: completion.usage.cached_input_tokens,
            reasoning_tokens: completion.usage.reasoning_tokens,
            usage_unknown: completion.usage.unknown,
            finish_reason: completion.finish_reason.as_ref().map(|f| f.raw.clone()),
            finish_kind: completion.finish_reason.as_ref().map(|f| f.kind),
        });
        Ok(completion)
    }
}

/// The responses of a recording file, by request key.
pub struct Recorded {
    path: PathBuf,
    entries: HashMap<String, Entry>,
}

impl Recorded {
    pub fn load(path: &Path) -> Result<Arc<Recorded>, String> {
        let bytes =
            crate::config::read_capped(path, crate::config::MAX_RECORDING_BYTES, "recordings")
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("`{}` is not UTF-8 text", path.display()))?;
        let mut entries = HashMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let entry: Entry = serde_json::from_str(line).map_err(|e| {
                format!(
                    "`{}` line {}: not a recorded response ({e})",
                    path.display(),
                    n + 1
                )
            })?;
            entries.insert(entry.key.clone(), entry);
        }
        Ok(Arc::new(Recorded {
            path: path.to_path_buf(),
            entries,
        }))
    }
}

pub struct Replay {
    pub profile: Arc<Profile>,
    pub recorded: Arc<Recorded>,
}

#[async_trait]
impl Provider for Replay {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let key = request_key(&self.profile, &request);
        let Some(entry) = self.recorded.entries.get(&key) else {
            return Err(ProviderError::NotRecorded {
                agent: request.agent.clone(),
                path: self.recorded.path.display().to_string(),
            });
        };
        if let Some(deltas) = &request.deltas {
            let _ = deltas.send(entry.text.clone());
        }
        Ok(Completion {
            text: entry.text.clone(),
            usage: if entry.usage_unknown {
                Usage::UNKNOWN
            } else {
                Usage {
                    input_tokens: entry.input_tokens,
                    output_tokens: entry.output_tokens,
                    reasoning_tokens: entry.reasoning_tokens,
                    cached_input_tokens: entry.cached_input_tokens,
                    ..Usage::default()
                }
            },
            finish_reason: entry.finish_reason.as_ref().map(|raw| {
                FinishReason::new(entry.finish_kind.unwrap_or(FinishKind::Other), raw.as_str())
            }),
        })
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    /// Keys of recordings made before the key was streamed must still match.
    #[test]
    fn the_key_is_the_hash_of_the_compact_canonical_json() {
        let profile = crate::config::ProfileSet::builtin()
            .get("mock")
            .expect("the mock profile is built in")
            .clone();
        let request = CompletionRequest {
            agent: "a".into(),
            system: Some("be brief".into()),
            prompt: "hello \"world\"".into(),
            temperature: Some(0.2),
            max_tokens: Some(64),
            options: [("top_p".to_string(), serde_json::json!(0.9))].into(),
            attempt: 3,
            seed: 9,
            deltas: None,
            response_format: None,
            generation: None,
        };
        let canonical = serde_json::json!({
            "provider": profile.provider.as_str(),
            "model": profile.model,
            "system": request.system,
            "prompt": request.prompt,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "options": request.options,
            "response_format": request.response_format,
        });
        assert_eq!(
            request_key(&profile, &request),
            format!("{:032x}", xxh3_128(canonical.to_string().as_bytes()))
        );
    }
}
