//! Configuration: YAML text to validated `Ensemble`s and `Profile`s.
//!
//! Pipeline (STYLE.md 3): read safely (`load`), parse with serde_yaml, check the shape
//! against the schemars schema (`schema`), check the meaning (`validate`), and locate every
//! problem in the text (`locate`). Owns no IO beyond reading the files it is given.

mod discover;
mod error;
mod load;
pub mod locate;
mod model;
mod profiles;
mod schema;
pub mod spec;
mod validate;

use std::path::Path;

pub use discover::{Dirs, FoundEnsemble, Scope};
pub use error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
pub use load::{Document, MAX_FILE_BYTES, parse_document, read_source};
pub use model::{
    Agent, AgentIndex, DEFAULT_PROFILE, DedupSettings, Ensemble, GenerateSettings, Limits,
    MockSettings, NodeKind, Origin, Price, Profile,
};
pub use profiles::{PriceTable, ProfileSet};
pub use schema::{SchemaKind, schema, schema_text};

/// Loads and validates an ensemble file against `profiles`. Warnings come back with the
/// ensemble; any error means no ensemble.
pub fn load_ensemble(path: &Path, profiles: &ProfileSet) -> (Option<Ensemble>, ConfigReport) {
    match read_source(path) {
        Ok(file) => load_ensemble_source(file, profiles),
        Err(e) => {
            let mut report = ConfigReport::default();
            report.push(e);
            (None, report)
        }
    }
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
