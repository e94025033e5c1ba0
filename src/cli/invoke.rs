//! `orc invoke`: input in, ensemble run, results out.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Context;
use super::args::{InvokeArgs, OutputFormat};
use super::output::{JsonLines, json_result, text_result, write_stdout};
use super::stream::StreamPrinter;
use crate::config::{ConfigErrorKind, ConfigReport, Ensemble};
use crate::diagnostics::Exit;
use crate::exec::{
    self, AgentStatus, Event, EventSink, Mode, ProviderRegistry, RunOptions, RunOutcome, RunStatus,
};
use crate::plan::Plan;
use crate::progress::ProgressView;

pub(crate) fn invoke(ctx: &Context, args: InvokeArgs) -> Exit {
    let (ensemble, report) = match ctx.load_mapped(&args.ensemble, &args.profile_map) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    run_loaded(ctx, ensemble, &report, args)
}

/// Runs a loaded ensemble as `orc invoke` would (also used by `orc explore`).
pub(crate) fn run_loaded(
    ctx: &Context,
    ensemble: Ensemble,
    report: &ConfigReport,
    args: InvokeArgs,
) -> Exit {
    let unsupported: Vec<&str> = report
        .diagnostics
        .iter()
        .filter_map(|d| match &d.kind {
            ConfigErrorKind::NotYetSupported { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    if !unsupported.is_empty() {
        ctx.error(&format!(
            "ensemble `{}` uses {} that this version of orc validates but cannot run yet",
            ensemble.name,
            unsupported
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        eprintln!(
            "  help: remove those keys to run the rest, or check `orc --version` for a newer release"
        );
        return Exit::Invalid;
    }
    let plan = Arc::new(Plan::new(ensemble));
    let mode = match provider_mode(ctx, args.record.as_deref(), args.replay.as_deref()) {
        Ok(mode) => mode,
        Err(exit) => return exit,
    };
    let providers = match ProviderRegistry::for_plan_with(&plan, &mode) {
        Ok(p) => p,
        Err((profile, error)) => {
            ctx.error(&format!("profile `{profile}`: {error}"));
            return Exit::Invalid;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ctx.error(&format!("cannot start the async runtime: {e}"));
            return Exit::Failed;
        }
    };
    let options = RunOptions {
        run_id: String::new(),
        seed: args.seed,
        timeout: args.timeout.map(Duration::from_secs_f64),
        interrupt: CancellationToken::new(),
        slots: Arc::new(Semaphore::new(args.max_concurrency as usize)),
        providers,
        stream_tokens: false,
    };
    if args.each_line {
        let lines = match read_lines(ctx) {
            Ok(lines) => lines,
            Err(exit) => return exit,
        };
        let exit = runtime.block_on(async {
            watch_interrupt(options.interrupt.clone());
            each_line(&args, plan, lines, options).await
        });
        finish_recording(ctx, &mode).err().unwrap_or(exit)
    } else {
        let input = match read_input(ctx, &args, &plan.ensemble) {
            Ok(input) => input,
            Err(exit) => return exit,
        };
        let exit = runtime.block_on(async {
            watch_interrupt(options.interrupt.clone());
            single(ctx, &args, plan, input, options).await
        });
        finish_recording(ctx, &mode).err().unwrap_or(exit)
    }
}

/// Live, recording or replaying providers, per `--record` / `--replay`.
pub(crate) fn provider_mode(
    ctx: &Context,
    record: Option<&std::path::Path>,
    replay: Option<&std::path::Path>,
) -> Result<Mode, Exit> {
    if let Some(path) = replay {
        return crate::providers::replay::Recorded::load(path)
            .map(Mode::Replay)
            .map_err(|e| {
                ctx.error(&e);
                Exit::Invalid
            });
    }
    if let Some(path) = record {
        return crate::providers::replay::Recorder::create(path)
            .map(Mode::Record)
            .map_err(|e| {
                ctx.error(&format!("cannot write `{}`: {e}", path.display()));
                Exit::Invalid
            });
    }
    Ok(Mode::Live)
}

/// Writes out a recording, if one is being made.
pub(crate) fn finish_recording(ctx: &Context, mode: &Mode) -> Result<(), Exit> {
    if let Mode::Record(recorder) = mode {
        if let Err(e) = recorder.flush() {
            ctx.error(&format!("cannot write the recording: {e}"));
            return Err(Exit::Failed);
        }
    }
    Ok(())
}

/// First Ctrl-C: stop new calls, cancel running ones, keep results. Second: exit now.
fn watch_interrupt(token: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Interrupted as i32);
            }
        }
    });
}

fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "run-{:x}-{:04x}",
        nanos / 1_000_000,
        std::process::id() & 0xffff
    )
}

/// Strips exactly one final newline (`\n` or `\r\n`).
fn strip_final_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

fn read_input(ctx: &Context, args: &InvokeArgs, ensemble: &Ensemble) -> Result<String, Exit> {
    if let Some(text) = args.input_arg.clone().or_else(|| args.input.clone()) {
        return Ok(text);
    }
    if let Some(path) = &args.input_file {
        return match std::fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(s) => Ok(strip_final_newline(s)),
                Err(_) => {
                    ctx.error(&format!("`{}` is not UTF-8 text", path.display()));
                    Err(Exit::Invalid)
                }
            },
            Err(e) => {
                ctx.error(&format!("cannot read `{}`: {e}", path.display()));
                Err(Exit::Invalid)
            }
        };
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut bytes = Vec::new();
        if let Err(e) = stdin.lock().read_to_end(&mut bytes) {
            ctx.error(&format!("cannot read stdin: {e}"));
            return Err(Exit::Invalid);
        }
        let Ok(text) = String::from_utf8(bytes) else {
            ctx.error("stdin is not UTF-8 text");
            return Err(Exit::Invalid);
        };
        if !text.is_empty() || ensemble.default_task.is_none() {
            return Ok(strip_final_newline(text));
        }
    }
    if let Some(task) = &ensemble.default_task {
        return Ok(task.clone());
    }
    ctx.error("no input given");
    eprintln!("  help: pipe text on stdin, pass it as an argument, or use --input/--input-file");
    Err(Exit::Invalid)
}

fn read_lines(ctx: &Context) -> Result<Vec<String>, Exit> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        ctx.error("--each-line reads its inputs from stdin");
        eprintln!(
            "  help: pipe one input per line, e.g. `cat topics.txt | orc invoke FILE --each-line`"
        );
        return Err(Exit::Invalid);
    }
    let mut text = String::new();
    if let Err(e) = stdin.lock().read_to_string(&mut text) {
        ctx.error(&format!("cannot read stdin as UTF-8 text: {e}"));
        return Err(Exit::Invalid);
    }
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect())
}

/// The sinks of a single run: the progress view and/or JSON lines.
struct InvokeSink {
    progress: Option<ProgressView>,
    jsonl: Option<JsonLines>,
    stream: Option<StreamPrinter>,
}

impl EventSink for InvokeSink {
    fn emit(&mut self, event: &Event) {
        if let Some(p) = &mut self.progress {
            p.emit(event);
        }
        if let Some(j) = &mut self.jsonl {
            j.emit(event);
        }
        if let Some(s) = &mut self.stream {
            s.emit(event);
        }
    }
}

async fn single(
    ctx: &Context,
    args: &InvokeArgs,
    plan: Arc<Plan>,
    input: String,
    mut options: RunOptions,
) -> Exit {
    options.run_id = run_id();
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    // `--stream` prints one agent's text as it arrives: the final agent, when there is one.
    let streamed = (args.stream && args.output == OutputFormat::Text && plan.sinks.len() == 1)
        .then(|| plan.ensemble.agents[plan.sinks[0]].name.clone());
    // `--stream` asks providers to stream whatever the output format (#12).
    options.stream_tokens = args.stream || show_progress || args.output == OutputFormat::Jsonl;
    let mut sink = InvokeSink {
        progress: show_progress.then(|| ProgressView::new(plan.len() as u64, ctx.color)),
        jsonl: (args.output == OutputFormat::Jsonl).then(JsonLines::new),
        stream: streamed.map(StreamPrinter::new),
    };
    let outcome = exec::run(Arc::clone(&plan), input, options, &mut sink).await;
    if let Some(p) = &sink.progress {
        p.finish();
    }
    if !args.quiet {
        report_run(ctx, &outcome);
    }
    let written = match args.output {
        OutputFormat::Text if sink.stream.is_some() => Exit::Ok,
        OutputFormat::Text => write_stdout(&text_result(&outcome, &plan.sinks)),
        OutputFormat::Json => write_stdout(&json_result(&outcome)),
        OutputFormat::Jsonl => Exit::Ok,
    };
    if written != Exit::Ok {
        return written;
    }
    exit_for(outcome.status)
}

fn exit_for(status: RunStatus) -> Exit {
    match status {
        RunStatus::Succeeded => Exit::Ok,
        RunStatus::Interrupted => Exit::Interrupted,
        RunStatus::Failed | RunStatus::TimedOut | RunStatus::BudgetExceeded => Exit::Failed,
    }
}

