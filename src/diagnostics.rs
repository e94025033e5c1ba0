//! How errors look, and what the process exits with.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};

use crate::config::ConfigReport;

/// Documented exit codes (README, `orc --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every agent succeeded.
    Ok = 0,
    /// Some agent failed, was skipped or was cancelled.
    Failed = 1,
    /// Invalid usage, configuration or ensemble.
    Invalid = 2,
    /// Interrupted by SIGHUP (the terminal went away).
    HungUp = 129,
    /// Interrupted by Ctrl-C (SIGINT).
    Interrupted = 130,
    /// Interrupted by SIGTERM.
    Terminated = 143,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Renders diagnostics with a caret under the offending text.
pub struct Renderer {
    handler: GraphicalReportHandler,
}

impl Renderer {
    pub fn new(color: bool) -> Renderer {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        Renderer {
            handler: GraphicalReportHandler::new_themed(theme)
                .with_width(100)
                .with_context_lines(1),
        }
    }

    pub fn render(&self, diagnostic: &dyn Diagnostic) -> String {
        let mut out = String::new();
        self.handler
            .render_report(&mut out, diagnostic)
            .expect("writing to a String cannot fail");
        out
    }

    /// Every diagnostic of a report, then a one-line count.
    pub fn render_report(&self, report: &ConfigReport) -> String {
        let mut out = String::new();
        for d in &report.diagnostics {
            out.push_str(&self.render(d));
            out.push('\n');
        }
        let errors = report.error_count();
        let warnings = report.diagnostics.len() - errors;
        if errors > 0 {
            out.push_str(&format!(
                "{} error{}{} found\n",
                errors,
                if errors == 1 { "" } else { "s" },
                if warnings > 0 {
                    format!(
                        " and {} warning{}",
                        warnings,
                        if warnings == 1 { "" } else { "s" }
                    )
                } else {
                    String::new()
                }
            ));
        }
        out
    }
}
