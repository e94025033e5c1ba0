//! `Plan`: a petgraph `DiGraph` over agent indices, with phases and dependents.

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::config::{AgentIndex, Ensemble};

/// A validated ensemble with its dependency graph resolved.
#[derive(Debug)]
pub struct Plan {
    pub ensemble: Ensemble,
    /// Agents grouped by dependency depth; declaration order inside a phase.
    pub phases: Vec<Vec<AgentIndex>>,
    /// Phase (0-based) of each agent.
    pub depth: Vec<usize>,
    /// Agents that depend on each agent, in declaration order.
    pub dependents: Vec<Vec<AgentIndex>>,
    /// Agents nothing depends on: their outputs are the run's result.
    pub sinks: Vec<AgentIndex>,
}

impl Plan {
    /// Builds the plan. The ensemble was validated, so the graph is acyclic.
    pub fn new(ensemble: Ensemble) -> Plan {
        let n = ensemble.agents.len();
        let mut graph: DiGraph<AgentIndex, ()> = DiGraph::with_capacity(n, n);
        let nodes: Vec<NodeIndex> = (0..n).map(|i| graph.add_node(i)).collect();
        let mut dependents = vec![Vec::new(); n];
        for agent in &ensemble.agents {
            for &dep in &agent.depends_on {
                graph.add_edge(nodes[dep], nodes[agent.index], ());
                dependents[dep].push(agent.index);
            }
        }
        let order = toposort(&graph, None).expect("validated ensembles have no cycles");
        let mut depth = vec![0usize; n];
        for node in order {
            let i = graph[node];
            depth[i] = ensemble.agents[i]
                .depends_on
                .iter()
                .map(|&d| depth[d] + 1)
                .max()
                .unwrap_or(0);
        }
        let phase_count = depth.iter().copied().max().map_or(0, |d| d + 1);
        let mut phases = vec![Vec::new(); phase_count];
        for i in 0..n {
            phases[depth[i]].push(i);
        }
        let sinks = (0..n).filter(|&i| dependents[i].is_empty()).collect();
        Plan {
            ensemble,
            phases,
            depth,
            dependents,
            sinks,
        }
    }

    pub fn len(&self) -> usize {
        self.ensemble.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ensemble.agents.is_empty()
    }
}
