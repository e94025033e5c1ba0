//! The ensembles a server serves: the files and folders given on the command line first,
//! then the search path (`.orc/ensembles`, `.llm-orc/ensembles`, the user's). Each is loaded
//! and validated when first asked for and kept until its file changes (size or mtime), so
//! edits take effect on the next request without reloading on every one. Profiles are read
//! once, when the server starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use miette::Diagnostic;
use serde_json::{Value, json};

use crate::config::{self, ConfigErrorKind, ConfigReport, Dirs, Ensemble, NodeKind, ProfileSet};
use crate::diagnostics::Renderer;
use crate::plan::{Plan, PlanFormat, render};

/// One ensemble file the server knows by name.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub path: PathBuf,
    /// `path` (given on the command line), `project`, `llm-orc` or `user`.
    pub source: &'static str,
}

/// An ensemble loaded and validated.
pub(crate) struct Loaded {
    pub plan: Arc<Plan>,
    /// Keys it uses that this version validates but cannot run (`loop`, ...).
    pub unsupported: Vec<String>,
    pub warnings: Value,
}

/// Why an ensemble cannot be used.
pub(crate) struct Invalid {
    pub message: String,
    pub diagnostics: Value,
}

type LoadResult = Result<Arc<Loaded>, Arc<Invalid>>;

struct Cached {
    stamp: (u64, Option<SystemTime>),
    result: LoadResult,
}

pub(crate) struct Catalog {
    dirs: Dirs,
    paths: Vec<PathBuf>,
    pub profiles: Arc<ProfileSet>,
    cache: Mutex<HashMap<PathBuf, Cached>>,
}

impl Catalog {
    pub(crate) fn new(dirs: Dirs, paths: Vec<PathBuf>, profiles: ProfileSet) -> Catalog {
        Catalog {
            dirs,
            paths,
            profiles: Arc::new(profiles),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Every ensemble, given paths first; a name earlier in the list hides a later one.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        let push = |out: &mut Vec<Entry>, entry: Entry| {
            if !out.iter().any(|e| e.name == entry.name) {
                out.push(entry);
            }
        };
        for path in &self.paths {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && is_yaml(p))
                    .collect();
                files.sort();
                for file in files {
                    push(&mut out, given(&file));
                }
            } else {
                push(&mut out, given(path));
            }
        }
        for found in self.dirs.list_ensembles() {
            if found.shadowed {
                continue;
            }
            let source = match found.scope {
                config::Scope::Project => "project",
                config::Scope::LlmOrc => "llm-orc",
                config::Scope::User => "user",
            };
            push(
                &mut out,
                Entry {
                    name: found.name,
                    path: found.path,
                    source,
                },
            );
        }
        out
    }

    pub(crate) fn find(&self, name: &str) -> Option<Entry> {
        self.entries().into_iter().find(|e| e.name == name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.entries().into_iter().map(|e| e.name).collect()
    }

    /// The ensemble of an entry, loaded now or earlier (when the file has not changed).
    pub(crate) fn load(&self, entry: &Entry) -> LoadResult {
        let stamp = stamp(&entry.path);
        if let Some(c) = self
            .cache
            .lock()
            .expect("not poisoned")
            .get(&entry.path)
            .filter(|c| c.stamp == stamp)
        {
            return c.result.clone();
        }
        let (ensemble, report) = config::load_ensemble_with(&entry.path, &self.profiles, &|name| {
            self.dirs.find_ensemble(name)
        });
        let result = match ensemble {
            Some(e) => Ok(Arc::new(loaded(e, &report))),
            None => Err(Arc::new(invalid(&report))),
        };
        self.cache.lock().expect("not poisoned").insert(
            entry.path.clone(),
            Cached {
                stamp,
                result: result.clone(),
            },
        );
        result
    }
}

fn given(path: &Path) -> Entry {
    Entry {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        source: "path",
    }
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

fn stamp(path: &Path) -> (u64, Option<SystemTime>) {
    std::fs::metadata(path).map_or((0, None), |m| (m.len(), m.modified().ok()))
}

/// An ensemble with its warnings and the keys it cannot run.
pub(crate) fn loaded(ensemble: Ensemble, report: &ConfigReport) -> Loaded {
    let unsupported = report
        .diagnostics
        .iter()
        .filter_map(|d| match &d.kind {
            ConfigErrorKind::NotYetSupported { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    Loaded {
        plan: Arc::new(Plan::new(ensemble)),
        unsupported,
        warnings: diagnostics(report),
    }
}

pub(crate) fn invalid(report: &ConfigReport) -> Invalid {
    let first = report
        .diagnostics
        .iter()
        .find(|d| !d.kind.is_warning())
        .map_or_else(
            || "the ensemble is invalid".to_string(),
            ToString::to_string,
        );
    let errors = report.error_count();
    let message = if errors > 1 {
        format!(
            "{first} (and {} more error{})",
            errors - 1,
            if errors == 2 { "" } else { "s" }
        )
    } else {
        first
    };
    Invalid {
        message,
        diagnostics: json!({
            "diagnostics": diagnostics(report),
            "rendered": Renderer::new(false).render_report(report),
        }),
    }
}

/// Each diagnostic as JSON: what `orc validate` prints, with its line and column.
pub(crate) fn diagnostics(report: &ConfigReport) -> Value {
    Value::Array(
        report
            .diagnostics
            .iter()
            .map(|d| {
                let (line, column) = d.line_col().unzip();
                json!({
                    "severity": if d.kind.is_warning() { "warning" } else { "error" },
                    "code": d.kind.code(),
                    "message": d.kind.to_string(),
                    "file": d.source.name(),
                    "line": line,
                    "column": column,
                    "label": d.labels().and_then(|mut l| l.next()).and_then(|l| l.label().map(String::from)),
                    "help": d.help().map(|h| h.to_string()),
                })
            })
            .collect(),
    )
}

/// The kind of an agent, as the API and dashboard name it.
pub(crate) fn kind_name(node: &NodeKind) -> &'static str {
    match node {
        NodeKind::Llm => "llm",
        NodeKind::Generate(_) => "generate",
        NodeKind::Dedup(_) => "dedup",
        NodeKind::Script(_) => "script",
        NodeKind::Nested(_) => "ensemble",
    }
}

/// The plan as `orc plan --format json` prints it, with each agent's kind and the
/// ensemble's description.
pub(crate) fn plan_json(plan: &Plan) -> Value {
    let mut doc: Value =
        serde_json::from_str(&render(plan, PlanFormat::Json)).expect("the plan renders as JSON");
    if let Some(agents) = doc["agents"].as_array_mut() {
        for (a, agent) in agents.iter_mut().zip(&plan.ensemble.agents) {
            a["kind"] = json!(kind_name(&agent.node));
        }
    }
    doc["description"] = json!(plan.ensemble.description);
    doc["default_task"] = json!(plan.ensemble.default_task);
    doc["sinks"] = json!(
        plan.sinks
            .iter()
            .map(|&i| &plan.ensemble.agents[i].name)
            .collect::<Vec<_>>()
    );
    doc
}
