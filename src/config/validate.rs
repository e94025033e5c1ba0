//! Semantic checks of an ensemble document, and lowering into `Ensemble`: names,
//! dependencies, cycles, profiles, templates, and keys accepted but not run yet.
//!
//! Works on the JSON value agent by agent, so a shape error in one agent does not hide the
//! semantic errors of the others: every problem of the file is reported at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::load::Document;
use super::locate::{Locator, PathSeg};
use super::model::{
    Agent, DEFAULT_PROFILE, DEFAULT_RETRIES, DEFAULT_RETRY_BACKOFF, DEFAULT_TIMEOUT, DedupSettings,
    Ensemble, GenerateSettings, NodeKind, Origin, Profile,
};
use super::model::{Control, DispatchSettings, DispatchSource, LoopSettings, Nested};
use super::profiles::{ProfileSet, lower};
use super::scripts::{ScriptSearch, shown};
use super::spec::{
    AgentKind, AgentSpec, BudgetSpec, DefaultsSpec, InputScope, PartitionSpec, ProfileSpec,
};
use crate::path;
use crate::plan::find_cycles;
use crate::suggest::closest;
use crate::template::{self, TemplateProblem};

struct Checker<'a> {
    file: &'a SourceFile,
    locator: Locator<'a>,
    report: ConfigReport,
}

impl Checker<'_> {
    fn error(&mut self, kind: ConfigErrorKind, path: &[PathSeg]) {
        let span = self
            .locator
            .value_span(path)
            .or_else(|| self.locator.nearest_span(path));
        self.report.push(ConfigError::new(kind, self.file, span));
    }

    fn error_at_key(&mut self, kind: ConfigErrorKind, path: &[PathSeg]) {
        let span = self
            .locator
            .key_span(path)
            .or_else(|| self.locator.nearest_span(path));
        self.report.push(ConfigError::new(kind, self.file, span));
    }
}

/// Keys that only mean something on `generate` nodes.
const GENERATE_KEYS: [&str; 10] = [
    "topic",
    "producers",
    "batch_size",
    "profiles",
    "feedback",
    "partition",
    "stop",
    "output",
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
    let Document { file, value } = doc;
    let mut c = Checker {
        file: &file,
        locator: Locator::new(&file),
        report: ConfigReport::default(),
    };

    let typed = |key: &str| value.get(key).cloned();
    let defaults: DefaultsSpec = typed("defaults")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let budget: BudgetSpec = typed("budget")
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();

    // Profiles: the ensemble's own on top of the configured ones.
    let mut profiles = base_profiles.clone();
    if let Some(Value::Object(map)) = value.get("model_profiles") {
        let specs: BTreeMap<String, ProfileSpec> = map
            .iter()
            .filter_map(|(n, v)| {
                serde_json::from_value(v.clone())
                    .ok()
                    .map(|s| (n.clone(), s))
            })
            .collect();
        let origin_path = file.path.clone();
        c.report.extend(
            profiles.merge_specs(&specs, &file, &["model_profiles"], &|_| {
                Origin::Ensemble(origin_path.clone())
            }),
        );
    }

    let raw_agents: Vec<Value> = value
        .get("agents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
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
                    let suggestion = closest(dep, by_name.keys().copied()).map(str::to_string);
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
                Some(&d) if deps[i].contains(&d) => c.error(
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

    // Ancestors, for `agents.NAME` in templates.
    let ancestors = |i: usize| -> Vec<usize> {
        let mut seen = vec![false; deps.len()];
        let mut stack = deps[i].clone();
        let mut out = Vec::new();
        while let Some(d) = stack.pop() {
            if !std::mem::replace(&mut seen[d], true) {
                out.push(d);
                stack.extend(deps[d].iter().copied());
            }
        }
        out
    };

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
        let Ok(spec) = serde_json::from_value::<AgentSpec>(raw.clone()) else {
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
            .and_then(|w| match crate::nodes::condition::parse(w) {
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
        if let Some(schema) = spec.response_format.as_ref().and_then(|f| f.schema()) {
            if let Err(e) = jsonschema::validator_for(&schema) {
                c.error_at_key(
                    ConfigErrorKind::OutOfRange {
                        key: "response_format".into(),
                        problem: format!("is not a valid JSON Schema: {e}"),
                    },
                    &path!["agents", i, "response_format"],
                );
            }
        }
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
            AgentKind::Script => script_settings(&mut c, i, &spec, &file, base_profiles.scripts())
                .map(NodeKind::Script),
            AgentKind::Llm => runs_ensemble(&mut c, i, &spec),
        };
        let Some(node) = node else { continue };
        if let (Some(prompt), false) = (&spec.prompt, kind == AgentKind::Generate) {
            let available: Vec<&str> = ancestors(i)
                .into_iter()
                .filter_map(|a| names[a].as_deref())
                .collect();
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
        let timeout = spec
            .timeout_seconds
            .or(defaults.timeout_seconds)
            .map(Duration::from_secs_f64)
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
            condition,
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
            response_format: spec.response_format.clone(),
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
    let tests: Vec<crate::config::spec::TestSpec> = value
        .get("tests")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    check_tests(&mut c, &tests, &names);
    let Checker {
        report: semantic, ..
    } = c;
    report.extend(semantic);
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
                Some(agent) if !known.contains(&agent.as_str()) => {
                    let suggestion = closest(agent, known.iter().copied()).map(str::to_string);
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
    let timeout = spec.timeout_seconds.map(Duration::from_secs_f64);
    let nested = |reference: &str, control: Control| {
        Some(NodeKind::Nested(Nested {
            reference: reference.to_string(),
            ensemble: None,
            control,
        }))
    };
    if let Some(l) = &spec.loop_spec {
        let parsed = if l.until.trim().starts_with("${") {
            crate::nodes::condition::parse(&l.until)
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
    let cond = crate::nodes::condition::parse(text)?;
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
) -> Option<crate::nodes::script::Script> {
    let parent = file
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
    let cwd = Some(search.working_dir(&base));
    if let Some(argv) = &spec.run {
        return Some(crate::nodes::script::Script {
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
    Some(crate::nodes::script::Script { argv, cwd })
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
            &[],
            &path!["agents", i, "topic"],
        );
    }
    if let Some(prompt) = &spec.prompt {
        check_template_with(
            c,
            &spec.name,
            prompt,
            &["topic", "subtopic", "seen", "batch_size", "input"],
            &[],
            &path!["agents", i, "prompt"],
        );
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
    ok.then(|| GenerateSettings {
        topic: spec.topic.clone(),
        producers: spec.producers.unwrap_or(4).max(1),
        batch_size: spec.batch_size.unwrap_or(10).max(1),
        profiles: candidates,
        prompt: spec.prompt.clone(),
        feedback: spec.feedback.unwrap_or(20),
        partition: spec.partition.unwrap_or(PartitionSpec::None),
        stop,
        normalize: spec.normalize.unwrap_or(true),
        output: spec.output.as_ref().map(std::path::PathBuf::from),
        overwrite: false,
        append: false,
        optimizer: spec.optimizer.clone(),
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
        known: profiles.names().map(String::from).collect(),
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
                Err(kind) => {
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
    available: &[&str],
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
    available: &[&str],
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
