//! The built-in offline provider. Deterministic for a seed: the same seed, profile, agent and
//! prompt give the same latency, the same failures and the same text. Its text quotes the
//! prompt it was given and names the dependencies it saw, so a reader can follow how
//! dependents build on their dependencies. Asked to stream, it sends its answer word by
//! word, spread over its latency, as a real model would (#12).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use std::collections::HashSet;

use super::DEPENDENCY_HEADER;
use super::vocab::{FACETS, Vocabulary};
use super::{
    Completion, CompletionRequest, FinishKind, FinishReason, GenerationHint, Provider,
    ProviderError, Usage,
};
use crate::config::MockFailure;
use crate::config::Profile;

pub struct MockProvider {
    profile: Arc<Profile>,
}

const ANGLES: [&str; 24] = [
    "input validation",
    "error handling",
    "naming",
    "test coverage",
    "latency",
    "memory use",
    "concurrency",
    "edge cases",
    "documentation",
    "security",
    "readability",
    "cost",
    "failure modes",
    "data quality",
    "user impact",
    "scalability",
    "observability",
    "dependencies",
    "configuration",
    "consistency",
    "accessibility",
    "maintainability",
    "correctness",
    "simplicity",
];

const VERDICTS: [&str; 8] = [
    "looks solid",
    "needs attention",
    "is mostly fine",
    "has one clear risk",
    "could be simpler",
    "is worth a second look",
    "holds up",
    "is the main concern",
];

impl MockProvider {
    pub fn new(profile: Arc<Profile>) -> MockProvider {
        MockProvider { profile }
    }

    fn hash(&self, request: &CompletionRequest, salt: &str) -> u64 {
        let text = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            self.profile.name,
            request.agent,
            request.system.as_deref().unwrap_or(""),
            request.prompt,
            salt
        );
        xxh3_64_with_seed(text.as_bytes(), request.seed)
    }

    /// The answer text, and whether `max_tokens` cut it off.
    fn compose(&self, request: &CompletionRequest) -> (String, bool) {
        let mut rng = fastrand::Rng::with_seed(self.hash(request, "text"));
        let role = request
            .system
            .as_deref()
            .map(|s| first_sentence(s, 60))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "assistant".to_string());
        let (input, deps) = split_layout(&request.prompt);
        let words = input.split_whitespace().count();
        let snippet = snippet(input, 8);
        let mut picks: Vec<&str> = Vec::new();
        while picks.len() < 3 {
            let angle = ANGLES[rng.usize(..ANGLES.len())];
            if !picks.contains(&angle) {
                picks.push(angle);
            }
        }
        let mut text = format!(
            "[{} as {}] On \"{}\" ({} word{}): {} {}; {} and {} follow.",
            self.profile.model,
            role,
            snippet,
            words,
            if words == 1 { "" } else { "s" },
            picks[0],
            VERDICTS[rng.usize(..VERDICTS.len())],
            picks[1],
            picks[2],
        );
        if !deps.is_empty() {
            text.push_str(&format!(" Building on {}.", deps.join(", ")));
        }
        let mut truncated = false;
        if let Some(max) = request.max_tokens {
            let limit = (max as usize).saturating_mul(4);
            if text.len() > limit {
                let cut = (0..=limit)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                truncated = true;
            }
        }
        (text, truncated)
    }
}

