//! `Plan`: a petgraph `DiGraph` over agent indices, with phases and dependents.

use petgraph::algo::{tarjan_scc, toposort};
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

/// One cycle per strongly connected component of the graph given as dependency lists
/// (`deps[i]` are the agents `i` depends on), each as a path that starts and ends at its
/// first-declared agent: `[a, b, c, a]` reads "a depends on b, b on c, c on a".
/// Self-dependencies are not reported here.
pub fn find_cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..deps.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            if d != i {
                graph.add_edge(nodes[i], nodes[d], ());
            }
        }
    }
    let mut cycles: Vec<Vec<usize>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let members: Vec<usize> = scc.iter().map(|n| graph[*n]).collect();
            let start = *members.iter().min().expect("non-empty component");
            cycle_through(deps, &members, start)
        })
        .collect();
    cycles.sort();
    cycles
}

/// A shortest cycle from `start` back to itself inside `members` (breadth-first).
fn cycle_through(deps: &[Vec<usize>], members: &[usize], start: usize) -> Vec<usize> {
    let mut parent: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &deps[node] {
            if next == start {
                let mut path = vec![node];
                while let Some(&p) = parent.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                if path.last() != Some(&start) {
                    path.push(start);
                }
                path.reverse();
                path.push(start);
                return path;
            }
            if members.contains(&next) && !parent.contains_key(&next) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_whole_cycle() {
        // a -> b -> c -> a, d independent
        let deps = vec![vec![1], vec![2], vec![0], vec![]];
        assert_eq!(find_cycles(&deps), vec![vec![0, 1, 2, 0]]);
    }

    #[test]
    fn two_separate_cycles() {
        let deps = vec![vec![1], vec![0], vec![3], vec![2]];
        assert_eq!(find_cycles(&deps), vec![vec![0, 1, 0], vec![2, 3, 2]]);
    }

    #[test]
    fn no_cycles() {
        let deps = vec![vec![], vec![0], vec![0, 1]];
        assert!(find_cycles(&deps).is_empty());
    }
}
