//! The command line: parses arguments, runs one command, maps the result to an exit code.
//! The only module that prints. `run` can be called more than once in a process.
//!
//! Every line to stderr goes through `errln!`/`errprint!`, never `eprintln!`, which panics
//! (exit 101) when stderr is a closed pipe (`orc ... 2>&1 | head -1`) and would throw away
//! the result on stdout with it (#12). The lints below keep it that way.

#![deny(clippy::print_stderr, clippy::print_stdout)]

/// `eprintln!` that never panics: a line that cannot be written (stderr closed or a broken
/// pipe) is dropped, so the run goes on and its result still reaches stdout.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// `eprint!` that never panics; see `errln!`.
macro_rules! errprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod args;
mod auth;
mod commands;
mod explore;
mod input;
mod invoke;
mod mcp;
mod output;
mod resume;
mod runs;
mod serve;
mod session;
mod stream;
mod test;
mod worker;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Parser;

pub use args::{Cli, ColorChoice, Command, InvokeArgs, OutputFormat, TestArgs};

use crate::config::{self, ConfigReport, Dirs, Ensemble, ProfileSet};
use crate::diagnostics::{Exit, Renderer};
use crate::suggest::closest;

/// Runs orc with these arguments (the first is the program name) and returns the exit code.
pub fn run<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    Exit::Ok
                }
                _ => Exit::Invalid,
            }
            .into();
        }
    };
    let ctx = Context::new(cli.color);
    if matches!(
        cli.command,
        Command::Invoke(_) | Command::Explore(_) | Command::Resume(_) | Command::Test(_)
    ) {
        // These show retries and failures from the run's events (`session::event_line`,
        // `orc test`'s report); the default log must not say them again.
        crate::logging::run_events_shown();
    }
    let exit = match cli.command {
        Command::Invoke(args) => invoke::invoke(&ctx, args),
        Command::Explore(args) => explore::explore(&ctx, args),
        Command::Validate { paths } => commands::validate(&ctx, &paths),
        Command::Plan { ensemble, format } => commands::plan(&ctx, &ensemble, format),
        Command::List => commands::list(&ctx),
        Command::Profiles { action: None } => commands::profiles(&ctx),
        Command::Profiles {
            action: Some(args::ProfilesAction::Check { name, timeout }),
        } => auth::check_profiles(&ctx, name.as_deref(), timeout),
        Command::Auth { action } => auth::auth(&ctx, action),
        Command::Schema { kind } => commands::schema(kind),
        Command::Init { force } => commands::init(&ctx, force),
        Command::Mcp(args) => mcp::mcp(&ctx, args),
        Command::Runs { action, output } => runs::runs(&ctx, action, output),
        Command::Resume(args) => resume::resume(&ctx, args),
        Command::Test(args) => test::test(&ctx, args),
        Command::Worker(args) => worker::worker(&ctx, args),
        Command::Serve(args) => serve::serve(&ctx, args),
    };
    exit.into()
}

/// What every command needs: where to look, and how to print diagnostics.
pub(crate) struct Context {
    pub dirs: Dirs,
    pub cwd: PathBuf,
    pub color: bool,
    pub renderer: Renderer,
}

impl Context {
    fn new(choice: ColorChoice) -> Context {
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        };
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Context {
            dirs: Dirs::discover(&cwd),
            cwd,
            color,
            renderer: Renderer::new(color),
        }
    }

    /// Prints an error line to stderr.
    pub(crate) fn error(&self, message: &str) {
        let prefix = if self.color {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        errln!("{prefix}: {message}");
    }

    pub(crate) fn print_report(&self, report: &ConfigReport) {
        if !report.diagnostics.is_empty() {
            errprint!("{}", self.renderer.render_report(report));
        }
    }

    /// The merged profiles, or exit 2 after showing what is wrong with them.
    pub(crate) fn profiles(&self) -> Result<ProfileSet, Exit> {
        let (profiles, report) = ProfileSet::load(&self.dirs);
        if report.has_errors() {
            self.print_report(&report);
            return Err(Exit::Invalid);
        }
        Ok(profiles)
    }

    /// A path as given, or `NAME` looked up on the search path.
    pub(crate) fn resolve_ensemble(&self, arg: &str) -> Result<PathBuf, Exit> {
        let as_path = Path::new(arg);
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        let looks_like_path = arg.contains(std::path::MAIN_SEPARATOR)
            || arg.contains('/')
            || arg.ends_with(".yaml")
            || arg.ends_with(".yml");
        // `development/code-review` names an ensemble in a subfolder of `.llm-orc/ensembles`.
        if !(arg.ends_with(".yaml") || arg.ends_with(".yml")) {
            if let Some(found) = self.dirs.find_ensemble(arg) {
                return Ok(found);
            }
        }
        let known: Vec<String> = self
            .dirs
            .list_ensembles()
            .into_iter()
            .map(|f| f.name)
            .collect();
        if looks_like_path {
            self.error(&format!("no ensemble file `{arg}`"));
        } else {
            self.error(&format!("no ensemble named `{arg}`"));
        }
        let stem = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(s) = closest(&stem, known.iter().map(String::as_str)) {
            errln!("  help: did you mean `{s}`?");
        } else {
            let searched: Vec<String> = self
                .dirs
                .ensemble_dirs()
                .iter()
                .map(|(d, _)| d.display().to_string())
                .collect();
            if searched.is_empty() {
                errln!(
                    "  help: give a path to a .yaml file, or run `orc init` to create .orc/ensembles"
                );
            } else {
                errln!(
                    "  help: give a path to a .yaml file, or put NAME.yaml in {}",
                    searched.join(" or ")
                );
            }
        }
        Err(Exit::Invalid)
    }

    /// Resolves, loads and validates an ensemble, printing its diagnostics (warnings
    /// included, which come back with the ensemble).
    pub(crate) fn load(&self, arg: &str) -> Result<(Ensemble, ConfigReport), Exit> {
        self.load_mapped(arg, &[])
    }

    /// As `load`, with `--profile-map OLD=NEW` entries applied first.
    pub(crate) fn load_mapped(
        &self,
        arg: &str,
        map: &[String],
    ) -> Result<(Ensemble, ConfigReport), Exit> {
        let path = self.resolve_ensemble(arg)?;
        let mut profiles = self.profiles()?;
        for entry in map {
            let Some((old, new)) = entry.split_once('=') else {
                self.error(&format!("`--profile-map {entry}` is not OLD=NEW"));
                return Err(Exit::Invalid);
            };
            if let Err(message) = profiles.alias(old.trim(), new.trim()) {
                self.error(&message);
                return Err(Exit::Invalid);
            }
        }
        let (ensemble, report) = config::load_ensemble_in(&path, &profiles, &self.dirs);
        self.print_report(&report);
        match ensemble {
            Some(e) => Ok((e, report)),
            None => Err(Exit::Invalid),
        }
    }
}
