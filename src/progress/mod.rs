//! The terminal progress view: one line per running agent (elapsed time, attempt) and a
//! totals line (done, failed, tokens, cost). Driven only by exec events; shown only when
//! stderr is a terminal and `--quiet` is off.
//!
//! The view never takes more rows than the terminal has: indicatif stops drawing at the
//! bottom of the screen, which cut off the totals line, the last one, whenever more agents
//! ran than there were rows (#12). So only as many agents get a line as fit (`Slots`), the
//! rest are counted in the totals line (`+12 more running`), and a hidden agent takes the
//! line of one that finishes.
//!
//! No `eprintln!`/`println!` here: a closed stderr must never panic (see `crate::cli`).

#![deny(clippy::print_stderr, clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::{Event, EventKind, RunState};

/// At most this many agents get a line of their own, however tall the terminal.
const MAX_AGENT_LINES: usize = 12;

/// Rows kept free of agent lines: the totals line, and the row the cursor rests on.
const RESERVED_ROWS: usize = 2;

/// Agent names longer than this are cut in their line, so a line never wraps onto two rows
/// on any sensible terminal width.
const MAX_NAME_CHARS: usize = 40;

/// How many agent lines fit in a terminal of `rows` rows.
fn agent_lines(rows: usize) -> usize {
    rows.saturating_sub(RESERVED_ROWS).min(MAX_AGENT_LINES)
}

/// Which running agents have a line: the earliest started, as many as fit. Pure
/// bookkeeping, so the line budget is tested without a terminal.
#[derive(Default)]
struct Slots {
    /// Start order of every running agent.
    order: HashMap<String, u64>,
    next: u64,
    shown: BTreeMap<u64, String>,
    hidden: BTreeMap<u64, String>,
}

/// A change to make on screen.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Show(String),
    Hide(String),
}

impl Slots {
    /// An agent started (again, for a retry: then nothing changes).
    fn start(&mut self, agent: &str, capacity: usize) -> Vec<Change> {
        if !self.order.contains_key(agent) {
            self.next += 1;
            self.order.insert(agent.to_string(), self.next);
            self.hidden.insert(self.next, agent.to_string());
        }
        self.rebalance(capacity)
    }

    /// An agent finished: its line (if it had one) goes, and a hidden agent takes it.
    fn finish(&mut self, agent: &str, capacity: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(seq) = self.order.remove(agent) {
            if self.shown.remove(&seq).is_some() {
                changes.push(Change::Hide(agent.to_string()));
            }
            self.hidden.remove(&seq);
        }
        changes.extend(self.rebalance(capacity));
        changes
    }

    /// Fits the shown agents to `capacity` (the terminal may have been resized): the
    /// latest started give up their lines first, the earliest started get them first.
    fn rebalance(&mut self, capacity: usize) -> Vec<Change> {
        let mut changes = Vec::new();
        while self.shown.len() > capacity {
            let (seq, agent) = self.shown.pop_last().expect("more shown than capacity");
            changes.push(Change::Hide(agent.clone()));
            self.hidden.insert(seq, agent);
        }
        while self.shown.len() < capacity {
            let Some((seq, agent)) = self.hidden.pop_first() else {
                break;
            };
            changes.push(Change::Show(agent.clone()));
            self.shown.insert(seq, agent);
        }
        changes
    }

    /// Running agents without a line.
    fn more(&self) -> usize {
        self.hidden.len()
    }
}

