//! What every command that runs ensembles shares: building the engine (with the run store
//! unless it is off), watching signals, and printing one run as it goes and when it ends
//! (progress view, `--output jsonl`, `--stream`, the summary, the result on stdout, the exit
//! code). Printing happens on a thread of its own, never on the async workers.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use super::Context;
use super::args::OutputFormat;
use super::output::{json_result, partial_note, text_result, write_stdout};
use super::stream::StreamPrinter;
use crate::diagnostics::Exit;
use crate::exec::{
    AgentOutcome, AgentStatus, Engine, EngineConfig, Event, EventKind, Mode, Recorder, RunHandle,
    RunOutcome, RunState, RunStatus, Subscription,
};
use crate::plan::Plan;
use crate::progress::ProgressView;

/// How a run is shown.
#[derive(Clone, Copy)]
pub(crate) struct Show {
    pub output: OutputFormat,
    pub quiet: bool,
    /// `--stream`: print the final agent's text as it arrives.
    pub stream: bool,
}

/// Engine settings from the command line.
pub(crate) struct EngineArgs {
    pub max_concurrency: u32,
    pub no_store: bool,
    pub no_cache: bool,
    pub mode: Mode,
    /// Lagging live subscribers get `lagged` after this many events.
    pub live_capacity: usize,
}

/// Builds the engine. A store that cannot be opened is one warning; the run goes on.
pub(crate) fn engine(ctx: &Context, args: EngineArgs) -> Engine {
    engine_with(ctx, args, None)
}

/// As `engine`, with jobs run by `executor` (`--redis`: on workers).
pub(crate) fn engine_with(
    ctx: &Context,
    args: EngineArgs,
    executor: Option<Arc<dyn crate::exec::Executor>>,
) -> Engine {
    let store: Option<Arc<dyn Recorder>> = if args.no_store {
        None
    } else {
        crate::store::default_path().and_then(|path| {
            let color = ctx.color;
            let warn = Box::new(move |message: String| warn_line(color, &message));
            match crate::store::Store::open(&path, warn) {
                Ok(store) => Some(store as Arc<dyn Recorder>),
                Err(e) => {
                    warn_line(
                        ctx.color,
                        &format!("{e}; this run is not recorded (--no-store or ORC_STORE=off silences this)"),
                    );
                    None
                }
            }
        })
    };
    Engine::new(EngineConfig {
        max_concurrency: args.max_concurrency as usize,
        mode: args.mode,
        store,
        no_cache: args.no_cache,
        live_capacity: args.live_capacity,
        executor,
        limits: None,
    })
}

fn warn_line(color: bool, message: &str) {
    let prefix = if color {
        "\x1b[1;33mwarning\x1b[0m"
    } else {
        "warning"
    };
    errln!("{prefix}: {message}");
}

/// The signal that stopped the process, for its exit code (0 when none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// First SIGINT, SIGTERM or SIGHUP: stop new calls, cancel running ones and keep results
/// (`engine`'s runs end `interrupted`). A second one: exit at once.
pub(crate) fn watch_signals(engine: Engine) {
    tokio::spawn(async move {
        let first = next_signal().await;
        SIGNAL.store(first, Ordering::SeqCst);
        engine.cancel_all(RunStatus::Interrupted);
        let second = next_signal().await;
        std::process::exit(128 + second);
    });
}

#[cfg(unix)]
pub(crate) async fn next_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => libc::SIGINT,
        _ = term.recv() => libc::SIGTERM,
        _ = hup.recv() => libc::SIGHUP,
    }
}

#[cfg(not(unix))]
pub(crate) async fn next_signal() -> i32 {
    let _ = tokio::signal::ctrl_c().await;
    2
}

/// Whether a signal asked the process to stop.
pub(crate) fn signalled() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit code of a run's status (a signal names its own).
pub(crate) fn exit_for(status: RunStatus) -> Exit {
    match status {
        RunStatus::Succeeded => Exit::Ok,
        RunStatus::Interrupted => match SIGNAL.load(Ordering::SeqCst) {
            libc::SIGTERM => Exit::Terminated,
            libc::SIGHUP => Exit::HungUp,
            _ => Exit::Interrupted,
        },
        RunStatus::Failed
        | RunStatus::TimedOut
        | RunStatus::BudgetExceeded
        | RunStatus::Cancelled => Exit::Failed,
    }
}

