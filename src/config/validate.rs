//! Semantic checks of an ensemble document, and lowering into `Ensemble`: names,
//! dependencies, cycles, profiles, templates, and keys accepted but not run yet.
//!
//! Works on the JSON value agent by agent, so a shape error in one agent does not hide the
//! semantic errors of the others: every problem of the file is reported at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::bounds;
use super::cycles::find_cycles;
use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::load::{Document, MAX_ERRORS_PER_FILE};
use super::locate::{Locator, PathSeg};
use super::model::{
    Agent, DEFAULT_PROFILE, DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT, DedupSettings,
    Ensemble, GenerateSettings, NodeKind, Origin, Profile,
};
use super::model::{
    Control, DispatchSettings, DispatchSource, LoopSettings, Nested, OptimizerSettings,
    ResponseFormat,
};
use super::profiles::{ProfileSet, lower};
use super::scripts::{ScriptSearch, shown};
use super::spec::{
    AgentKind, AgentSpec, BudgetSpec, DefaultsSpec, InputScope, PartitionSpec, ProfileSpec,
};
use crate::path;
use crate::suggest::closest;
use crate::template::{self, TemplateProblem};

struct Checker<'a> {
    file: &'a SourceFile,
    locator: Locator<'a>,
    report: ConfigReport,
    /// Problems past `MAX_ERRORS_PER_FILE`, counted, whether any is an error, and where
    /// the first of them is.
    more: usize,
    more_errors: bool,
    next: Option<miette::SourceSpan>,
}

impl Checker<'_> {
    fn error(&mut self, kind: ConfigErrorKind, path: &[PathSeg]) {
        let span = self.span_of(path, false);
        self.push(kind, span);
    }

    /// The span of a path, unless the file already has all the errors it will show: then
    /// none, except for the first one past the cap, which the count points at.
    fn span_of(&mut self, path: &[PathSeg], key: bool) -> Option<miette::SourceSpan> {
        if self.report.diagnostics.len() >= MAX_ERRORS_PER_FILE && self.more > 0 {
            return None;
        }
        let exact = if key {
            self.locator.key_span(path)
        } else {
            self.locator.value_span(path)
        };
        exact.or_else(|| self.locator.nearest_span(path))
    }

    /// Whether the file has all the errors it will show.
    fn full(&self) -> bool {
        self.report.diagnostics.len() >= MAX_ERRORS_PER_FILE
    }

    fn push(&mut self, kind: ConfigErrorKind, span: Option<miette::SourceSpan>) {
        if self.report.diagnostics.len() >= MAX_ERRORS_PER_FILE {
            if self.more == 0 {
                self.next = span;
            }
            self.more += 1;
            self.more_errors |= !kind.is_warning();
            return;
        }
        self.report.push(ConfigError::new(kind, self.file, span));
    }

    /// A spec at `at`, or `None` after reporting why it cannot be read.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        doc: &Document,
        at: &[PathSeg],
    ) -> Option<T> {
        match doc.typed(at) {
            Ok(spec) => Some(spec),
            Err(Some((kind, path))) => {
                self.error(kind, &path);
                None
            }
            Err(None) => None,
        }
    }

    /// A number checked against its bounds (the schema's, checked again where the value is
    /// used, so that nothing past them reaches a conversion).
    fn bounded(&mut self, value: f64, min: f64, max: f64, path: &[PathSeg]) -> Option<f64> {
        match bounds::check(value, min, max) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.out_of_range(problem, path);
                None
            }
        }
    }

    fn counted(&mut self, value: u64, min: u64, max: u64, path: &[PathSeg]) -> Option<u64> {
        match bounds::count(value, min, max) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.out_of_range(problem, path);
                None
            }
        }
    }

    fn seconds(&mut self, value: f64, min: f64, max: f64, path: &[PathSeg]) -> Option<Duration> {
        match bounds::seconds(value, min, max) {
            Ok(v) => Some(v),
            Err(problem) => {
                self.out_of_range(problem, path);
                None
            }
        }
    }

    fn out_of_range(&mut self, problem: String, path: &[PathSeg]) {
        let kind = ConfigErrorKind::OutOfRange {
            key: super::schema::key_name(path),
            problem,
        };
        self.error(kind, path);
    }

    fn error_at_key(&mut self, kind: ConfigErrorKind, path: &[PathSeg]) {
        let span = self.span_of(path, true);
        self.push(kind, span);
    }
}

/// Keys that only mean something on `generate` nodes.
const GENERATE_KEYS: [&str; 12] = [
    "topic",
    "producers",
    "batch_size",
    "profiles",
    "feedback",
    "partition",
    "stop",
    "output",
    "overwrite",
    "append",
    "optimizer",
    "tracker",
];

/// Default `stop` when a `generate` node gives none: this many calls per producer.
const DEFAULT_ITERATIONS: u32 = 5;

