//! Resuming a recorded run, as `orc resume` and `POST /api/runs/{id}/resume` both do: which
//! runs may be resumed, where their ensemble comes from (the file, else the copy the store
//! kept), which changes to it are refused (those touching agents still to run), and the
//! `RunOptions` that continue the run under its own id. Prints nothing; front ends word the
//! refusals for their users.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::config::{self, ConfigReport, Ensemble, ProfileSet, SourceFile};
use crate::exec::{ResumeData, RunOptions, RunSource};
use crate::plan::Plan;
use crate::store::{RunRow, StoreError};

/// Why a run cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("run `{id}` succeeded; there is nothing to resume")]
    Succeeded { id: String },
    #[error("run `{id}` is still running{}", .pid.map(|p| format!(" (process {p})")).unwrap_or_default())]
    Running { id: String, pid: Option<u32> },
    #[error("the ensemble file of run `{id}` is gone and the store has no copy of it")]
    NoCopy { id: String },
    #[error("the ensemble changed since run `{id}` in ways that touch unfinished agents: {}", .changes.join("; "))]
    Changed { id: String, changes: Vec<String> },
}

/// Refuses runs that cannot be resumed: succeeded ones and running ones.
pub fn check_status(row: &RunRow) -> Result<(), ResumeError> {
    match row.status.as_str() {
        "succeeded" => Err(ResumeError::Succeeded { id: row.id.clone() }),
        "running" => Err(ResumeError::Running {
            id: row.id.clone(),
            pid: row.owner_pid,
        }),
        _ => Ok(()),
    }
}

/// The `--profile-map` entries to resume with: those given, else those the run was
/// invoked with.
pub fn profile_map(row: &RunRow, given: &[String]) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    row.options["profile_map"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a resumed run's ensemble comes from.
#[derive(Debug, Clone)]
pub enum EnsembleOrigin {
    /// The file the run was started from, still there.
    File(PathBuf),
    /// The file is gone: the copy recorded with the run.
    Recorded(String),
}

pub fn origin(row: &RunRow) -> Result<EnsembleOrigin, ResumeError> {
    if let Some(path) = row
        .ensemble_path
        .as_ref()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
    {
        return Ok(EnsembleOrigin::File(path));
    }
    row.ensemble_source
        .clone()
        .map(EnsembleOrigin::Recorded)
        .ok_or_else(|| ResumeError::NoCopy { id: row.id.clone() })
}

/// Applies `OLD=NEW` entries to a profile set.
pub fn apply_profile_map(profiles: &mut ProfileSet, map: &[String]) -> Result<(), String> {
    for entry in map {
        let Some((old, new)) = entry.split_once('=') else {
            return Err(format!("`--profile-map {entry}` is not OLD=NEW"));
        };
        profiles.alias(old.trim(), new.trim())?;
    }
    Ok(())
}

/// Loads the copy of an ensemble recorded with a run.
pub fn load_recorded(
    name: &str,
    text: String,
    profiles: &ProfileSet,
) -> (Option<Ensemble>, ConfigReport) {
    let display = format!("<recorded copy of {name}>");
    let file = SourceFile::new(display.clone().into(), display, text);
    config::load_ensemble_source(file, profiles)
}

/// Refuses a changed ensemble whose changes touch agents still to run, unless `force`;
/// returns the changes (non-empty only when forced past them).
pub fn check_changes(
    row: &RunRow,
    ensemble: &Ensemble,
    data: &ResumeData,
    force: bool,
) -> Result<Vec<String>, ResumeError> {
    let Some(old) = &row.ensemble_source else {
        return Ok(Vec::new());
    };
    let unfinished: Vec<String> = ensemble
        .agents
        .iter()
        .map(|a| a.name.clone())
        .filter(|name| !data.succeeded.iter().any(|o| &o.name == name))
        .collect();
    let changed = changes(old, &ensemble.source.text, &unfinished);
    if changed.is_empty() || force {
        return Ok(changed);
    }
    Err(ResumeError::Changed {
        id: row.id.clone(),
        changes: changed,
    })
}

/// The options that continue `row` under its own id from `data`.
pub fn run_options(
    row: &RunRow,
    plan: &Plan,
    path: Option<&Path>,
    data: ResumeData,
    timeout: Option<Duration>,
) -> RunOptions {
    RunOptions {
        run_id: Some(row.id.clone()),
        seed: row.options["seed"].as_u64().unwrap_or(0),
        timeout,
        stream: false,
        source: Some(RunSource {
            path: path.map(Path::to_path_buf),
            text: plan.ensemble.source.text.to_string(),
        }),
        options: row.options.clone(),
        resume: Some(Arc::new(data)),
    }
}

/// What changed between two versions of an ensemble file that matters to the agents still
/// to run: their own definitions, and the keys every agent inherits.
pub fn changes(old: &str, new: &str, unfinished: &[String]) -> Vec<String> {
    if old == new {
        return Vec::new();
    }
    let parse = |text: &str| -> Value {
        serde_yaml::from_str::<serde_yaml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
            .unwrap_or(Value::Null)
    };
    let (old, new) = (parse(old), parse(new));
    let agents = |doc: &Value| -> BTreeMap<String, Value> {
        doc["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| Some((a["name"].as_str()?.to_string(), a.clone())))
            .collect()
    };
    let (old_agents, new_agents) = (agents(&old), agents(&new));
    let mut out = Vec::new();
    if unfinished.is_empty() {
        return out;
    }
    for key in ["defaults", "model_profiles", "budget"] {
        if old.get(key) != new.get(key) {
            out.push(format!("`{key}` changed"));
        }
    }
    for name in unfinished {
        match (old_agents.get(name), new_agents.get(name)) {
            (None, Some(_)) => out.push(format!("agent `{name}` was added")),
            (Some(a), Some(b)) if a != b => {
                let keys: Vec<String> = a
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                    .chain(b.as_object().into_iter().flatten().map(|(k, _)| k))
                    .filter(|k| a.get(*k) != b.get(*k))
                    .map(|k| format!("`{k}`"))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                out.push(format!("agent `{name}` changed ({})", keys.join(", ")));
            }
            _ => {}
        }
    }
    for name in old_agents.keys() {
        if !new_agents.contains_key(name) {
            out.push(format!("agent `{name}` was removed"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_changes_to_unfinished_agents_only() {
        let old = "name: e\nagents:\n  - name: a\n    prompt: one\n  - name: b\n    prompt: two\n";
        let new = "name: e\nagents:\n  - name: a\n    prompt: ONE\n  - name: b\n    prompt: TWO\n";
        assert_eq!(
            changes(old, new, &["b".to_string()]),
            vec!["agent `b` changed (`prompt`)".to_string()]
        );
        assert!(changes(old, old, &["b".to_string()]).is_empty());
        assert!(changes(old, new, &[]).is_empty());
    }
}
