//! Where orc looks for ensembles and profiles: the nearest `.orc/` walking up from the working
//! directory (the project), the nearest `.llm-orc/` (an llm-orc project, read as it is), then
//! `$XDG_CONFIG_HOME/orc` (default `~/.config/orc`, the user). Project wins over user, and
//! orc's own `.orc/` wins over `.llm-orc/`.
//!
//! `.orc/ensembles/` is flat (`NAME.yaml`); `.llm-orc/ensembles/` is searched with its
//! subfolders and matched by the ensemble's `name:` as llm-orc does, so `orc invoke
//! code-review` finds `.llm-orc/ensembles/development/code-review.yaml`, and so does
//! `orc invoke development/code-review`.

use std::path::{Path, PathBuf};

/// Which configuration directory something came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Project,
    /// The project's `.llm-orc/` directory.
    LlmOrc,
    User,
}

impl Scope {
    /// llm-orc keeps ensembles in subfolders of `ensembles/`.
    fn is_recursive(self) -> bool {
        self == Scope::LlmOrc
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Project => "project",
            Scope::LlmOrc => "llm-orc",
            Scope::User => "user",
        })
    }
}

/// The configuration directories in effect.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// The nearest `.orc` directory at or above the working directory.
    pub project: Option<PathBuf>,
    /// The nearest `.llm-orc` directory at or above the working directory.
    pub llm_orc: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/orc` or `~/.config/orc`.
    pub user: Option<PathBuf>,
}

/// An ensemble file found on the search path.
#[derive(Debug, Clone)]
pub struct FoundEnsemble {
    /// What `orc invoke` takes: the file stem in `.orc/`; in `.llm-orc/` the ensemble's
    /// `name:`, prefixed by its subfolder (`development/code-review`) as llm-orc shows it.
    pub name: String,
    pub path: PathBuf,
    pub scope: Scope,
    /// An ensemble of the same name earlier on the search path hides this one.
    pub shadowed: bool,
}

/// Nesting deeper than this under `.llm-orc/ensembles/` is not searched (and a symlink
/// loop cannot make the walk endless).
const MAX_ENSEMBLE_DEPTH: usize = 16;

impl Dirs {
    pub fn discover(cwd: &Path) -> Dirs {
        let nearest = |name: &str| {
            cwd.ancestors()
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_dir())
        };
        let project = nearest(".orc");
        let llm_orc = nearest(".llm-orc");
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|base| base.join("orc"));
        let user = user.filter(|u| Some(u) != project.as_ref());
        Dirs {
            project,
            llm_orc,
            user,
        }
    }

    /// orc's own configuration directories, lowest precedence first.
    pub fn config_dirs(&self) -> Vec<PathBuf> {
        self.user
            .iter()
            .chain(self.project.iter())
            .cloned()
            .collect()
    }

    /// Ensemble directories, highest precedence first.
    pub fn ensemble_dirs(&self) -> Vec<(PathBuf, Scope)> {
        [
            (&self.project, Scope::Project),
            (&self.llm_orc, Scope::LlmOrc),
            (&self.user, Scope::User),
        ]
        .into_iter()
        .filter_map(|(dir, scope)| dir.as_ref().map(|d| (d.join("ensembles"), scope)))
        .collect()
    }

    /// The ensemble `name` names: `NAME.yaml` (or `.yml`, or a path below an ensemble
    /// directory such as `development/code-review`) in the ensemble directories, in order;
    /// in `.llm-orc/ensembles/` also a file in a subfolder whose stem or `name:` is `name`.
    pub fn find_ensemble(&self, name: &str) -> Option<PathBuf> {
        if name.is_empty()
            || Path::new(name)
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return None;
        }
        self.ensemble_dirs().into_iter().find_map(|(dir, scope)| {
            ["yaml", "yml"]
                .iter()
                .map(|ext| dir.join(format!("{name}.{ext}")))
                .find(|p| p.is_file())
                .or_else(|| {
                    scope.is_recursive().then(|| {
                        llm_orc_ensembles(&dir)
                            .into_iter()
                            .find(|e| e.matches(name))
                            .map(|e| e.path)
                    })?
                })
        })
    }

    /// Every ensemble file on the search path, highest precedence first; within a
    /// directory, shallower files first, then by path.
    pub fn list_ensembles(&self) -> Vec<FoundEnsemble> {
        let mut found: Vec<FoundEnsemble> = Vec::new();
        for (dir, scope) in self.ensemble_dirs() {
            let entries: Vec<(String, PathBuf)> = if scope.is_recursive() {
                llm_orc_ensembles(&dir)
                    .into_iter()
                    .map(|e| (e.display_name(), e.path))
                    .collect()
            } else {
                let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| is_yaml(p) && p.is_file())
                    .collect();
                paths.sort();
                paths
                    .into_iter()
                    .map(|p| {
                        let name = p
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (name, p)
                    })
                    .collect()
            };
            for (name, path) in entries {
                let shadowed = found.iter().any(|f| f.name == name);
                found.push(FoundEnsemble {
                    name,
                    path,
                    scope,
                    shadowed,
                });
            }
        }
        found
    }
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// An ensemble file under `.llm-orc/ensembles/`.
struct LlmOrcEnsemble {
    path: PathBuf,
    /// The subfolder below `ensembles/` (`development`), empty at the top.
    folder: String,
    stem: String,
    /// The file's `name:` (its stem when it has none).
    name: String,
}

impl LlmOrcEnsemble {
    fn display_name(&self) -> String {
        if self.folder.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.folder, self.name)
        }
    }

    /// llm-orc matches an ensemble by its `name:` or `folder/name`; orc also by the file's
    /// stem (`folder/stem`), as it does in `.orc/ensembles/`.
    fn matches(&self, query: &str) -> bool {
        let qualified = |last: &str| {
            if self.folder.is_empty() {
                last.to_string()
            } else {
                format!("{}/{last}", self.folder)
            }
        };
        query == self.name
            || query == self.stem
            || query == qualified(&self.name)
            || query == qualified(&self.stem)
    }
}

/// Every YAML file under `dir`, shallowest first, then by path.
fn llm_orc_ensembles(dir: &Path) -> Vec<LlmOrcEnsemble> {
    let mut files: Vec<(usize, PathBuf)> = walkdir::WalkDir::new(dir)
        .max_depth(MAX_ENSEMBLE_DEPTH)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && is_yaml(e.path()))
        .map(|e| (e.depth(), e.into_path()))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, path)| {
            let folder = path
                .parent()
                .and_then(|p| p.strip_prefix(dir).ok())
                .map(|p| {
                    p.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = name_of(&path).unwrap_or_else(|| stem.clone());
            LlmOrcEnsemble {
                path,
                folder,
                stem,
                name,
            }
        })
        .collect()
}

/// The top-level `name:` of an ensemble file, read from its first lines without parsing
/// the whole document (the search must stay cheap with a hundred files; a file whose name
/// this misses is still found by its stem).
fn name_of(path: &Path) -> Option<String> {
    use std::io::{BufRead, BufReader, Read};
    /// The `name:` of every real ensemble comes long before this.
    const SCAN_BYTES: u64 = 64 * 1024;
    let file = std::fs::File::open(path).ok()?;
    let reader = BufReader::new(file.take(SCAN_BYTES));
    for line in reader.lines() {
        let line = line.ok()?;
        if let Some(rest) = line.strip_prefix("name:") {
            let value = rest.split(" #").next().unwrap_or(rest).trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            return (!value.is_empty()).then(|| value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_wins_over_user() {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("repo/.orc/ensembles");
        let user = tmp.path().join("home/orc/ensembles");
        std::fs::create_dir_all(&project).unwrap();
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(project.join("review.yaml"), "").unwrap();
        std::fs::write(user.join("review.yaml"), "").unwrap();
        std::fs::write(user.join("other.yml"), "").unwrap();
        let dirs = Dirs {
            project: Some(tmp.path().join("repo/.orc")),
            llm_orc: None,
            user: Some(tmp.path().join("home/orc")),
        };
        assert_eq!(
            dirs.find_ensemble("review"),
            Some(project.join("review.yaml"))
        );
        assert_eq!(dirs.find_ensemble("other"), Some(user.join("other.yml")));
        let listed = dirs.list_ensembles();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().any(|f| f.name == "review" && f.shadowed));
    }

    #[test]
    fn llm_orc_ensembles_are_found_in_subfolders_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dot = tmp.path().join(".llm-orc");
        let ensembles = dot.join("ensembles");
        std::fs::create_dir_all(ensembles.join("team/deep")).unwrap();
        std::fs::write(ensembles.join("top.yaml"), "name: top\n").unwrap();
        std::fs::write(ensembles.join("team/review.yaml"), "name: review\n").unwrap();
        std::fs::write(
            ensembles.join("team/deep/file-stem.yaml"),
            "# a comment\nname: \"by-name\" # trailing\n",
        )
        .unwrap();
        std::fs::write(ensembles.join("team/notes.md"), "name: no\n").unwrap();
        let dirs = Dirs {
            project: None,
            llm_orc: Some(dot),
            user: None,
        };
        let deep = ensembles.join("team/deep/file-stem.yaml");
        assert_eq!(dirs.find_ensemble("by-name"), Some(deep.clone()));
        assert_eq!(dirs.find_ensemble("file-stem"), Some(deep.clone()));
        assert_eq!(dirs.find_ensemble("team/deep/by-name"), Some(deep.clone()));
        assert_eq!(
            dirs.find_ensemble("team/review"),
            Some(ensembles.join("team/review.yaml"))
        );
        assert_eq!(dirs.find_ensemble("../top"), None);
        let names: Vec<String> = dirs.list_ensembles().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["top", "team/review", "team/deep/by-name"]);
    }

    #[test]
    fn orc_project_wins_over_llm_orc() {
        let tmp = tempfile::tempdir().unwrap();
        for dot in [".orc", ".llm-orc"] {
            let dir = tmp.path().join(dot).join("ensembles");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("review.yaml"), "name: review\n").unwrap();
        }
        let dirs = Dirs {
            user: None,
            ..Dirs::discover(tmp.path())
        };
        assert_eq!(
            dirs.find_ensemble("review"),
            Some(tmp.path().join(".orc/ensembles/review.yaml"))
        );
        let listed = dirs.list_ensembles();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].scope, Scope::LlmOrc);
        assert!(listed[1].shadowed);
    }
}
