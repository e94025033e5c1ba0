//! `orc mcp`: the ensembles as tools of an MCP server over stdio, built on the official Rust
//! SDK (`rmcp`). Every ensemble served (`catalog.rs`) is a tool named after it, taking
//! `input` and `options`; a call runs it through the engine like `orc invoke` and answers
//! with the final output and the run's JSON document, with progress notifications on the
//! way (`server.rs`). Two more tools read the run store (`runs.rs`).
//!
//! stdout belongs to the protocol: nothing here prints; logs and warnings go to stderr.

mod catalog;
mod runs;
mod server;

pub use catalog::{Catalog, Entry, Skipped};
pub use server::{OrcServer, serve_stdio};

/// Names of orc's own tools, which an ensemble cannot take.
pub(crate) fn is_reserved(name: &str) -> bool {
    name == runs::LIST || name == runs::GET
}