/// Validates a parsed ensemble document against the profiles in effect.
pub(super) fn validate(
    doc: Document,
    base_profiles: &ProfileSet,
    mut report: ConfigReport,
) -> (Option<Ensemble>, ConfigReport) {
    let file = &doc.file;
    let value = &doc.value;
    let mut c = Checker {
        file,
        locator: Locator::new(file),
        report: ConfigReport::default(),
        more: 0,
        more_errors: false,
        next: None,
    };

    let defaults: DefaultsSpec = match value.get("defaults") {
        Some(_) => c.typed(&doc, &path!["defaults"]).unwrap_or_default(),
        None => DefaultsSpec::default(),
    };
    let budget: BudgetSpec = match value.get("budget") {
        Some(_) => c.typed(&doc, &path!["budget"]).unwrap_or_default(),
        None => BudgetSpec::default(),
    };
    let default_timeout = check_defaults(&mut c, &defaults, &budget);

    // Profiles: the ensemble's own on top of the configured ones.
    let mut profiles = base_profiles.clone();
    if let Some(Value::Object(map)) = value.get("model_profiles") {
        let specs: BTreeMap<String, ProfileSpec> = map
            .keys()
            .filter_map(|n| {
                c.typed(&doc, &path!["model_profiles", n.as_str()])
                    .map(|s| (n.clone(), s))
            })
            .collect();
        let origin_path = file.path.clone();
        c.report.extend(
            profiles.merge_specs(&specs, file, &["model_profiles"], &|_| {
                Origin::Ensemble(origin_path.clone())
            }),
        );
    }

    let raw_agents: &[Value] = value
        .get("agents")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let names: Vec<Option<String>> = raw_agents
        .iter()
        .map(|a| a.get("name").and_then(Value::as_str).map(String::from))
        .collect();

    // Unique names.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let Some(name) = name else { continue };
        if by_name.contains_key(name.as_str()) {
            c.error(
                ConfigErrorKind::DuplicateAgent { name: name.clone() },
                &path!["agents", i, "name"],
            );
        } else {
            by_name.insert(name, i);
        }
    }

    // Dependencies.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); raw_agents.len()];
    let mut dep_paths: HashMap<(usize, usize), Vec<PathSeg>> = HashMap::new();
    for (i, raw) in raw_agents.iter().enumerate() {
        let agent = names[i].clone().unwrap_or_else(|| format!("#{}", i + 1));
        let Some(list) = raw.get("depends_on").and_then(Value::as_array) else {
            continue;
        };
        let mut listed = std::collections::HashSet::new();
        for (j, entry) in list.iter().enumerate() {
            let (dep, at) = match entry {
                Value::String(s) => (s.as_str(), path!["agents", i, "depends_on", j].to_vec()),
                Value::Object(o) => match o.get("agent_name").and_then(Value::as_str) {
                    Some(s) => (
                        s,
                        path!["agents", i, "depends_on", j, "agent_name"].to_vec(),
                    ),
                    None => continue,
                },
                _ => continue,
            };
            match by_name.get(dep) {
                None => {
                    // A suggestion reads every name; not for errors past the cap.
                    let suggestion = (!c.full())
                        .then(|| closest(dep, by_name.keys().copied()))
                        .flatten()
                        .map(str::to_string);
                    c.error(
                        ConfigErrorKind::UnknownDependency {
                            agent: agent.clone(),
                            dependency: dep.to_string(),
                            suggestion,
                        },
                        &at,
                    );
                }
                Some(&d) if d == i => {
                    c.error(
                        ConfigErrorKind::SelfDependency {
                            agent: agent.clone(),
                        },
                        &at,
                    );
                }
                Some(&d) if !listed.insert(d) => c.error(
                    ConfigErrorKind::RepeatedDependency {
                        agent: agent.clone(),
                        dependency: dep.to_string(),
                    },
                    &at,
                ),
                Some(&d) => {
                    deps[i].push(d);
                    dep_paths.insert((i, d), at);
                }
            }
        }
    }
    let cycles = find_cycles(&deps);
    for cycle in &cycles {
        let label = |i: usize| names[i].clone().unwrap_or_else(|| format!("#{}", i + 1));
        let at = dep_paths[&(cycle[0], cycle[1])].clone();
        c.error(
            ConfigErrorKind::DependencyCycle {
                agent: label(cycle[0]),
                cycle: cycle.iter().map(|&i| label(i)).collect(),
            },
            &at,
        );
    }

    // Ancestry, for `agents.NAME` in templates.
    let ancestry = Ancestry::new(&deps);

    let default_profile = match &defaults.model_profile {
        Some(name) => match profiles.get(name) {
            Some(p) => Some(Arc::clone(p)),
            None => {
                c.error(
                    unknown_profile(name, &profiles),
                    &path!["defaults", "model_profile"],
                );
                None
            }
        },
        None => profiles.get(DEFAULT_PROFILE).cloned(),
    };

    let mut agents = Vec::new();
    for (i, raw) in raw_agents.iter().enumerate() {
        let Some(spec) = c.typed::<AgentSpec>(&doc, &path!["agents", i]) else {
            continue;
        };
        // llm-orc decides the kind by the keys present: `script` makes a script agent.
        let kind = spec
            .kind
            .unwrap_or(if spec.script.is_some() || spec.run.is_some() {
                AgentKind::Script
            } else {
                AgentKind::Llm
            });
        for key in crate::config::spec::LLM_ORC_IGNORED_AGENT_KEYS {
            if raw.get(key).is_some() {
                c.error_at_key(
                    ConfigErrorKind::IgnoredKey {
                        key: key.to_string(),
                    },
                    &path!["agents", i, key],
                );
            }
        }
        check_runner_keys(&mut c, i, raw, &spec, kind);
        check_input_scope(&mut c, i, &spec, kind);
        let condition = spec
            .when
            .as_ref()
            .and_then(|w| match crate::config::condition::parse(w) {
                Ok(cond) => {
                    let known = spec.depends_on.iter().any(|d| d.name() == cond.agent);
                    if !known {
                        c.error(
                            ConfigErrorKind::ConditionNotDependency {
                                agent: spec.name.clone(),
                                other: cond.agent.clone(),
                            },
                            &path!["agents", i, "when"],
                        );
                    }
                    Some(cond)
                }
                Err(message) => {
                    c.error(
                        ConfigErrorKind::InvalidCondition { message },
                        &path!["agents", i, "when"],
                    );
                    None
                }
            });
        let fan_out = spec.fan_out.unwrap_or(false);
        if fan_out && spec.depends_on.is_empty() {
            c.error_at_key(
                ConfigErrorKind::FanOutWithoutDependency {
                    agent: spec.name.clone(),
                },
                &path!["agents", i, "fan_out"],
            );
        }
        let misplaced: Vec<&str> = match kind {
            AgentKind::Generate => vec!["near_duplicates"],
            AgentKind::Dedup => GENERATE_KEYS.to_vec(),
            _ => GENERATE_KEYS
                .iter()
                .copied()
                .chain(["normalize", "near_duplicates"])
                .collect(),
        };
        for key in misplaced {
            if raw.get(key).is_some() {
                let applies_to = if key == "near_duplicates" {
                    "dedup"
                } else if key == "normalize" {
                    "generate` and `dedup"
                } else {
                    "generate"
                };
                c.error_at_key(
                    ConfigErrorKind::KeyNotForKind {
                        key: key.to_string(),
                        applies_to: applies_to.to_string(),
                    },
                    &path!["agents", i, key],
                );
            }
        }
        let response_format = match spec.response_format.as_ref().map(|f| f.schema()) {
            None => None,
            Some(None) => Some(ResponseFormat::json()),
            Some(Some(schema)) => match ResponseFormat::with_schema(schema) {
                Ok(format) => Some(format),
                Err(e) => {
                    c.error_at_key(
                        ConfigErrorKind::OutOfRange {
                            key: "response_format".into(),
                            problem: format!("is not a valid JSON Schema: {e}"),
                        },
                        &path!["agents", i, "response_format"],
                    );
                    None
                }
            },
        };
        let profile = resolve_profile(&mut c, i, &spec, &profiles, default_profile.as_ref());
        let node = match kind {
            AgentKind::Generate => {
                let Some(profile) = &profile else { continue };
                generate_settings(&mut c, i, &spec, profile, &profiles)
                    .map(|g| NodeKind::Generate(Box::new(g)))
            }
            AgentKind::Dedup => {
                if deps[i].is_empty() && spec.depends_on.is_empty() {
                    c.error_at_key(
                        ConfigErrorKind::MissingKey {
                            key: "depends_on".into(),
                            context: Some(format!(
                                "dedup agent `{}`: it deduplicates its dependencies' lists",
                                spec.name
                            )),
                        },
                        &path!["agents", i, "name"],
                    );
                }
                Some(NodeKind::Dedup(DedupSettings {
                    normalize: spec.normalize.unwrap_or(true),
                    near_duplicates: spec.near_duplicates,
                }))
            }
            AgentKind::Script => script_settings(&mut c, i, &spec, file, base_profiles.scripts())
                .map(NodeKind::Script),
            AgentKind::Llm => runs_ensemble(&mut c, i, &spec),
        };
        let Some(node) = node else { continue };
        if let (Some(prompt), false) = (&spec.prompt, kind == AgentKind::Generate) {
            let available = |name: &str| {
                by_name
                    .get(name)
                    .is_some_and(|&a| ancestry.is_ancestor(a, i))
            };
            check_template(
                &mut c,
                &spec.name,
                prompt,
                &available,
                &path!["agents", i, "prompt"],
            );
            if spec.input_scope == Some(InputScope::Dependencies) {
                let reads_input = template::check_with(prompt, &["deps", "agents"], &available)
                    .into_iter()
                    .any(|p| matches!(p, TemplateProblem::Undefined { variable, .. } if variable == "input"));
                if reads_input {
                    c.error(
                        ConfigErrorKind::TemplateReadsInput {
                            agent: spec.name.clone(),
                        },
                        &path!["agents", i, "prompt"],
                    );
                }
            }
        }
        let Some(profile) = profile else { continue };
        let Some(fallbacks) = fallback_chain(&mut c, i, &spec, &profile, &profiles) else {
            continue;
        };
        let Some(numbers) = check_call_numbers(&mut c, &call_numbers(&spec), &path!["agents", i])
        else {
            continue;
        };
        let timeout = numbers
            .timeout
            .or(default_timeout)
            .or(profile.timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let cache = spec
            .cache
            .as_ref()
            .and_then(|cache| match cache_policy(cache) {
                Ok(policy) => Some(policy),
                Err(problem) => {
                    c.error(
                        ConfigErrorKind::OutOfRange {
                            key: "cache.ttl".into(),
                            problem,
                        },
                        &path!["agents", i, "cache", "ttl"],
                    );
                    None
                }
            });
        agents.push(Agent {
            index: i,
            name: spec.name.clone(),
            kind,
            node,
            condition: condition.map(Box::new),
            input_key: spec.input_key.clone(),
            fan_out,
            input_scope: spec.input_scope,
            parameters: spec
                .parameters
                .as_ref()
                .map(|p| Value::Object(p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())),
            fallbacks,
            // llm-orc: a profile's system prompt applies to agents that set none.
            system_prompt: spec
                .system_prompt
                .clone()
                .or_else(|| profile.system_prompt.clone()),
            prompt: spec.prompt.clone(),
            depends_on: deps[i].clone(),
            temperature: spec.temperature.or(defaults.temperature),
            max_tokens: spec.max_tokens.or(defaults.max_tokens),
            options: spec.options.clone().unwrap_or_default(),
            response_format,
            cache,
            timeout,
            retries: spec.retries.or(defaults.retries).unwrap_or(DEFAULT_RETRIES),
            retry_backoff: spec
                .retry_backoff_ms
                .or(defaults.retry_backoff_ms)
                .map_or(DEFAULT_RETRY_BACKOFF, Duration::from_millis),
            on_dependency_failure: spec
                .on_dependency_failure
                .or(defaults.on_dependency_failure)
                .unwrap_or_default(),
            profile,
        });
    }

    if budget.max_cost_usd.is_some() {
        let unpriced = agents.iter().find_map(|a| {
            let mut profiles: Vec<&Arc<Profile>> =
                std::iter::once(&a.profile).chain(&a.fallbacks).collect();
            if let NodeKind::Generate(g) = &a.node {
                profiles.extend(&g.profiles);
            }
            if matches!(
                a.node,
                NodeKind::Script(_) | NodeKind::Dedup(_) | NodeKind::Nested(_)
            ) {
                return None;
            }
            profiles
                .into_iter()
                .find(|p| p.price.is_none())
                .map(|p| p.name.clone())
        });
        if let Some(profile) = unpriced {
            c.error(
                ConfigErrorKind::UnpricedLimit {
                    key: "budget.max_cost_usd".into(),
                    profile,
                },
                &path!["budget", "max_cost_usd"],
            );
        }
    }
    let tests: Vec<crate::config::spec::TestSpec> = match value.get("tests") {
        Some(_) => c.typed(&doc, &path!["tests"]).unwrap_or_default(),
        None => Vec::new(),
    };
    check_tests(&mut c, &tests, &names);
    let Checker {
        report: semantic,
        more,
        more_errors,
        next,
        ..
    } = c;
    report.extend(semantic);
    if more > 0 {
        report.push(ConfigError::new(
            ConfigErrorKind::TooManyErrors {
                more,
                warnings_only: !more_errors,
            },
            file,
            next,
        ));
    }
    // Document order reads best; errors without a location go first.
    report
        .diagnostics
        .sort_by_key(|d| d.span.map_or(0, |s| s.offset()));
    // An unusable llm-orc profile is also shown where it is defined, once.
    let mut named: Vec<&str> = Vec::new();
    let mut definitions = Vec::new();
    for d in &report.diagnostics {
        if let ConfigErrorKind::UnusableProfile { profile, .. } = &d.kind {
            if let Some(u) = profiles.unusable(profile) {
                if !named.contains(&profile.as_str()) {
                    named.push(profile);
                    definitions.push(u.error.clone());
                }
            }
        }
    }
    report.diagnostics.extend(definitions);
    // A bound is checked by the schema and again where the value is used; say it once.
    report.dedup();
    if !report.has_errors() && agents.len() != raw_agents.len() {
        // Every way an agent is left out reports why; should one not, the file must still
        // be refused loudly, never as an empty success.
        for i in (0..raw_agents.len()).filter(|i| !agents.iter().any(|a| a.index == *i)) {
            let agent = names[i].clone().unwrap_or_else(|| format!("#{}", i + 1));
            c_error(
                &mut report,
                &doc.file,
                ConfigErrorKind::AgentNotLoaded { agent },
                &path!["agents", i],
            );
        }
    }
    if report.has_errors() || agents.len() != raw_agents.len() {
        // Errors were reported; only a complete, valid ensemble is returned.
        return (None, report);
    }
    let ensemble = Ensemble {
        name: value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        description: value
            .get("description")
            .and_then(Value::as_str)
            .map(String::from),
        default_task: value
            .get("default_task")
            .or_else(|| value.get("task"))
            .and_then(Value::as_str)
            .map(String::from),
        max_cost_usd: budget.max_cost_usd,
        agents,
        source: file.clone(),
        tests,
    };
    (Some(ensemble), report)
}

