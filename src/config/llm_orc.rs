//! llm-orc's project configuration read as it is: the model profiles of `.llm-orc/config.yaml`
//! (`model_profiles:`) and of `.llm-orc/profiles/*.yaml` (one profile per file, named by its
//! `name:`; `*.local.yaml` files last), in the order llm-orc merges them, with llm-orc's
//! provider names mapped to orc's.
//!
//! llm-orc reads these files as plain mappings and ignores keys it has no use for, so this
//! reader does too (`hf_repo`, `project:`, `performance:`, ...), and files in
//! `profiles/` without a top-level `name:` are skipped as llm-orc skips them. A profile orc
//! cannot run (an OAuth-only or unknown provider, a missing model, a value of the wrong
//! type) does not stop the others: it is kept as `Unusable` with its located reason, and
//! an ensemble that uses it is refused with that reason.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::load::{parse_mapping, read_source};
use super::locate::{Locator, PathSeg};
use super::model::{Origin, Profile};
use super::profiles::{PriceTable, lower};
use super::spec::{PriceSpec, ProfileSpec, ProviderKind};
use crate::suggest::closest;

/// An llm-orc profile orc cannot run, and why.
#[derive(Debug, Clone)]
pub struct Unusable {
    pub name: String,
    /// The provider as written (may be empty when missing).
    pub provider: String,
    pub model: String,
    pub path: PathBuf,
    /// The problem, located in the file that defines the profile.
    pub error: ConfigError,
}

/// Where llama-server listens unless `LLAMA_SERVER_URL` says otherwise (llm-orc's default).
const LLAMA_SERVER_URL: &str = "http://127.0.0.1:8080/v1";

/// Provider names llm-orc knows, for suggestions.
const LLM_ORC_PROVIDERS: [&str; 6] = [
    "llama-server",
    "openai-compatible",
    "ollama",
    "anthropic-api",
    "google-gemini",
    "anthropic-claude-pro-max",
];

/// A profile as read: runnable, or not and why.
pub(super) enum Read {
    Usable(Box<Profile>),
    Unusable(Box<Unusable>),
}

/// What orc reads of an llm-orc directory.
#[derive(Default)]
pub(super) struct LlmOrcConfig {
    /// In llm-orc's merge order: a later one replaces an earlier one of the same name.
    pub profiles: Vec<Read>,
    /// `script_path:` of its config.yaml (orc's addition; llm-orc ignores it).
    pub script_path: Option<Value>,
}

/// The profiles of the llm-orc directory `dot`, and the problems of files that cannot be
/// read at all.
pub(super) fn read_dir(dot: &Path, prices: &PriceTable) -> (LlmOrcConfig, ConfigReport) {
    let mut out = Vec::new();
    let mut script_path = None;
    let mut report = ConfigReport::default();
    let config = dot.join("config.yaml");
    if config.is_file() {
        if let Some((file, value)) = read(&config, &mut report) {
            script_path = value.get("script_path").cloned();
            if let Some(Value::Object(map)) = value.get("model_profiles") {
                let locator = Locator::new(&file);
                for (name, spec) in map {
                    let at = [PathSeg::from("model_profiles"), PathSeg::from(name.clone())];
                    out.push(profile(name, spec, &file, &locator, &at, prices));
                }
            }
        }
    }
    for path in profile_files(&dot.join("profiles")) {
        let Some((file, value)) = read(&path, &mut report) else {
            continue;
        };
        let Some(name) = value.get("name").and_then(Value::as_str) else {
            continue;
        };
        let locator = Locator::new(&file);
        out.push(profile(name, &value, &file, &locator, &[], prices));
    }
    let config = LlmOrcConfig {
        profiles: out,
        script_path,
    };
    (config, report)
}

