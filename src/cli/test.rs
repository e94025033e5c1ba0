//! `orc test`: runs the `tests:` of ensemble files and checks their expectations, printing
//! expected against actual for every failure. With `--replay` nothing leaves the machine.

use std::collections::HashMap;
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
use crate::exec::{
    AgentOutcome, AgentStatus, EventKind, Mode, PendingRun, RunOptions, RunOutcome, RunSource,
};
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
    let replaying = args.replay.is_some();
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
            let (outcome, sent) =
                match engine.prepare(Arc::clone(&plan), test.input.clone(), options) {
                    Ok(pending) => runtime.block_on(run_watched(pending, replaying)),
                    Err(e) => {
                        ctx.error(&format!("{}: {e}", file.display()));
                        invalid += 1;
                        continue;
                    }
                };
            let mut problems = replay_misses(&plan, &outcome, &sent);
            problems.extend(check(&outcome, &test.expect));
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
            errln!("  help: pass files or directories, e.g. `orc test ensembles/`");
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

/// The request an agent's last call sent, as the recording keys it.
#[derive(Default)]
struct Sent {
    profile: String,
    model: String,
    key: String,
    system: Option<String>,
    prompt: String,
}

/// Runs a test; with `--replay`, also keeps each agent's last request so a miss can be
/// shown (the outcome names the agent, not what it asked).
async fn run_watched(
    pending: PendingRun,
    replaying: bool,
) -> (Arc<RunOutcome>, HashMap<String, Sent>) {
    if !replaying {
        return (pending.start().wait().await, HashMap::new());
    }
    let mut events = pending.subscribe();
    let handle = pending.start();
    let mut sent: HashMap<String, Sent> = HashMap::new();
    while let Some(event) = events.recv().await {
        if !event.path.is_empty() {
            continue;
        }
        match &event.kind {
            EventKind::AgentPrompt {
                agent,
                system,
                prompt,
                ..
            } => {
                let s = sent.entry(agent.clone()).or_default();
                s.system.clone_from(system);
                s.prompt.clone_from(prompt);
            }
            EventKind::CallStarted {
                agent,
                profile,
                model,
                request_hash,
                ..
            } => {
                let s = sent.entry(agent.clone()).or_default();
                s.profile.clone_from(profile);
                s.model.clone_from(model);
                s.key.clone_from(request_hash);
            }
            kind if kind.is_run_finished() => break,
            _ => {}
        }
    }
    (handle.wait().await, sent)
}

/// One problem per agent whose request is not in the `--replay` recording: what it asked
/// (profile, model, key, the start of its prompts) and which agents were skipped because
/// of it, so a miss is not reported as a mystery `actual: ""` further down (#12).
fn replay_misses(plan: &Plan, outcome: &RunOutcome, sent: &HashMap<String, Sent>) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, agent) in outcome.agents.iter().enumerate() {
        if agent.error_kind.as_deref() != Some("not_recorded") {
            continue;
        }
        let mut text = format!(
            "the recording has no response for the request of agent `{}`",
            agent.name
        );
        match sent.get(&agent.name) {
            Some(s) => {
                text.push_str(&format!(
                    "\n  profile `{}`, model `{}`, request key {}",
                    s.profile, s.model, s.key
                ));
                if let Some(system) = &s.system {
                    text.push_str(&format!("\n  system prompt: {:?}", clip(system, 120)));
                }
                text.push_str(&format!("\n  prompt: {:?}", clip(&s.prompt, 120)));
            }
            None => text.push_str(&format!(
                "\n  profile `{}`, model `{}`",
                agent.profile, agent.model
            )),
        }
        let skipped = skipped_because(plan, outcome, i);
        if !skipped.is_empty() {
            let names: Vec<String> = skipped.iter().map(|n| format!("`{n}`")).collect();
            text.push_str(&format!(
                "\n  so {} {} skipped",
                names.join(", "),
                if names.len() == 1 { "was" } else { "were" }
            ));
        }
        text.push_str(
            "\n  help: the ensemble or the input changed since the recording was made; record it again with `--record FILE`",
        );
        problems.push(text);
    }
    problems
}

/// The agents downstream of `failed` that were skipped for a dependency that did not
/// succeed, in declaration order.
fn skipped_because(plan: &Plan, outcome: &RunOutcome, failed: usize) -> Vec<String> {
    let mut seen = vec![false; outcome.agents.len()];
    let mut todo = vec![failed];
    while let Some(i) = todo.pop() {
        for &d in plan.dependents.get(i).map_or(&[][..], Vec::as_slice) {
            let a = &outcome.agents[d];
            if !seen[d] && a.status == AgentStatus::Skipped && !a.neutral_skip {
                seen[d] = true;
                todo.push(d);
            }
        }
    }
    seen.iter()
        .enumerate()
        .filter(|(_, s)| **s)
        .map(|(i, _)| outcome.agents[i].name.clone())
        .collect()
}

/// At most `n` characters of `text`, marked when cut.
fn clip(text: &str, n: usize) -> String {
    let one: String = text.chars().take(n).collect();
    if text.chars().count() > n {
        format!("{one}...")
    } else {
        one
    }
}

/// What an output expectation shows as `actual` for an agent: its output, or why it has
/// none.
fn actual_output(agent: &AgentOutcome) -> String {
    match (agent.status, &agent.output) {
        (AgentStatus::Succeeded, Some(output)) => format!("{:?}", clip(output, 300)),
        (status, _) => {
            let why = match agent.error_kind.as_deref() {
                Some("not_recorded") => "its request is not in the recording".to_string(),
                _ => agent
                    .error
                    .as_deref()
                    .map_or_else(String::new, |e| clip(e, 300)),
            };
            if why.is_empty() {
                format!("no output ({})", status.as_str())
            } else {
                format!("no output ({}: {why})", status.as_str())
            }
        }
    }
}

/// What is wrong with the run, one entry per failed expectation, expected against actual.
fn check(outcome: &RunOutcome, expect: &[ExpectSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for e in expect {
        let agent: Option<&AgentOutcome> = e
            .agent
            .as_ref()
            .and_then(|name| outcome.agents.iter().find(|a| &a.name == name))
            .map(|a| &**a);
        if let (Some(name), None) = (&e.agent, agent) {
            problems.push(format!("agent `{name}` is not in the run"));
            continue;
        }
        let output = agent.and_then(|a| a.output.as_deref()).unwrap_or("");
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
                let why = match agent {
                    Some(a) if a.error_kind.as_deref() == Some("not_recorded") => {
                        " (its request is not in the recording)".to_string()
                    }
                    Some(a) => a
                        .error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default(),
                    None => String::new(),
                };
                problems.push(format!(
                    "{whose}: status\n  expected: {status}\n  actual:   {actual}{why}"
                ));
            }
        }
        if let (Some(text), Some(a)) = (&e.contains, agent) {
            if !output.contains(text.as_str()) {
                problems.push(format!(
                    "agent `{}`: output should contain {text:?}\n  actual: {}",
                    a.name,
                    actual_output(a)
                ));
            }
        }
        if let (Some(pattern), Some(a)) = (&e.matches, agent) {
            let matched = regex::Regex::new(pattern).is_ok_and(|re| re.is_match(output));
            if !matched {
                problems.push(format!(
                    "agent `{}`: output should match /{pattern}/\n  actual: {}",
                    a.name,
                    actual_output(a)
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
                    (None, _) if a.status != AgentStatus::Succeeded => actual_output(a),
                    (None, _) => format!("output is not JSON: {:?}", clip(output, 300)),
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
