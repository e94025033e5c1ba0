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
//! - `diagnostics`: error rendering and the exit-code table; `logging`: where `tracing`
//!   output goes (`ORC_LOG`).

pub mod cli;
pub mod config;
pub mod diagnostics;
pub mod exec;
pub mod json_path;
mod logging;
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
pub use logging::init_logging;