/// Whether `path` is a file orc reads in llm-orc's format: `.llm-orc/config.yaml` or
/// `.llm-orc/profiles/*.yaml`.
pub(super) fn is_llm_orc_file(path: &Path) -> bool {
    let parent_named =
        |p: Option<&Path>, name: &str| p.and_then(Path::file_name).is_some_and(|n| n == name);
    let parent = path.parent();
    (path.file_name().is_some_and(|n| n == "config.yaml") && parent_named(parent, ".llm-orc"))
        || (path.extension().is_some_and(|e| e == "yaml")
            && parent_named(parent, "profiles")
            && parent_named(parent.and_then(Path::parent), ".llm-orc"))
}

/// Checks one llm-orc file: every profile orc cannot run is an error.
pub(super) fn check_file(path: &Path) -> ConfigReport {
    let mut report = ConfigReport::default();
    let Some((file, value)) = read(path, &mut report) else {
        return report;
    };
    let locator = Locator::new(&file);
    let prices = PriceTable::default();
    let mut reads = Vec::new();
    if path.file_name().is_some_and(|n| n == "config.yaml") {
        if let Some(Value::Object(map)) = value.get("model_profiles") {
            for (name, spec) in map {
                let at = [PathSeg::from("model_profiles"), PathSeg::from(name.clone())];
                reads.push(profile(name, spec, &file, &locator, &at, &prices));
            }
        }
    } else if let Some(name) = value.get("name").and_then(Value::as_str) {
        reads.push(profile(name, &value, &file, &locator, &[], &prices));
    }
    for read in reads {
        if let Read::Unusable(u) = read {
            report.push(u.error);
        }
    }
    report
}

fn read(path: &Path, report: &mut ConfigReport) -> Option<(SourceFile, Value)> {
    let file = match read_source(path) {
        Ok(f) => f,
        Err(e) => {
            report.push(e);
            return None;
        }
    };
    let (doc, problems) = parse_mapping(file);
    report.extend(problems);
    doc.map(|d| (d.file, d.value))
}

/// `*.yaml` of `dir` sorted, the `*.local.yaml` overrides last (llm-orc's order).
fn profile_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml") && p.is_file())
        .collect();
    files.sort_by_key(|p| {
        let local = p.to_string_lossy().ends_with(".local.yaml");
        (local, p.clone())
    });
    files
}

/// One profile: `value` is its mapping, found at `at` in `file`.
fn profile(
    name: &str,
    value: &Value,
    file: &SourceFile,
    locator: &Locator<'_>,
    at: &[PathSeg],
    prices: &PriceTable,
) -> Read {
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let unusable = |kind: ConfigErrorKind, key: Option<&str>| {
        let mut path = at.to_vec();
        let span = match key {
            Some(k) => {
                path.push(PathSeg::from(k));
                locator.value_span(&path)
            }
            None => locator.key_span(&path),
        }
        .or_else(|| locator.nearest_span(&path));
        Read::Unusable(Box::new(Unusable {
            name: name.to_string(),
            provider: text("provider").to_string(),
            model: text("model").to_string(),
            path: file.path.clone(),
            error: ConfigError::new(kind, file, span),
        }))
    };
    match convert(name, value, prices, Origin::File(file.path.clone())) {
        Ok(profile) => Read::Usable(Box::new(profile)),
        Err((kind, key)) => unusable(kind, key),
    }
}

