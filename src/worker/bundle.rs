//! An ensemble as it travels to workers: the file's path and text, and the profile renames
//! the coordinator applied (`--profile-map`). Never a profile's key, never a profile
//! definition from the coordinator's config: a worker loads the text with its own profiles
//! (and resolves scripts on its own disk), so keys stay where calls are made.
//!
//! The coordinator stores each bundle once under its content hash; a worker loads it the
//! first time it sees the hash and keeps the plan (`PlanCache`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_128;

use crate::config::{ProfileSet, SourceFile};
use crate::plan::Plan;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Bundle {
    pub path: String,
    pub text: String,
    /// `OLD=NEW` renames, applied to the worker's profiles before loading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profile_map: Vec<(String, String)>,
}

impl Bundle {
    pub(super) fn of(plan: &Plan, profile_map: &[(String, String)]) -> Bundle {
        // The full path: a worker resolves scripts and their folder from it (on its own
        // disk, at the same path).
        let path = &plan.ensemble.source.path;
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        Bundle {
            path: path.display().to_string(),
            text: plan.ensemble.source.text.to_string(),
            profile_map: profile_map.to_vec(),
        }
    }

    pub(super) fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("bundles serialize");
        format!("{:032x}", xxh3_128(json.as_bytes()))
    }

    /// Loads the ensemble with the worker's profiles. Nested ensembles are not resolved:
    /// their agents run on the coordinator, which sends their own files' jobs.
    pub(super) fn load(&self, profiles: &ProfileSet) -> Result<Plan, String> {
        let mut profiles = profiles.clone();
        for (old, new) in &self.profile_map {
            profiles.alias(old, new)?;
        }
        let file = SourceFile::new(
            std::path::PathBuf::from(&self.path),
            self.path.clone(),
            self.text.as_str(),
        );
        let (ensemble, report) = crate::config::load_ensemble_source(file, &profiles);
        match ensemble {
            Some(e) if !report.has_errors() => Ok(Plan::new(e)),
            _ => {
                let errors: Vec<String> = report
                    .diagnostics
                    .iter()
                    .filter(|d| !d.kind.is_warning())
                    .map(|d| match d.line_col() {
                        Some((line, col)) => format!("line {line}:{col}: {d}"),
                        None => d.to_string(),
                    })
                    .collect();
                Err(format!(
                    "`{}` does not load here: {}",
                    self.path,
                    if errors.is_empty() {
                        "it is invalid".to_string()
                    } else {
                        errors.join("; ")
                    }
                ))
            }
        }
    }
}

/// Most plans a worker keeps loaded.
const KEPT_PLANS: usize = 64;

/// Plans loaded by a worker, by bundle hash (a load error is kept too: the same text with
/// the same profiles fails the same way).
#[derive(Default)]
pub(super) struct PlanCache {
    plans: Mutex<HashMap<String, Result<Arc<Plan>, String>>>,
}

impl PlanCache {
    pub(super) fn get(&self, hash: &str) -> Option<Result<Arc<Plan>, String>> {
        self.plans.lock().expect("not poisoned").get(hash).cloned()
    }

    pub(super) fn insert(&self, hash: &str, plan: Result<Arc<Plan>, String>) {
        let mut plans = self.plans.lock().expect("not poisoned");
        if plans.len() >= KEPT_PLANS {
            // Simplest bound: start over; a plan is reloaded from its bundle when needed.
            plans.clear();
        }
        plans.insert(hash.to_string(), plan);
    }
}