/// Expectations name real agents, make sense on their own, and their regexes compile.
fn check_tests(
    c: &mut Checker<'_>,
    tests: &[crate::config::spec::TestSpec],
    names: &[Option<String>],
) {
    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
    let known_set: std::collections::HashSet<&str> = known.iter().copied().collect();
    for (t, test) in tests.iter().enumerate() {
        for (e, expect) in test.expect.iter().enumerate() {
            let at = path!["tests", t, "expect", e].to_vec();
            let bad = |problem: String, suggestion: Option<String>| ConfigErrorKind::BadTest {
                test: test.name.clone(),
                problem,
                suggestion,
            };
            let agent_checks =
                expect.contains.is_some() || expect.matches.is_some() || expect.json.is_some();
            let run_checks = expect.max_cost_usd.is_some() || expect.max_tokens.is_some();
            match &expect.agent {
                Some(agent) if !known_set.contains(agent.as_str()) => {
                    let suggestion = (!c.full())
                        .then(|| closest(agent, known.iter().copied()))
                        .flatten()
                        .map(str::to_string);
                    let mut p = at.clone();
                    p.push(PathSeg::Key("agent".into()));
                    c.error(bad(format!("no agent named `{agent}`"), suggestion), &p);
                }
                Some(_) if !(agent_checks || expect.status.is_some()) => {
                    c.error(
                        bad(
                            "the expectation checks nothing about the agent".into(),
                            None,
                        ),
                        &at,
                    );
                }
                None if agent_checks => {
                    c.error(
                        bad(
                            "`contains`, `matches` and `json` need an `agent`".into(),
                            None,
                        ),
                        &at,
                    );
                }
                None if !(run_checks || expect.status.is_some()) => {
                    c.error(bad("the expectation checks nothing".into(), None), &at);
                }
                _ => {}
            }
            if let Some(cost) = expect.max_cost_usd {
                let mut p = at.clone();
                p.push(PathSeg::Key("max_cost_usd".into()));
                c.bounded(cost, 0.0, bounds::MAX_USD, &p);
            }
            if let Some(tokens) = expect.max_tokens {
                let mut p = at.clone();
                p.push(PathSeg::Key("max_tokens".into()));
                c.counted(tokens, 0, bounds::MAX_TEST_TOKENS, &p);
            }
            if let Some(pattern) = &expect.matches {
                if let Err(err) = regex::Regex::new(pattern) {
                    let mut p = at.clone();
                    p.push(PathSeg::Key("matches".into()));
                    c.error(bad(format!("invalid regular expression: {err}"), None), &p);
                }
            }
        }
    }
}