/// Prints a run's live events (progress view, JSON lines, streamed text, retries and
/// failures as short lines) on a thread of its own until the run finishes.
pub(crate) struct Printer {
    thread: std::thread::JoinHandle<Printed>,
}

/// What the printer already put out.
#[derive(Default)]
pub(crate) struct Printed {
    /// `--stream` printed the answer.
    pub streamed: bool,
    /// Agents whose failure or skip line is on stderr already.
    pub reported: HashSet<String>,
}

impl Printer {
    /// `streamed` is the agent whose text `--stream` prints.
    pub(crate) fn start(
        ctx: &Context,
        plan: &Plan,
        mut events: Subscription,
        show: Show,
        streamed: Option<String>,
    ) -> Printer {
        let show_progress = !show.quiet && std::io::stderr().is_terminal();
        let color = ctx.color;
        let total = plan.len() as u64;
        let thread = std::thread::spawn(move || {
            let mut state = RunState::new();
            let mut progress = show_progress.then(|| ProgressView::new(total, color));
            let mut stream = streamed.map(StreamPrinter::new);
            let mut broken = false;
            let mut reported = HashSet::new();
            while let Some(event) = events.blocking_recv() {
                state.apply(&event);
                if let Some(p) = &mut progress {
                    p.update(&event, &state);
                }
                if show.output == OutputFormat::Jsonl && !broken {
                    let mut line = serde_json::to_string(&*event).expect("events serialize");
                    line.push('\n');
                    broken = write_stdout(&line) != Exit::Ok;
                }
                if let Some(s) = &mut stream {
                    s.print(&event);
                }
                if !show.quiet {
                    if let Some(line) = event_line(color, &event) {
                        match &progress {
                            Some(p) => p.println(&line),
                            None => errln!("{line}"),
                        }
                        if let EventKind::AgentFinished { agent, .. } = &event.kind {
                            reported.insert(agent.clone());
                        }
                    }
                }
                if event.path.is_empty() && event.kind.is_run_finished() {
                    break;
                }
            }
            if let Some(p) = &progress {
                p.finish();
            }
            Printed {
                streamed: stream.is_some_and(|s| s.printed()),
                reported,
            }
        });
        Printer { thread }
    }

    /// Waits for the printer to finish; what it printed.
    pub(crate) fn finish(self) -> Printed {
        self.thread.join().unwrap_or_default()
    }
}

/// Whether a live printer is needed: for the progress view, JSON lines, `--stream`, or the
/// retry and failure lines that every run without `--quiet` shows.
pub(crate) fn wants_printer(show: Show, streamed: bool) -> bool {
    !show.quiet || show.output == OutputFormat::Jsonl || streamed
}

/// Waits for a started run, then prints its result and summary; the exit code. `recorded`:
/// the run is in the run store (so `orc resume` can continue it).
pub(crate) async fn finish_run(
    ctx: &Context,
    plan: &Plan,
    handle: RunHandle,
    printer: Option<Printer>,
    show: Show,
    recorded: bool,
) -> Exit {
    let outcome = handle.wait().await;
    let printed = match printer {
        Some(p) => tokio::task::spawn_blocking(move || p.finish())
            .await
            .unwrap_or_default(),
        None => Printed::default(),
    };
    report_run(ctx, plan, &outcome, &printed.reported, show.quiet, recorded);
    // The result (tens of MB for a huge run) is written off the runtime's thread.
    let written = tokio::task::block_in_place(|| match show.output {
        OutputFormat::Text if printed.streamed => Exit::Ok,
        OutputFormat::Text => write_stdout(&text_result(&outcome, &plan.sinks)),
        OutputFormat::Json => write_stdout(&json_result(&outcome)),
        OutputFormat::Jsonl => Exit::Ok,
    });
    if written != Exit::Ok {
        return written;
    }
    exit_for(outcome.status)
}

/// `label:` in its colour.
fn styled(color: bool, label: &str, code: &str) -> String {
    if color {
        format!("\x1b[{code}m{label}\x1b[0m")
    } else {
        label.to_string()
    }
}

/// The first line of an error, at most 200 characters: a retry line stays one line.
fn short(error: &str) -> String {
    let first = error.lines().next().unwrap_or("");
    if first.chars().count() > 200 || first.len() < error.trim_end().len() {
        let cut: String = first.chars().take(200).collect();
        format!("{cut}...")
    } else {
        first.to_string()
    }
}

