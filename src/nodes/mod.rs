//! Built-in node types beyond a single LLM call: `generate` (multi-producer topic
//! exploration), `dedup`, and the optimizer that routes calls among candidate profiles.
//! One file per kind; nodes return values and never print.

pub mod dedup;
pub mod generate;
pub mod normalize;
pub mod optimizer;
pub mod output;
pub mod parse;
pub mod script;
pub mod shared;
pub mod tracker;
