//! Input preparation: what a ready agent works on, from the run input and its finished
//! dependencies (the default layout or its template, `when`, `input_key`, `fan_out`,
//! `input_scope`, the ensemble a `dispatch` names), or why it will not run. Pure: reads
//! outcomes, returns a `Work`.

use super::error::AgentError;
use super::job::Work;
use super::layout::{DepView, default_prompt, render_prompt};
use super::outcome::{AgentOutcome, AgentStatus};
use crate::config::{Agent, AgentIndex, Control, DispatchSource, NodeKind};
use crate::config::{InputScope, OnDependencyFailure};
use crate::plan::Plan;

/// Why a ready agent does not run.
pub(crate) enum NotRun {
    /// `neutral` when that is by design (a false `when`), not because of a failure.
    Skipped {
        reason: String,
        neutral: bool,
    },
    Failed(AgentError),
}

fn template_failed(message: String) -> NotRun {
    NotRun::Failed(AgentError::new(
        "template",
        format!("prompt template failed: {message}"),
    ))
}

fn input_failed(message: String) -> NotRun {
    NotRun::Failed(AgentError::new("input", message))
}

/// The work of a ready agent. `outcome_of` gives each finished agent's outcome.
pub(crate) fn prepare<'a>(
    plan: &Plan,
    agent: &Agent,
    input: &str,
    outcome_of: &dyn Fn(AgentIndex) -> &'a AgentOutcome,
) -> Result<Work, NotRun> {
    // A dependency skipped by its own `when` is neutral (llm-orc's routing): it neither
    // fails its dependents nor feeds them. Any other non-success is a failure.
    let is_neutral = |o: &AgentOutcome| o.status == AgentStatus::Skipped && o.neutral_skip;
    let run_anyway = agent.on_dependency_failure == OnDependencyFailure::Run;
    if let Some(&bad) = agent.depends_on.iter().find(|&&d| {
        let o = outcome_of(d);
        o.status != AgentStatus::Succeeded && !is_neutral(o)
    }) {
        if !run_anyway {
            let dep = outcome_of(bad);
            return Err(NotRun::Skipped {
                reason: format!("dependency `{}` {}", dep.name, dep.status.as_str()),
                neutral: false,
            });
        }
    }
    if !run_anyway
        && !agent.depends_on.is_empty()
        && agent.depends_on.iter().all(|&d| is_neutral(outcome_of(d)))
    {
        return Err(NotRun::Skipped {
            reason: "every dependency was skipped by its condition".into(),
            neutral: true,
        });
    }
    if let Some(condition) = &agent.condition {
        let output = agent
            .depends_on
            .iter()
            .map(|&d| outcome_of(d))
            .find(|o| o.name == condition.agent)
            .and_then(|o| o.output.as_deref());
        if !condition.eval(output) {
            return Err(NotRun::Skipped {
                reason: format!("condition `{}` is false", condition.source),
                neutral: true,
            });
        }
    }
    let view = |d: AgentIndex| {
        let o = outcome_of(d);
        let output = o.output.as_deref().unwrap_or("");
        DepView {
            name: &o.name,
            output,
            json: serde_json::from_str(output).ok(),
            status: o.status,
            neutral: o.status == AgentStatus::Skipped && o.neutral_skip,
        }
    };
    let deps: Vec<DepView<'_>> = agent.depends_on.iter().map(|&d| view(d)).collect();
    // `input_key`: a slice of a dependency's JSON output replaces the input.
    let selected: Option<serde_json::Value> = match &agent.input_key {
        Some(key) => {
            let found = deps
                .iter()
                .find_map(|d| crate::json_path::get_dotted(d.json.as_ref()?, key).cloned());
            match found {
                Some(v) => Some(v),
                None => {
                    return Err(input_failed(format!(
                        "no dependency output has the key `{key}`"
                    )));
                }
            }
        }
        // Fanning out without `input_key`: the (first) dependency's whole output.
        None if agent.fan_out => deps.iter().find_map(|d| d.json.clone()),
        None => None,
    };
    let as_text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let has_slice = selected.is_some();
    // `dispatch`: the ensemble a dependency's output names, the same for every instance.
    let dispatched = match &agent.node {
        NodeKind::Nested(n) => match &n.control {
            Control::Dispatch(d) => Some(match &d.source {
                Some(source) => dispatch_target(source, &deps)
                    .map_err(|message| NotRun::Failed(AgentError::new("dispatch", message)))?,
                None => n.reference.clone(),
            }),
            _ => None,
        },
        _ => None,
    };
    // `input_scope: dependencies`: the run input is left out of what the agent receives.
    let scoped = agent.input_scope == Some(InputScope::Dependencies);
    let ancestor_views =
        || -> Vec<DepView<'_>> { ancestors(plan, agent.index).into_iter().map(view).collect() };
    let work_for = |item_input: &str, item: Option<&serde_json::Value>| -> Result<Work, NotRun> {
        match &agent.node {
            NodeKind::Dedup(_) => Ok(Work::Lists(
                deps.iter()
                    .filter(|d| d.status == AgentStatus::Succeeded)
                    .map(|d| (d.name.to_string(), d.output.to_string()))
                    .collect(),
            )),
            NodeKind::Script(_) => Ok(Work::Script(script_stdin(
                agent, input, item_input, item, &deps,
            ))),
            NodeKind::Generate(g) => match &g.topic {
                Some(source) => render_prompt(source, item_input, &deps, &ancestor_views())
                    .map(Work::Topic)
                    .map_err(template_failed),
                None => Ok(Work::Topic(item_input.to_string())),
            },
            NodeKind::Llm | NodeKind::Nested(_) => {
                let input = if scoped && !has_slice { "" } else { item_input };
                let text = match &agent.prompt {
                    Some(source) => render_prompt(source, input, &deps, &ancestor_views())
                        .map_err(template_failed)?,
                    // With an input slice the agent works on that alone.
                    None if has_slice => item_input.to_string(),
                    None => default_prompt(input, &deps),
                };
                Ok(match (&agent.node, &dispatched) {
                    (NodeKind::Nested(_), Some(ensemble)) => Work::Dispatch {
                        ensemble: ensemble.clone(),
                        input: text,
                    },
                    (NodeKind::Nested(_), None) => Work::Ensemble(text),
                    _ => Work::Prompt(text),
                })
            }
        }
    };
    if agent.fan_out {
        let items = match selected {
            Some(serde_json::Value::Array(items)) => items,
            // llm-orc's script output shape: `{"data": [...]}`.
            Some(serde_json::Value::Object(mut map))
                if agent.input_key.is_none()
                    && map.get("data").is_some_and(serde_json::Value::is_array) =>
            {
                match map.remove("data") {
                    Some(serde_json::Value::Array(items)) => items,
                    _ => unreachable!("checked to be an array"),
                }
            }
            Some(other) => {
                return Err(input_failed(format!(
                    "`fan_out` needs a JSON array, found `{}`",
                    crate::providers::http::excerpt(&other.to_string())
                )));
            }
            None => {
                return Err(input_failed(
                    "`fan_out` needs a dependency whose output is a JSON array".into(),
                ));
            }
        };
        let total = items.len();
        let works = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                // Without a template an LLM instance sees its element in context, as
                // llm-orc shows it.
                let text = if matches!(agent.node, NodeKind::Llm) && agent.prompt.is_none() {
                    format!(
                        "Processing chunk {} of {total}.\n\nOriginal task: {input}\n\nChunk content:\n{}",
                        i + 1,
                        as_text(item)
                    )
                } else {
                    as_text(item)
                };
                work_for(&text, Some(item))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Work::FanOut(works));
    }
    match &selected {
        Some(v) => work_for(&as_text(v), Some(v)),
        None => work_for(input, None),
    }
}

