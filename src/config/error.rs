//! Configuration errors: what is wrong with a file, and where.
//!
//! `ConfigErrorKind` holds the facts (names, values, suggestions); `ConfigError` adds the
//! source file and the byte span, and renders as a miette diagnostic with a caret under the
//! offending YAML. Rendering itself is set up once, in `diagnostics.rs`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{
    Diagnostic, LabeledSpan, MietteSpanContents, NamedSource, Severity, SourceCode, SourceSpan,
    SpanContents,
};

/// A file's text, shared by every error that points into it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The name errors show: the path as the user gave it.
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(path: PathBuf, name: String, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            path,
            name,
            text: text.into(),
        }
    }

    /// Byte offset of a 1-based line and a 1-based column counted in characters.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let text = &*self.text;
        let mut offset = 0;
        for _ in 1..line {
            match text[offset..].find('\n') {
                Some(i) => offset += i + 1,
                None => return text.len(),
            }
        }
        let rest = &text[offset..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let within = rest[..line_end]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_end, |(i, _)| i);
        offset + within
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }
}

/// What is wrong, in words. Variants name facts; fields hold data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    #[error("cannot read `{}`: {message}", .path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("cannot read `{}`: it is a {what}, not a regular file", .path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "`{}` is larger than {}, the limit for ensemble and profile files",
        .path.display(),
        super::read::human_bytes(*.limit)
    )]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("file is not valid UTF-8 text")]
    NotUtf8,
    #[error("invalid YAML: {message}")]
    Syntax { message: String, tabs: bool },
    #[error("YAML too large or too deeply nested: {message}")]
    YamlLimit { message: String },
    #[error("{more} more problem{} in this file", if *.more == 1 { "" } else { "s" })]
    TooManyErrors { more: usize, warnings_only: bool },
    #[error("file is empty")]
    Empty,
    #[error("expected a mapping of keys at the top level, found {found}")]
    NotAMapping { found: String },
    #[error("unknown key `{key}`{}", in_what(.context))]
    UnknownKey {
        key: String,
        context: Option<String>,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("missing required key `{key}`{}", in_what(.context))]
    MissingKey {
        key: String,
        context: Option<String>,
    },
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: String,
        found: String,
    },
    #[error("`{key}` has invalid value `{value}`")]
    InvalidValue {
        key: String,
        value: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("`{key}` {problem}")]
    OutOfRange { key: String, problem: String },
    #[error("invalid name `{name}`")]
    InvalidName { name: String },
    #[error("duplicate agent name `{name}`")]
    DuplicateAgent { name: String },
    #[error("agent `{agent}` depends on unknown agent `{dependency}`")]
    UnknownDependency {
        agent: String,
        dependency: String,
        suggestion: Option<String>,
    },
    #[error("agent `{agent}` depends on itself")]
    SelfDependency { agent: String },
    #[error("agent `{agent}` lists `{dependency}` in `depends_on` twice")]
    RepeatedDependency { agent: String, dependency: String },
    #[error("agent `{agent}` has circular dependency `{}`", .cycle.join(" -> "))]
    DependencyCycle { agent: String, cycle: Vec<String> },
    #[error("unknown model profile `{profile}`")]
    UnknownProfile {
        profile: String,
        suggestion: Option<String>,
        known: Vec<String>,
    },
    #[error("agent `{agent}` sets both `model_profile` and `model`")]
    ProfileAndModel { agent: String },
    #[error("agent `{agent}` sets `model` without `provider`")]
    ModelWithoutProvider { agent: String },
    #[error("agent `{agent}` sets `provider` without `model`")]
    ProviderWithoutModel { agent: String },
    #[error("profile `{profile}` needs `{key}` for provider `{provider}`")]
    ProfileMissingKey {
        profile: String,
        provider: String,
        key: String,
    },
    #[error("template of agent `{agent}` does not parse: {message}")]
    TemplateSyntax { agent: String, message: String },
    #[error("template of agent `{agent}` uses undefined variable `{variable}`")]
    TemplateUndefined {
        agent: String,
        variable: String,
        suggestion: Option<String>,
    },
    #[error(
        "template of agent `{agent}` reads `agents.{other}`, which is not among its dependencies"
    )]
    TemplateNotDependency { agent: String, other: String },
    #[error("invalid `when` condition: {message}")]
    InvalidCondition { message: String },
    #[error("condition of agent `{agent}` reads `{other}`, which is not among its dependencies")]
    ConditionNotDependency { agent: String, other: String },
    #[error("agent `{agent}` fans out but has no dependency to take the list from")]
    FanOutWithoutDependency { agent: String },
    #[error("script `{path}` of agent `{agent}` {problem}")]
    ScriptProblem {
        agent: String,
        path: String,
        problem: String,
    },
    #[error("`{key}` cannot be enforced: profile `{profile}` has no known price")]
    UnpricedLimit { key: String, profile: String },
    #[error("agent `{agent}` runs ensemble `{reference}`, which cannot be found")]
    UnknownEnsemble { agent: String, reference: String },
    #[error("nested ensembles form a cycle: {}", .chain.join(" -> "))]
    EnsembleCycle { chain: Vec<String> },
    #[error("nested ensembles go deeper than {limit} levels")]
    EnsembleTooDeep { limit: usize },
    #[error("nested ensemble `{reference}` (run by agent `{agent}`) is invalid")]
    InvalidNestedEnsemble { agent: String, reference: String },
    #[error("agent `{agent}` runs `{reference}`, which is not an ensemble file: {problem}")]
    NotAnEnsemble {
        agent: String,
        reference: String,
        problem: String,
    },
    #[error("agent `{agent}` could not be loaded")]
    AgentNotLoaded { agent: String },
    #[error("`output` of agent `{agent}` is `{path}`, which already exists")]
    OutputExists { agent: String, path: String },
    #[error("agent `{agent}` sets both `overwrite` and `append`")]
    OverwriteAndAppend { agent: String },
    #[error("test `{test}`: {problem}")]
    BadTest {
        test: String,
        problem: String,
        suggestion: Option<String>,
    },
    #[error("`{key}` is an llm-orc key that orc accepts but does not use")]
    IgnoredKey { key: String },
    #[error("`{key}` on a `{kind}` agent is not run by this version of orc")]
    NotYetSupported { key: String, kind: String },
    #[error("`{key}` is only used by `{applies_to}` agents")]
    KeyNotForKind { key: String, applies_to: String },
    #[error("unknown top-level key `{key}` is ignored")]
    IgnoredTopLevelKey {
        key: String,
        suggestion: Option<String>,
    },
    #[error("script `{script}` of agent `{agent}` was not found")]
    ScriptNotFound {
        agent: String,
        script: String,
        /// Every folder searched, in order.
        looked_in: Vec<String>,
    },
    #[error("profile `{profile}` uses provider `{provider}`, which orc cannot run: {reason}")]
    UnsupportedProvider {
        profile: String,
        provider: String,
        reason: String,
        /// What to use instead.
        instead: String,
    },
    #[error("model profile `{profile}` cannot be used: {problem}")]
    UnusableProfile { profile: String, problem: String },
    #[error("invalid `until` condition: {message}")]
    InvalidUntil { message: String },
    #[error("invalid `carry`: {message}")]
    InvalidCarry { message: String },
    #[error("invalid `dispatch`: {message}")]
    InvalidDispatch { message: String },
    #[error("`dispatch` of agent `{agent}` reads `{other}`, which is not among its dependencies")]
    DispatchNotDependency { agent: String, other: String },
    #[error("agent `{agent}` sets both `{first}` and `{second}`")]
    ConflictingKeys {
        agent: String,
        first: String,
        second: String,
    },
    #[error(
        "`input_scope: dependencies` does nothing for agent `{agent}`, which has no dependencies"
    )]
    InputScopeWithoutDependencies { agent: String },
    #[error(
        "template of agent `{agent}` reads `input`, which `input_scope: dependencies` keeps from it"
    )]
    TemplateReadsInput { agent: String },
}