pub struct ProgressView {
    multi: MultiProgress,
    totals: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    slots: Slots,
    started: HashMap<String, Instant>,
    term: console::Term,
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
            bars: HashMap::new(),
            slots: Slots::default(),
            started: HashMap::new(),
            term: console::Term::stderr(),
            color,
        }
    }

    /// Agent lines that fit the terminal as it is now (it may have been resized).
    fn capacity(&self) -> usize {
        agent_lines(usize::from(self.term.size().0))
    }

    fn refresh_totals(&self, state: &RunState) {
        let live = &state.live;
        let more = match self.slots.more() {
            0 => String::new(),
            n => format!("· +{n} more running "),
        };
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
            "{more}· {} tokens in, {} out · {}{}",
            live.usage.input_tokens, live.usage.output_tokens, cost, failed
        ));
    }

    fn apply(&mut self, changes: Vec<Change>, state: &RunState) {
        for change in changes {
            match change {
                Change::Hide(agent) => {
                    if let Some(bar) = self.bars.remove(&agent) {
                        bar.finish_and_clear();
                        self.multi.remove(&bar);
                    }
                }
                Change::Show(agent) => {
                    let elapsed = self
                        .started
                        .get(&agent)
                        .map_or(Duration::ZERO, Instant::elapsed);
                    let bar = self.multi.insert_before(
                        &self.totals,
                        ProgressBar::new_spinner().with_elapsed(elapsed),
                    );
                    let template = if self.color {
                        "  {spinner:.green} {prefix:.bold} {wide_msg} {elapsed:>4}"
                    } else {
                        "  {spinner} {prefix} {wide_msg} {elapsed:>4}"
                    };
                    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
                    bar.set_prefix(clip(&agent, MAX_NAME_CHARS));
                    bar.set_message(running_message(state, &agent));
                    bar.enable_steady_tick(Duration::from_millis(100));
                    self.bars.insert(agent, bar);
                }
            }
        }
    }

    pub fn finish(&self) {
        for bar in self.bars.values() {
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

/// `name` cut to `n` characters, marked when cut.
fn clip(name: &str, n: usize) -> String {
    if name.chars().count() <= n {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(n.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What a running agent's line says: its profile, and the attempt after the first.
fn running_message(state: &RunState, agent: &str) -> String {
    let Some(a) = state.agent(agent) else {
        return String::new();
    };
    let profile = a.profile.clone().unwrap_or_default();
    if a.attempt > 1 {
        format!("{profile} · attempt {}", a.attempt)
    } else {
        profile
    }
}

impl ProgressView {
    /// Shows one event; `state` is the run with the event already applied.
    pub fn update(&mut self, event: &Event, state: &RunState) {
        if !event.path.is_empty() {
            return;
        }
        match &event.kind {
            EventKind::AgentStarted { agent, .. } => {
                self.started
                    .entry(agent.clone())
                    .or_insert_with(Instant::now);
                let changes = self.slots.start(agent, self.capacity());
                self.apply(changes, state);
                if let Some(bar) = self.bars.get(agent) {
                    bar.set_message(running_message(state, agent));
                }
                self.refresh_totals(state);
            }
            EventKind::AgentDelta { agent, .. } => {
                let chars = state.agent(agent).map_or(0, |a| a.streamed_chars);
                let tokens = chars.div_ceil(4);
                if let Some(bar) = self.bars.get(agent) {
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
                if let Some(bar) = self.bars.get(agent) {
                    let error = error.lines().next().unwrap_or("");
                    bar.set_message(format!("retrying in {delay_ms} ms: {error}"));
                }
            }
            EventKind::NodeProgress(p) => {
                let cost = p
                    .cost_usd
                    .map_or_else(|| "cost unknown".to_string(), |c| format!("${c:.4}"));
                if let Some(bar) = self.bars.get(&p.agent) {
                    bar.set_message(format!(
                        "{} unique · {:.0} UAM · {} calls · {cost}",
                        p.unique, p.uam, p.calls
                    ));
                }
            }
            EventKind::CallFinished(_) => self.refresh_totals(state),
            EventKind::AgentFinished { agent, .. } => {
                self.started.remove(agent);
                let changes = self.slots.finish(agent, self.capacity());
                self.apply(changes, state);
                self.totals.set_position(state.live.done as u64);
                self.refresh_totals(state);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lines_leave_room_for_the_totals_line() {
        assert_eq!(agent_lines(24), MAX_AGENT_LINES);
        assert_eq!(agent_lines(10), 8);
        assert_eq!(agent_lines(3), 1);
        assert_eq!(agent_lines(2), 0);
        assert_eq!(agent_lines(0), 0);
    }

    /// However many agents run, the lines shown plus the totals line fit the terminal, and
    /// every running agent is either shown or counted in `+N more running`.
    #[test]
    fn lines_never_outgrow_the_terminal() {
        let rows = 8;
        let capacity = agent_lines(rows);
        let mut slots = Slots::default();
        let mut shown: Vec<String> = Vec::new();
        let follow = |changes: Vec<Change>, shown: &mut Vec<String>| {
            for c in changes {
                match c {
                    Change::Show(a) => shown.push(a),
                    Change::Hide(a) => shown.retain(|s| *s != a),
                }
            }
        };
        for i in 0..40 {
            let changes = slots.start(&format!("a{i}"), capacity);
            follow(changes, &mut shown);
            assert!(
                shown.len() + 1 < rows,
                "{} lines in {rows} rows",
                shown.len() + 1
            );
            assert_eq!(shown.len() + slots.more(), i + 1);
        }
        assert_eq!(shown, ["a0", "a1", "a2", "a3", "a4", "a5"]);
        assert_eq!(slots.more(), 34);
        // A finished agent's line goes to the earliest started hidden one.
        follow(slots.finish("a2", capacity), &mut shown);
        assert_eq!(shown, ["a0", "a1", "a3", "a4", "a5", "a6"]);
        assert_eq!(slots.more(), 33);
        // A hidden agent that finishes just leaves the count.
        follow(slots.finish("a30", capacity), &mut shown);
        assert_eq!(slots.more(), 32);
        assert_eq!(shown.len(), 6);
    }

    #[test]
    fn a_resized_terminal_gets_as_many_lines_as_fit() {
        let mut slots = Slots::default();
        for i in 0..10 {
            let _ = slots.start(&format!("a{i}"), 8);
        }
        // Smaller: the latest started give up their lines.
        assert_eq!(
            slots.rebalance(6),
            [Change::Hide("a7".into()), Change::Hide("a6".into())]
        );
        assert_eq!(slots.more(), 4);
        // Taller again: the earliest started hidden ones come back.
        assert_eq!(slots.rebalance(7), [Change::Show("a6".into())]);
        // A retry starts an agent again: nothing moves.
        assert!(slots.start("a0", 7).is_empty());
        assert_eq!(slots.more(), 3);
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdefghijkl", 5), "abcd…");
    }
}
