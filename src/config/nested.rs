//! Agents that run other ensembles. The ensembles named by `ensemble: NAME|PATH`,
//! `loop.body` and a `dispatch:` that is a name are loaded with the file that names them, so
//! a missing file, an invalid one or a cycle across files (`a.yaml -> b.yaml -> a.yaml`) is a
//! load error, located at the key. A `dispatch:` whose target a dependency chooses at run
//! time gets an `EnsembleLoader`, which loads that target the same way when the agent runs
//! (the engine calls it; this module still does no IO but reading the files it is given).
//!
//! A reference is a path, so it can name any file (`/proc/self/environ`, `/etc/passwd`);
//! issue 13 found their contents printed in the errors. So a nested file must be a regular
//! `.yaml`/`.yml` file that parses as a YAML mapping with `name:` and `agents:` before any
//! of its text is shown; anything else is one error at the key that says what the file is,
//! never what it holds.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::discover::Dirs;
use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::load::read_source;
use super::locate::{Locator, PathSeg};
use super::model::{Control, Ensemble, NodeKind};
use super::profiles::ProfileSet;
use super::yaml::YamlProblem;

/// Nesting deeper than this is refused (a chain this long is a mistake, not a design); at
/// run time it bounds ensembles that dispatch to themselves.
pub(super) const MAX_DEPTH: usize = 8;

/// What a `dispatch` target needs when it is loaded at run time: the profiles in effect and
/// where names are looked up.
#[derive(Debug)]
struct Runtime {
    profiles: ProfileSet,
    dirs: Option<Dirs>,
}

/// How one load (a file and everything it names) finds ensembles.
pub(super) struct Loading<'a> {
    profiles: &'a ProfileSet,
    find: &'a dyn Fn(&str) -> Option<PathBuf>,
    dirs: Option<&'a Dirs>,
    /// The top file's references are names only (`find`), never paths: text that is no
    /// file (`POST /api/validate`) must not probe the server's files.
    names_only: bool,
    /// Made once, when the first run-time `dispatch` needs it.
    runtime: OnceLock<Arc<Runtime>>,
}

impl<'a> Loading<'a> {
    pub(super) fn new(
        profiles: &'a ProfileSet,
        find: &'a dyn Fn(&str) -> Option<PathBuf>,
        dirs: Option<&'a Dirs>,
    ) -> Loading<'a> {
        Loading {
            profiles,
            find,
            dirs,
            names_only: false,
            runtime: OnceLock::new(),
        }
    }

    /// As `new`, for text that is no file: its own references are names only.
    pub(super) fn names_only(
        profiles: &'a ProfileSet,
        find: &'a dyn Fn(&str) -> Option<PathBuf>,
    ) -> Loading<'a> {
        Loading {
            names_only: true,
            ..Loading::new(profiles, find, None)
        }
    }

    fn runtime(&self) -> Arc<Runtime> {
        Arc::clone(self.runtime.get_or_init(|| {
            Arc::new(Runtime {
                profiles: self.profiles.clone(),
                dirs: self.dirs.cloned(),
            })
        }))
    }
}

/// The file a reference names: a path relative to `base` (with or without `.yaml`), else a
/// name `find` knows.
fn resolve(
    base: &Path,
    reference: &str,
    find: &dyn Fn(&str) -> Option<PathBuf>,
) -> Option<PathBuf> {
    let candidate = base.join(reference);
    // Anything there but a directory is the target, so that a FIFO or a device is named as
    // such instead of "cannot be found".
    if std::fs::metadata(&candidate).is_ok_and(|m| !m.is_dir()) {
        Some(candidate)
    } else if !reference.ends_with(".yaml") && !reference.ends_with(".yml") {
        ["yaml", "yml"]
            .iter()
            .map(|ext| base.join(format!("{reference}.{ext}")))
            .find(|p| p.is_file())
            .or_else(|| find(reference))
    } else {
        None
    }
}

pub(super) fn load(
    path: &Path,
    loading: &Loading<'_>,
    stack: &mut Vec<PathBuf>,
) -> (Option<Ensemble>, ConfigReport) {
    let file = match read_source(path) {
        Ok(f) => f,
        Err(e) => {
            let mut report = ConfigReport::default();
            report.push(e);
            return (None, report);
        }
    };
    load_source(file, path, loading, stack)
}

