//! `orc serve`: checks the address and token, opens the run store and the profiles, binds,
//! prints `listening on http://ADDR` as the first line on stderr, and serves until SIGINT or
//! SIGTERM; then running runs are cancelled as `interrupted` and stored, so `orc resume` (or
//! `POST /api/runs/{id}/resume`) continues them. A second signal exits at once.

use std::net::{SocketAddr, ToSocketAddrs};

use super::Context;
use super::args::ServeArgs;
use super::session;
use crate::diagnostics::Exit;
use crate::server::{AppState, ServeConfig};

pub(crate) fn serve(ctx: &Context, args: ServeArgs) -> Exit {
    let token = args.token.clone().filter(|t| !t.trim().is_empty());
    let addrs: Vec<SocketAddr> = match args.bind.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            ctx.error(&format!("cannot listen on `{}`: {e}", args.bind));
            errln!("  help: give an address and port, such as `127.0.0.1:8080` or `[::1]:0`");
            return Exit::Invalid;
        }
    };
    let Some(&addr) = addrs.first() else {
        ctx.error(&format!("`{}` names no address to listen on", args.bind));
        return Exit::Invalid;
    };
    if token.is_none() && addrs.iter().any(|a| !a.ip().is_loopback()) {
        ctx.error(&format!(
            "refusing to listen on `{}` without a token: anyone who can reach it could run ensembles with your keys and read every recorded run",
            args.bind
        ));
        errln!(
            "  help: set a token with --token or ORC_TOKEN, or listen on loopback only (`--bind 127.0.0.1:8080`)"
        );
        return Exit::Invalid;
    }
    for path in &args.paths {
        if !path.exists() {
            ctx.error(&format!("no such file or folder `{}`", path.display()));
            return Exit::Invalid;
        }
    }
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let Some(store_path) = crate::store::default_path() else {
        ctx.error("`orc serve` needs the run store, and ORC_STORE turns it off");
        errln!("  help: unset ORC_STORE, or point it at a file (ORC_STORE=/path/orc.db)");
        return Exit::Invalid;
    };
    let color = ctx.color;
    let store = match crate::store::Store::open(
        &store_path,
        Box::new(move |m: String| {
            let prefix = if color {
                "\x1b[1;33mwarning\x1b[0m"
            } else {
                "warning"
            };
            errln!("{prefix}: {m}");
        }),
    ) {
        Ok(s) => s,
        Err(e) => {
            ctx.error(&e.to_string());
            return Exit::Invalid;
        }
    };
    let runtime = match session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let max_body = usize::try_from(args.max_body).unwrap_or(usize::MAX);
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                ctx.error(&format!("cannot listen on `{}`: {e}", args.bind));
                return Exit::Invalid;
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        let remote = match &args.redis {
            Some(url) => {
                match super::invoke::connect_redis_with(ctx, url, args.redis_timeout, &[]).await {
                    Ok(r) => Some(std::sync::Arc::new(r)),
                    Err(exit) => return exit,
                }
            }
            None => None,
        };
        let (state, ensembles) = AppState::new(ServeConfig {
            dirs: ctx.dirs.clone(),
            paths: args.paths.clone(),
            profiles,
            store,
            token,
            max_concurrency: args.max_concurrency as usize,
            no_cache: args.no_cache,
            max_body,
            executor: remote
                .clone()
                .map(|r| r as std::sync::Arc<dyn crate::exec::Executor>),
        });
        errln!("listening on http://{local}");
        errln!(
            "orc: serving {ensembles} ensemble{}; dashboard at http://{local}/, OpenAI-compatible API at http://{local}/v1",
            if ensembles == 1 { "" } else { "s" }
        );
        let shutdown = async {
            let _ = session::next_signal().await;
            errln!("orc: shutting down; running runs are stopped and stored as interrupted");
            // A second signal: exit at once.
            tokio::spawn(async {
                let second = session::next_signal().await;
                std::process::exit(128 + second);
            });
        };
        let served = crate::server::serve(listener, state, shutdown).await;
        if let Some(r) = &remote {
            r.close().await;
        }
        match served {
            Ok(()) => Exit::Ok,
            Err(e) => {
                ctx.error(&format!("the server failed: {e}"));
                Exit::Failed
            }
        }
    })
}
