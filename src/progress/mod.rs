//! The terminal progress view: one line per running agent (elapsed time, attempt) and a
//! totals line (done, failed, tokens, cost). Driven only by exec events; shown only when
//! stderr is a terminal and `--quiet` is off.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{AgentStatus, Event, EventSink};
use crate::providers::Usage;

/// More running agents than this are summed up in the totals line, not listed.
const MAX_AGENT_LINES: usize = 12;

pub struct ProgressView {
    multi: MultiProgress,
    totals: ProgressBar,
    agents: HashMap<String, ProgressBar>,
    /// Characters streamed so far per agent, for a live token estimate.
    streamed: HashMap<String, usize>,
    usage: Usage,
    cost: f64,
    cost_known: bool,
    failed: usize,
    color: bool,
}

impl ProgressView {
    pub fn new(total_agents: u64, color: bool) -> ProgressView {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(12));
        let totals = multi.add(ProgressBar::new(total_agents));
        let template = if color {
            "{spinner:.cyan} {pos}/{len} agents {wide_msg:.dim} {elapsed:>4}"
        } else {
            "{spinner} {pos}/{len} agents {wide_msg} {elapsed:>4}"
        };
        totals.set_style(ProgressStyle::with_template(template).expect("valid template"));
        totals.enable_steady_tick(Duration::from_millis(100));
        ProgressView {
            multi,
            totals,
            agents: HashMap::new(),
            streamed: HashMap::new(),
            usage: Usage::default(),
            cost: 0.0,
            cost_known: true,
            failed: 0,
            color,
        }
    }

    fn refresh_totals(&self) {
        let cost = if self.cost_known {
            format!("${:.4}", self.cost)
        } else {
            format!("${:.4}+ (some prices unknown)", self.cost)
        };
        let failed = if self.failed > 0 {
            format!(" · {} failed", self.failed)
        } else {
            String::new()
        };
        self.totals.set_message(format!(
            "· {} tokens in, {} out · {}{}",
            self.usage.input_tokens, self.usage.output_tokens, cost, failed
        ));
    }

    fn agent_bar(&mut self, agent: &str) -> Option<&ProgressBar> {
        if !self.agents.contains_key(agent) && self.agents.len() < MAX_AGENT_LINES {
            let bar = self
                .multi
                .insert_before(&self.totals, ProgressBar::new_spinner());
            let template = if self.color {
                "  {spinner:.green} {prefix:.bold} {wide_msg} {elapsed:>4}"
            } else {
                "  {spinner} {prefix} {wide_msg} {elapsed:>4}"
            };
            bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
            bar.set_prefix(agent.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            self.agents.insert(agent.to_string(), bar);
        }
        self.agents.get(agent)
    }

    pub fn finish(&self) {
        for bar in self.agents.values() {
            bar.finish_and_clear();
        }
        self.totals.finish_and_clear();
        let _ = self.multi.clear();
    }

    /// Prints a line above the bars without tearing them.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

impl EventSink for ProgressView {
    fn emit(&mut self, event: &Event) {
        match event {
            Event::AgentStarted {
                agent,
                attempt,
                profile,
                ..
            } => {
                let msg = if *attempt > 1 {
                    format!("{profile} · attempt {attempt}")
                } else {
                    profile.clone()
                };
                if let Some(bar) = self.agent_bar(agent) {
                    bar.set_message(msg);
                }
            }
            Event::AgentDelta { agent, text, .. } => {
                let entry = self.streamed.entry(agent.clone()).or_insert(0);
                *entry += text.chars().count();
                let tokens = entry.div_ceil(4);
                if let Some(bar) = self.agents.get(agent) {
                    let profile = bar.message().split(" · ").next().unwrap_or("").to_string();
                    bar.set_message(format!("{profile} · ~{tokens} tokens"));
                }
            }
            Event::AgentRetrying {
                agent,
                error,
                delay_ms,
                ..
            } => {
                if let Some(bar) = self.agents.get(agent) {
                    bar.set_message(format!("retrying in {delay_ms} ms: {error}"));
                }
            }
            Event::NodeProgress {
                agent,
                unique,
                calls,
                uam,
                cost_usd,
                ..
            } => {
                let cost =
                    cost_usd.map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"));
                if let Some(bar) = self.agents.get(agent) {
                    bar.set_message(format!(
                        "{unique} unique · {uam:.0} UAM · {calls} calls · {cost}"
                    ));
                }
            }
            Event::AgentTokens { usage, .. } => {
                self.usage += *usage;
                self.refresh_totals();
            }
            Event::AgentFinished {
                agent,
                status,
                cost_usd,
                attempts,
                ..
            } => {
                if let Some(bar) = self.agents.remove(agent) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                match cost_usd {
                    Some(c) => self.cost += c,
                    None if *attempts > 0 => self.cost_known = false,
                    None => {}
                }
                if matches!(status, AgentStatus::Failed) {
                    self.failed += 1;
                }
                self.totals.inc(1);
                self.refresh_totals();
            }
            _ => {}
        }
    }
}