/// The agent as a user finds it: nested agents under the path of the agent that ran them.
fn agent_label(path: &[String], agent: &str) -> String {
    if path.is_empty() {
        format!("`{agent}`")
    } else {
        format!("`{}/{agent}`", path.join("/"))
    }
}

/// The human line for a retry, a fallback, or an agent that failed or was skipped; `None`
/// for every other event. The only place these are said: the default log leaves them out
/// (`crate::logging`).
pub(crate) fn event_line(color: bool, event: &Event) -> Option<String> {
    match &event.kind {
        EventKind::AgentRetrying {
            agent,
            attempt,
            error,
            delay_ms,
            ..
        } => {
            let when = if *delay_ms == 0 {
                "now".to_string()
            } else {
                format!("in {delay_ms} ms")
            };
            Some(format!(
                "{}: agent {} attempt {attempt} failed: {}; retrying {when}",
                styled(color, "retry", "1;33"),
                agent_label(&event.path, agent),
                short(error)
            ))
        }
        EventKind::AgentFallback {
            agent,
            from,
            to,
            error,
        } => Some(format!(
            "{}: agent {}: profile `{from}` failed: {}; trying `{to}`",
            styled(color, "fallback", "1;33"),
            agent_label(&event.path, agent),
            short(error)
        )),
        // A nested agent's failure is its parent's error; said once, there.
        EventKind::AgentFinished { outcome, .. } if event.path.is_empty() => {
            agent_line(color, outcome)
        }
        _ => None,
    }
}

/// `error: agent ... failed ...` or `skipped: agent ... (why)`; `None` for other statuses.
pub(crate) fn agent_line(color: bool, agent: &AgentOutcome) -> Option<String> {
    match agent.status {
        AgentStatus::Failed => Some(format!(
            "{}: agent `{}` failed after {} attempt{}: {}",
            styled(color, "error", "1;31"),
            agent.name,
            agent.attempts,
            if agent.attempts == 1 { "" } else { "s" },
            agent.error.as_deref().unwrap_or("unknown error")
        )),
        AgentStatus::Skipped => Some(format!(
            "skipped: agent `{}` ({})",
            agent.name,
            agent
                .error
                .as_deref()
                .unwrap_or("a dependency did not succeed")
        )),
        _ => None,
    }
}

/// Failures and skips not shown live, then (unless `quiet`) warnings, what stdout holds
/// when the final agents have no output, the one-line summary and, after a run that did
/// not succeed, how to find and continue it.
pub(crate) fn report_run(
    ctx: &Context,
    plan: &Plan,
    outcome: &RunOutcome,
    reported: &HashSet<String>,
    quiet: bool,
    recorded: bool,
) {
    for agent in &outcome.agents {
        if !reported.contains(&agent.name) {
            if let Some(line) = agent_line(ctx.color, agent) {
                errln!("{line}");
            }
        }
    }
    if quiet {
        return;
    }
    for warning in crate::exec::warnings(outcome) {
        errln!("{warning}");
    }
    if let Some(note) = partial_note(outcome, &plan.sinks) {
        errln!("{note}");
    }
    let t = &outcome.totals;
    let headline = match outcome.status {
        RunStatus::Succeeded => "done".to_string(),
        RunStatus::Failed => "finished with failures".to_string(),
        RunStatus::TimedOut => "timed out (--timeout)".to_string(),
        RunStatus::BudgetExceeded => "stopped: budget.max_cost_usd reached".to_string(),
        RunStatus::Interrupted => "interrupted".to_string(),
        RunStatus::Cancelled => "cancelled".to_string(),
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
    let cost = t
        .cost_usd
        .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"));
    let saved = if t.calls_saved > 0 {
        format!(
            " · {} call{} saved",
            t.calls_saved,
            if t.calls_saved == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    };
    errln!(
        "orc: {headline}: {} · {} · {}{saved} · {:.2}s · run {}",
        parts.join(", "),
        crate::exec::tokens_summary(outcome),
        cost,
        t.wall_ms as f64 / 1000.0,
        outcome.run_id,
    );
    // Said once, after the summary that names the run: where to look and how to go on.
    if recorded && outcome.status != RunStatus::Succeeded {
        errln!(
            "  help: `orc runs show {id}` shows what happened; `orc resume {id}` continues it",
            id = outcome.run_id
        );
    }
}

/// The tokio runtime of a command.
pub(crate) fn runtime(ctx: &Context) -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            ctx.error(&format!("cannot start the async runtime: {e}"));
            Exit::Failed
        })
}
