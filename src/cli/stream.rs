//! `--stream`: one agent's answer on stdout as it arrives, never printed twice (#12).
//!
//! A stream that breaks off is retried from the start, and the retry streams the answer
//! again. What is already on stdout cannot be taken back, so the printer keeps it and
//! prints only what the new attempt adds beyond it: while the new attempt repeats the
//! printed text nothing is written, and once it goes further only the rest is. If the new
//! attempt says something else (a model rarely answers the same way twice), the printed
//! part is abandoned with a line break and a note on stderr, and the new answer follows in
//! full: different text, never the same text twice.

use super::output::write_stdout;
use crate::exec::{AgentStatus, Event, EventKind};

pub(crate) struct StreamPrinter {
    agent: String,
    /// The text on stdout since the last line break orc wrote.
    shown: String,
    /// The attempt whose text is arriving, and its text so far.
    attempt: Option<u32>,
    current: String,
    /// The agent finished and its answer (if any) is printed.
    printed: bool,
}

impl StreamPrinter {
    pub(crate) fn new(agent: String) -> StreamPrinter {
        StreamPrinter {
            agent,
            shown: String::new(),
            attempt: None,
            current: String::new(),
            printed: false,
        }
    }

    /// Brings stdout up to `text`, the whole answer so far of the current attempt.
    fn show(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix(self.shown.as_str()) {
            if !rest.is_empty() {
                let _ = write_stdout(rest);
                self.shown.push_str(rest);
            }
        } else if !self.shown.starts_with(text) {
            // The retry diverged from what is printed.
            let _ = write_stdout("\n");
            errln!(
                "orc: the answer of `{}` broke off and its retry differs; the new answer follows in full",
                self.agent
            );
            let _ = write_stdout(text);
            self.shown = text.to_string();
        }
    }
}

impl StreamPrinter {
    pub(crate) fn print(&mut self, event: &Event) {
        if !event.path.is_empty() {
            return;
        }
        match &event.kind {
            EventKind::AgentDelta {
                agent,
                attempt,
                text,
            } if *agent == self.agent => {
                if self.attempt != Some(*attempt) {
                    self.attempt = Some(*attempt);
                    self.current.clear();
                }
                self.current.push_str(text);
                let current = std::mem::take(&mut self.current);
                self.show(&current);
                self.current = current;
            }
            EventKind::AgentFinished { agent, outcome } if *agent == self.agent => {
                let succeeded = outcome.status == AgentStatus::Succeeded;
                if succeeded {
                    let output = outcome.output.as_deref().unwrap_or("");
                    // What did not stream (a provider that sent it whole) is printed now;
                    // an output orc reformatted (`response_format`) is not printed again.
                    if self.shown.is_empty() || output.starts_with(self.shown.as_str()) {
                        self.show(output);
                    }
                }
                if !self.shown.is_empty() || succeeded {
                    let _ = write_stdout("\n");
                }
                self.printed = true;
            }
            _ => {}
        }
    }

    /// Whether the answer is on stdout already.
    pub(crate) fn printed(&self) -> bool {
        self.printed
    }
}
