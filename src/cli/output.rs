//! Writing results to stdout: text, one JSON document, or JSON lines. A closed pipe
//! (`orc invoke ... | head -1`) ends output quietly.

use std::io::Write;

use crate::diagnostics::Exit;
use crate::exec::{AgentStatus, RunOutcome, RunStatus};

/// Writes `text` to stdout; a broken pipe is not an error.
pub(crate) fn write_stdout(text: &str) -> Exit {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            Exit::Failed
        }
    }
}

/// The text result of a run: the output of the final agent(s). When the run was stopped
/// before they finished, every completed output instead, so nothing already paid for is lost.
pub(crate) fn text_result(outcome: &RunOutcome, sinks: &[usize]) -> String {
    let stopped = matches!(
        outcome.status,
        RunStatus::Interrupted
            | RunStatus::TimedOut
            | RunStatus::BudgetExceeded
            | RunStatus::Cancelled
    );
    let finals: Vec<usize> = sinks
        .iter()
        .copied()
        .filter(|&i| outcome.agents[i].status == AgentStatus::Succeeded)
        .collect();
    let shown: Vec<usize> = if stopped && finals.len() < sinks.len() {
        (0..outcome.agents.len())
            .filter(|&i| outcome.agents[i].status == AgentStatus::Succeeded)
            .collect()
    } else {
        finals
    };
    let mut out = String::new();
    if shown.len() == 1 && sinks.len() == 1 && sinks[0] == shown[0] {
        out.push_str(outcome.agents[shown[0]].output.as_deref().unwrap_or(""));
        out.push('\n');
        return out;
    }
    for (n, &i) in shown.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let agent = &outcome.agents[i];
        out.push_str(&format!("== {} ==\n", agent.name));
        out.push_str(agent.output.as_deref().unwrap_or(""));
        out.push('\n');
    }
    out
}

pub(crate) fn json_result(outcome: &RunOutcome) -> String {
    let mut s = serde_json::to_string_pretty(outcome).expect("outcomes serialize");
    s.push('\n');
    s
}
