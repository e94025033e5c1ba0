//! Plan exports: phases for humans, and the graph as JSON, Graphviz DOT and Mermaid.

use std::fmt::Write;

use super::graph::Plan;

/// Output formats of `orc plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    /// Phases, one agent per line.
    Text,
    /// Agents, phases and edges as one JSON document.
    Json,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

pub fn render(plan: &Plan, format: PlanFormat) -> String {
    match format {
        PlanFormat::Text => text(plan),
        PlanFormat::Json => {
            let mut s = serde_json::to_string_pretty(&json(plan)).expect("JSON serializes");
            s.push('\n');
            s
        }
        PlanFormat::Dot => dot(plan),
        PlanFormat::Mermaid => mermaid(plan),
    }
}

fn profile_label(plan: &Plan, i: usize) -> String {
    let agent = &plan.ensemble.agents[i];
    format!("{} ({})", agent.profile.name, agent.profile.model)
}

fn text(plan: &Plan) -> String {
    let e = &plan.ensemble;
    let mut out = String::new();
    let n = e.agents.len();
    let _ = writeln!(
        out,
        "ensemble `{}`: {} agent{} in {} phase{}",
        e.name,
        n,
        plural(n),
        plan.phases.len(),
        plural(plan.phases.len())
    );
    let width = e.agents.iter().map(|a| a.name.len()).max().unwrap_or(0);
    for (p, phase) in plan.phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "\nphase {} ({} agent{}{})",
            p + 1,
            phase.len(),
            plural(phase.len()),
            if phase.len() > 1 {
                ", run in parallel"
            } else {
                ""
            }
        );
        for &i in phase {
            let agent = &e.agents[i];
            let _ = write!(out, "  {:<width$}  {}", agent.name, profile_label(plan, i));
            if !agent.depends_on.is_empty() {
                let deps: Vec<&str> = agent
                    .depends_on
                    .iter()
                    .map(|&d| e.agents[d].name.as_str())
                    .collect();
                let _ = write!(out, "  <- {}", deps.join(", "));
            }
            out.push('\n');
        }
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn json(plan: &Plan) -> serde_json::Value {
    let e = &plan.ensemble;
    let agents: Vec<serde_json::Value> = e
        .agents
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name,
                "phase": plan.depth[a.index] + 1,
                "profile": a.profile.name,
                "provider": a.profile.provider.as_str(),
                "model": a.profile.model,
                "depends_on": a.depends_on.iter().map(|&d| &e.agents[d].name).collect::<Vec<_>>(),
            })
        })
        .collect();
    let phases: Vec<Vec<&str>> = plan
        .phases
        .iter()
        .map(|p| p.iter().map(|&i| e.agents[i].name.as_str()).collect())
        .collect();
    let edges: Vec<serde_json::Value> = e
        .agents
        .iter()
        .flat_map(|a| {
            a.depends_on
                .iter()
                .map(move |&d| serde_json::json!({"from": e.agents[d].name, "to": a.name}))
        })
        .collect();
    serde_json::json!({
        "ensemble": e.name,
        "agents": agents,
        "phases": phases,
        "edges": edges,
    })
}

fn dot(plan: &Plan) -> String {
    let e = &plan.ensemble;
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote_dot(&e.name));
    out.push_str("  rankdir=LR;\n  node [shape=box];\n");
    for (p, phase) in plan.phases.iter().enumerate() {
        let _ = writeln!(out, "  subgraph phase_{} {{\n    rank=same;", p + 1);
        for &i in phase {
            let a = &e.agents[i];
            let _ = writeln!(
                out,
                "    {} [label={}];",
                quote_dot(&a.name),
                quote_dot(&format!("{}\n{}", a.name, a.profile.name))
            );
        }
        out.push_str("  }\n");
    }
    for a in &e.agents {
        for &d in &a.depends_on {
            let _ = writeln!(
                out,
                "  {} -> {};",
                quote_dot(&e.agents[d].name),
                quote_dot(&a.name)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn quote_dot(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

fn mermaid(plan: &Plan) -> String {
    let e = &plan.ensemble;
    let mut out = String::from("flowchart LR\n");
    // Agent names may contain `-`, which Mermaid ids allow; labels are quoted.
    for a in &e.agents {
        let _ = writeln!(out, "  {}[\"{}<br/>{}\"]", a.name, a.name, a.profile.name);
    }
    for a in &e.agents {
        for &d in &a.depends_on {
            let _ = writeln!(out, "  {} --> {}", e.agents[d].name, a.name);
        }
    }
    out
}