pub(super) fn load_source(
    file: SourceFile,
    path: &Path,
    loading: &Loading<'_>,
    stack: &mut Vec<PathBuf>,
) -> (Option<Ensemble>, ConfigReport) {
    let (ensemble, mut report) = super::load_ensemble_source(file, loading.profiles);
    let Some(mut ensemble) = ensemble else {
        return (None, report);
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ok = true;
    // Loaded once per file, however many agents run it: a thousand agents naming the same
    // ensemble must not parse it a thousand times.
    let mut loaded: HashMap<PathBuf, Option<Arc<Ensemble>>> = HashMap::new();
    for i in 0..ensemble.agents.len() {
        let NodeKind::Nested(nested) = &ensemble.agents[i].node else {
            continue;
        };
        let key: &[&str] = match &nested.control {
            Control::Once => &["ensemble"],
            Control::Loop(_) => &["loop", "body"],
            Control::Dispatch(d) if d.source.is_some() => {
                // Chosen at run time: loaded then, from where this file is.
                let loader = EnsembleLoader {
                    base: base.clone(),
                    stack: stack.clone(),
                    runtime: loading.runtime(),
                    cache: Mutex::new(HashMap::new()),
                };
                if let NodeKind::Nested(n) = &mut ensemble.agents[i].node {
                    if let Control::Dispatch(d) = &mut n.control {
                        d.loader = Some(Arc::new(loader));
                    }
                }
                continue;
            }
            Control::Dispatch(_) => &["dispatch"],
        };
        let reference = nested.reference.clone();
        let agent = ensemble.agents[i].name.clone();
        let locate = |kind: ConfigErrorKind, e: &Ensemble| {
            let locator = Locator::new(&e.source);
            let mut at = vec![PathSeg::Key("agents".into()), PathSeg::Index(i)];
            at.extend(key.iter().map(|k| PathSeg::Key((*k).into())));
            ConfigError::new(kind, &e.source, locator.value_span(&at))
        };
        let target = if loading.names_only && stack.len() == 1 {
            (loading.find)(&reference)
        } else {
            resolve(&base, &reference, loading.find)
        };
        let Some(target) = target else {
            report.push(locate(
                ConfigErrorKind::UnknownEnsemble { agent, reference },
                &ensemble,
            ));
            ok = false;
            continue;
        };
        let target_canonical = std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone());
        if let Some(start) = stack.iter().position(|p| *p == target_canonical) {
            let mut chain: Vec<String> = stack[start..].iter().map(|p| display(p)).collect();
            chain.push(display(&target_canonical));
            report.push(locate(ConfigErrorKind::EnsembleCycle { chain }, &ensemble));
            ok = false;
            continue;
        }
        if let Some(done) = loaded.get(&target_canonical) {
            match done {
                Some(child) => {
                    if let NodeKind::Nested(n) = &mut ensemble.agents[i].node {
                        n.ensemble = Some(Arc::clone(child));
                    }
                }
                None => {
                    report.push(locate(
                        ConfigErrorKind::InvalidNestedEnsemble { agent, reference },
                        &ensemble,
                    ));
                    ok = false;
                }
            }
            continue;
        }
        if stack.len() >= MAX_DEPTH {
            report.push(locate(
                ConfigErrorKind::EnsembleTooDeep { limit: MAX_DEPTH },
                &ensemble,
            ));
            ok = false;
            continue;
        }
        let file = match screen(&target) {
            Ok(file) => file,
            Err(problem) => {
                loaded.insert(target_canonical, None);
                report.push(locate(
                    ConfigErrorKind::NotAnEnsemble {
                        agent,
                        reference,
                        problem,
                    },
                    &ensemble,
                ));
                ok = false;
                continue;
            }
        };
        let (child, child_report) = load_source(file, &target, loading, stack);
        let child_failed = child_report.has_errors();
        report.extend(child_report);
        match child {
            Some(child) if !child_failed => {
                let child = Arc::new(child);
                loaded.insert(target_canonical, Some(Arc::clone(&child)));
                if let NodeKind::Nested(n) = &mut ensemble.agents[i].node {
                    n.ensemble = Some(child);
                }
            }
            _ => {
                loaded.insert(target_canonical, None);
                // Errors inside the child were reported (cycles among them); say which
                // agent led there.
                if !report
                    .diagnostics
                    .iter()
                    .any(|d| matches!(d.kind, ConfigErrorKind::EnsembleCycle { .. }))
                {
                    report.push(locate(
                        ConfigErrorKind::InvalidNestedEnsemble { agent, reference },
                        &ensemble,
                    ));
                }
                ok = false;
            }
        }
    }
    stack.pop();
    (ok.then_some(ensemble), report)
}