/// An agent runs one thing: a model, a script, or an ensemble (once, in a loop, or
/// dispatched). Two keys that each choose what it runs are an error at the second one.
fn check_runner_keys(
    c: &mut Checker<'_>,
    i: usize,
    raw: &Value,
    spec: &AgentSpec,
    kind: AgentKind,
) {
    let mut present: Vec<&str> = Vec::new();
    if kind != AgentKind::Llm {
        present.push(if spec.script.is_some() {
            "script"
        } else if spec.run.is_some() && raw.get("type").is_none() {
            "run"
        } else {
            "type"
        });
    }
    present.extend(
        ["ensemble", "loop", "dispatch"]
            .into_iter()
            .filter(|k| raw.get(*k).is_some()),
    );
    // `type: script` with `ensemble:` was accepted before loops and dispatch existed.
    if present.len() > 1 && present.iter().any(|k| *k == "loop" || *k == "dispatch") {
        c.error_at_key(
            ConfigErrorKind::ConflictingKeys {
                agent: spec.name.clone(),
                first: present[0].to_string(),
                second: present[1].to_string(),
            },
            &path!["agents", i, present[1]],
        );
    }
}

/// `input_scope` means something for agents whose input is text made from the run input and
/// their dependencies: `llm` agents and those that run ensembles.
fn check_input_scope(c: &mut Checker<'_>, i: usize, spec: &AgentSpec, kind: AgentKind) {
    if spec.input_scope.is_none() {
        return;
    }
    if kind != AgentKind::Llm {
        c.error_at_key(
            ConfigErrorKind::KeyNotForKind {
                key: "input_scope".into(),
                applies_to: "llm`, `ensemble`, `loop` and `dispatch".into(),
            },
            &path!["agents", i, "input_scope"],
        );
    } else if spec.depends_on.is_empty() {
        c.error_at_key(
            ConfigErrorKind::InputScopeWithoutDependencies {
                agent: spec.name.clone(),
            },
            &path!["agents", i, "input_scope"],
        );
    }
}

