//! Where a `script:` agent's program is found, and where scripts run.
//!
//! A relative `script:` is looked for, in order, relative to the ensemble file, in the
//! project's `.llm-orc/scripts/` and `.llm-orc/`, in the project root (the folder holding
//! `.orc/` or `.llm-orc/`), in each folder of `ORC_SCRIPT_PATH`, then in each `script_path:`
//! folder of the configuration. In every folder it tries the reference as written, with
//! hyphens turned into underscores (`primitives/file-ops/read_file.py` is
//! `primitives/file_ops/read_file.py`, as llm-orc's resolver does), and without a leading
//! `scripts/`. Only regular files count; nothing here reads a script.
//!
//! Scripts of an llm-orc project (one with a `.llm-orc/` directory) run in the project root,
//! as llm-orc runs them; all others run in the ensemble file's folder.

use std::path::{Path, PathBuf};

/// The configured part of the script search path.
#[derive(Debug, Clone, Default)]
pub(super) struct ScriptSearch {
    /// `ORC_SCRIPT_PATH`, in order.
    pub(super) env: Vec<PathBuf>,
    /// `script_path:` folders of the configuration files, highest precedence first.
    pub(super) config: Vec<PathBuf>,
    /// The project of the working directory, for ensemble files outside any project.
    pub(super) cwd_project: Option<Project>,
}

/// A folder holding `.orc/` or `.llm-orc/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Project {
    root: PathBuf,
    /// It has a `.llm-orc/` directory: scripts run in the root and `.llm-orc/scripts/` is
    /// searched.
    llm_orc: bool,
}

impl Project {
    /// The nearest folder at or above `dir` that holds `.orc/` or `.llm-orc/`.
    pub(super) fn containing(dir: &Path) -> Option<Project> {
        dir.ancestors().find_map(|d| {
            let llm_orc = d.join(".llm-orc").is_dir();
            (llm_orc || d.join(".orc").is_dir()).then(|| Project {
                root: d.to_path_buf(),
                llm_orc,
            })
        })
    }
}

/// Why a script was not found: every folder searched, in order.
#[derive(Debug)]
pub(super) struct NotFound {
    pub looked_in: Vec<PathBuf>,
}

impl ScriptSearch {
    /// The project an ensemble file belongs to: the one around it, else the working
    /// directory's.
    fn project_for(&self, ensemble_dir: &Path) -> Option<Project> {
        Project::containing(ensemble_dir).or_else(|| self.cwd_project.clone())
    }

    /// Where the scripts of the ensemble in `ensemble_dir` run.
    pub(super) fn working_dir(&self, ensemble_dir: &Path) -> PathBuf {
        match self.project_for(ensemble_dir) {
            Some(p) if p.llm_orc => p.root,
            _ => ensemble_dir.to_path_buf(),
        }
    }

    /// The folders a relative `script:` is looked for in, in order, without repeats.
    fn folders(&self, ensemble_dir: &Path) -> Vec<PathBuf> {
        let mut folders = vec![ensemble_dir.to_path_buf()];
        if let Some(project) = self.project_for(ensemble_dir) {
            if project.llm_orc {
                let dot = project.root.join(".llm-orc");
                folders.push(dot.join("scripts"));
                folders.push(dot);
            }
            folders.push(project.root);
        }
        folders.extend(self.env.iter().cloned());
        folders.extend(self.config.iter().cloned());
        let mut unique: Vec<PathBuf> = Vec::new();
        for f in folders {
            if !unique.contains(&f) {
                unique.push(f);
            }
        }
        unique
    }

    /// The file `script` (as written in the ensemble in `ensemble_dir`) names.
    pub(super) fn find(&self, ensemble_dir: &Path, script: &str) -> Result<PathBuf, NotFound> {
        let reference = Path::new(script);
        if reference.is_absolute() {
            return if reference.is_file() {
                Ok(reference.to_path_buf())
            } else {
                Err(NotFound {
                    looked_in: Vec::new(),
                })
            };
        }
        let mut forms = vec![script.to_string()];
        let underscored = script.replace('-', "_");
        if underscored != script {
            forms.push(underscored);
        }
        if let Some(rest) = script.strip_prefix("scripts/") {
            forms.push(rest.to_string());
        }
        let folders = self.folders(ensemble_dir);
        folders
            .iter()
            .find_map(|folder| {
                forms
                    .iter()
                    .map(|form| folder.join(form))
                    .find(|candidate| candidate.is_file())
            })
            .ok_or(NotFound { looked_in: folders })
    }
}

/// A folder as errors show it: `a/../b` as `b`, and relative to the working directory when
/// inside it.
pub(super) fn shown(path: &Path) -> String {
    use std::path::Component;
    let mut tidy = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir
                if matches!(tidy.components().next_back(), Some(Component::Normal(_))) =>
            {
                tidy.pop();
            }
            Component::CurDir => {}
            other => tidy.push(other),
        }
    }
    let path = tidy.as_path();
    let cwd = std::env::current_dir().ok();
    let relative = cwd.as_deref().and_then(|c| path.strip_prefix(c).ok());
    match relative {
        Some(r) if r.as_os_str().is_empty() => ".".to_string(),
        Some(r) => r.display().to_string(),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    #[test]
    fn search_order_and_forms() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let ensembles = root.join(".llm-orc/ensembles/team");
        std::fs::create_dir_all(&ensembles).unwrap();
        let lib = root.join("lib");
        let search = ScriptSearch {
            env: vec![lib.clone()],
            config: vec![root.join("more")],
            cwd_project: None,
        };
        let not_found = search.find(&ensembles, "a.py").unwrap_err();
        assert_eq!(
            not_found.looked_in,
            [
                ensembles.clone(),
                root.join(".llm-orc/scripts"),
                root.join(".llm-orc"),
                root.to_path_buf(),
                lib.clone(),
                root.join("more"),
            ]
        );
        touch(&root.join("more/a.py"));
        assert_eq!(
            search.find(&ensembles, "a.py").unwrap(),
            root.join("more/a.py")
        );
        touch(&lib.join("primitives/file_ops/read_file.py"));
        assert_eq!(
            search
                .find(&ensembles, "primitives/file-ops/read_file.py")
                .unwrap(),
            lib.join("primitives/file_ops/read_file.py")
        );
        touch(&root.join(".llm-orc/scripts/tools/x.py"));
        assert_eq!(
            search.find(&ensembles, "scripts/tools/x.py").unwrap(),
            root.join(".llm-orc/scripts/tools/x.py")
        );
        touch(&ensembles.join("a.py"));
        assert_eq!(
            search.find(&ensembles, "a.py").unwrap(),
            ensembles.join("a.py")
        );
        std::fs::create_dir_all(root.join(".llm-orc/scripts/dir.py")).unwrap();
        assert!(
            search.find(&ensembles, "dir.py").is_err(),
            "a folder is no script"
        );
        assert_eq!(search.working_dir(&ensembles), root);
    }

    #[test]
    fn orc_projects_run_scripts_beside_the_ensemble() {
        let tmp = tempfile::tempdir().unwrap();
        let ensembles = tmp.path().join(".orc/ensembles");
        std::fs::create_dir_all(&ensembles).unwrap();
        let search = ScriptSearch::default();
        assert_eq!(search.working_dir(&ensembles), ensembles);
        assert_eq!(
            search.find(&ensembles, "x.py").unwrap_err().looked_in,
            [ensembles.clone(), tmp.path().to_path_buf()]
        );
    }
}
