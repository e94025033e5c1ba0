//! `orc test`: runs the `tests:` of ensemble files and checks their expectations, printing
//! expected against actual for every failure. With `--replay` nothing leaves the machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::Context;
use super::args::TestArgs;
use super::invoke::provider_mode;
use super::output::write_stdout;
use super::session::{self, EngineArgs};
use crate::config::spec::{ExpectSpec, TestSpec};
use crate::diagnostics::Exit;
use crate::exec::{AgentOutcome, Mode, RunOptions, RunOutcome, RunSource};
use crate::plan::Plan;

pub(crate) fn test(ctx: &Context, args: TestArgs) -> Exit {
    let files = match files(ctx, &args.paths) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mode = match provider_mode(ctx, args.record.as_deref(), args.replay.as_deref()) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let recorder = match &mode {
        Mode::Record(r) => Some(Arc::clone(r)),
        _ => None,
    };
    let runtime = match session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let _guard = runtime.enter();
    let engine = session::engine(
        ctx,
        EngineArgs {
            max_concurrency: 10_000,
            no_store: args.no_store,
            no_cache: false,
            mode,
            live_capacity: 1 << 10,
        },
    );
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    let mut out = String::new();
    for file in &files {
        let Ok((ensemble, _)) = ctx.load_mapped(&file.to_string_lossy(), &args.profile_map) else {
            invalid += 1;
            continue;
        };
        let tests: Vec<TestSpec> = ensemble
            .tests
            .iter()
            .filter(|t| args.filter.as_deref().is_none_or(|f| t.name.contains(f)))
            .cloned()
            .collect();
        if tests.is_empty() {
            continue;
        }
        let source = RunSource {
            path: std::fs::canonicalize(&ensemble.source.path).ok(),
            text: ensemble.source.text.to_string(),
        };
        let plan = Arc::new(Plan::new(ensemble));
        if let Err(e) = engine.providers_for(&plan) {
            ctx.error(&format!("{}: {e}", file.display()));
            invalid += 1;
            continue;
        }
        out.push_str(&format!("{}\n", file.display()));
        for test in &tests {
            let options = RunOptions {
                seed: test.seed.unwrap_or(0),
                source: Some(source.clone()),
                options: serde_json::json!({ "test": test.name, "seed": test.seed }),
                ..RunOptions::default()
            };
            let started = Instant::now();
            let outcome = match engine.prepare(Arc::clone(&plan), test.input.clone(), options) {
                Ok(pending) => runtime.block_on(pending.start().wait()),
                Err(e) => {
                    ctx.error(&format!("{}: {e}", file.display()));
                    invalid += 1;
                    continue;
                }
            };
            let problems = check(&outcome, &test.expect);
            let secs = started.elapsed().as_secs_f64();
            if problems.is_empty() {
                passed += 1;
                out.push_str(&format!("  ok    {} ({secs:.2}s)\n", test.name));
            } else {
                failed += 1;
                out.push_str(&format!("  FAIL  {} ({secs:.2}s)\n", test.name));
                for p in problems {
                    for (n, line) in p.lines().enumerate() {
                        out.push_str(if n == 0 { "        - " } else { "          " });
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
    }
    runtime.block_on(engine.flush());
    if let Some(r) = recorder {
        if let Err(e) = r.flush() {
            ctx.error(&format!("cannot write the recording: {e}"));
            return Exit::Failed;
        }
    }
    out.push_str(&format!("{passed} passed, {failed} failed\n"));
    if write_stdout(&out) != Exit::Ok {
        return Exit::Failed;
    }
    if invalid > 0 {
        Exit::Invalid
    } else if failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}

fn files(ctx: &Context, paths: &[PathBuf]) -> Result<Vec<PathBuf>, Exit> {
    if paths.is_empty() {
        let found: Vec<PathBuf> = ctx
            .dirs
            .list_ensembles()
            .into_iter()
            .filter(|f| !f.shadowed)
            .map(|f| f.path)
            .collect();
        if found.is_empty() {
            ctx.error("no ensembles found on the search path");
            eprintln!("  help: pass files or directories, e.g. `orc test ensembles/`");
            return Err(Exit::Invalid);
        }
        return Ok(found);
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            ctx.error(&format!("no such file or directory `{}`", path.display()));
            return Err(Exit::Invalid);
        }
    }
    Ok(files)
}

/// What is wrong with the run, one entry per failed expectation, expected against actual.
fn check(outcome: &RunOutcome, expect: &[ExpectSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for e in expect {
        let agent: Option<&AgentOutcome> = e
            .agent
            .as_ref()
            .and_then(|name| outcome.agents.iter().find(|a| &a.name == name));
        if let (Some(name), None) = (&e.agent, agent) {
            problems.push(format!("agent `{name}` is not in the run"));
            continue;
        }
        let output = agent.and_then(|a| a.output.as_deref()).unwrap_or("");
        let shown = |text: &str| {
            let one: String = text.chars().take(300).collect();
            if text.chars().count() > 300 {
                format!("{one}...")
            } else {
                one
            }
        };
        if let Some(status) = &e.status {
            let actual = match agent {
                Some(a) => a.status.as_str().to_string(),
                None => serde_json::to_value(outcome.status)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            };
            if &actual != status {
                let whose = e
                    .agent
                    .as_ref()
                    .map_or_else(|| "the run".to_string(), |n| format!("agent `{n}`"));
                let why = agent
                    .and_then(|a| a.error.as_deref())
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                problems.push(format!(
                    "{whose}: status\n  expected: {status}\n  actual:   {actual}{why}"
                ));
            }
        }
        if let (Some(text), Some(a)) = (&e.contains, agent) {
            if !output.contains(text.as_str()) {
                problems.push(format!(
                    "agent `{}`: output should contain {text:?}\n  actual: {:?}",
                    a.name,
                    shown(output)
                ));
            }
        }
        if let (Some(pattern), Some(a)) = (&e.matches, agent) {
            let matched = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(output));
            if !matched {
                problems.push(format!(
                    "agent `{}`: output should match /{pattern}/\n  actual: {:?}",
                    a.name,
                    shown(output)
                ));
            }
        }
        if let (Some(json), Some(a)) = (&e.json, agent) {
            let parsed: Option<serde_json::Value> = serde_json::from_str(output).ok();
            let actual = parsed
                .as_ref()
                .and_then(|v| crate::json_path::get_dotted(v, &json.path));
            if actual != Some(&json.equals) {
                let actual_text = match (&parsed, actual) {
                    (None, _) => format!("output is not JSON: {:?}", shown(output)),
                    (Some(_), None) => "no such path".to_string(),
                    (Some(_), Some(v)) => v.to_string(),
                };
                problems.push(format!(
                    "agent `{}`: json `{}`\n  expected: {}\n  actual:   {actual_text}",
                    a.name, json.path, json.equals
                ));
            }
        }
        if let Some(max) = e.max_cost_usd {
            match outcome.totals.cost_usd {
                Some(c) if c <= max => {}
                Some(c) => problems.push(format!(
                    "cost\n  expected: at most ${max}\n  actual:   ${c:.6}"
                )),
                None => problems.push(format!(
                    "cost\n  expected: at most ${max}\n  actual:   unknown (a model has no price)"
                )),
            }
        }
        if let Some(max) = e.max_tokens {
            let used = outcome.totals.usage.input_tokens + outcome.totals.usage.output_tokens;
            if used > max {
                problems.push(format!(
                    "tokens\n  expected: at most {max}\n  actual:   {used}"
                ));
            }
        }
    }
    problems
}