fn in_what(context: &Option<String>) -> String {
    context
        .as_ref()
        .map_or_else(String::new, |c| format!(" in {c}"))
}

impl ConfigErrorKind {
    /// Stable identifier of the kind of problem, for `--output json` and docs.
    pub fn code(&self) -> &'static str {
        match self {
            ConfigErrorKind::Unreadable { .. } => "orc::config::unreadable",
            ConfigErrorKind::NotAFile { .. } => "orc::config::not_a_file",
            ConfigErrorKind::TooLarge { .. } => "orc::config::too_large",
            ConfigErrorKind::NotUtf8 => "orc::config::not_utf8",
            ConfigErrorKind::Syntax { .. } => "orc::config::syntax",
            ConfigErrorKind::YamlLimit { .. } => "orc::config::yaml_limit",
            ConfigErrorKind::TooManyErrors { .. } => "orc::config::too_many_errors",
            ConfigErrorKind::Empty => "orc::config::empty",
            ConfigErrorKind::NotAMapping { .. } => "orc::config::not_a_mapping",
            ConfigErrorKind::UnknownKey { .. } => "orc::config::unknown_key",
            ConfigErrorKind::MissingKey { .. } => "orc::config::missing_key",
            ConfigErrorKind::WrongType { .. } => "orc::config::wrong_type",
            ConfigErrorKind::InvalidValue { .. } => "orc::config::invalid_value",
            ConfigErrorKind::OutOfRange { .. } => "orc::config::out_of_range",
            ConfigErrorKind::InvalidName { .. } => "orc::config::invalid_name",
            ConfigErrorKind::DuplicateAgent { .. } => "orc::config::duplicate_agent",
            ConfigErrorKind::UnknownDependency { .. } => "orc::config::unknown_dependency",
            ConfigErrorKind::SelfDependency { .. } => "orc::config::self_dependency",
            ConfigErrorKind::RepeatedDependency { .. } => "orc::config::repeated_dependency",
            ConfigErrorKind::DependencyCycle { .. } => "orc::config::dependency_cycle",
            ConfigErrorKind::UnknownProfile { .. } => "orc::config::unknown_profile",
            ConfigErrorKind::ProfileAndModel { .. } => "orc::config::profile_and_model",
            ConfigErrorKind::ModelWithoutProvider { .. } => "orc::config::model_without_provider",
            ConfigErrorKind::ProviderWithoutModel { .. } => "orc::config::provider_without_model",
            ConfigErrorKind::ProfileMissingKey { .. } => "orc::config::profile_missing_key",
            ConfigErrorKind::TemplateSyntax { .. } => "orc::config::template_syntax",
            ConfigErrorKind::TemplateUndefined { .. } => "orc::config::template_undefined",
            ConfigErrorKind::TemplateNotDependency { .. } => "orc::config::template_not_dependency",
            ConfigErrorKind::NotYetSupported { .. } => "orc::config::not_yet_supported",
            ConfigErrorKind::IgnoredKey { .. } => "orc::config::ignored_key",
            ConfigErrorKind::BadTest { .. } => "orc::config::bad_test",
            ConfigErrorKind::UnknownEnsemble { .. } => "orc::config::unknown_ensemble",
            ConfigErrorKind::EnsembleCycle { .. } => "orc::config::ensemble_cycle",
            ConfigErrorKind::EnsembleTooDeep { .. } => "orc::config::ensemble_too_deep",
            ConfigErrorKind::InvalidNestedEnsemble { .. } => "orc::config::invalid_nested_ensemble",
            ConfigErrorKind::NotAnEnsemble { .. } => "orc::config::not_an_ensemble",
            ConfigErrorKind::OutputExists { .. } => "orc::config::output_exists",
            ConfigErrorKind::AgentNotLoaded { .. } => "orc::config::agent_not_loaded",
            ConfigErrorKind::OverwriteAndAppend { .. } => "orc::config::overwrite_and_append",
            ConfigErrorKind::UnpricedLimit { .. } => "orc::config::unpriced_limit",
            ConfigErrorKind::InvalidCondition { .. } => "orc::config::invalid_condition",
            ConfigErrorKind::ConditionNotDependency { .. } => {
                "orc::config::condition_not_dependency"
            }
            ConfigErrorKind::FanOutWithoutDependency { .. } => {
                "orc::config::fan_out_without_dependency"
            }
            ConfigErrorKind::ScriptProblem { .. } => "orc::config::script",
            ConfigErrorKind::KeyNotForKind { .. } => "orc::config::key_not_for_kind",
            ConfigErrorKind::IgnoredTopLevelKey { .. } => "orc::config::ignored_top_level_key",
            ConfigErrorKind::ScriptNotFound { .. } => "orc::config::script_not_found",
            ConfigErrorKind::UnsupportedProvider { .. } => "orc::config::unsupported_provider",
            ConfigErrorKind::UnusableProfile { .. } => "orc::config::unusable_profile",
            ConfigErrorKind::InvalidUntil { .. } => "orc::config::invalid_until",
            ConfigErrorKind::InvalidCarry { .. } => "orc::config::invalid_carry",
            ConfigErrorKind::InvalidDispatch { .. } => "orc::config::invalid_dispatch",
            ConfigErrorKind::DispatchNotDependency { .. } => "orc::config::dispatch_not_dependency",
            ConfigErrorKind::ConflictingKeys { .. } => "orc::config::conflicting_keys",
            ConfigErrorKind::InputScopeWithoutDependencies { .. } => {
                "orc::config::input_scope_without_dependencies"
            }
            ConfigErrorKind::TemplateReadsInput { .. } => "orc::config::template_reads_input",
        }
    }

    /// Short text under the caret.
    fn label(&self) -> &'static str {
        match self {
            ConfigErrorKind::Syntax { .. } => "here",
            ConfigErrorKind::UnknownKey { .. } => "not a valid key here",
            ConfigErrorKind::MissingKey { .. } => "this needs the key",
            ConfigErrorKind::WrongType { .. } => "wrong type",
            ConfigErrorKind::InvalidValue { .. } => "invalid value",
            ConfigErrorKind::OutOfRange { .. } => "out of range",
            ConfigErrorKind::InvalidName { .. } => "use letters, digits, `-` and `_`",
            ConfigErrorKind::DuplicateAgent { .. } => "defined again here",
            ConfigErrorKind::UnknownDependency { .. } => "not defined in this ensemble",
            ConfigErrorKind::SelfDependency { .. } => "an agent cannot wait for itself",
            ConfigErrorKind::RepeatedDependency { .. } => "listed again here",
            ConfigErrorKind::DependencyCycle { .. } => "this edge closes the cycle",
            ConfigErrorKind::UnknownProfile { .. } => "no profile of this name",
            ConfigErrorKind::ProfileAndModel { .. } => "remove one of the two",
            ConfigErrorKind::ModelWithoutProvider { .. } => "needs a `provider`",
            ConfigErrorKind::ProviderWithoutModel { .. } => "needs a `model`",
            ConfigErrorKind::ProfileMissingKey { .. } => "in this profile",
            ConfigErrorKind::TemplateSyntax { .. } => "template error",
            ConfigErrorKind::TemplateUndefined { .. } => "undefined",
            ConfigErrorKind::TemplateNotDependency { .. } => "not a dependency",
            ConfigErrorKind::NotYetSupported { .. } => "accepted, but not run yet",
            ConfigErrorKind::IgnoredKey { .. } => "ignored",
            ConfigErrorKind::KeyNotForKind { .. } => "ignored on this agent",
            ConfigErrorKind::IgnoredTopLevelKey { .. } => "ignored",
            ConfigErrorKind::ScriptNotFound { .. } => "not found",
            ConfigErrorKind::UnsupportedProvider { .. } => "not supported by orc",
            ConfigErrorKind::UnusableProfile { .. } => "this profile cannot run",
            ConfigErrorKind::TooManyErrors { .. } => "the next one is here",
            ConfigErrorKind::OutputExists { .. } => "would be overwritten",
            ConfigErrorKind::OverwriteAndAppend { .. } => "choose one",
            ConfigErrorKind::InvalidUntil { .. }
            | ConfigErrorKind::InvalidCarry { .. }
            | ConfigErrorKind::InvalidDispatch { .. } => "cannot be read",
            ConfigErrorKind::DispatchNotDependency { .. } => "not a dependency",
            ConfigErrorKind::ConflictingKeys { .. } => "an agent runs one thing",
            ConfigErrorKind::InputScopeWithoutDependencies { .. } => "no effect",
            ConfigErrorKind::TemplateReadsInput { .. } => "out of scope",
            _ => "here",
        }
    }

    fn help(&self) -> Option<String> {
        let valid_list = |valid: &[String]| {
            valid
                .iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            ConfigErrorKind::TooLarge { .. } => {
                Some("ensembles and profiles are small files; check that this is the right path".into())
            }
            ConfigErrorKind::NotAFile { .. } => Some("give the path of a YAML file".into()),
            ConfigErrorKind::NotUtf8 => Some("save the file as UTF-8 text".into()),
            ConfigErrorKind::YamlLimit { .. } => Some(format!(
                "orc reads at most {} levels of nesting, {} keys, list items and lines, and {} values added by aliases; simplify the file",
                super::yaml::MAX_DEPTH,
                super::yaml::MAX_MARKS,
                super::yaml::MAX_ALIAS_VALUES
            )),
            ConfigErrorKind::TooManyErrors { .. } => {
                Some("fix the problems above and run `orc validate` again".into())
            }
            ConfigErrorKind::NotAnEnsemble { .. } => Some(
                "`ensemble:` names an ensemble (`.yaml` or `.yml` file with `name:` and `agents:`) by path relative to this file or by name; its contents are not shown".into(),
            ),
            ConfigErrorKind::OutputExists { .. } => Some(
                "add `overwrite: true` to replace it, `append: true` to add to it, or choose another path".into(),
            ),
            ConfigErrorKind::OverwriteAndAppend { .. } => {
                Some("`overwrite: true` replaces the file, `append: true` adds to it; keep one".into())
            }
            ConfigErrorKind::AgentNotLoaded { .. } => {
                Some("this is a bug in orc; please report it with the file".into())
            }
            ConfigErrorKind::Syntax { tabs: true, .. } => Some(
                "YAML does not allow tabs for indentation; indent with spaces".into(),
            ),
            ConfigErrorKind::Syntax { .. } => {
                Some("check the indentation and quoting on this line and the one above".into())
            }
            ConfigErrorKind::Empty => Some("an ensemble needs at least `name:` and `agents:`".into()),
            ConfigErrorKind::MissingKey { key, .. } => Some(format!("add `{key}:`")),
            ConfigErrorKind::UnknownKey {
                suggestion, valid, ..
            } => Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("valid keys are {}", valid_list(valid)),
            }),
            ConfigErrorKind::InvalidValue {
                suggestion, valid, ..
            } => Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of {}", valid_list(valid)),
            }),
            ConfigErrorKind::InvalidName { .. } => {
                Some("names may contain only ASCII letters, digits, `-` and `_`".into())
            }
            ConfigErrorKind::DuplicateAgent { .. } => Some("give each agent a unique name".into()),
            ConfigErrorKind::UnknownDependency { suggestion, .. } => Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "`depends_on` lists names of agents of this ensemble".into(),
            }),
            ConfigErrorKind::SelfDependency { .. } => Some("remove it from `depends_on`".into()),
            ConfigErrorKind::RepeatedDependency { .. } => Some("remove the repeated entry".into()),
            ConfigErrorKind::DependencyCycle { .. } => {
                Some("remove one of the `depends_on` edges of the cycle".into())
            }
            ConfigErrorKind::UnknownProfile {
                suggestion, known, ..
            } => Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "known profiles are {}; define more under `model_profiles:` or see `orc profiles`",
                    valid_list(known)
                ),
            }),
            ConfigErrorKind::ProfileAndModel { .. } => Some(
                "use either `model_profile: NAME` or `model:` + `provider:`, not both".into(),
            ),
            ConfigErrorKind::ModelWithoutProvider { .. } => {
                Some("add `provider:` (mock, openai, anthropic, gemini, ollama, openai-compatible)".into())
            }
            ConfigErrorKind::ProviderWithoutModel { .. } => Some("add `model:`".into()),
            ConfigErrorKind::ProfileMissingKey { key, .. } => Some(format!("add `{key}:` to the profile")),
            ConfigErrorKind::TemplateUndefined { suggestion, .. } => Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "templates see `input`, `deps` and `agents.NAME`".into(),
            }),
            ConfigErrorKind::TemplateNotDependency { other, .. } => {
                Some(format!("add `{other}` to `depends_on`"))
            }
            ConfigErrorKind::NotYetSupported { .. } => Some(
                "the key is validated now; `orc invoke` refuses to run the agent until support lands".into(),
            ),
            ConfigErrorKind::KeyNotForKind { .. } => Some("remove the key or change `type`".into()),
            ConfigErrorKind::UnknownEnsemble { .. } => Some(
                "give a path relative to this file, or the name of an ensemble in .orc/ensembles, .llm-orc/ensembles or ~/.config/orc/ensembles".into(),
            ),
            ConfigErrorKind::EnsembleCycle { .. } => Some("an ensemble cannot run itself, directly or through others".into()),
            ConfigErrorKind::InvalidNestedEnsemble { .. } => Some("its own errors are listed above".into()),
            ConfigErrorKind::BadTest { suggestion: Some(s), .. } => Some(format!("did you mean `{s}`?")),
            ConfigErrorKind::BadTest { .. } => Some(
                "an expectation names an `agent` with `status`, `contains`, `matches` or `json`, or is `max_cost_usd`, `max_tokens` or a run `status`".into(),
            ),
            ConfigErrorKind::UnpricedLimit { profile, .. } => Some(format!(
                "give profile `{profile}` a `price:` (or add its model to prices.yaml); an unknown cost is never counted as zero"
            )),
            ConfigErrorKind::IgnoredKey { .. } => Some(
                "the file still runs; see the README's notes on llm-orc compatibility".into(),
            ),
            ConfigErrorKind::InvalidCondition { .. } => Some(
                "write `${agent.path}`, optionally followed by `== value` or `!= value`".into(),
            ),
            ConfigErrorKind::ConditionNotDependency { other, .. } => {
                Some(format!("add `{other}` to `depends_on`"))
            }
            ConfigErrorKind::FanOutWithoutDependency { .. } => Some(
                "add the agent whose JSON array output to fan out over to `depends_on` (and `input_key` to pick the array)".into(),
            ),
            ConfigErrorKind::IgnoredTopLevelKey {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean `{s}`?")),
            ConfigErrorKind::IgnoredTopLevelKey { .. } => Some(
                "llm-orc ignores top-level keys it does not use, and so does orc; the file still runs".into(),
            ),
            ConfigErrorKind::ScriptNotFound { looked_in, .. } if looked_in.is_empty() => {
                Some("an absolute `script:` path must name a regular file".into())
            }
            ConfigErrorKind::ScriptNotFound { looked_in, .. } => Some(format!(
                "looked in, in order: {}; put the script in one of these, or add its folder to `ORC_SCRIPT_PATH` or to `script_path:` in config.yaml",
                looked_in
                    .iter()
                    .map(|d| format!("`{d}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            ConfigErrorKind::UnsupportedProvider { instead, .. } => Some(instead.clone()),
            ConfigErrorKind::UnusableProfile { profile, .. } => Some(format!(
                "see the profile's definition (reported with this error); or define `{profile}` in .orc/profiles, which wins over .llm-orc, or run with `--profile-map {profile}=NAME`"
            )),
            ConfigErrorKind::ScriptProblem { .. } => Some(
                "make the file executable, or give the interpreter with `run: [python3, script.py]`".into(),
            ),
            ConfigErrorKind::InvalidUntil { .. } => Some(
                "write `${path}` for a path into the body's final JSON output (`${diagnostics.accept}`), optionally followed by `== value` or `!= value`".into(),
            ),
            ConfigErrorKind::InvalidCarry { .. } => Some(
                "write `${path}`: the value at that path of the body's final JSON output is the next iteration's input".into(),
            ),
            ConfigErrorKind::InvalidDispatch { .. } => Some(
                "write `${agent.path}` for a dependency whose JSON output holds the ensemble's name at `path`, or the name of an ensemble".into(),
            ),
            ConfigErrorKind::DispatchNotDependency { other, .. } => {
                Some(format!("add `{other}` to `depends_on`"))
            }
            ConfigErrorKind::ConflictingKeys { first, second, .. } => Some(format!(
                "keep one of `{first}` and `{second}`; to combine them, put one in an ensemble of its own"
            )),
            ConfigErrorKind::InputScopeWithoutDependencies { .. } => Some(
                "an agent without dependencies receives the run input; remove `input_scope` or add `depends_on`".into(),
            ),
            ConfigErrorKind::TemplateReadsInput { .. } => Some(
                "remove `input_scope: dependencies` or the template's use of `input`".into(),
            ),
            _ => None,
        }
    }

    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            ConfigErrorKind::NotYetSupported { .. }
                | ConfigErrorKind::KeyNotForKind { .. }
                | ConfigErrorKind::IgnoredKey { .. }
                | ConfigErrorKind::IgnoredTopLevelKey { .. }
                | ConfigErrorKind::TooManyErrors {
                    warnings_only: true,
                    ..
                }
                | ConfigErrorKind::InputScopeWithoutDependencies { .. }
        )
    }
}

