//! `orc invoke`: input in, ensemble run, results out. Also runs `orc explore`'s generated
//! ensemble, and (`--each-line`) one run per line of stdin with bounded concurrency.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use super::args::{InvokeArgs, OutputFormat};
use super::input;
use super::output::{text_result, write_stdout};
use super::session::{self, EngineArgs, Printer, Show};
use crate::config::{ConfigErrorKind, ConfigReport, Ensemble};
use crate::diagnostics::Exit;
use crate::exec::{Engine, Mode, RunOptions, RunOutcome, RunSource, RunStatus, StartError};
use crate::plan::Plan;

pub(crate) fn invoke(ctx: &Context, args: InvokeArgs) -> Exit {
    let (ensemble, report) = match ctx.load_mapped(&args.ensemble, &args.profile_map) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    run_loaded(ctx, ensemble, &report, args)
}

/// Refuses an ensemble that uses keys this version validates but cannot run.
pub(crate) fn check_runnable(
    ctx: &Context,
    ensemble: &Ensemble,
    report: &ConfigReport,
) -> Result<(), Exit> {
    let unsupported: Vec<&str> = report
        .diagnostics
        .iter()
        .filter_map(|d| match &d.kind {
            ConfigErrorKind::NotYetSupported { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    ctx.error(&format!(
        "ensemble `{}` uses {} that this version of orc validates but cannot run yet",
        ensemble.name,
        unsupported
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    errln!(
        "  help: remove those keys to run the rest, or check `orc --version` for a newer release"
    );
    Err(Exit::Invalid)
}

/// Runs a loaded ensemble as `orc invoke` would (also used by `orc explore`).
pub(crate) fn run_loaded(
    ctx: &Context,
    ensemble: Ensemble,
    report: &ConfigReport,
    args: InvokeArgs,
) -> Exit {
    if let Err(exit) = check_runnable(ctx, &ensemble, report) {
        return exit;
    }
    let source = RunSource {
        path: std::fs::canonicalize(&ensemble.source.path).ok(),
        text: ensemble.source.text.to_string(),
    };
    let plan = Arc::new(Plan::new(ensemble));
    let mode = match provider_mode(ctx, args.record.as_deref(), args.replay.as_deref()) {
        Ok(mode) => mode,
        Err(exit) => return exit,
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
    let remote = match &args.redis {
        Some(url) => match runtime.block_on(connect_redis(ctx, url, &args)) {
            Ok(remote) => Some(Arc::new(remote)),
            Err(exit) => return exit,
        },
        None => None,
    };
    let engine = session::engine_with(
        ctx,
        EngineArgs {
            max_concurrency: args.max_concurrency,
            no_store: args.no_store,
            no_cache: args.no_cache,
            mode,
            // Every run allocates its whole event buffer up front (16,384 events are about
            // 0.8 MB): `--each-line` runs, which nobody subscribes to, get the smallest, or
            // 256 of them in flight would hold 200 MB for nothing.
            live_capacity: if args.each_line {
                16
            } else if args.output == OutputFormat::Jsonl {
                1 << 17
            } else {
                1 << 14
            },
        },
        remote
            .as_ref()
            .map(|r| Arc::clone(r) as Arc<dyn crate::exec::Executor>),
    );
    if let Err(e) = engine.providers_for(&plan) {
        ctx.error(&e.to_string());
        return Exit::Invalid;
    }
    let options = RunOptions {
        run_id: None,
        seed: args.seed,
        timeout: args.timeout.map(Duration::from_secs_f64),
        stream: false,
        source: Some(source),
        options: serde_json::json!({
            "seed": args.seed,
            "timeout": args.timeout,
            "max_concurrency": args.max_concurrency,
            "profile_map": args.profile_map,
        }),
        resume: None,
    };
    let exit = if args.each_line {
        match input::stdin_kind() {
            input::Stdin::Terminal => {
                ctx.error("--each-line reads its inputs from stdin");
                errln!(
                    "  help: pipe one input per line, e.g. `cat topics.txt | orc invoke FILE --each-line`"
                );
                return Exit::Invalid;
            }
            input::Stdin::Refused(what) => return input::refuse_stdin(ctx, what),
            input::Stdin::Null | input::Stdin::Readable { .. } => {}
        }
        runtime.block_on(async {
            session::watch_signals(engine.clone());
            each_line(ctx, &args, &engine, plan, options).await
        })
    } else {
        let input = match read_input(ctx, &args, &plan.ensemble) {
            Ok(input) => input,
            Err(exit) => return exit,
        };
        let show = Show {
            output: args.output,
            quiet: args.quiet,
            stream: args.stream,
        };
        runtime.block_on(async {
            session::watch_signals(engine.clone());
            run_one(ctx, &engine, plan, input, options, show).await
        })
    };
    let exit = match recorder {
        Some(r) => match r.flush() {
            Ok(()) => exit,
            Err(e) => {
                ctx.error(&format!("cannot write the recording: {e}"));
                Exit::Failed
            }
        },
        None => exit,
    };
    runtime.block_on(engine.flush());
    if let Some(remote) = remote {
        runtime.block_on(remote.close());
    }
    exit
}

/// `--redis`: the executor that sends jobs to workers.
async fn connect_redis(
    ctx: &Context,
    url: &str,
    args: &InvokeArgs,
) -> Result<crate::worker::RedisExecutor, Exit> {
    connect_redis_with(ctx, url, args.redis_timeout, &args.profile_map).await
}

/// Connects the executor that sends jobs to workers (`invoke --redis`, `serve --redis`).
pub(crate) async fn connect_redis_with(
    ctx: &Context,
    url: &str,
    timeout: f64,
    profile_map: &[String],
) -> Result<crate::worker::RedisExecutor, Exit> {
    let url = crate::worker::RedisUrl::parse(url).map_err(|e| {
        ctx.error(&e.to_string());
        errln!("  help: give a URL like `redis://127.0.0.1:6379`");
        Exit::Invalid
    })?;
    let profile_map = profile_map
        .iter()
        .filter_map(|m| m.split_once('='))
        .map(|(old, new)| (old.trim().to_string(), new.trim().to_string()))
        .collect();
    crate::worker::RedisExecutor::connect(crate::worker::RedisSettings {
        url,
        timeout: Duration::from_secs_f64(timeout),
        profile_map,
    })
    .await
    .map_err(|e| {
        ctx.error(&e.to_string());
        errln!("  help: is redis-server running there? `redis-cli -u URL ping` tells");
        Exit::Failed
    })
}

/// Starts one run and shows it to the end; the exit code.
pub(crate) async fn run_one(
    ctx: &Context,
    engine: &Engine,
    plan: Arc<Plan>,
    input: String,
    mut options: RunOptions,
    show: Show,
) -> Exit {
    let show_progress = !show.quiet && std::io::stderr().is_terminal();
    // `--stream` prints one agent's text as it arrives: the final agent, when there is one.
    let streamed = (show.stream && show.output == OutputFormat::Text && plan.sinks.len() == 1)
        .then(|| plan.ensemble.agents[plan.sinks[0]].name.clone());
    // `--stream` asks providers to stream whatever the output format (#12).
    options.stream = show.stream || show_progress || show.output == OutputFormat::Jsonl;
    let pending = match engine.prepare(Arc::clone(&plan), input, options) {
        Ok(p) => p,
        Err(e) => return start_failed(ctx, &e),
    };
    // Nothing to show while it runs (`--quiet`): no subscriber, so no event is even queued
    // for one.
    let printer = session::wants_printer(show, streamed.is_some())
        .then(|| Printer::start(ctx, &plan, pending.subscribe(), show, streamed));
    let recorded = engine.store().is_some();
    let handle = pending.start();
    session::finish_run(ctx, &plan, handle, printer, show, recorded).await
}

pub(crate) fn start_failed(ctx: &Context, e: &StartError) -> Exit {
    ctx.error(&e.to_string());
    Exit::Invalid
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

/// The run's input: the argument or `--input`, else `--input-file`, else piped stdin, else
/// the ensemble's `default_task`. Empty piped stdin is not an input (#12): it falls back to
/// `default_task`, or is refused with how to give one.
fn read_input(ctx: &Context, args: &InvokeArgs, ensemble: &Ensemble) -> Result<String, Exit> {
    let cap = args.max_input_bytes;
    let given = args
        .input_arg
        .as_ref()
        .map(|t| (t.clone(), "the argument"))
        .or_else(|| args.input.as_ref().map(|t| (t.clone(), "--input")));
    let stdin = input::stdin_kind();
    let piped = matches!(stdin, input::Stdin::Readable { empty_file: false });
    if let Some((text, what)) = given {
        if piped && !args.quiet {
            errln!("note: the input is {what}; piped stdin is not read");
        }
        return Ok(text);
    }
    if let Some(path) = &args.input_file {
        if piped && !args.quiet {
            errln!("note: the input is --input-file; piped stdin is not read");
        }
        return input::read_file(ctx, path, cap).map(strip_final_newline);
    }
    // `orc explore` runs a generated ensemble, named by no argument.
    let explore = args.ensemble.is_empty();
    let how = if explore {
        "give the topic as an argument (`orc explore \"kitchen tools\"`) or pipe it on stdin"
    } else {
        "pipe text on stdin (`echo 'your text' | orc invoke FILE`), give it as an argument (`orc invoke FILE \"your text\"`), or use --input or --input-file"
    };
    let empty_stdin = match stdin {
        input::Stdin::Terminal => false,
        input::Stdin::Null | input::Stdin::Readable { empty_file: true } => true,
        input::Stdin::Refused(what) => return Err(input::refuse_stdin(ctx, what)),
        input::Stdin::Readable { empty_file: false } => {
            let text = strip_final_newline(input::read_stdin(ctx, cap)?);
            if !text.trim().is_empty() {
                return Ok(text);
            }
            true
        }
    };
    match &ensemble.default_task {
        Some(task) => {
            if empty_stdin && !args.quiet {
                errln!("note: stdin is empty; the input is the ensemble's `default_task`");
            }
            Ok(task.clone())
        }
        None if empty_stdin => {
            ctx.error(if explore {
                "stdin is empty: no topic to explore"
            } else {
                "stdin is empty, and the ensemble has no `default_task` to run instead"
            });
            errln!("  help: {how}");
            Err(Exit::Invalid)
        }
        None => {
            ctx.error("no input given");
            errln!("  help: {how}");
            Err(Exit::Invalid)
        }
    }
}

/// `--each-line`'s results go to stdout from a thread of their own, so a slow reader of
/// stdout holds up the results (a bounded queue), never the runtime's threads.
struct Stdout {
    tx: Option<tokio::sync::mpsc::Sender<String>>,
    thread: Option<std::thread::JoinHandle<Exit>>,
}

impl Stdout {
    fn start() -> Stdout {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(EACH_LINE_RUNS);
        let thread = std::thread::spawn(move || {
            while let Some(text) = rx.blocking_recv() {
                if write_stdout(&text) != Exit::Ok {
                    return Exit::Failed;
                }
            }
            Exit::Ok
        });
        Stdout {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues `text`; false once stdout cannot be written (the error is said).
    async fn write(&mut self, text: String) -> bool {
        match &self.tx {
            Some(tx) => tx.send(text).await.is_ok(),
            None => false,
        }
    }

    /// Waits until everything queued is written (off the runtime's thread: the last
    /// results may still be on their way to a slow reader).
    fn finish(&mut self) -> Exit {
        self.tx = None;
        let Some(thread) = self.thread.take() else {
            return Exit::Ok;
        };
        match tokio::task::block_in_place(|| thread.join()) {
            Ok(exit) => exit,
            Err(_) => Exit::Failed,
        }
    }
}

/// An early return still writes every result already queued.
impl Drop for Stdout {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Runs in flight at once with `--each-line`: enough to keep the slots busy, few enough that
/// a million-line input runs in bounded memory.
const EACH_LINE_RUNS: usize = 256;

/// One run per line of stdin, `EACH_LINE_RUNS` at a time; results in input order (text,
/// json) or as each run finishes (jsonl).
async fn each_line(
    ctx: &Context,
    args: &InvokeArgs,
    engine: &Engine,
    plan: Arc<Plan>,
    options: RunOptions,
) -> Exit {
    // Lines are read on a thread of their own, a bounded number ahead of the runs.
    let (line_tx, mut lines) = tokio::sync::mpsc::channel::<Result<String, String>>(EACH_LINE_RUNS);
    let cap = args.max_input_bytes;
    std::thread::spawn(move || {
        let mut lines = input::Lines::new(std::io::stdin().lock(), cap);
        loop {
            let item = match lines.next_line() {
                input::Line::Text(l) if l.trim().is_empty() => continue,
                input::Line::Text(l) => Ok(l),
                input::Line::End => break,
                input::Line::Error(e) => Err(e),
            };
            let stop = item.is_err();
            if line_tx.blocking_send(item).is_err() || stop {
                break;
            }
        }
    });
    let show_progress = !args.quiet && std::io::stderr().is_terminal();
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::no_length();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} inputs done {elapsed:>4}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let mut stdout = Stdout::start();
    let base = crate::exec::new_run_id();
    let mut running: tokio::task::JoinSet<(usize, Result<Arc<RunOutcome>, String>)> =
        tokio::task::JoinSet::new();
    let mut pending: BTreeMap<usize, Arc<RunOutcome>> = BTreeMap::new();
    let mut next_out = 0usize;
    let mut total = 0usize;
    let (mut succeeded, mut failed, mut interrupted) = (0usize, 0usize, false);
    let mut input_done = false;
    let mut read_error: Option<String> = None;
    let mut json_started = false;
    loop {
        while !input_done && running.len() < EACH_LINE_RUNS && !interrupted && !session::signalled()
        {
            let Some(line) = lines.recv().await else {
                input_done = true;
                break;
            };
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    read_error = Some(e);
                    input_done = true;
                    break;
                }
            };
            let index = total;
            total += 1;
            let mut run_options = options.clone();
            run_options.run_id = Some(format!("{base}-{}", index + 1));
            let started = engine
                .prepare(Arc::clone(&plan), line, run_options)
                .map(crate::exec::PendingRun::start);
            running.spawn(async move {
                match started {
                    Ok(handle) => (index, Ok(handle.wait().await)),
                    Err(e) => (index, Err(e.to_string())),
                }
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let Ok((index, result)) = joined else {
            continue;
        };
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        let outcome = match result {
            Ok(o) => o,
            Err(e) => {
                ctx.error(&e);
                return Exit::Invalid;
            }
        };
        // Failures are said once, here: the default log leaves them out (`crate::logging`).
        for agent in &outcome.agents {
            if agent.status == crate::exec::AgentStatus::Failed {
                if let Some(line) = session::agent_line(ctx.color, agent) {
                    errln!("input {}: {line}", index + 1);
                }
            }
        }
        match outcome.status {
            RunStatus::Succeeded => succeeded += 1,
            RunStatus::Interrupted => interrupted = true,
            _ => failed += 1,
        }
        if args.output == OutputFormat::Jsonl {
            let mut line = serde_json::to_string(&*outcome).expect("outcomes serialize");
            line.push('\n');
            if !stdout.write(line).await {
                return Exit::Failed;
            }
            continue;
        }
        pending.insert(index, outcome);
        // Text and JSON keep input order: print every result whose predecessors are out.
        while let Some(o) = pending.remove(&next_out) {
            let text = match args.output {
                OutputFormat::Json => {
                    let doc = serde_json::to_string_pretty(&*o).expect("outcomes serialize");
                    let sep = if json_started { ",\n" } else { "[\n" };
                    json_started = true;
                    format!("{sep}{doc}")
                }
                _ => text_result(&o, &plan.sinks),
            };
            if !stdout.write(text).await {
                return Exit::Failed;
            }
            next_out += 1;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.output == OutputFormat::Json
        && !stdout
            .write(if json_started { "\n]\n" } else { "[]\n" }.to_string())
            .await
    {
        return Exit::Failed;
    }
    if stdout.finish() != Exit::Ok {
        return Exit::Failed;
    }
    if let Some(e) = read_error {
        ctx.error(&e);
        return Exit::Invalid;
    }
    if !args.quiet {
        let rest = total - succeeded - failed;
        errln!(
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
        session::exit_for(RunStatus::Interrupted)
    } else if failed > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    }
}
