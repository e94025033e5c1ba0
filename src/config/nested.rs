//! Nested ensembles: an agent with `ensemble: NAME|PATH` runs another ensemble. The
//! referenced files are loaded with the one that names them, so a missing file, an invalid
//! one or a cycle across files (`a.yaml -> b.yaml -> a.yaml`) is a load error, located at
//! the `ensemble:` key.
//!
//! A reference is a path, so it can name any file (`/proc/self/environ`, `/etc/passwd`);
//! issue 13 found their contents printed in the errors. So a nested file must be a regular
//! `.yaml`/`.yml` file that parses as a YAML mapping with `name:` and `agents:` before any
//! of its text is shown; anything else is one error at the `ensemble:` key that says what
//! the file is, never what it holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::load::read_source;
use super::locate::{Locator, PathSeg};
use super::model::{Ensemble, NodeKind};
use super::profiles::ProfileSet;
use super::yaml::YamlProblem;

/// Nesting deeper than this is refused (a chain this long is a mistake, not a design).
pub(super) const MAX_DEPTH: usize = 8;

pub(super) fn load(
    path: &Path,
    profiles: &ProfileSet,
    find: &dyn Fn(&str) -> Option<PathBuf>,
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
    load_source(file, path, profiles, find, stack)
}

fn load_source(
    file: SourceFile,
    path: &Path,
    profiles: &ProfileSet,
    find: &dyn Fn(&str) -> Option<PathBuf>,
    stack: &mut Vec<PathBuf>,
) -> (Option<Ensemble>, ConfigReport) {
    let (ensemble, mut report) = super::load_ensemble_source(file, profiles);
    let Some(mut ensemble) = ensemble else {
        return (None, report);
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ok = true;
    let mut loaded: std::collections::HashMap<PathBuf, Option<Arc<Ensemble>>> =
        std::collections::HashMap::new();
    for i in 0..ensemble.agents.len() {
        let NodeKind::Nested(nested) = &ensemble.agents[i].node else {
            continue;
        };
        let reference = nested.reference.clone();
        let agent = ensemble.agents[i].name.clone();
        let locate = |kind: ConfigErrorKind, e: &Ensemble| {
            let locator = Locator::new(&e.source);
            let at = [
                PathSeg::Key("agents".into()),
                PathSeg::Index(i),
                PathSeg::Key("ensemble".into()),
            ];
            ConfigError::new(kind, &e.source, locator.value_span(&at))
        };
        let candidate = base.join(&reference);
        // Anything there but a directory is the target, so that a FIFO or a device is
        // named as such instead of "cannot be found".
        let target = if std::fs::metadata(&candidate).is_ok_and(|m| !m.is_dir()) {
            Some(candidate)
        } else if !reference.ends_with(".yaml") && !reference.ends_with(".yml") {
            ["yaml", "yml"]
                .iter()
                .map(|ext| base.join(format!("{reference}.{ext}")))
                .find(|p| p.is_file())
                .or_else(|| find(&reference))
        } else {
            None
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
        // Loaded once per file, however many agents run it: a thousand agents naming the
        // same ensemble must not parse it a thousand times.
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
        let (child, child_report) = load_source(file, &target, profiles, find, stack);
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