/// One located problem in a file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub source: Snippet,
    /// Byte span of the offending text, when the file could be located.
    pub span: Option<SourceSpan>,
}

impl ConfigError {
    pub fn new(kind: ConfigErrorKind, file: &SourceFile, span: Option<SourceSpan>) -> Self {
        ConfigError {
            kind,
            source: Snippet::new(file, span),
            span,
        }
    }

    /// 1-based line and column of the span's start, for plain-text reports.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let span = self.span?;
        let contents = self
            .source
            .read_span(&(span.offset(), 0).into(), 0, 0)
            .ok()?;
        Some((contents.line() + 1, contents.column() + 1))
    }
}

/// Lines longer than this are not shown whole: a window around the error is.
const MAX_SHOWN_LINE: usize = 300;
/// Bytes shown before and after the start of the error in a clipped line.
const CLIP_BEFORE: usize = 60;
const CLIP_AFTER: usize = 100;

/// The text an error points into, as miette reads it: the file, or, when a line around the
/// error is too long to show (a minified file), a window of the error's line. miette
/// panics past column 65,535 (issue 13), and a 100 KB line helps nobody anyway.
#[derive(Debug, Clone)]
pub struct Snippet {
    file: NamedSource<Arc<str>>,
    clip: Option<Clip>,
}