/// The node of an `llm`-kind agent: a model call, or an ensemble run once (`ensemble:`), in
/// a loop (`loop:`) or chosen at run time (`dispatch:`). `None` after reporting an error.
fn runs_ensemble(c: &mut Checker<'_>, i: usize, spec: &AgentSpec) -> Option<NodeKind> {
    // The agent's own `timeout_seconds` bounds a whole loop or dispatched run, as in llm-orc;
    // `defaults:` stay per provider call.
    // Out-of-range values are reported by the range checks; here they are just not used.
    let timeout = spec
        .timeout_seconds
        .and_then(|t| Duration::try_from_secs_f64(t).ok());
    let nested = |reference: &str, control: Control| {
        Some(NodeKind::Nested(Nested {
            reference: reference.to_string(),
            ensemble: None,
            control,
        }))
    };
    if let Some(l) = &spec.loop_spec {
        let parsed = if l.until.trim().starts_with("${") {
            crate::config::condition::parse(&l.until)
        } else {
            Err(format!(
                "`{}` reads nothing from the body's output; write `${{path}}`",
                l.until.trim()
            ))
        };
        let until = match parsed {
            Ok(mut cond) => {
                // `until` reads the body's output itself: `${a.b}` is the path `a.b`.
                cond.path.insert(0, std::mem::take(&mut cond.agent));
                Some(cond)
            }
            Err(message) => {
                c.error(
                    ConfigErrorKind::InvalidUntil { message },
                    &path!["agents", i, "loop", "until"],
                );
                None
            }
        };
        let carry = match l.carry.as_deref().map(reference) {
            None => Some(None),
            Some(Ok((head, mut rest))) => {
                rest.insert(0, head);
                Some(Some(rest))
            }
            Some(Err(message)) => {
                c.error(
                    ConfigErrorKind::InvalidCarry { message },
                    &path!["agents", i, "loop", "carry"],
                );
                None
            }
        };
        let (until, carry) = (until?, carry?);
        return nested(
            &l.body,
            Control::Loop(Box::new(LoopSettings {
                until,
                max_iterations: l.max_iterations.max(1),
                carry,
                timeout,
            })),
        );
    }
    if let Some(text) = &spec.dispatch {
        let text = text.trim();
        let source = if text.contains("${") {
            match reference(text) {
                Ok((agent, path)) => {
                    if !spec.depends_on.iter().any(|d| d.name() == agent) {
                        c.error(
                            ConfigErrorKind::DispatchNotDependency {
                                agent: spec.name.clone(),
                                other: agent.clone(),
                            },
                            &path!["agents", i, "dispatch"],
                        );
                        return None;
                    }
                    Some(DispatchSource {
                        agent,
                        path,
                        text: text.to_string(),
                    })
                }
                Err(message) => {
                    c.error(
                        ConfigErrorKind::InvalidDispatch { message },
                        &path!["agents", i, "dispatch"],
                    );
                    return None;
                }
            }
        } else if text.is_empty() {
            c.error(
                ConfigErrorKind::InvalidDispatch {
                    message: "it names no ensemble".into(),
                },
                &path!["agents", i, "dispatch"],
            );
            return None;
        } else {
            None
        };
        return nested(
            text,
            Control::Dispatch(Box::new(DispatchSettings {
                source,
                loader: None,
                timeout,
            })),
        );
    }
    match &spec.ensemble {
        Some(reference) => nested(reference, Control::Once),
        None => Some(NodeKind::Llm),
    }
}

/// A lone `${name.path...}` reference: (first segment, the rest).
fn reference(text: &str) -> Result<(String, Vec<String>), String> {
    let text = text.trim();
    if !text.starts_with("${") {
        return Err(format!(
            "`{text}` is not a reference; write `${{name.path}}`"
        ));
    }
    let cond = crate::config::condition::parse(text)?;
    if cond.compare.is_some() {
        return Err(format!(
            "`{}` compares; write the reference alone, `${{...}}`",
            cond.source
        ));
    }
    Ok((cond.agent, cond.path))
}

/// The profiles tried after the primary: the agent's `fallback_model_profile` (else the
/// primary profile's own), then each fallback's own, stopping at a repeat.
fn fallback_chain(
    c: &mut Checker<'_>,
    i: usize,
    spec: &AgentSpec,
    primary: &Arc<Profile>,
    profiles: &ProfileSet,
) -> Option<Vec<Arc<Profile>>> {
    let mut chain: Vec<Arc<Profile>> = Vec::new();
    let (mut next, mut at) = match &spec.fallback_model_profile {
        Some(name) => (
            Some(name.clone()),
            path!["agents", i, "fallback_model_profile"].to_vec(),
        ),
        None => (
            primary.fallback.clone(),
            path!["agents", i, "model_profile"].to_vec(),
        ),
    };
    while let Some(name) = next {
        if name == primary.name || chain.iter().any(|p| p.name == name) {
            break;
        }
        match profiles.get(&name) {
            Some(p) => {
                next = p.fallback.clone();
                chain.push(Arc::clone(p));
                at = path!["agents", i, "model_profile"].to_vec();
            }
            None => {
                c.error(unknown_profile(&name, profiles), &at);
                return None;
            }
        }
    }
    Some(chain)
}

/// The program a `script` agent runs: `run: [argv...]`, or llm-orc's `script: path` (found
/// as `config::scripts` describes; run directly when executable, else by its extension's
/// interpreter), and the folder it runs in.
fn script_settings(
    c: &mut Checker<'_>,
    i: usize,
    spec: &AgentSpec,
    file: &SourceFile,
    search: &ScriptSearch,
) -> Option<crate::config::Script> {
    let parent = file
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    let cwd = Some(search.working_dir(&base));
    if let Some(argv) = &spec.run {
        return Some(crate::config::Script {
            argv: argv.clone(),
            cwd,
        });
    }
    let Some(script) = &spec.script else {
        c.error_at_key(
            ConfigErrorKind::MissingKey {
                key: "run".into(),
                context: Some(format!("script agent `{}` (or `script: PATH`)", spec.name)),
            },
            &path!["agents", i, "name"],
        );
        return None;
    };
    let path = match search.find(&base, script) {
        Ok(path) => path,
        Err(not_found) => {
            c.error(
                ConfigErrorKind::ScriptNotFound {
                    agent: spec.name.clone(),
                    script: script.clone(),
                    looked_in: not_found.looked_in.iter().map(|d| shown(d)).collect(),
                },
                &path!["agents", i, "script"],
            );
            return None;
        }
    };
    let problem = |problem: &str| ConfigErrorKind::ScriptProblem {
        agent: spec.name.clone(),
        path: script.clone(),
        problem: problem.to_string(),
    };
    let Ok(meta) = std::fs::metadata(&path) else {
        c.error(problem("cannot be read"), &path!["agents", i, "script"]);
        return None;
    };
    #[cfg(unix)]
    let executable = {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    };
    #[cfg(not(unix))]
    let executable = false;
    let program = std::path::absolute(&path)
        .unwrap_or_else(|_| path.clone())
        .to_string_lossy()
        .into_owned();
    let interpreter = match path.extension().and_then(|e| e.to_str()) {
        Some("py") => Some("python3"),
        Some("sh") => Some("sh"),
        Some("bash") => Some("bash"),
        Some("js" | "mjs") => Some("node"),
        Some("rb") => Some("ruby"),
        _ => None,
    };
    let argv = match (interpreter, executable) {
        (Some(interp), _) => vec![interp.to_string(), program],
        (None, true) => vec![program],
        (None, false) => {
            c.error(
                problem("is not executable and has no known extension"),
                &path!["agents", i, "script"],
            );
            return None;
        }
    };
    Some(crate::config::Script { argv, cwd })
}