/// The text of a nested ensemble file, or what the file is instead, in words that quote
/// nothing from it.
fn screen(path: &Path) -> Result<SourceFile, String> {
    if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        return Err("it is not a `.yaml` or `.yml` file".into());
    }
    let file = read_source(path).map_err(|e| match e.kind {
        ConfigErrorKind::NotUtf8 => "it is not UTF-8 text".to_string(),
        ConfigErrorKind::NotAFile { what, .. } => format!("it is a {what}, not a regular file"),
        ConfigErrorKind::TooLarge { limit, .. } => {
            format!("it is larger than {}", super::read::human_bytes(limit))
        }
        other => other.to_string(),
    })?;
    match super::yaml::parse(&file.text) {
        Ok(parsed) => match parsed.value {
            Value::Object(map) if map.contains_key("name") && map.contains_key("agents") => {
                Ok(file)
            }
            Value::Object(_) => Err("it has no `name:` and `agents:`".into()),
            Value::Null => Err("it is empty".into()),
            _ => Err("it is not a YAML mapping".into()),
        },
        Err(YamlProblem::Limit { message, .. }) => {
            Err(format!("YAML too large or too deeply nested: {message}"))
        }
        Err(YamlProblem::Syntax(e)) => Err(match e.location() {
            Some(l) => format!(
                "it is not valid YAML (line {}, column {})",
                l.line(),
                l.column()
            ),
            None => "it is not valid YAML".into(),
        }),
    }
}

fn display(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Loads the ensemble a `dispatch` agent chose at run time, as it would have been loaded
/// with the file: by name on the search path, or as a file next to the dispatching one.
/// Loaded ensembles are kept, so a loop that dispatches each iteration reads a file once.
pub struct EnsembleLoader {
    /// The folder of the file whose agent dispatches.
    base: PathBuf,
    /// The files that led here, for the depth limit.
    stack: Vec<PathBuf>,
    runtime: Arc<Runtime>,
    cache: Mutex<HashMap<String, Arc<Ensemble>>>,
}

impl std::fmt::Debug for EnsembleLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsembleLoader")
            .field("base", &self.base)
            .field("depth", &self.stack.len())
            .finish_non_exhaustive()
    }
}

/// Why a dispatched ensemble cannot run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadFailure {
    #[error("no ensemble named `{reference}`")]
    NotFound { reference: String },
    #[error(
        "`{reference}` is not an ensemble name: a dispatched ensemble is a name on the search path or a file in the folder of the dispatching ensemble"
    )]
    OutsidePath { reference: String },
    #[error("ensemble `{reference}` is invalid: {first}{}", more_errors(*.more))]
    Invalid {
        reference: String,
        /// The first error, with its file, line and column.
        first: String,
        more: usize,
    },
    #[error("ensembles dispatch deeper than {limit} levels")]
    TooDeep { limit: usize },
}

fn more_errors(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more; `orc validate` shows them all)"),
    }
}

impl EnsembleLoader {
    pub fn load(&self, reference: &str) -> Result<Arc<Ensemble>, LoadFailure> {
        if let Some(found) = self.cache.lock().expect("not poisoned").get(reference) {
            return Ok(Arc::clone(found));
        }
        // The name comes from another agent's output (a model's, perhaps): it may name an
        // ensemble, never walk the file system.
        let as_path = Path::new(reference);
        if reference.is_empty()
            || as_path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(LoadFailure::OutsidePath {
                reference: reference.to_string(),
            });
        }
        let runtime = &self.runtime;
        let find = |name: &str| runtime.dirs.as_ref().and_then(|d| d.find_ensemble(name));
        let target =
            resolve(&self.base, reference, &find).ok_or_else(|| LoadFailure::NotFound {
                reference: reference.to_string(),
            })?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(LoadFailure::TooDeep { limit: MAX_DEPTH });
        }
        let loading = Loading {
            profiles: &runtime.profiles,
            find: &find,
            dirs: runtime.dirs.as_ref(),
            names_only: false,
            runtime: OnceLock::from(Arc::clone(runtime)),
        };
        let file = screen(&target).map_err(|problem| LoadFailure::Invalid {
            reference: reference.to_string(),
            first: problem,
            more: 0,
        })?;
        let mut stack = self.stack.clone();
        let (ensemble, report) = load_source(file, &target, &loading, &mut stack);
        match ensemble {
            Some(e) if !report.has_errors() => {
                let e = Arc::new(e);
                self.cache
                    .lock()
                    .expect("not poisoned")
                    .insert(reference.to_string(), Arc::clone(&e));
                Ok(e)
            }
            _ => {
                let errors: Vec<&ConfigError> = report
                    .diagnostics
                    .iter()
                    .filter(|d| !d.kind.is_warning())
                    .collect();
                let first = errors.first().map_or_else(
                    || "it does not load".to_string(),
                    |e| match e.line_col() {
                        Some((line, col)) => {
                            format!("{}:{line}:{col}: {}", e.source.name(), e.kind)
                        }
                        None => format!("{}: {}", e.source.name(), e.kind),
                    },
                );
                Err(LoadFailure::Invalid {
                    reference: reference.to_string(),
                    first,
                    more: errors.len().saturating_sub(1),
                })
            }
        }
    }
}