#[derive(Debug, Clone)]
struct Clip {
    /// What is shown: the window, with `…` where the line goes on.
    shown: String,
    /// Offset in the file that `shown[0]` stands for, so that offsets in the window map
    /// onto `shown` (the leading `…` takes the bytes just before the window).
    shown_start: usize,
    /// Byte range of the window in the file.
    window: std::ops::Range<usize>,
    /// Byte range of the whole line in the file.
    line: std::ops::Range<usize>,
    /// 0-based line number.
    line_number: usize,
}

impl Snippet {
    fn new(file: &SourceFile, span: Option<SourceSpan>) -> Snippet {
        Snippet {
            file: NamedSource::new(file.name.clone(), Arc::clone(&file.text)).with_language("yaml"),
            clip: span.and_then(|s| Clip::around(&file.text, s.offset())),
        }
    }

    /// The file's name as errors show it.
    pub fn name(&self) -> &str {
        self.file.name()
    }

    /// The span as shown: cut at the end of the window of a clipped line.
    fn shown_span(&self, span: SourceSpan) -> SourceSpan {
        match &self.clip {
            Some(c) if c.line.contains(&span.offset()) || c.line.end == span.offset() => {
                let end = (span.offset() + span.len()).min(c.window.end);
                SourceSpan::new(span.offset().into(), end.saturating_sub(span.offset()))
            }
            _ => span,
        }
    }
}