/// Validates the keys of a `generate` node.
fn generate_settings(
    c: &mut Checker<'_>,
    i: usize,
    spec: &AgentSpec,
    profile: &Arc<Profile>,
    profiles: &ProfileSet,
) -> Option<GenerateSettings> {
    let mut candidates = Vec::new();
    let mut ok = true;
    for (j, name) in spec.profiles.iter().flatten().enumerate() {
        match profiles.get(name) {
            Some(p) => candidates.push(Arc::clone(p)),
            None => {
                c.error(
                    unknown_profile(name, profiles),
                    &path!["agents", i, "profiles", j],
                );
                ok = false;
            }
        }
    }
    if candidates.is_empty() {
        candidates.push(Arc::clone(profile));
    }
    if let Some(topic) = &spec.topic {
        check_template_with(
            c,
            &spec.name,
            topic,
            &["input", "deps", "agents"],
            &|_| false,
            &path!["agents", i, "topic"],
        );
    }
    if let Some(prompt) = &spec.prompt {
        check_template_with(
            c,
            &spec.name,
            prompt,
            &["topic", "subtopic", "seen", "batch_size", "input"],
            &|_| false,
            &path!["agents", i, "prompt"],
        );
    }
    if !generate_numbers(c, i, spec) {
        ok = false;
    }
    let mut stop = spec.stop.clone().unwrap_or_default();
    let has_stop = stop.iterations.is_some()
        || stop.unique.is_some()
        || stop.seconds.is_some()
        || stop.cost_usd.is_some()
        || stop.min_new_per_call.is_some();
    if !has_stop {
        stop.iterations = Some(DEFAULT_ITERATIONS);
    }
    if stop.min_new_per_call.is_some() && stop.patience.is_none() {
        stop.patience = Some(3);
    }
    if stop.cost_usd.is_some() {
        if let Some(unpriced) = candidates.iter().find(|p| p.price.is_none()) {
            c.error(
                ConfigErrorKind::UnpricedLimit {
                    key: "stop.cost_usd".into(),
                    profile: unpriced.name.clone(),
                },
                &path!["agents", i, "stop", "cost_usd"],
            );
            ok = false;
        }
    }
    let tracker = spec.tracker.clone().unwrap_or_default();
    if let Some(output) = &spec.output {
        ok &= check_output(c, i, spec, output);
    }
    ok.then(|| GenerateSettings {
        topic: spec.topic.clone(),
        producers: spec.producers.unwrap_or(4).max(1),
        batch_size: spec.batch_size.unwrap_or(10).max(1),
        profiles: candidates,
        prompt: spec.prompt.clone(),
        feedback: spec.feedback.unwrap_or(20),
        partition: spec.partition.unwrap_or(PartitionSpec::None).into(),
        stop: stop.into(),
        normalize: spec.normalize.unwrap_or(true),
        output: spec.output.as_ref().map(std::path::PathBuf::from),
        overwrite: spec.overwrite.unwrap_or(false),
        append: spec.append.unwrap_or(false),
        optimizer: spec.optimizer.as_ref().map(OptimizerSettings::from),
        expected_items: tracker.expected_items.unwrap_or(100_000),
        false_positive_rate: tracker.false_positive_rate.unwrap_or(0.01),
    })
}

/// The policy `cache:` asks for, or what is wrong with its `ttl`.
pub(super) fn cache_policy(
    spec: &crate::config::spec::CacheSpec,
) -> Result<crate::config::Cache, String> {
    use crate::config::spec::CacheSpec;
    match spec {
        CacheSpec::Enabled(false) => Ok(crate::config::Cache::Off),
        CacheSpec::Enabled(true) => Ok(crate::config::Cache::On { ttl: None }),
        CacheSpec::Settings(settings) => match &settings.ttl {
            None => Ok(crate::config::Cache::On { ttl: None }),
            Some(text) => humantime::parse_duration(text.trim())
                .map(|ttl| crate::config::Cache::On { ttl: Some(ttl) })
                .map_err(|_| {
                    format!("`{text}` is not a duration; write it like `90s`, `30m`, `1h` or `7d`")
                }),
        },
    }
}

fn unknown_profile(name: &str, profiles: &ProfileSet) -> ConfigErrorKind {
    if let Some(u) = profiles.unusable(name) {
        let problem = match &u.error.kind {
            ConfigErrorKind::UnsupportedProvider { provider, .. } => {
                format!("orc does not run its provider `{provider}`")
            }
            other => other.to_string(),
        };
        return ConfigErrorKind::UnusableProfile {
            profile: name.to_string(),
            problem,
        };
    }
    ConfigErrorKind::UnknownProfile {
        profile: name.to_string(),
        suggestion: closest(name, profiles.names()).map(str::to_string),
        // Enough to recognise them by; `orc profiles` lists them all.
        known: profiles.names().take(20).map(String::from).collect(),
    }
}