/// The name of the ensemble a `dispatch` chose: the value at the source's path of that
/// dependency's JSON output (its whole output when the path is empty), or why there is none.
fn dispatch_target(source: &DispatchSource, deps: &[DepView<'_>]) -> Result<String, String> {
    let unresolved = |why: String| format!("`{}` names no ensemble: {why}", source.text);
    let dep = deps
        .iter()
        .find(|d| d.name == source.agent)
        .ok_or_else(|| unresolved(format!("`{}` is not a dependency", source.agent)))?;
    if dep.status != AgentStatus::Succeeded {
        return Err(unresolved(format!(
            "`{}` {}",
            dep.name,
            dep.status.as_str()
        )));
    }
    let value = match (&dep.json, source.path.is_empty()) {
        (Some(json), _) => crate::json_path::get(json, &source.path).cloned(),
        (None, true) => Some(serde_json::Value::String(dep.output.trim().to_string())),
        (None, false) => {
            return Err(unresolved(format!(
                "the output of `{}` is not JSON",
                dep.name
            )));
        }
    };
    match value {
        Some(serde_json::Value::String(name)) if !name.trim().is_empty() => {
            Ok(name.trim().to_string())
        }
        Some(serde_json::Value::Null) | None => Err(unresolved(format!(
            "the output of `{}` has no `{}`",
            dep.name,
            source.path.join(".")
        ))),
        Some(other) => Err(unresolved(format!(
            "it is `{}`, not a name",
            crate::providers::http::excerpt(&other.to_string())
        ))),
    }
}

/// What a script reads on stdin: orc's fields and llm-orc's (`input_data`, dependencies as
/// `{response, status}`), so llm-orc scripts run unchanged.
fn script_stdin(
    agent: &Agent,
    run_input: &str,
    item_input: &str,
    item: Option<&serde_json::Value>,
    deps: &[DepView<'_>],
) -> serde_json::Value {
    let dependencies: serde_json::Map<String, serde_json::Value> = deps
        .iter()
        .filter(|d| d.status == AgentStatus::Succeeded)
        .map(|d| {
            let value = d
                .json
                .clone()
                .unwrap_or_else(|| serde_json::Value::String(d.output.to_string()));
            let entry = serde_json::json!({
                "response": d.output, "status": "success", "output": value,
            });
            (d.name.to_string(), entry)
        })
        .collect();
    serde_json::json!({
        "agent_name": agent.name,
        "input": item.cloned().unwrap_or_else(|| serde_json::Value::String(item_input.to_string())),
        "input_data": item_input,
        "parameters": agent.parameters.clone().unwrap_or_else(|| serde_json::json!({})),
        "dependencies": dependencies,
        "context": {"run_input": run_input},
    })
}

/// Every ancestor of agent `i`, in declaration order.
fn ancestors(plan: &Plan, i: AgentIndex) -> Vec<AgentIndex> {
    let mut seen = vec![false; plan.len()];
    let mut stack = plan.ensemble.agents[i].depends_on.clone();
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        if !std::mem::replace(&mut seen[d], true) {
            out.push(d);
            stack.extend(plan.ensemble.agents[d].depends_on.iter().copied());
        }
    }
    out.sort_unstable();
    out
}