impl Clip {
    fn around(text: &str, offset: usize) -> Option<Clip> {
        let offset = offset.min(text.len());
        let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        // The lines shown as context must be short too, or they are left out.
        let before_start = text[..line_start.saturating_sub(1)]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let after_end = text[(line_end + 1).min(text.len())..]
            .find('\n')
            .map_or(text.len(), |i| line_end + 1 + i);
        let longest = [
            line_start.saturating_sub(1) - before_start.min(line_start.saturating_sub(1)),
            line_end - line_start,
            after_end.saturating_sub(line_end + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        if longest <= MAX_SHOWN_LINE {
            return None;
        }
        let floor = |mut i: usize| {
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        const ELLIPSIS: &str = "…";
        let mut start = floor(offset.saturating_sub(CLIP_BEFORE).max(line_start));
        if start < line_start + ELLIPSIS.len() {
            start = line_start;
        }
        let end = floor((offset + CLIP_AFTER).min(line_end));
        let mut shown = String::new();
        if start > line_start {
            shown.push_str(ELLIPSIS);
        }
        shown.push_str(&text[start..end]);
        if end < line_end {
            shown.push_str(ELLIPSIS);
        }
        Some(Clip {
            shown,
            shown_start: if start > line_start {
                start - ELLIPSIS.len()
            } else {
                start
            },
            window: start..end,
            line: line_start..line_end,
            line_number: text.as_bytes()[..line_start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })
    }
}

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, miette::MietteError> {
        let Some(clip) = self
            .clip
            .as_ref()
            .filter(|c| c.line.contains(&span.offset()) || c.line.end == span.offset())
        else {
            return self
                .file
                .read_span(span, context_lines_before, context_lines_after);
        };
        // Just the one line; the column is where the span starts, as miette counts it
        // (bytes), so the header names the real position.
        let column = if context_lines_before == 0 && context_lines_after == 0 {
            span.offset() - clip.line.start
        } else {
            0
        };
        Ok(Box::new(MietteSpanContents::new_named(
            self.file.name().to_string(),
            clip.shown.as_bytes(),
            SourceSpan::new(clip.shown_start.into(), clip.shown.len()),
            clip.line_number,
            column,
            1,
        )))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for ConfigError {}

impl Diagnostic for ConfigError {
    fn severity(&self) -> Option<Severity> {
        Some(if self.kind.is_warning() {
            Severity::Warning
        } else {
            Severity::Error
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.kind
            .help()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.span.map(|_| &self.source as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.source.shown_span(self.span?);
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.kind.label().to_string()),
            span,
        ))))
    }
}

/// Every problem found in one or more files, errors and warnings together.
#[derive(Debug, Default)]
pub struct ConfigReport {
    pub diagnostics: Vec<ConfigError>,
}

impl ConfigReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| !d.kind.is_warning())
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| !d.kind.is_warning())
            .count()
    }

    pub fn extend(&mut self, other: ConfigReport) {
        self.diagnostics.extend(other.diagnostics);
    }

    pub fn push(&mut self, error: ConfigError) {
        self.diagnostics.push(error);
    }

    /// Drops repeats: the same words at the same place.
    pub fn dedup(&mut self) {
        let mut seen = std::collections::HashSet::new();
        self.diagnostics.retain(|d| {
            seen.insert((
                d.source.file.name().to_string(),
                d.span.map(|s| (s.offset(), s.len())),
                d.kind.to_string(),
            ))
        });
    }
}
