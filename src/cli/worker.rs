//! `orc worker`: joins the workers' consumer group on a Redis and runs the agent jobs that
//! `orc invoke --redis` and `orc serve --redis` send, with this machine's profiles and keys
//! (see `worker/`). Runs until signalled: the first signal stops taking jobs and lets the
//! running ones finish, a second exits at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Context;
use super::args::WorkerArgs;
use crate::diagnostics::Exit;
use crate::worker::{RedisUrl, Worker, WorkerSettings};

pub(crate) fn worker(ctx: &Context, args: WorkerArgs) -> Exit {
    let url = match RedisUrl::parse(&args.redis) {
        Ok(url) => url,
        Err(e) => {
            ctx.error(&e.to_string());
            errln!("  help: give a URL like `redis://127.0.0.1:6379` (or set ORC_REDIS_URL)");
            return Exit::Invalid;
        }
    };
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let name = args.name.clone().unwrap_or_else(default_name);
    let settings = WorkerSettings {
        url,
        name,
        concurrency: args.concurrency as usize,
        visibility: Duration::from_secs_f64(args.visibility_timeout),
        max_crashes: args.max_crashes,
        profiles,
    };
    let runtime = match super::session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    runtime.block_on(async {
        let url = settings.url.clone();
        let concurrency = settings.concurrency;
        let worker = match Worker::connect(settings).await {
            Ok(w) => w,
            Err(e) => {
                ctx.error(&e.to_string());
                errln!("  help: is redis-server running there? `redis-cli -u URL ping` tells");
                return Exit::Failed;
            }
        };
        if !args.quiet {
            errln!(
                "orc worker `{}`: taking jobs from {url}, {concurrency} at a time",
                worker.name()
            );
        }
        let shutdown = CancellationToken::new();
        watch_signals(shutdown.clone(), args.quiet);
        match worker.run(shutdown).await {
            Ok(()) => {
                if !args.quiet {
                    errln!("orc worker `{}`: stopped", worker.name());
                }
                Exit::Ok
            }
            Err(e) => {
                ctx.error(&e.to_string());
                Exit::Failed
            }
        }
    })
}

/// `host-pid`: unique among workers on one Redis unless two hosts share a name.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// First SIGINT/SIGTERM/SIGHUP: stop taking jobs (running ones finish). Second: exit now.
fn watch_signals(shutdown: CancellationToken, quiet: bool) {
    tokio::spawn(async move {
        let first = next_signal().await;
        if !quiet {
            errln!("orc worker: finishing the running jobs (signal again to exit now)");
        }
        shutdown.cancel();
        let _ = first;
        let second = next_signal().await;
        std::process::exit(128 + second);
    });
}

#[cfg(unix)]
async fn next_signal() -> i32 {
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
async fn next_signal() -> i32 {
    let _ = tokio::signal::ctrl_c().await;
    2
}
