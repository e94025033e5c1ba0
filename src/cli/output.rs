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
            errln!("error: cannot write to stdout: {e}");
            Exit::Failed
        }
    }
}

/// Whether the final agents' outputs are missing from a run that did not succeed (stopped,
/// or a failure left a final agent failed or skipped). Then the text result holds every
/// completed output instead, so nothing already paid for is lost (#12). A final agent
/// skipped by its `when` in a run that succeeded is not missing: it was not wanted.
fn partial(outcome: &RunOutcome, sinks: &[usize]) -> bool {
    outcome.status != RunStatus::Succeeded
        && sinks
            .iter()
            .any(|&i| outcome.agents[i].status != AgentStatus::Succeeded)
}

/// The text result of a run: the output of the final agent(s), or, when `partial`, that of
/// every agent that succeeded, each under its name.
pub(crate) fn text_result(outcome: &RunOutcome, sinks: &[usize]) -> String {
    let succeeded = |i: &usize| outcome.agents[*i].status == AgentStatus::Succeeded;
    let shown: Vec<usize> = if partial(outcome, sinks) {
        (0..outcome.agents.len()).filter(succeeded).collect()
    } else {
        sinks.iter().copied().filter(succeeded).collect()
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

/// The stderr line that says why stdout does not hold the final agents' outputs and what
/// it holds instead; `None` when it holds them.
pub(crate) fn partial_note(outcome: &RunOutcome, sinks: &[usize]) -> Option<String> {
    if !partial(outcome, sinks) {
        return None;
    }
    let missing: Vec<String> = sinks
        .iter()
        .map(|&i| &outcome.agents[i])
        .filter(|a| a.status != AgentStatus::Succeeded)
        .map(|a| format!("`{}` ({})", a.name, a.status.as_str()))
        .collect();
    let whose = if missing.len() == 1 {
        format!("the final agent {}", missing[0])
    } else {
        format!("the final agents {}", missing.join(", "))
    };
    let done = outcome
        .agents
        .iter()
        .filter(|a| a.status == AgentStatus::Succeeded)
        .count();
    Some(match done {
        0 => format!("note: no output: {whose} did not succeed, and no other agent did"),
        1 => format!(
            "note: no output from {whose}; stdout has the output of the one agent that succeeded, under its name"
        ),
        n => format!(
            "note: no output from {whose}; stdout has the outputs of the {n} agents that succeeded, each under its name"
        ),
    })
}

pub(crate) fn json_result(outcome: &RunOutcome) -> String {
    let mut s = serde_json::to_string_pretty(outcome).expect("outcomes serialize");
    s.push('\n');
    s
}
