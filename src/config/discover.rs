//! Where orc looks for ensembles and profiles: the nearest `.orc/` walking up from the
//! working directory (the project), then `$XDG_CONFIG_HOME/orc` (default `~/.config/orc`,
//! the user). Project wins over user.

use std::path::{Path, PathBuf};

/// Which configuration directory something came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Project,
    User,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Project => "project",
            Scope::User => "user",
        })
    }
}

/// The configuration directories in effect.
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    /// The nearest `.orc` directory at or above the working directory.
    pub project: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME/orc` or `~/.config/orc`.
    pub user: Option<PathBuf>,
}

/// An ensemble file found on the search path.
#[derive(Debug, Clone)]
pub struct FoundEnsemble {
    pub name: String,
    pub path: PathBuf,
    pub scope: Scope,
    /// A project ensemble of the same name hides this one.
    pub shadowed: bool,
}

impl Dirs {
    pub fn discover(cwd: &Path) -> Dirs {
        let project = cwd
            .ancestors()
            .map(|dir| dir.join(".orc"))
            .find(|candidate| candidate.is_dir());
        let user = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .map(|base| base.join("orc"));
        let user = user.filter(|u| Some(u) != project.as_ref());
        Dirs { project, user }
    }

    /// Configuration directories, lowest precedence first.
    pub fn config_dirs(&self) -> Vec<PathBuf> {
        self.user
            .iter()
            .chain(self.project.iter())
            .cloned()
            .collect()
    }

    /// Ensemble directories, highest precedence first.
    pub fn ensemble_dirs(&self) -> Vec<(PathBuf, Scope)> {
        let mut dirs = Vec::new();
        if let Some(p) = &self.project {
            dirs.push((p.join("ensembles"), Scope::Project));
        }
        if let Some(u) = &self.user {
            dirs.push((u.join("ensembles"), Scope::User));
        }
        dirs
    }

    /// `NAME.yaml` (or `.yml`) in the ensemble directories, project first.
    pub fn find_ensemble(&self, name: &str) -> Option<PathBuf> {
        self.ensemble_dirs().into_iter().find_map(|(dir, _)| {
            ["yaml", "yml"]
                .iter()
                .map(|ext| dir.join(format!("{name}.{ext}")))
                .find(|p| p.is_file())
        })
    }

    /// Every ensemble file on the search path, project first, each directory sorted.
    pub fn list_ensembles(&self) -> Vec<FoundEnsemble> {
        let mut found: Vec<FoundEnsemble> = Vec::new();
        for (dir, scope) in self.ensemble_dirs() {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
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
}
