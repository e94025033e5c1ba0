//! The optimizer: routes each call of a node with several candidate profiles by a UCB1
//! bandit over what each profile has shown so far (new unique items per call, latency, cost,
//! failures), with exploration. An unknown price is never treated as free. Every decision is
//! recorded with the scores that made it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{OptimizerSettings, OptimizerStrategy};

/// How strongly the bandit explores; rewards are normalised to [0, 1].
const EXPLORATION: f64 = 0.35;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ArmStats {
    pub calls: u64,
    pub failures: u64,
    pub new_items: u64,
    /// Seconds spent in calls (success or failure).
    pub latency_s: f64,
    /// Cost of the calls with a known price.
    pub cost_usd: f64,
    /// Whether the profile's price is known.
    pub price_known: bool,
    /// Times chosen, reported or not (calls may still be in flight).
    #[serde(skip)]
    picked: u64,
}

/// One routing decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub call: u64,
    pub producer: u32,
    pub profile: String,
    /// `explore` (an untried profile) or `exploit` (the best upper confidence bound).
    pub reason: std::borrow::Cow<'static, str>,
    /// Upper confidence bound of every candidate at the time.
    pub scores: BTreeMap<String, f64>,
}

/// Decisions kept in memory.
const KEPT_DECISIONS: usize = 1000;

pub struct Optimizer {
    strategy: OptimizerStrategy,
    weights: BTreeMap<String, f64>,
    names: Vec<String>,
    pub arms: Vec<ArmStats>,
    /// The most recent decisions (bounded: every call is in the event stream).
    pub decisions: std::collections::VecDeque<Decision>,
    calls: u64,
}

impl Optimizer {
    pub fn new(
        settings: &OptimizerSettings,
        names: Vec<String>,
        price_known: Vec<bool>,
    ) -> Optimizer {
        let arms = price_known
            .into_iter()
            .map(|price_known| ArmStats {
                price_known,
                ..ArmStats::default()
            })
            .collect();
        Optimizer {
            strategy: settings.strategy,
            weights: settings.weights.clone(),
            names,
            arms,
            decisions: std::collections::VecDeque::new(),
            calls: 0,
        }
    }

    /// The candidate for the next call.
    pub fn choose(&mut self, producer: u32) -> usize {
        self.calls += 1;
        // Every candidate is tried once first, in order; concurrent producers pick
        // different ones because a pick counts before its call reports.
        if let Some(untried) = self.arms.iter().position(|a| a.picked == 0) {
            self.arms[untried].picked += 1;
            self.record(untried, producer, "explore", BTreeMap::new());
            return untried;
        }
        let rewards = self.rewards();
        let total: u64 = self.arms.iter().map(|a| a.picked).sum();
        let mut scores = BTreeMap::new();
        let mut best = (0usize, f64::MIN);
        for (i, arm) in self.arms.iter().enumerate() {
            let bonus =
                EXPLORATION * ((2.0 * (total.max(1) as f64).ln()) / arm.picked as f64).sqrt();
            // No report yet: a neutral guess.
            let reward = if arm.calls == 0 { 0.5 } else { rewards[i] };
            let score = reward + bonus;
            scores.insert(self.names[i].clone(), (score * 1000.0).round() / 1000.0);
            if score > best.1 {
                best = (i, score);
            }
        }
        self.arms[best.0].picked += 1;
        self.record(best.0, producer, "exploit", scores);
        best.0
    }

    fn record(
        &mut self,
        arm: usize,
        producer: u32,
        reason: &'static str,
        scores: BTreeMap<String, f64>,
    ) {
        if self.decisions.len() == KEPT_DECISIONS {
            self.decisions.pop_front();
        }
        self.decisions.push_back(Decision {
            call: self.calls,
            producer,
            profile: self.names[arm].clone(),
            reason: reason.into(),
            scores,
        });
    }

    /// Reports how a call went.
    pub fn report(
        &mut self,
        arm: usize,
        new_items: u64,
        latency_s: f64,
        cost: Option<f64>,
        failed: bool,
    ) {
        let a = &mut self.arms[arm];
        a.calls += 1;
        a.latency_s += latency_s;
        a.new_items += new_items;
        a.cost_usd += cost.unwrap_or(0.0);
        if failed {
            a.failures += 1;
        }
    }