/// The problem and the key it is about.
type Problem = (ConfigErrorKind, Option<&'static str>);

fn convert(
    name: &str,
    value: &Value,
    prices: &PriceTable,
    origin: Origin,
) -> Result<Profile, Problem> {
    let Value::Object(_) = value else {
        return Err((
            ConfigErrorKind::WrongType {
                key: name.to_string(),
                expected: "a mapping".into(),
                found: describe(value),
            },
            None,
        ));
    };
    let string = |key: &'static str| -> Result<Option<String>, Problem> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    };
    let number = |key: &'static str| -> Result<Option<f64>, Problem> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(wrong_type(key, "a number", other)),
        }
    };
    let missing = |key: &'static str| {
        (
            ConfigErrorKind::MissingKey {
                key: key.to_string(),
                context: Some(format!("profile `{name}`")),
            },
            None,
        )
    };
    let provider_name = string("provider")?.ok_or_else(|| missing("provider"))?;
    let model = string("model")?.ok_or_else(|| missing("model"))?;
    let (provider, default_base) = provider(name, &provider_name, &model)?;
    let base_url = string("base_url")?.or(default_base);
    let system_prompt = string("system_prompt")?;
    let fallback = string("fallback_model_profile")?;
    let temperature = number("temperature")?;
    let timeout = number("timeout_seconds")?;
    if let Some(t) = timeout {
        // The bound keeps `Duration` conversion safe; llm-orc's own timeouts are minutes.
        if !(t > 0.0 && t <= MAX_TIMEOUT_SECONDS) {
            return Err(out_of_range(
                "timeout_seconds",
                format!("must be more than 0 and at most {MAX_TIMEOUT_SECONDS}"),
            ));
        }
    }
    let max_tokens = match value.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(out_of_range(
                    "max_tokens",
                    format!("must be a whole number from 1 to {}", u32::MAX),
                ));
            }
        },
        Some(other) => return Err(wrong_type("max_tokens", "a whole number", other)),
    };
    let price = match number("cost_per_token")? {
        Some(c) if c.is_finite() && c >= 0.0 => Some(PriceSpec {
            input_per_mtok: c * 1_000_000.0,
            output_per_mtok: c * 1_000_000.0,
            cached_input_per_mtok: None,
        }),
        Some(_) => {
            return Err(out_of_range(
                "cost_per_token",
                "must be a number of at least 0".into(),
            ));
        }
        None => None,
    };
    let options = match value.get("options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => Some(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(other) => return Err(wrong_type("options", "a mapping", other)),
    };
    let spec = ProfileSpec {
        provider,
        model: Some(model),
        base_url,
        max_tokens,
        temperature,
        timeout_seconds: timeout,
        fallback_model_profile: fallback,
        price,
        options,
        ..ProfileSpec::default()
    };
    // The keys were renamed on the way from llm-orc's file: a problem is located at the
    // profile as a whole.
    let mut profile = lower(name, &spec, origin, prices).map_err(|(kind, _)| (kind, None))?;
    profile.system_prompt = system_prompt;
    Ok(profile)
}

/// Longest `timeout_seconds` accepted (a day).
const MAX_TIMEOUT_SECONDS: f64 = 86_400.0;

