//! Dependency cycles, found while validating an ensemble (before any plan exists).

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// One cycle per strongly connected component of the graph given as dependency lists
/// (`deps[i]` are the agents `i` depends on), each as a path that starts and ends at its
/// first-declared agent: `[a, b, c, a]` reads "a depends on b, b on c, c on a".
/// Self-dependencies are not reported here.
pub(super) fn find_cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
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