    /// Mean reward of each arm in [0, 1] under the strategy, times its success rate.
    fn rewards(&self) -> Vec<f64> {
        let n = self.arms.len();
        let per = |f: &dyn Fn(&ArmStats) -> f64| -> Vec<f64> { self.arms.iter().map(f).collect() };
        // Items per second of call time.
        let speed = per(&|a| a.new_items as f64 / a.latency_s.max(1e-3));
        // Dollars per call; an unknown price counts as the dearest known one, doubled, so it
        // is never preferred for being "free".
        let known_max = self
            .arms
            .iter()
            .filter(|a| a.price_known && a.calls > 0)
            .map(|a| a.cost_usd / a.calls as f64)
            .fold(0.0f64, f64::max);
        let cost_per_call = per(&|a| {
            if a.price_known {
                a.cost_usd / a.calls.max(1) as f64
            } else {
                (known_max * 2.0).max(1e-6)
            }
        });
        let items_per_dollar: Vec<f64> = (0..n)
            .map(|i| {
                let items = self.arms[i].new_items as f64 / self.arms[i].calls.max(1) as f64;
                items / cost_per_call[i].max(1e-9)
            })
            .collect();
        let normalise = |v: &[f64]| -> Vec<f64> {
            let max = v.iter().copied().fold(0.0f64, f64::max);
            v.iter()
                .map(|x| if max > 0.0 { x / max } else { 0.0 })
                .collect()
        };
        let uam = normalise(&speed);
        let cheap: Vec<f64> = {
            let min = cost_per_call.iter().copied().fold(f64::MAX, f64::min);
            cost_per_call
                .iter()
                .map(|c| if *c <= 0.0 { 1.0 } else { min.max(1e-12) / c })
                .collect()
        };
        let efficiency = normalise(&items_per_dollar);
        let base: Vec<f64> = match self.strategy {
            OptimizerStrategy::MaximizeUam => uam,
            OptimizerStrategy::MinimizeCost => cheap,
            OptimizerStrategy::MaximizeEfficiency => efficiency,
            OptimizerStrategy::Weighted => {
                let w = |k: &str| self.weights.get(k).copied().unwrap_or(1.0).max(0.0);
                let (wu, wc, we) = (w("uam"), w("cost"), w("efficiency"));
                let sum = (wu + wc + we).max(1e-9);
                (0..n)
                    .map(|i| (wu * uam[i] + wc * cheap[i] + we * efficiency[i]) / sum)
                    .collect()
            }
        };
        (0..n)
            .map(|i| {
                let a = &self.arms[i];
                let success = 1.0 - a.failures as f64 / a.calls.max(1) as f64;
                base[i] * success
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        strategy: OptimizerStrategy,
        yields: [u64; 3],
        costs: [Option<f64>; 3],
        fails: [bool; 3],
    ) -> Vec<u64> {
        let settings = OptimizerSettings {
            strategy,
            weights: Default::default(),
        };
        let mut o = Optimizer::new(
            &settings,
            vec!["a".into(), "b".into(), "c".into()],
            costs.iter().map(Option::is_some).collect(),
        );
        let mut picks = vec![0u64; 3];
        for _ in 0..200 {
            let arm = o.choose(0);
            picks[arm] += 1;
            o.report(
                arm,
                if fails[arm] { 0 } else { yields[arm] },
                0.2,
                costs[arm],
                fails[arm],
            );
        }
        picks
    }

    #[test]
    fn follows_yield_cost_and_failures() {
        let p = run(
            OptimizerStrategy::MaximizeUam,
            [2, 8, 4],
            [Some(0.01); 3],
            [false; 3],
        );
        assert!(p[1] > 120, "{p:?}");
        let p = run(
            OptimizerStrategy::MinimizeCost,
            [5, 5, 5],
            [Some(0.05), Some(0.01), Some(0.03)],
            [false; 3],
        );
        assert!(p[1] > 120, "{p:?}");
        let p = run(
            OptimizerStrategy::MaximizeUam,
            [5, 5, 5],
            [Some(0.01); 3],
            [true, false, false],
        );
        assert!(p[0] < 15, "{p:?}");
    }

    #[test]
    fn unknown_price_is_not_free() {
        let p = run(
            OptimizerStrategy::MinimizeCost,
            [5, 5, 5],
            [None, Some(0.02), Some(0.03)],
            [false; 3],
        );
        assert!(p[0] < p[1], "{p:?}");
    }
}
