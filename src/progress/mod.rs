//! The terminal progress view: one line per running agent (elapsed time, attempt) and a
//! totals line (done, failed, tokens, cost). Driven only by exec events; shown only when
//! stderr is a terminal and `--quiet` is off.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{Event, EventKind, RunState};

/// More running agents than this are summed up in the totals line, not listed.
const MAX_AGENT_LINES: usize = 12;

pub struct ProgressView {
    multi: MultiProgress,
    totals: ProgressBar,
    agents: HashMap<String, ProgressBar>,
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
            color,
        }
    }

    fn refresh_totals(&self, state: &RunState) {
        let live = &state.live;
        let cost = if live.cost_unknown {
            format!("${:.4}+ (some prices unknown)", live.cost_usd)
        } else {
            format!("${:.4}", live.cost_usd)
        };
        let failed = if live.failed > 0 {
            format!(" · {} failed", live.failed)
        } else {
            String::new()
        };
        self.totals.set_message(format!(
            "· {} tokens in, {} out · {}{}",
            live.usage.input_tokens, live.usage.output_tokens, cost, failed
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

impl ProgressView {
    /// Shows one event; `state` is the run with the event already applied.
    pub fn update(&mut self, event: &Event, state: &RunState) {
        if !event.path.is_empty() {
            return;
        }
        match &event.kind {
            EventKind::AgentStarted {
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
            EventKind::AgentDelta { agent, .. } => {
                let chars = state.agent(agent).map_or(0, |a| a.streamed_chars);
                let tokens = chars.div_ceil(4);
                if let Some(bar) = self.agents.get(agent) {
                    let profile = bar.message().split(" · ").next().unwrap_or("").to_string();
                    bar.set_message(format!("{profile} · ~{tokens} tokens"));
                }
            }
            EventKind::AgentRetrying {
                agent,
                error,
                delay_ms,
                ..
            } => {
                if let Some(bar) = self.agents.get(agent) {
                    bar.set_message(format!("retrying in {delay_ms} ms: {error}"));
                }
            }
            EventKind::NodeProgress(p) => {
                let cost = p
                    .cost_usd
                    .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"));
                if let Some(bar) = self.agents.get(&p.agent) {
                    bar.set_message(format!(
                        "{} unique · {:.0} UAM · {} calls · {cost}",
                        p.unique, p.uam, p.calls
                    ));
                }
            }
            EventKind::CallFinished(_) => self.refresh_totals(state),
            EventKind::AgentFinished { agent, .. } => {
                if let Some(bar) = self.agents.remove(agent) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.totals.set_position(state.live.done as u64);
                self.refresh_totals(state);
            }
            _ => {}
        }
    }
}
