//! orc: a YAML-declared ensemble/DAG workflow engine for LLMs.
//!
//! Layout (dependencies point one way, `cli -> {exec, progress} -> plan -> config`):
//! - `config`: YAML text to validated `Ensemble`s and `Profile`s, with located errors.
//! - `plan`: the `depends_on` graph and its phases; pure.
//! - `exec`: the scheduler that runs a plan, emitting `Event`s.
//! - `providers`: the `Provider` trait and its implementations (the offline `mock`).
//! - `progress`: the terminal progress view, a subscriber of exec events.
//! - `mcp`: `orc mcp`, the ensembles as MCP tools over stdio.
//! - `worker`: jobs run on `orc worker`s through Redis Streams (the coordinator's executor
//!   and the worker loop).
//! - `store`: the SQLite run store; `resume`: continuing a recorded run.
//! - `server`: `orc serve`, the engine over HTTP (API, SSE, `/v1`, metrics, dashboard).
//! - `cli`: argument parsing and the commands; the only module that prints.
//! - `diagnostics`: error rendering and the exit-code table.

pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod exec;
pub mod json_path;
pub mod mcp;
pub mod nodes;
pub mod plan;
pub mod progress;
pub mod providers;
pub mod resume;
pub mod server;
pub mod store;
pub mod suggest;
pub mod template;
pub mod worker;

pub use cli::run;

/// Installs the log subscriber: `ORC_LOG` (e.g. `debug`, `orc=trace`) filters, default
/// `warn` so stderr stays quiet; logs go to stderr. Call once, from `main`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("orc=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .try_init();
}
