//! The ensembles `orc mcp` serves: every ensemble on the search path (the first of each
//! name), or those in the files and folders given. Read again on every `tools/list` and
//! `tools/call`, so an edited or added ensemble is served without a restart. An ensemble
//! that does not load is left out, with the reason for stderr. No IO beyond reading files.

use std::path::{Path, PathBuf};

use crate::config::{self, ConfigError, Dirs, Ensemble, ProfileSet};

/// Where the served ensembles come from.
pub struct Catalog {
    dirs: Dirs,
    /// Files and folders given on the command line; empty for the search path.
    paths: Vec<PathBuf>,
    profiles: ProfileSet,
}

/// A servable ensemble.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub description: Option<String>,
    pub path: PathBuf,
    pub agents: Vec<String>,
    pub default_task: Option<String>,
}

/// A file left out, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl Catalog {
    pub fn new(dirs: Dirs, paths: Vec<PathBuf>, profiles: ProfileSet) -> Catalog {
        Catalog {
            dirs,
            paths,
            profiles,
        }
    }

    /// The ensemble files to serve, in search-path order.
    fn files(&self) -> Vec<PathBuf> {
        if self.paths.is_empty() {
            return self
                .dirs
                .list_ensembles()
                .into_iter()
                .filter(|f| !f.shadowed)
                .map(|f| f.path)
                .collect();
        }
        let mut files = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                // llm-orc keeps ensembles in subfolders; orc's own folders are flat.
                let depth = if in_llm_orc_dir(path) { 16 } else { 1 };
                let mut inside: Vec<PathBuf> = walkdir::WalkDir::new(path)
                    .min_depth(1)
                    .max_depth(depth)
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_file())
                    .map(walkdir::DirEntry::into_path)
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect();
                inside.sort();
                files.extend(inside);
            } else {
                files.push(path.clone());
            }
        }
        files
    }

    /// Loads and validates one file, as `orc invoke` would.
    pub fn load(&self, path: &Path) -> Result<Ensemble, String> {
        let (ensemble, report) = config::load_ensemble_in(path, &self.profiles, &self.dirs);
        match ensemble {
            Some(e) if !report.has_errors() => Ok(e),
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
                Err(match errors.len() {
                    0 | 1 => first,
                    n => format!("{first} (and {} more)", n - 1),
                })
            }
        }
    }

    /// Every servable ensemble (the first of each name) and the files left out.
    pub fn scan(&self) -> (Vec<Entry>, Vec<Skipped>) {
        let mut entries: Vec<Entry> = Vec::new();
        let mut skipped = Vec::new();
        for path in self.files() {
            if looks_like_profiles(&path) {
                continue;
            }
            match self.load(&path) {
                Ok(e) if entries.iter().any(|x| x.name == e.name) => skipped.push(Skipped {
                    reason: format!(
                        "an ensemble named `{}` comes first on the search path",
                        e.name
                    ),
                    path,
                }),
                Ok(e) if super::is_reserved(&e.name) => skipped.push(Skipped {
                    reason: format!("`{}` is the name of one of orc's own tools", e.name),
                    path,
                }),
                Ok(e) => entries.push(Entry {
                    name: e.name.clone(),
                    description: e.description.clone(),
                    agents: e.agents.iter().map(|a| a.name.clone()).collect(),
                    default_task: e.default_task.clone(),
                    path,
                }),
                Err(reason) => skipped.push(Skipped { path, reason }),
            }
        }
        (entries, skipped)
    }
}

/// Whether `path` is `.llm-orc` or inside it.
fn in_llm_orc_dir(path: &Path) -> bool {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .components()
        .any(|c| c.as_os_str() == ".llm-orc")
}

/// Profiles and prices files sit beside ensembles in folders given on the command line;
/// they are not ensembles to serve.
fn looks_like_profiles(path: &Path) -> bool {
    if path.file_name().is_some_and(|n| n == "prices.yaml") || config::is_llm_orc_file(path) {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let has_top = |key: &str| {
        text.lines()
            .any(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
    };
    has_top("model_profiles") && !has_top("agents")
}
