//! Configuration: YAML text to validated `Ensemble`s and `Profile`s.
//!
//! Pipeline (STYLE.md 3): read safely (`load`), parse with serde_yaml, check the shape
//! against the schemars schema (`schema`), check the meaning (`validate`), and locate every
//! problem in the text (`locate`). Owns no IO beyond reading the files it is given.

pub mod bounds;
pub mod condition;
mod cycles;
mod discover;
mod error;
mod llm_orc;
mod load;
pub mod locate;
mod model;
mod nested;
mod profiles;
mod read;
mod schema;
mod scripts;
pub mod spec;
mod validate;
mod yaml;

use std::path::Path;

pub use discover::{Dirs, FoundEnsemble, Scope};
pub use error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
pub use llm_orc::Unusable;
pub use load::{Document, MAX_FILE_BYTES, parse_document, read_source};
pub use model::{
    Agent, AgentIndex, Cache, Control, DEFAULT_PROFILE, DedupSettings, DispatchSettings,
    DispatchSource, Ensemble, GenerateSettings, Limits, LoopSettings, MockSettings, Nested,
    NodeKind, OptimizerSettings, Origin, Partition, Price, Profile, ResponseFormat, Script, Stop,
};
pub use nested::{EnsembleLoader, LoadFailure};
pub use profiles::{PriceTable, ProfileSet};
pub use read::{MAX_RECORDING_BYTES, ReadError, human_bytes, read_capped};
pub use schema::{SchemaKind, schema, schema_text};
pub use spec::{InputScope, MockFailure, OnDependencyFailure, OptimizerStrategy, ProviderKind};

/// Loads and validates an ensemble file against `profiles`, with the ensembles it runs
/// (`ensemble:` agents) found next to it. Warnings come back with the ensemble; any error
/// means no ensemble.
pub fn load_ensemble(path: &Path, profiles: &ProfileSet) -> (Option<Ensemble>, ConfigReport) {
    load_ensemble_with(path, profiles, &|_| None)
}

/// As `load_ensemble`; `find` resolves a nested ensemble's name to a file when it is not a
/// path relative to the file that names it.
pub fn load_ensemble_with(
    path: &Path,
    profiles: &ProfileSet,
    find: &dyn Fn(&str) -> Option<std::path::PathBuf>,
) -> (Option<Ensemble>, ConfigReport) {
    let mut stack = Vec::new();
    nested::load(
        path,
        &nested::Loading::new(profiles, find, None),
        &mut stack,
    )
}

/// As `load_ensemble`, finding ensembles named by agents on the search path of `dirs`:
/// those of `ensemble:` and `loop:` now, those a `dispatch:` chooses when it runs.
pub fn load_ensemble_in(
    path: &Path,
    profiles: &ProfileSet,
    dirs: &Dirs,
) -> (Option<Ensemble>, ConfigReport) {
    let find = |name: &str| dirs.find_ensemble(name);
    let mut stack = Vec::new();
    nested::load(
        path,
        &nested::Loading::new(profiles, &find, Some(dirs)),
        &mut stack,
    )
}

/// As `load_ensemble_with`, for text that is no file (`POST /api/validate`): the ensembles
/// its agents run are loaded too, found by name only (`find`), never as paths.
pub fn load_ensemble_text_with(
    file: SourceFile,
    profiles: &ProfileSet,
    find: &dyn Fn(&str) -> Option<std::path::PathBuf>,
) -> (Option<Ensemble>, ConfigReport) {
    let path = std::path::PathBuf::from(&file.name);
    let mut stack = Vec::new();
    nested::load_source(
        file,
        &path,
        &nested::Loading::names_only(profiles, find),
        &mut stack,
    )
}

/// As `load_ensemble`, from text already read.
pub fn load_ensemble_source(
    file: SourceFile,
    profiles: &ProfileSet,
) -> (Option<Ensemble>, ConfigReport) {
    let (doc, report) = parse_document(file, SchemaKind::Ensemble);
    match doc {
        Some(doc) => validate::validate(doc, profiles, report),
        None => (None, report),
    }
}

/// Whether `path` is one of llm-orc's configuration files (`.llm-orc/config.yaml`,
/// `.llm-orc/profiles/*.yaml`), which `check_llm_orc_file` checks.
pub fn is_llm_orc_file(path: &Path) -> bool {
    llm_orc::is_llm_orc_file(path)
}

/// Checks an llm-orc configuration file as orc reads it: every profile orc cannot run is an
/// error naming what to use instead.
pub fn check_llm_orc_file(path: &Path) -> ConfigReport {
    llm_orc::check_file(path)
}

/// The first line of an ensemble file's `description:`, for listings; `None` when the file
/// cannot be read or parsed (within the same bounds as loading it).
pub fn ensemble_description(path: &Path) -> Option<String> {
    let file = read_source(path).ok()?;
    let parsed = yaml::parse(&file.text).ok()?;
    let d = parsed.value.get("description")?.as_str()?;
    Some(d.lines().next().unwrap_or(d).to_string())
}

/// Whether a file holds profiles (`model_profiles:` and no `agents:` at the top level) rather
/// than an ensemble; false when it cannot be read.
pub fn is_profiles_file(path: &Path) -> bool {
    let Ok(file) = read_source(path) else {
        return false;
    };
    let has_top = |key: &str| {
        file.text
            .lines()
            .any(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(':'))
    };
    has_top("model_profiles") && !has_top("agents")
}

/// Validates a profiles file on its own.
pub fn check_profiles_file(path: &Path) -> ConfigReport {
    match read_source(path) {
        Ok(file) => {
            let mut set = ProfileSet::default();
            set.merge_file(file, &|_| Origin::File(path.to_path_buf()))
        }
        Err(e) => {
            let mut report = ConfigReport::default();
            report.push(e);
            report
        }
    }
}
