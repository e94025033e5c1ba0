//! `orc resume RUN`: continues an interrupted, timed-out or failed run under the same id.
//! Agents that succeeded keep their outputs; the others run again; provider calls completed
//! before the interruption are answered from the store, not sent again. Refuses when the
//! ensemble changed in a way that touches unfinished agents, unless `--force`. The rules
//! themselves are in `crate::resume`, shared with `orc serve`.

use std::sync::Arc;
use std::time::Duration;

use super::Context;
use super::args::ResumeArgs;
use super::invoke::{check_runnable, run_one};
use super::session::{self, EngineArgs, Show};
use crate::config::{self, Ensemble};
use crate::diagnostics::Exit;
use crate::exec::Mode;
use crate::plan::Plan;
use crate::resume::{self, EnsembleOrigin, ResumeError};

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
            errln!("  help: `orc runs` lists the recorded runs");
            return Exit::Invalid;
        }
    };
    if let Err(e) = resume::check_status(&row) {
        ctx.error(&e.to_string());
        match e {
            ResumeError::Succeeded { .. } => {
                errln!("  help: `orc runs show {}` shows its result", row.id);
            }
            _ => errln!("  help: stop it first (Ctrl-C or SIGTERM keeps what it finished)"),
        }
        return Exit::Invalid;
    }
    let profile_map = resume::profile_map(&row, &args.profile_map);
    let origin = match resume::origin(&row) {
        Ok(origin) => origin,
        Err(e) => {
            ctx.error(&e.to_string());
            return Exit::Invalid;
        }
    };
    let (path, loaded) = match origin {
        EnsembleOrigin::File(p) => {
            let loaded = ctx.load_mapped(&p.to_string_lossy(), &profile_map);
            (Some(p), loaded)
        }
        EnsembleOrigin::Recorded(text) => {
            errln!(
                "note: `{}` is gone; resuming from the copy recorded with the run",
                row.ensemble_path.as_deref().unwrap_or(&row.ensemble)
            );
            (None, load_text(ctx, &row.ensemble, text, &profile_map))
        }
    };
    let (ensemble, report) = match loaded {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
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
    match resume::check_changes(&row, &ensemble, &data, args.force) {
        Ok(changed) if !changed.is_empty() => errln!(
            "note: resuming despite changes to the ensemble (--force): {}",
            changed.join("; ")
        ),
        Ok(_) => {}
        Err(e) => {
            ctx.error(&e.to_string());
            errln!(
                "  help: `orc resume {} --force` resumes with the ensemble as it is now; `orc invoke` starts a new run",
                row.id
            );
            return Exit::Invalid;
        }
    }
    drop(store);
    let plan = Arc::new(Plan::new(ensemble));
    let runtime = match session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let _guard = runtime.enter();
    let remote = match &args.redis {
        Some(url) => match runtime.block_on(super::invoke::connect_redis_with(
            ctx,
            url,
            args.redis_timeout,
            &args.profile_map,
        )) {
            Ok(remote) => Some(Arc::new(remote)),
            Err(exit) => return exit,
        },
        None => None,
    };
    let engine = session::engine_with(
        ctx,
        EngineArgs {
            max_concurrency: args.max_concurrency,
            no_store: false,
            no_cache: args.no_cache,
            mode: Mode::Live,
            live_capacity: 1 << 17,
        },
        remote
            .as_ref()
            .map(|r| Arc::clone(r) as Arc<dyn crate::exec::Executor>),
    );
    let restored = data.succeeded.len();
    let answers = data.answers.len();
    let options = resume::run_options(
        &row,
        &plan,
        path.as_deref(),
        data,
        args.timeout.map(Duration::from_secs_f64),
    );
    if !args.quiet {
        errln!(
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
    if let Some(remote) = remote {
        runtime.block_on(remote.close());
    }
    exit
}

fn load_text(
    ctx: &Context,
    name: &str,
    text: String,
    profile_map: &[String],
) -> Result<(Ensemble, config::ConfigReport), Exit> {
    let mut profiles = ctx.profiles()?;
    // Malformed entries were refused when the run was invoked; only aliases can fail here.
    for entry in profile_map {
        if let Some((old, new)) = entry.split_once('=') {
            if let Err(message) = profiles.alias(old.trim(), new.trim()) {
                ctx.error(&message);
                return Err(Exit::Invalid);
            }
        }
    }
    let (ensemble, report) = resume::load_recorded(name, text, &profiles);
    ctx.print_report(&report);
    ensemble.map(|e| (e, report)).ok_or(Exit::Invalid)
}