fn resolve_profile(
    c: &mut Checker<'_>,
    i: usize,
    spec: &AgentSpec,
    profiles: &ProfileSet,
    default: Option<&Arc<Profile>>,
) -> Option<Arc<Profile>> {
    let agent = spec.name.clone();
    match (&spec.model_profile, &spec.model, spec.provider) {
        (Some(_), Some(_), _) => {
            c.error_at_key(
                ConfigErrorKind::ProfileAndModel { agent },
                &path!["agents", i, "model"],
            );
            None
        }
        (Some(name), None, _) => match profiles.get(name) {
            Some(p) => Some(Arc::clone(p)),
            None => {
                c.error(
                    unknown_profile(name, profiles),
                    &path!["agents", i, "model_profile"],
                );
                None
            }
        },
        (None, Some(_), None) => {
            c.error_at_key(
                ConfigErrorKind::ModelWithoutProvider { agent },
                &path!["agents", i, "model"],
            );
            None
        }
        (None, None, Some(_)) => {
            c.error_at_key(
                ConfigErrorKind::ProviderWithoutModel { agent },
                &path!["agents", i, "provider"],
            );
            None
        }
        (None, Some(model), Some(provider)) => {
            let inline = ProfileSpec {
                provider,
                model: Some(model.clone()),
                base_url: spec.base_url.clone(),
                ..ProfileSpec::default()
            };
            let name = format!("{}/{}", provider, model);
            match lower(&name, &inline, Origin::Agent(agent), profiles.prices()) {
                Ok(p) => Some(Arc::new(p)),
                Err((kind, _)) => {
                    c.error_at_key(kind, &path!["agents", i, "provider"]);
                    None
                }
            }
        }
        (None, None, None) => default.cloned(),
    }
}

fn check_template(
    c: &mut Checker<'_>,
    agent: &str,
    source: &str,
    available: &dyn Fn(&str) -> bool,
    at: &[PathSeg],
) {
    check_template_with(
        c,
        agent,
        source,
        &template::TEMPLATE_VARIABLES,
        available,
        at,
    );
}

fn check_template_with(
    c: &mut Checker<'_>,
    agent: &str,
    source: &str,
    variables: &[&str],
    available: &dyn Fn(&str) -> bool,
    at: &[PathSeg],
) {
    for problem in template::check_with(source, variables, available) {
        let (kind, range) = match problem {
            TemplateProblem::Syntax { message, range } => (
                ConfigErrorKind::TemplateSyntax {
                    agent: agent.to_string(),
                    message,
                },
                range,
            ),
            TemplateProblem::Undefined { variable, range } => (
                ConfigErrorKind::TemplateUndefined {
                    agent: agent.to_string(),
                    suggestion: closest(&variable, variables.iter().copied()).map(str::to_string),
                    variable,
                },
                range,
            ),
            TemplateProblem::NotDependency {
                agent: other,
                range,
            } => (
                ConfigErrorKind::TemplateNotDependency {
                    agent: agent.to_string(),
                    other,
                },
                range,
            ),
        };
        let span = range
            .and_then(|r| template_span(c, source, at, r))
            .or_else(|| c.locator.value_span(at));
        c.report.push(ConfigError::new(kind, c.file, span));
    }
}

/// Maps a byte range in a template to the file: exact for block scalars (`|`) and plain
/// one-line scalars; escapes in quoted scalars may shift it by a few columns.
fn template_span(
    c: &Checker<'_>,
    source: &str,
    at: &[PathSeg],
    range: std::ops::Range<usize>,
) -> Option<miette::SourceSpan> {
    let (start, block) = c.locator.block_content_start(at)?;
    let text = &c.file.text;
    let start_of_range = range.start.min(source.len());
    let offset = if block {
        // Every line of a block scalar is indented like its first line.
        let indent = start - text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = source[..start_of_range].matches('\n').count();
        let col = start_of_range - source[..start_of_range].rfind('\n').map_or(0, |i| i + 1);
        let mut line_start = start - indent;
        for _ in 0..line {
            line_start += text[line_start..].find('\n')? + 1;
        }
        line_start + indent + col
    } else {
        start + start_of_range
    };
    (offset <= text.len()).then(|| miette::SourceSpan::new(offset.into(), range.len().max(1)))
}

/// The numbers that shape a provider call, as an agent or `defaults` writes them.
struct CallNumbers {
    timeout_seconds: Option<f64>,
    retries: Option<u32>,
    retry_backoff_ms: Option<u64>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
}

fn call_numbers(spec: &AgentSpec) -> CallNumbers {
    CallNumbers {
        timeout_seconds: spec.timeout_seconds,
        retries: spec.retries,
        retry_backoff_ms: spec.retry_backoff_ms,
        temperature: spec.temperature,
        max_tokens: spec.max_tokens,
    }
}

/// What the checks of `CallNumbers` produce: the timeout as a `Duration`.
struct CheckedCall {
    timeout: Option<Duration>,
}

/// Every number of a call within its bounds; `None` after reporting the first that is not.
fn check_call_numbers(c: &mut Checker<'_>, n: &CallNumbers, at: &[PathSeg]) -> Option<CheckedCall> {
    let here = |key: &str| {
        let mut p = at.to_vec();
        p.push(PathSeg::Key(key.to_string()));
        p
    };
    let mut ok = true;
    let timeout = match n.timeout_seconds {
        Some(t) => {
            let d = c.seconds(
                t,
                bounds::MIN_TIMEOUT_SECONDS,
                bounds::MAX_TIMEOUT_SECONDS,
                &here("timeout_seconds"),
            );
            ok &= d.is_some();
            d
        }
        None => None,
    };
    if let Some(r) = n.retries {
        ok &= c
            .counted(u64::from(r), 0, bounds::MAX_RETRIES, &here("retries"))
            .is_some();
    }
    if let Some(b) = n.retry_backoff_ms {
        ok &= c
            .counted(
                b,
                0,
                bounds::MAX_RETRY_BACKOFF_MS,
                &here("retry_backoff_ms"),
            )
            .is_some();
    }
    if let Some(t) = n.temperature {
        ok &= c
            .bounded(t, 0.0, bounds::MAX_TEMPERATURE, &here("temperature"))
            .is_some();
    }
    if let Some(m) = n.max_tokens {
        ok &= c
            .counted(u64::from(m), 1, bounds::MAX_MAX_TOKENS, &here("max_tokens"))
            .is_some();
    }
    ok.then_some(CheckedCall { timeout })
}

/// Checks the numbers of `defaults` and `budget`; returns the default timeout.
fn check_defaults(
    c: &mut Checker<'_>,
    defaults: &DefaultsSpec,
    budget: &BudgetSpec,
) -> Option<Duration> {
    let numbers = CallNumbers {
        timeout_seconds: defaults.timeout_seconds,
        retries: defaults.retries,
        retry_backoff_ms: defaults.retry_backoff_ms,
        temperature: defaults.temperature,
        max_tokens: defaults.max_tokens,
    };
    if let Some(cost) = budget.max_cost_usd {
        c.bounded(cost, 0.0, bounds::MAX_USD, &path!["budget", "max_cost_usd"]);
    }
    check_call_numbers(c, &numbers, &path!["defaults"]).and_then(|n| n.timeout)
}