impl MockProvider {
    /// Answers a `generate` node: items drawn from the topic's vocabulary with its skew,
    /// avoiding most (`feedback_adherence`) of the items it was shown, one per line and
    /// numbered, as the built-in prompt asks.
    fn generate(&self, request: &CompletionRequest, hint: &GenerationHint) -> String {
        let settings = &self.profile.mock;
        let mut rng =
            fastrand::Rng::with_seed(self.hash(request, &format!("generate {}", request.attempt)));
        match hint {
            GenerationHint::Subtopics { topic, count } => (0..*count as usize)
                .map(|i| format!("{}. {} of {}", i + 1, FACETS[i % FACETS.len()], topic))
                .collect::<Vec<_>>()
                .join("\n"),
            GenerationHint::Items {
                topic,
                subtopic,
                count,
                avoid,
            } => {
                let key = match subtopic {
                    Some(s) => format!("{topic}\u{0}{s}"),
                    None => topic.clone(),
                };
                let vocab = Vocabulary::get(&key, settings.vocabulary, settings.zipf);
                let avoid: HashSet<&str> = avoid.iter().map(String::as_str).collect();
                let wanted =
                    ((f64::from(*count) * settings.yield_rate).round() as usize).min(vocab.len());
                let mut out: Vec<&str> = Vec::with_capacity(wanted);
                let mut tries = 0;
                while out.len() < wanted && tries < wanted * 20 {
                    tries += 1;
                    let item = vocab.draw(rng.f64());
                    if out.contains(&item) {
                        continue;
                    }
                    if avoid.contains(item) && rng.f64() < settings.feedback_adherence {
                        continue;
                    }
                    out.push(item);
                }
                out.iter()
                    .enumerate()
                    .map(|(i, item)| format!("{}. {item}", i + 1))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }
}

/// A value that satisfies (the common parts of) a JSON Schema, made from the mock's text.
fn sample_json(
    schema: &serde_json::Value,
    text: &str,
    rng: &mut fastrand::Rng,
    depth: u32,
) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(values) = schema
        .get("enum")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    {
        return values[rng.usize(..values.len())].clone();
    }
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "object" if depth < 6 => {
            let mut map = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, sub) in props {
                    map.insert(name.clone(), sample_json(sub, text, rng, depth + 1));
                }
            }
            Value::Object(map)
        }
        "array" if depth < 6 => {
            let n = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(2)
                .max(1) as usize;
            let items = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type": "string"}));
            Value::Array(
                (0..n)
                    .map(|_| sample_json(&items, text, rng, depth + 1))
                    .collect(),
            )
        }
        "integer" => json!(rng.i64(1..10)),
        "number" => json!((rng.f64() * 100.0).round() / 10.0),
        "boolean" => json!(rng.bool()),
        "null" => Value::Null,
        _ => {
            let words: Vec<&str> = text.split_whitespace().collect();
            let start = rng.usize(..words.len().max(1));
            json!(
                words
                    .iter()
                    .skip(start)
                    .take(6)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// Input part of a prompt and the dependency names of orc's default layout.
fn split_layout(prompt: &str) -> (&str, Vec<String>) {
    let deps = prompt
        .lines()
        .filter_map(|line| line.strip_prefix(DEPENDENCY_HEADER))
        .filter_map(|rest| rest.split('`').next())
        .map(String::from)
        .collect();
    let input = if prompt.starts_with(DEPENDENCY_HEADER) {
        ""
    } else {
        prompt
            .find(&format!("\n{DEPENDENCY_HEADER}"))
            .map_or(prompt, |i| &prompt[..i])
    };
    (input.trim(), deps)
}

fn first_sentence(text: &str, max: usize) -> String {
    let end = text.find(['.', '\n', '!', '?']).unwrap_or(text.len());
    text[..end].trim().chars().take(max).collect()
}

fn snippet(text: &str, words: usize) -> String {
    let mut out: Vec<&str> = text.split_whitespace().take(words).collect();
    if text.split_whitespace().count() > words {
        out.push("...");
    }
    out.join(" ")
}

/// A rough token count: four characters a token, as most tokenizers average on English.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

#[async_trait]
impl Provider for MockProvider {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, ProviderError> {
        let settings = &self.profile.mock;
        let attempt_salt = format!("attempt {}", request.attempt);
        let mut rng = fastrand::Rng::with_seed(self.hash(&request, &attempt_salt));
        let jitter = if settings.jitter.is_zero() {
            Duration::ZERO
        } else {
            settings.jitter.mul_f64(rng.f64())
        };
        let latency = settings.latency + jitter;
        let fails = request.attempt <= settings.fail_attempts
            || (settings.fail_rate > 0.0 && rng.f64() < settings.fail_rate);
        if fails {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return Err(match settings.fail_with {
                MockFailure::Timeout => ProviderError::Timeout,
                MockFailure::RateLimit => ProviderError::RateLimited {
                    retry_after: Some(Duration::from_millis(100)),
                    message: "mock: injected rate limit".into(),
                },
                MockFailure::ServerError => ProviderError::Http {
                    status: 500,
                    kind: None,
                    body_excerpt: "mock: injected server error".into(),
                    retry_after: None,
                },
                MockFailure::BadRequest => ProviderError::Http {
                    status: 400,
                    kind: None,
                    body_excerpt: "mock: injected bad request".into(),
                    retry_after: None,
                },
            });
        }
        let (text, truncated) = match (&request.generation, &request.response_format) {
            (Some(hint), _) => (self.generate(&request, hint), false),
            (None, Some(_)) if request.attempt <= settings.invalid_json_attempts => (
                format!(
                    "Sure! Here is the JSON you asked for: {}",
                    self.compose(&request).0
                ),
                false,
            ),
            (None, Some(format)) => {
                let (text, _) = self.compose(&request);
                let mut rng = fastrand::Rng::with_seed(self.hash(&request, "json"));
                let value = match format.schema() {
                    Some(schema) => sample_json(schema, &text, &mut rng, 0),
                    None => serde_json::json!({ "answer": text }),
                };
                (value.to_string(), false)
            }
            (None, None) => self.compose(&request),
        };
        match &request.deltas {
            // Word by word: the first after an equal share of the latency, the last at its end.
            Some(deltas) => {
                let pieces: Vec<&str> = text.split_inclusive(' ').collect();
                let gap = latency / u32::try_from(pieces.len().max(1)).unwrap_or(u32::MAX);
                for piece in pieces {
                    if !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    let _ = deltas.send(piece.to_string());
                }
            }
            None if !latency.is_zero() => tokio::time::sleep(latency).await,
            None => {}
        }
        let prompt_tokens =
            estimate_tokens(&request.prompt) + request.system.as_deref().map_or(0, estimate_tokens);
        Ok(Completion {
            usage: Usage {
                input_tokens: prompt_tokens,
                output_tokens: estimate_tokens(&text),
                ..Usage::default()
            },
            finish_reason: Some(if truncated {
                FinishReason::new(FinishKind::Length, "length")
            } else {
                FinishReason::new(FinishKind::Stop, "stop")
            }),
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProfileSet;

    fn request(prompt: &str, seed: u64) -> CompletionRequest {
        CompletionRequest {
            agent: "a".into(),
            system: Some("Find bugs. Be brief.".into()),
            prompt: prompt.into(),
            temperature: None,
            max_tokens: None,
            options: Default::default(),
            attempt: 1,
            seed,
            deltas: None,
            generation: None,
            response_format: None,
        }
    }

    #[tokio::test]
    async fn deterministic_per_seed_and_prompt() {
        let profile = ProfileSet::builtin().get("mock-fast").unwrap().clone();
        let mock = MockProvider::new(profile);
        let a = mock.complete(request("fn main() {}", 1)).await.unwrap();
        let b = mock.complete(request("fn main() {}", 1)).await.unwrap();
        let c = mock.complete(request("fn main() {}", 2)).await.unwrap();
        assert_eq!(a.text, b.text);
        assert_ne!(a.text, c.text);
        assert!(a.text.contains("fn main() {}"), "{}", a.text);
        assert!(a.text.contains("Find bugs"), "{}", a.text);
        assert!(a.usage.input_tokens > 0 && a.usage.output_tokens > 0);
    }

    #[test]
    fn reads_dependency_names_from_the_layout() {
        let prompt = format!(
            "review this\n\n{DEPENDENCY_HEADER}security`:\nok\n\n{DEPENDENCY_HEADER}perf`:\nslow\n"
        );
        let (input, deps) = split_layout(&prompt);
        assert_eq!(input, "review this");
        assert_eq!(deps, vec!["security", "perf"]);
    }
}