/// Failures and a one-line summary on stderr.
fn report_run(ctx: &Context, outcome: &RunOutcome) {
    for agent in &outcome.agents {
        match agent.status {
            AgentStatus::Failed => ctx.error(&format!(
                "agent `{}` failed after {} attempt{}: {}",
                agent.name,
                agent.attempts,
                if agent.attempts == 1 { "" } else { "s" },
                agent.error.as_deref().unwrap_or("unknown error")
            )),
            AgentStatus::Skipped => eprintln!(
                "skipped: agent `{}` ({})",
                agent.name,
                agent
                    .error
                    .as_deref()
                    .unwrap_or("a dependency did not succeed")
            ),
            _ => {}
        }
    }
    let t = &outcome.totals;
    let headline = match outcome.status {
        RunStatus::Succeeded => "done".to_string(),
        RunStatus::Failed => "finished with failures".to_string(),
        RunStatus::TimedOut => "timed out (--timeout)".to_string(),
        RunStatus::BudgetExceeded => "stopped: budget.max_cost_usd reached".to_string(),
        RunStatus::Interrupted => "interrupted".to_string(),
    };
    let mut parts = vec![format!("{} succeeded", t.succeeded)];
    for (n, what) in [
        (t.failed, "failed"),
        (t.skipped, "skipped"),
        (t.cancelled, "cancelled"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    for warning in exec::warnings(outcome) {
        eprintln!("{warning}");
    }
    let cost = t
        .cost_usd
        .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"));
    eprintln!(
        "orc: {headline}: {} · {} · {} · {:.2}s",
        parts.join(", "),
        exec::tokens_summary(outcome),
        cost,
        t.wall_ms as f64 / 1000.0
    );
}

async fn each_line(
    args: &InvokeArgs,
    plan: Arc<Plan>,
    lines: Vec<String>,
    options: RunOptions,
) -> Exit {
    let total = lines.len();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, RunOutcome)>();
    for (index, line) in lines.into_iter().enumerate() {
        let mut run_options = options.clone();
        run_options.run_id = format!("{}-{}", run_id(), index + 1);
        let plan = Arc::clone(&plan);
        let tx = tx.clone();
        tokio::spawn(async move {
            let outcome = exec::run(plan, line, run_options, &mut exec::NoSink).await;
            let _ = tx.send((index, outcome));
        });
    }
    drop(tx);
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} inputs {elapsed:>4}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let mut pending: BTreeMap<usize, RunOutcome> = BTreeMap::new();
    let mut next = 0usize;
    let mut all: Vec<(usize, RunOutcome)> = Vec::with_capacity(total);
    let (mut succeeded, mut failed, mut interrupted) = (0usize, 0usize, false);
    while let Some((index, outcome)) = rx.recv().await {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        match outcome.status {
            RunStatus::Succeeded => succeeded += 1,
            RunStatus::Interrupted => interrupted = true,
            _ => failed += 1,
        }
        match args.output {
            OutputFormat::Jsonl => {
                let mut line = serde_json::to_string(&outcome).expect("outcomes serialize");
                line.push('\n');
                if write_stdout(&line) != Exit::Ok {
                    return Exit::Failed;
                }
            }
            OutputFormat::Text => {
                pending.insert(index, outcome);
                // Text keeps input order: print every result whose predecessors are out.
                while let Some(o) = pending.remove(&next) {
                    let text = text_result(&o, &plan.sinks);
                    if write_stdout(&text) != Exit::Ok {
                        return Exit::Failed;
                    }
                    next += 1;
                }
            }
            OutputFormat::Json => all.push((index, outcome)),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.output == OutputFormat::Json {
        all.sort_by_key(|(index, _)| *index);
        let runs: Vec<&RunOutcome> = all.iter().map(|(_, o)| o).collect();
        let mut s = serde_json::to_string_pretty(&runs).expect("outcomes serialize");
        s.push('\n');
        if write_stdout(&s) != Exit::Ok {
            return Exit::Failed;
        }
    }
    if !args.quiet {
        let rest = total - succeeded - failed;
        eprintln!(
            "orc: {total} input{}: {succeeded} succeeded, {failed} failed{}",
            if total == 1 { "" } else { "s" },
            if interrupted {
                format!(", {rest} interrupted")
            } else {
                String::new()
            }
        );
    }
    if interrupted {
        Exit::Interrupted
    } else if failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}