/// orc's provider for an llm-orc provider name (and the base URL it implies), or why there
/// is none.
fn provider(
    profile: &str,
    name: &str,
    model: &str,
) -> Result<(ProviderKind, Option<String>), Problem> {
    // llm-orc answers every model named `mock...` with its mock, whatever the provider.
    if model.starts_with("mock") {
        return Ok((ProviderKind::Mock, None));
    }
    let unsupported = |reason: &str, instead: String| {
        (
            ConfigErrorKind::UnsupportedProvider {
                profile: profile.to_string(),
                provider: name.to_string(),
                reason: reason.to_string(),
                instead,
            },
            Some("provider"),
        )
    };
    let kind = match name {
        "llama-server" => {
            let url = std::env::var("LLAMA_SERVER_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| LLAMA_SERVER_URL.to_string());
            return Ok((ProviderKind::OpenaiCompatible, Some(url)));
        }
        n if n == "openai-compatible" || n.starts_with("openai-compatible/") => {
            ProviderKind::OpenaiCompatible
        }
        "anthropic-api" | "anthropic" => ProviderKind::Anthropic,
        "google-gemini" | "google" | "gemini" => ProviderKind::Gemini,
        "ollama" => ProviderKind::Ollama,
        "openai" => ProviderKind::Openai,
        "mock" => ProviderKind::Mock,
        "anthropic-claude-pro-max" => {
            return Err(unsupported(
                "it signs in to a Claude Pro/Max subscription with OAuth, and orc calls Anthropic with an API key",
                "use `provider: anthropic-api` with a key in `ANTHROPIC_API_KEY` (or `orc auth set anthropic`)".into(),
            ));
        }
        "claude-cli" => {
            return Err(unsupported(
                "it runs the local `claude` program, and orc calls Anthropic's API",
                "use `provider: anthropic-api` with a key in `ANTHROPIC_API_KEY` (or `orc auth set anthropic`)".into(),
            ));
        }
        other => {
            let instead = match closest(other, LLM_ORC_PROVIDERS) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "orc runs llm-orc's {}",
                    LLM_ORC_PROVIDERS[..5]
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(unsupported("orc does not know this provider", instead));
        }
    };
    Ok((kind, None))
}

fn wrong_type(key: &'static str, expected: &str, found: &Value) -> Problem {
    (
        ConfigErrorKind::WrongType {
            key: key.to_string(),
            expected: expected.to_string(),
            found: describe(found),
        },
        Some(key),
    )
}

fn out_of_range(key: &'static str, problem: String) -> Problem {
    (
        ConfigErrorKind::OutOfRange {
            key: key.to_string(),
            problem,
        },
        Some(key),
    )
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_one(yaml: &str) -> Read {
        let value: Value =
            serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap()).unwrap();
        let file = SourceFile::new(PathBuf::from("c.yaml"), "c.yaml".into(), yaml);
        let locator = Locator::new(&file);
        profile("p", &value, &file, &locator, &[], &PriceTable::default())
    }

    fn usable(yaml: &str) -> Profile {
        match read_one(yaml) {
            Read::Usable(p) => *p,
            Read::Unusable(u) => panic!("unusable: {}", u.error),
        }
    }

    fn unusable(yaml: &str) -> ConfigError {
        match read_one(yaml) {
            Read::Usable(p) => panic!("usable: {p:?}"),
            Read::Unusable(u) => u.error,
        }
    }

    #[test]
    fn provider_names_are_mapped() {
        let p = usable("provider: llama-server\nmodel: qwen3-8b\ncost_per_token: 0.0\n");
        assert_eq!(p.provider, ProviderKind::OpenaiCompatible);
        assert!(p.base_url.is_some());
        assert_eq!(p.price.map(|p| p.input_per_mtok), Some(0.0));
        let p = usable(
            "provider: anthropic-api\nmodel: claude-x\nsystem_prompt: Be brief.\ntimeout_seconds: 30\nhf_repo: ignored\n",
        );
        assert_eq!(p.provider, ProviderKind::Anthropic);
        assert_eq!(p.system_prompt.as_deref(), Some("Be brief."));
        assert_eq!(p.timeout, Some(std::time::Duration::from_secs(30)));
        assert_eq!(
            usable("provider: google-gemini\nmodel: g\n").provider,
            ProviderKind::Gemini
        );
        assert_eq!(
            usable("provider: ollama\nmodel: o\n").provider,
            ProviderKind::Ollama
        );
        let p = usable("provider: openai-compatible\nmodel: m\n");
        assert_eq!(p.provider, ProviderKind::OpenaiCompatible);
        assert_eq!(
            p.base_url, None,
            "the base URL comes from the environment at run time"
        );
        assert_eq!(
            usable("provider: anything\nmodel: mock-fast\n").provider,
            ProviderKind::Mock
        );
    }

    #[test]
    fn problems_are_located() {
        let e = unusable("model: claude-x\nprovider: anthropic-claude-pro-max\n");
        assert!(e.to_string().contains("OAuth"), "{e}");
        assert_eq!(e.line_col(), Some((2, 11)));
        let e = unusable("provider: nonexistent-provider\nmodel: x\n");
        assert!(e.to_string().contains("does not know"), "{e}");
        let e = unusable("provider: ollama\n");
        assert!(
            e.to_string().contains("missing required key `model`"),
            "{e}"
        );
        let e = unusable("provider: ollama\nmodel: m\ntimeout_seconds: -1\n");
        assert_eq!(e.line_col(), Some((3, 18)));
        let e = unusable("provider: ollama\nmodel: m\nmax_tokens: 5000000000\n");
        assert!(e.to_string().contains("max_tokens"), "{e}");
    }
}
