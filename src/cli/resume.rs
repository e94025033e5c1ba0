//! `orc resume RUN`: continues an interrupted, timed-out or failed run under the same id.
//! Agents that succeeded keep their outputs; the others run again; provider calls completed
//! before the interruption are answered from the store, not sent again. Refuses when the
//! ensemble changed in a way that touches unfinished agents, unless `--force`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Context;
use super::args::ResumeArgs;
use super::invoke::{check_runnable, run_one};
use super::session::{self, EngineArgs, Show};
use crate::config::{self, Ensemble, SourceFile};
use crate::diagnostics::Exit;
use crate::exec::{Mode, RunOptions, RunSource};
use crate::plan::Plan;

pub(crate) fn resume(ctx: &Context, args: ResumeArgs) -> Exit {
    let store = match super::runs::open(ctx) {
        Ok(s) => s,
        Err(e) => {
            ctx.error(&e.to_string());
            return Exit::Invalid;
        }
    };
    let found = store.resolve(&args.run).and_then(|id| store.run(&id));
    let row = match found {
        Ok(row) => row,
        Err(e) => {
            ctx.error(&e.to_string());
            eprintln!("  help: `orc runs` lists the recorded runs");
            return Exit::Invalid;
        }
    };
    match row.status.as_str() {
        "succeeded" => {
            ctx.error(&format!(
                "run `{}` succeeded; there is nothing to resume",
                row.id
            ));
            eprintln!("  help: `orc runs show {}` shows its result", row.id);
            return Exit::Invalid;
        }
        "running" => {
            ctx.error(&format!(
                "run `{}` is still running{}",
                row.id,
                row.owner_pid
                    .map(|p| format!(" (process {p})"))
                    .unwrap_or_default()
            ));
            eprintln!("  help: stop it first (Ctrl-C or SIGTERM keeps what it finished)");
            return Exit::Invalid;
        }
        _ => {}
    }
    let profile_map: Vec<String> = if args.profile_map.is_empty() {
        row.options["profile_map"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        args.profile_map.clone()
    };
    let path = row
        .ensemble_path
        .as_ref()
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file());
    let (ensemble, report) = match &path {
        Some(p) => match ctx.load_mapped(&p.to_string_lossy(), &profile_map) {
            Ok(loaded) => loaded,
            Err(exit) => return exit,
        },
        None => {
            // The file is gone: run from the copy the store kept.
            let Some(text) = row.ensemble_source.clone() else {
                ctx.error(&format!(
                    "the ensemble file of run `{}` is gone and the store has no copy of it",
                    row.id
                ));
                return Exit::Invalid;
            };
            eprintln!(
                "note: `{}` is gone; resuming from the copy recorded with the run",
                row.ensemble_path.as_deref().unwrap_or(&row.ensemble)
            );
            match load_text(ctx, &row.ensemble, text, &profile_map) {
                Ok(loaded) => loaded,
                Err(exit) => return exit,
            }
        }
    };
    if let Err(exit) = check_runnable(ctx, &ensemble, &report) {
        return exit;
    }
    let data = match store.resume_data(&row.id) {
        Ok(d) => d,
        Err(e) => {
            ctx.error(&e.to_string());
            return Exit::Invalid;
        }
    };
    let unfinished: Vec<String> = ensemble
        .agents
        .iter()
        .map(|a| a.name.clone())
        .filter(|name| !data.succeeded.iter().any(|o| &o.name == name))
        .collect();
    if let Some(old) = &row.ensemble_source {
        let changed = changes(old, &ensemble.source.text, &unfinished);
        if !changed.is_empty() {
            if args.force {
                eprintln!(
                    "note: resuming despite changes to the ensemble (--force): {}",
                    changed.join("; ")
                );
            } else {
                ctx.error(&format!(
                    "the ensemble changed since run `{}` in ways that touch unfinished agents: {}",
                    row.id,
                    changed.join("; ")
                ));
                eprintln!(
                    "  help: `orc resume {} --force` resumes with the ensemble as it is now; `orc invoke` starts a new run",
                    row.id
                );
                return Exit::Invalid;
            }
        }
    }
    drop(store);
    let plan = Arc::new(Plan::new(ensemble));
    let runtime = match session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let _guard = runtime.enter();
    let engine = session::engine(
        ctx,
        EngineArgs {
            max_concurrency: args.max_concurrency,
            no_store: false,
            no_cache: args.no_cache,
            mode: Mode::Live,
            live_capacity: 1 << 17,
        },
    );
    let seed = row.options["seed"].as_u64().unwrap_or(0);
    let restored = data.succeeded.len();
    let answers = data.answers.len();
    let options = RunOptions {
        run_id: Some(row.id.clone()),
        seed,
        timeout: args.timeout.map(Duration::from_secs_f64),
        stream: false,
        source: Some(RunSource {
            path: path.clone(),
            text: plan.ensemble.source.text.to_string(),
        }),
        options: row.options.clone(),
        resume: Some(Arc::new(data)),
    };
    if !args.quiet {
        eprintln!(
            "orc: resuming {}: {restored} of {} agents already succeeded, {answers} completed call{} on record",
            row.id,
            plan.len(),
            if answers == 1 { "" } else { "s" }
        );
    }
    let show = Show {
        output: args.output,
        quiet: args.quiet,
        stream: args.stream,
    };
    let exit = runtime.block_on(async {
        session::watch_signals(engine.clone());
        run_one(ctx, &engine, plan, row.input.clone(), options, show).await
    });
    runtime.block_on(engine.flush());
    exit
}

fn load_text(
    ctx: &Context,
    name: &str,
    text: String,
    profile_map: &[String],
) -> Result<(Ensemble, config::ConfigReport), Exit> {
    let mut profiles = ctx.profiles()?;
    for entry in profile_map {
        if let Some((old, new)) = entry.split_once('=') {
            if let Err(message) = profiles.alias(old.trim(), new.trim()) {
                ctx.error(&message);
                return Err(Exit::Invalid);
            }
        }
    }
    let display = format!("<recorded copy of {name}>");
    let file = SourceFile::new(display.clone().into(), display, text);
    let (ensemble, report) = config::load_ensemble_source(file, &profiles);
    ctx.print_report(&report);
    ensemble.map(|e| (e, report)).ok_or(Exit::Invalid)
}

/// What changed between two versions of an ensemble file that matters to the agents still
/// to run: their own definitions, and the keys every agent inherits.
fn changes(old: &str, new: &str, unfinished: &[String]) -> Vec<String> {
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
                    .collect::<std::collections::BTreeSet<_>>()
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
