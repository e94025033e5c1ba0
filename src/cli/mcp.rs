//! `orc mcp`: checks the configuration, reports on stderr what it serves and what it leaves
//! out, builds the engine with the run store, and serves until the client goes away. stdout
//! is the protocol's: this command never prints there.

use std::sync::Arc;

use super::Context;
use super::args::McpArgs;
use crate::diagnostics::Exit;
use crate::exec::{Engine, EngineConfig, Mode, Recorder};
use crate::mcp::{Catalog, OrcServer};
use crate::store::Store;

pub(crate) fn mcp(ctx: &Context, args: McpArgs) -> Exit {
    let mut profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    for entry in &args.profile_map {
        let Some((old, new)) = entry.split_once('=') else {
            ctx.error(&format!("`--profile-map {entry}` is not OLD=NEW"));
            return Exit::Invalid;
        };
        if let Err(message) = profiles.alias(old.trim(), new.trim()) {
            ctx.error(&message);
            return Exit::Invalid;
        }
    }
    if let Some(missing) = args.paths.iter().find(|p| !p.exists()) {
        ctx.error(&format!("no file or directory `{}`", missing.display()));
        return Exit::Invalid;
    }
    let catalog = Catalog::new(ctx.dirs.clone(), args.paths, profiles);
    let (entries, skipped) = catalog.scan();
    for s in &skipped {
        warn(
            ctx,
            &format!("not served: `{}`: {}", s.path.display(), s.reason),
        );
    }
    if entries.is_empty() {
        warn(
            ctx,
            "no ensembles to serve; give files or folders, or add ensembles to .orc/ensembles",
        );
    } else {
        errln!(
            "orc mcp: serving {} ensemble{} over stdio: {}",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" },
            entries
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let runtime = match super::session::runtime(ctx) {
        Ok(rt) => rt,
        Err(exit) => return exit,
    };
    let store = if args.no_store {
        None
    } else {
        crate::store::default_path().and_then(|path| {
            let color = ctx.color;
            let on_failure = Box::new(move |message: String| {
                errln!(
                    "{}: {message}",
                    if color {
                        "\x1b[1;33mwarning\x1b[0m"
                    } else {
                        "warning"
                    }
                );
            });
            match Store::open(&path, on_failure) {
                Ok(store) => Some(store),
                Err(e) => {
                    warn(
                        ctx,
                        &format!(
                            "{e}; runs are not recorded (--no-store or ORC_STORE=off silences this)"
                        ),
                    );
                    None
                }
            }
        })
    };
    let exit = runtime.block_on(async {
        let engine = Engine::new(EngineConfig {
            max_concurrency: args.max_concurrency as usize,
            mode: Mode::Live,
            store: store.clone().map(|s| s as Arc<dyn Recorder>),
            no_cache: args.no_cache,
            ..EngineConfig::default()
        });
        match crate::mcp::serve_stdio(OrcServer::new(engine, store, catalog)).await {
            Ok(()) => Exit::Ok,
            Err(message) => {
                ctx.error(&message);
                Exit::Failed
            }
        }
    });
    // A read of stdin may still be pending on a blocking thread; nothing is left to do.
    runtime.shutdown_background();
    exit
}

fn warn(ctx: &Context, message: &str) {
    let prefix = if ctx.color {
        "\x1b[1;33mwarning\x1b[0m"
    } else {
        "warning"
    };
    errln!("{prefix}: {message}");
}
