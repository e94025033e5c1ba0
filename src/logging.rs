//! Where `tracing` output goes. With `ORC_LOG` set, the detailed log: every event that
//! passes the filter, with timestamps and module paths. Without it, only warnings and
//! errors, as short human lines (`warning: ignoring the key store: ...`), and none of the
//! per-call lines (`retrying`, `profile failed`) when the command already shows the run's
//! retries and failures itself from its events, so nothing is said twice (#12).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The module whose warnings are a run's retries and failed profiles; the CLI shows those
/// from the run's events (`agent_retrying`, `agent_fallback`, `agent_finished`).
const CALL_TARGET: &str = "orc::exec::call";

/// Set by the commands that show retries and failures as lines of their own.
static RUN_EVENTS_SHOWN: AtomicBool = AtomicBool::new(false);

/// Says that this process shows every run's retries and failures from its events, so the
/// default log leaves them out. `orc serve`, `orc mcp` and `orc worker` do not call it:
/// there the log is the only place they appear.
pub(crate) fn run_events_shown() {
    RUN_EVENTS_SHOWN.store(true, Ordering::Relaxed);
}

/// Installs the log subscriber: `ORC_LOG` (e.g. `debug`, `orc=trace`) for the detailed log,
/// else human warning lines (see the module docs). Logs go to stderr; a write that fails
/// (stderr closed) is dropped. Call once, from `main`.
pub fn init_logging() {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let asked = std::env::var_os("ORC_LOG").is_some();
    match tracing_subscriber::EnvFilter::try_from_env("ORC_LOG") {
        Ok(filter) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .try_init();
            return;
        }
        Err(e) if asked => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr().lock(),
                "warning: ORC_LOG is not a log filter ({e}); write it like `debug` or `orc=trace`"
            );
        }
        Err(_) => {}
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(Human { ansi })
        .with_filter(tracing_subscriber::EnvFilter::new("orc=warn"))
        .with_filter(tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
            // Decided per event, not cached per call site: the flag is set after start-up.
            !(meta.target() == CALL_TARGET && RUN_EVENTS_SHOWN.load(Ordering::Relaxed))
        }));
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// `warning: MESSAGE: ERROR (key=value, ...)`: no timestamp, no module path.
struct Human {
    ansi: bool,
}

impl<S, N> FormatEvent<S, N> for Human
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        let (label, color) = match level {
            Level::ERROR => ("error", "1;31"),
            Level::WARN => ("warning", "1;33"),
            Level::INFO => ("info", "1;32"),
            _ => ("debug", "2"),
        };
        if self.ansi {
            write!(writer, "\x1b[{color}m{label}\x1b[0m: ")?;
        } else {
            write!(writer, "{label}: ")?;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(writer, "{}", fields.line())
    }
}

/// An event's fields, gathered for one human line.
#[derive(Default)]
struct Fields {
    message: String,
    error: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Fields {
    fn line(&self) -> String {
        let mut line = self.message.clone();
        if let Some(error) = &self.error {
            line.push_str(": ");
            line.push_str(error);
        }
        if !self.rest.is_empty() {
            let rest: Vec<String> = self.rest.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push_str(&format!(" ({})", rest.join(", ")));
        }
        line
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "error" => self.error = Some(value),
            name => self.rest.push((name, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_message_error_then_the_rest() {
        let fields = Fields {
            message: "ignoring the key store".into(),
            error: Some("bad JSON at line 1".into()),
            rest: vec![("path", "/x".into())],
        };
        assert_eq!(
            fields.line(),
            "ignoring the key store: bad JSON at line 1 (path=/x)"
        );
    }
}
