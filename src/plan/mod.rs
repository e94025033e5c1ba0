//! The plan: the `depends_on` graph of a validated ensemble, its phases (dependency depth)
//! and its exports. Pure: no IO, no tokio.

mod graph;
mod render;

pub use graph::Plan;
pub use render::{PlanFormat, render};