/// The counts and limits of a `generate` node within their bounds (they size tasks,
/// prompts and the tracker's memory); false after reporting any that is not.
fn generate_numbers(c: &mut Checker<'_>, i: usize, spec: &AgentSpec) -> bool {
    let at = |keys: &[&str]| {
        let mut p = path!["agents", i].to_vec();
        p.extend(keys.iter().map(|k| PathSeg::Key((*k).to_string())));
        p
    };
    let mut ok = true;
    let mut count = |c: &mut Checker<'_>, value: Option<u64>, min: u64, max: u64, keys: &[&str]| {
        if let Some(v) = value {
            ok &= c.counted(v, min, max, &at(keys)).is_some();
        }
    };
    count(
        c,
        spec.producers.map(u64::from),
        1,
        bounds::MAX_PRODUCERS,
        &["producers"],
    );
    count(
        c,
        spec.batch_size.map(u64::from),
        1,
        bounds::MAX_BATCH_SIZE,
        &["batch_size"],
    );
    count(
        c,
        spec.feedback.map(u64::from),
        0,
        bounds::MAX_FEEDBACK,
        &["feedback"],
    );
    let stop = spec.stop.clone().unwrap_or_default();
    count(
        c,
        stop.iterations.map(u64::from),
        1,
        bounds::MAX_ITERATIONS,
        &["stop", "iterations"],
    );
    count(c, stop.unique, 1, bounds::MAX_ITEMS, &["stop", "unique"]);
    count(
        c,
        stop.patience.map(u64::from),
        1,
        bounds::MAX_PATIENCE,
        &["stop", "patience"],
    );
    let tracker = spec.tracker.clone().unwrap_or_default();
    count(
        c,
        tracker.expected_items,
        1,
        bounds::MAX_ITEMS,
        &["tracker", "expected_items"],
    );
    let mut number =
        |c: &mut Checker<'_>, value: Option<f64>, min: f64, max: f64, keys: &[&str]| {
            if let Some(v) = value {
                ok &= c.bounded(v, min, max, &at(keys)).is_some();
            }
        };
    number(
        c,
        stop.seconds,
        0.0,
        bounds::MAX_RUN_SECONDS,
        &["stop", "seconds"],
    );
    number(
        c,
        stop.cost_usd,
        0.0,
        bounds::MAX_USD,
        &["stop", "cost_usd"],
    );
    #[allow(clippy::cast_precision_loss)]
    let max_new = bounds::MAX_BATCH_SIZE as f64;
    number(
        c,
        stop.min_new_per_call,
        0.0,
        max_new,
        &["stop", "min_new_per_call"],
    );
    number(
        c,
        tracker.false_positive_rate,
        bounds::MIN_FALSE_POSITIVE_RATE,
        bounds::MAX_FALSE_POSITIVE_RATE,
        &["tracker", "false_positive_rate"],
    );
    for (name, weight) in spec
        .optimizer
        .iter()
        .flat_map(|o| o.weights.iter().flatten())
    {
        number(
            c,
            Some(*weight),
            0.0,
            bounds::MAX_WEIGHT,
            &["optimizer", "weights", name],
        );
    }
    ok
}

/// `output:` may not replace a file that exists unless the agent says how to treat it
/// (issue 13: it used to truncate any file, absolute or `../`, without a word). The path is
/// relative to the working directory, where the run writes it.
fn check_output(c: &mut Checker<'_>, i: usize, spec: &AgentSpec, output: &str) -> bool {
    let overwrite = spec.overwrite.unwrap_or(false);
    let append = spec.append.unwrap_or(false);
    if overwrite && append {
        c.error_at_key(
            ConfigErrorKind::OverwriteAndAppend {
                agent: spec.name.clone(),
            },
            &path!["agents", i, "append"],
        );
        return false;
    }
    let exists = std::fs::symlink_metadata(output).is_ok();
    if exists && !overwrite && !append {
        c.error(
            ConfigErrorKind::OutputExists {
                agent: spec.name.clone(),
                path: output.to_string(),
            },
            &path!["agents", i, "output"],
        );
        return false;
    }
    true
}

fn c_error(report: &mut ConfigReport, file: &SourceFile, kind: ConfigErrorKind, path: &[PathSeg]) {
    let locator = Locator::new(file);
    let span = locator
        .value_span(path)
        .or_else(|| locator.nearest_span(path));
    report.push(ConfigError::new(kind, file, span));
}

/// Whether one agent is an ancestor of another, for `agents.NAME` in templates. Answered
/// from the ancestor's side: its descendants are found once and kept (for a bounded number
/// of agents), so a thousand templates reading the first agent of a long chain cost one walk,
/// not a thousand (checking a 25,000-agent chain took minutes, issue 13).
struct Ancestry<'a> {
    deps: &'a [Vec<usize>],
    dependents: Vec<Vec<usize>>,
    /// Descendants of an agent, as a bitset, for up to `KEPT` agents.
    descendants: std::cell::RefCell<HashMap<usize, Vec<u64>>>,
}

impl<'a> Ancestry<'a> {
    const KEPT: usize = 64;

    fn new(deps: &'a [Vec<usize>]) -> Self {
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        Ancestry {
            deps,
            dependents,
            descendants: std::cell::RefCell::new(HashMap::new()),
        }
    }

    fn is_ancestor(&self, ancestor: usize, of: usize) -> bool {
        if self.deps[of].contains(&ancestor) {
            return true;
        }
        let mut kept = self.descendants.borrow_mut();
        if let Some(bits) = kept.get(&ancestor) {
            return bits[of / 64] & (1 << (of % 64)) != 0;
        }
        let n = self.deps.len();
        let mut bits = vec![0u64; n.div_ceil(64)];
        let mut stack = self.dependents[ancestor].clone();
        while let Some(d) = stack.pop() {
            if bits[d / 64] & (1 << (d % 64)) == 0 {
                bits[d / 64] |= 1 << (d % 64);
                stack.extend(self.dependents[d].iter().copied());
            }
        }
        let found = bits[of / 64] & (1 << (of % 64)) != 0;
        if kept.len() < Self::KEPT {
            kept.insert(ancestor, bits);
        }
        found
    }
}
