//! Model profiles: the built-in ones, the user's files, the project's `.llm-orc/` profiles
//! (llm-orc's format, see `llm_orc`) and the project's `.orc/` files, merged in that order
//! (later wins), then the ensemble's own `model_profiles:` on top. The same files carry the
//! `script_path:` part of the script search path (see `scripts`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::bounds;
use super::discover::Dirs;
use super::error::{ConfigError, ConfigErrorKind, ConfigReport, SourceFile};
use super::llm_orc::{self, Unusable};
use super::load::{parse_document, read_source, source_from_bytes};
use super::locate::{Locator, PathSeg};
use super::model::{Limits, MockSettings, Origin, Price, Profile};
use super::schema::SchemaKind;
use super::scripts::{Project, ScriptSearch};
use super::spec::{PricesFileSpec, ProfileSpec, ProviderKind};

/// The shipped mock profiles, compiled in so they exist without any file.
const BUILTIN_PROFILES: &str = include_str!("../../profiles/mock.yaml");
/// The shipped price table, compiled in.
const BUILTIN_PRICES: &str = include_str!("../../profiles/prices.yaml");

/// Model prices by provider and model, for profiles without a `price:` of their own.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: HashMap<(ProviderKind, String), (Price, String)>,
}

impl PriceTable {
    pub fn builtin() -> PriceTable {
        let file = source_from_bytes(
            Path::new("profiles/prices.yaml"),
            "<built-in prices>".into(),
            BUILTIN_PRICES.as_bytes().to_vec(),
        )
        .expect("the built-in prices are UTF-8");
        let mut table = PriceTable::default();
        let report = table.merge_file(file);
        assert!(
            !report.has_errors(),
            "the built-in prices are valid: {report:?}"
        );
        table
    }

    /// Adds the entries of a `prices.yaml`, replacing those of the same provider and model.
    pub fn merge_file(&mut self, file: SourceFile) -> ConfigReport {
        let (doc, mut report) = parse_document(file, SchemaKind::Prices);
        let Some(doc) = doc else { return report };
        let spec = match doc.typed::<PricesFileSpec>(&[]) {
            Ok(spec) => Some(spec),
            Err(problem) => {
                if let Some((kind, path)) = problem {
                    report.push(located(&doc.file, kind, &path));
                }
                None
            }
        };
        if let Some(spec) = spec {
            for (i, e) in spec.prices.into_iter().enumerate() {
                let prices = [
                    ("input_per_mtok", Some(e.input_per_mtok)),
                    ("output_per_mtok", Some(e.output_per_mtok)),
                    ("cached_input_per_mtok", e.cached_input_per_mtok),
                ];
                let bad = prices.iter().find_map(|(key, v)| {
                    let problem = bounds::check((*v)?, 0.0, bounds::MAX_PRICE_PER_MTOK).err()?;
                    Some((key, problem))
                });
                if let Some((key, problem)) = bad {
                    let path = [
                        PathSeg::Key("prices".into()),
                        PathSeg::Index(i),
                        PathSeg::Key((*key).to_string()),
                    ];
                    let kind = ConfigErrorKind::OutOfRange {
                        key: (*key).to_string(),
                        problem,
                    };
                    report.push(located(&doc.file, kind, &path));
                    continue;
                }
                let price = Price {
                    input_per_mtok: e.input_per_mtok,
                    output_per_mtok: e.output_per_mtok,
                    cached_input_per_mtok: e.cached_input_per_mtok.unwrap_or(e.input_per_mtok),
                };
                self.entries.insert((e.provider, e.model), (price, e.as_of));
            }
        }
        report.dedup();
        report
    }

    pub fn get(&self, provider: ProviderKind, model: &str) -> Option<Price> {
        self.entries
            .get(&(provider, model.to_string()))
            .map(|(p, _)| *p)
    }
}

/// Profiles by name, the price table their costs come from, and the script search path
/// configured in the same files.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Arc<Profile>>,
    /// llm-orc profiles orc cannot run, by name (never also in `profiles`).
    unusable: BTreeMap<String, Arc<Unusable>>,
    prices: PriceTable,
    scripts: ScriptSearch,
}

impl ProfileSet {
    pub fn builtin() -> ProfileSet {
        let file = source_from_bytes(
            Path::new("profiles/mock.yaml"),
            "<built-in profiles>".into(),
            BUILTIN_PROFILES.as_bytes().to_vec(),
        )
        .expect("the built-in profiles are UTF-8");
        let mut set = ProfileSet {
            prices: PriceTable::builtin(),
            ..ProfileSet::default()
        };
        let report = set.merge_file(file, &|_| Origin::Builtin);
        assert!(
            !report.has_errors(),
            "the built-in profiles are valid: {report:?}"
        );
        set
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Built-in, then user, then the project's `.llm-orc/`, then the project's `.orc/`
    /// profiles; and the script search path (`ORC_SCRIPT_PATH`, then `script_path:`).
    pub fn load(dirs: &Dirs) -> (ProfileSet, ConfigReport) {
        let mut set = ProfileSet::builtin();
        let mut report = ConfigReport::default();
        // Prices first: profiles without a price of their own look theirs up.
        for dir in dirs.config_dirs() {
            let path = dir.join("prices.yaml");
            if path.is_file() {
                match read_source(&path) {
                    Ok(file) => report.extend(set.prices.merge_file(file)),
                    Err(e) => report.push(e),
                }
            }
        }
        if let Some(user) = &dirs.user {
            set.merge_dir(user, &mut report);
        }
        if let Some(dot) = &dirs.llm_orc {
            let (config, problems) = llm_orc::read_dir(dot, &set.prices);
            report.extend(problems);
            for profile in config.profiles {
                set.insert_read(profile);
            }
            if let Some(list) = &config.script_path {
                set.prepend_script_path(&dot.join("config.yaml"), list);
            }
        }
        if let Some(project) = &dirs.project {
            set.merge_dir(project, &mut report);
        }
        set.scripts.env = std::env::var_os("ORC_SCRIPT_PATH")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        set.scripts.cwd_project = std::env::current_dir()
            .ok()
            .and_then(|cwd| Project::containing(&cwd));
        (set, report)
    }

    /// The profile files of one of orc's configuration directories.
    fn merge_dir(&mut self, dir: &Path, report: &mut ConfigReport) {
        for path in profile_files(dir) {
            match read_source(&path) {
                Ok(file) => {
                    let origin_path = path.clone();
                    report.extend(self.merge_file(file, &|_| Origin::File(origin_path.clone())));
                }
                Err(e) => report.push(e),
            }
        }
    }

    fn insert_read(&mut self, read: llm_orc::Read) {
        match read {
            llm_orc::Read::Usable(profile) => {
                self.unusable.remove(&profile.name);
                self.profiles
                    .insert(profile.name.clone(), Arc::from(profile));
            }
            llm_orc::Read::Unusable(unusable) => {
                self.profiles.remove(&unusable.name);
                self.unusable
                    .insert(unusable.name.clone(), Arc::from(unusable));
            }
        }
    }

    /// `list` (a `script_path:` of the file `from`) goes before the folders of files read
    /// earlier, which have lower precedence.
    fn prepend_script_path(&mut self, from: &Path, list: &serde_json::Value) {
        let base = from.parent().unwrap_or(Path::new(""));
        let folders: Vec<PathBuf> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .map(|p| std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p)))
            .collect();
        self.scripts.config.splice(0..0, folders);
    }

    /// Where `script:` agents' programs are looked for.
    pub(super) fn scripts(&self) -> &ScriptSearch {
        &self.scripts
    }

    /// The llm-orc profile of this name that orc cannot run, if that is what the name means.
    pub fn unusable(&self, name: &str) -> Option<&Unusable> {
        self.unusable.get(name).map(AsRef::as_ref)
    }

    /// Every llm-orc profile orc cannot run, by name.
    pub fn unusable_profiles(&self) -> impl Iterator<Item = &Unusable> {
        self.unusable.values().map(AsRef::as_ref)
    }

    /// Parses a profiles file and adds its profiles, replacing any of the same name.
    pub fn merge_file(
        &mut self,
        file: SourceFile,
        origin: &dyn Fn(&str) -> Origin,
    ) -> ConfigReport {
        let (doc, mut report) = parse_document(file, SchemaKind::Profiles);
        let Some(doc) = doc else { return report };
        if let Some(list) = doc.value.get("script_path") {
            let from = doc.file.path.clone();
            self.prepend_script_path(&from, list);
        }
        if let Some(serde_json::Value::Object(map)) = doc.value.get("model_profiles") {
            let mut specs: BTreeMap<String, ProfileSpec> = BTreeMap::new();
            for name in map.keys() {
                let at = [
                    PathSeg::Key("model_profiles".into()),
                    PathSeg::Key(name.clone()),
                ];
                match doc.typed(&at) {
                    Ok(spec) => {
                        specs.insert(name.clone(), spec);
                    }
                    Err(Some((kind, path))) => report.push(located(&doc.file, kind, &path)),
                    Err(None) => {}
                }
            }
            report.extend(self.merge_specs(&specs, &doc.file, &["model_profiles"], origin));
        }
        report.dedup();
        report
    }

    /// Adds already-parsed profile specs (from a file whose text is `file`; `at` is the
    /// path of the `model_profiles` mapping in it, for locating errors).
    pub fn merge_specs(
        &mut self,
        specs: &BTreeMap<String, ProfileSpec>,
        file: &SourceFile,
        at: &[&str],
        origin: &dyn Fn(&str) -> Origin,
    ) -> ConfigReport {
        let mut report = ConfigReport::default();
        let locator = Locator::new(file);
        for (name, spec) in specs {
            match lower(name, spec, origin(name), &self.prices) {
                Ok(profile) => {
                    self.unusable.remove(name);
                    self.profiles.insert(name.clone(), Arc::new(profile));
                }
                Err((kind, within)) => {
                    let mut path: Vec<PathSeg> = at.iter().map(|s| PathSeg::from(*s)).collect();
                    path.push(PathSeg::Key(name.clone()));
                    let span = if within.is_empty() {
                        locator.key_span(&path)
                    } else {
                        path.extend(within);
                        locator
                            .value_span(&path)
                            .or_else(|| locator.nearest_span(&path))
                    };
                    report.push(ConfigError::new(kind, file, span));
                }
            }
        }
        report
    }

    /// Makes `old` resolve to the profile `new` (`--profile-map old=new`), e.g. to run an
    /// llm-orc ensemble's `default-local` on a profile defined here.
    pub fn alias(&mut self, old: &str, new: &str) -> Result<(), String> {
        if let Some(u) = self.unusable.get(new) {
            return Err(format!(
                "profile `{new}` in `--profile-map {old}={new}` cannot be used: {}",
                u.error
            ));
        }
        let target = self.profiles.get(new).cloned().ok_or_else(|| {
            match crate::suggest::closest(new, self.profiles.keys().map(String::as_str)) {
                Some(s) => format!("unknown profile `{new}` in `--profile-map {old}={new}`; did you mean `{s}`?"),
                None => format!("unknown profile `{new}` in `--profile-map {old}={new}`; `orc profiles` lists them"),
            }
        })?;
        self.unusable.remove(old);
        self.profiles.insert(old.to_string(), target);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.values()
    }
}

/// `*.yaml` files of `DIR/profiles/` (sorted), then `DIR/config.yaml`.
fn profile_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("profiles"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let config = dir.join("config.yaml");
    if config.is_file() {
        files.push(config);
    }
    files
}

/// An error while lowering a profile, and where inside the profile (empty: the profile).
pub(super) type LowerError = (ConfigErrorKind, Vec<PathSeg>);

/// A located error in a file.
fn located(file: &SourceFile, kind: ConfigErrorKind, path: &[PathSeg]) -> ConfigError {
    let locator = Locator::new(file);
    let span = locator
        .value_span(path)
        .or_else(|| locator.nearest_span(path));
    ConfigError::new(kind, file, span)
}

/// Validates one profile spec into a `Profile`.
pub(super) fn lower(
    name: &str,
    spec: &ProfileSpec,
    origin: Origin,
    prices: &PriceTable,
) -> Result<Profile, LowerError> {
    let missing = |key: &str| {
        (
            ConfigErrorKind::ProfileMissingKey {
                profile: name.to_string(),
                provider: spec.provider.to_string(),
                key: key.to_string(),
            },
            Vec::new(),
        )
    };
    let model = match (&spec.model, spec.provider) {
        (Some(m), _) => m.clone(),
        (None, ProviderKind::Mock) => "mock-1".to_string(),
        (None, _) => return Err(missing("model")),
    };
    let durations = profile_numbers(spec)?;
    let limits = spec.limits.clone().unwrap_or_default();
    Ok(Profile {
        name: name.to_string(),
        origin,
        description: spec.description.clone(),
        provider: spec.provider,
        model,
        base_url: spec.base_url.clone(),
        api_key_env: spec.api_key_env.clone(),
        max_tokens: spec.max_tokens,
        temperature: spec.temperature,
        timeout: durations.timeout,
        first_byte_timeout: durations.first_byte_timeout,
        max_response_bytes: spec.max_response_bytes,
        breaker_failures: spec.circuit_breaker.as_ref().and_then(|c| c.failures),
        breaker_cool_down: durations.cool_down,
        fallback: spec.fallback_model_profile.clone(),
        limits: Limits {
            requests_per_minute: limits.requests_per_minute,
            tokens_per_minute: limits.tokens_per_minute,
            max_concurrency: limits.max_concurrency,
        },
        price: match (&spec.price, spec.provider) {
            (Some(p), _) => Some(Price {
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
                cached_input_per_mtok: p.cached_input_per_mtok.unwrap_or(p.input_per_mtok),
            }),
            // The mock costs nothing, and that is known, not assumed.
            (None, ProviderKind::Mock) => Some(Price {
                input_per_mtok: 0.0,
                output_per_mtok: 0.0,
                cached_input_per_mtok: 0.0,
            }),
            (None, provider) => prices.get(provider, spec.model.as_deref().unwrap_or_default()),
        },
        options: spec.options.clone().unwrap_or_default(),
        cache: spec
            .cache
            .as_ref()
            .map(super::validate::cache_policy)
            .transpose()
            .map_err(|problem| {
                (
                    ConfigErrorKind::OutOfRange {
                        key: "cache.ttl".into(),
                        problem,
                    },
                    vec![PathSeg::Key("cache".into()), PathSeg::Key("ttl".into())],
                )
            })?,
        mock: MockSettings {
            latency: Duration::from_millis(spec.latency_ms.unwrap_or(0)),
            jitter: Duration::from_millis(spec.jitter_ms.unwrap_or(0)),
            fail_rate: spec.fail_rate.unwrap_or(0.0),
            fail_attempts: spec.fail_attempts.unwrap_or(0),
            fail_with: spec.fail_with.unwrap_or_default(),
            invalid_json_attempts: spec.invalid_json_attempts.unwrap_or(0),
            vocabulary: spec.vocabulary.unwrap_or(2000),
            zipf: spec.zipf.unwrap_or(1.0),
            yield_rate: spec.yield_rate.unwrap_or(1.0),
            feedback_adherence: spec.feedback_adherence.unwrap_or(0.8),
        },
        system_prompt: None,
    })
}

/// A profile's durations, converted only once their numbers are within bounds.
struct ProfileDurations {
    timeout: Option<Duration>,
    first_byte_timeout: Option<Duration>,
    cool_down: Option<Duration>,
}

/// Every number of a profile within its bounds (also checked by the schema); the first that
/// is not is the error, at its path inside the profile.
fn profile_numbers(spec: &ProfileSpec) -> Result<ProfileDurations, LowerError> {
    let at = |keys: &[&str]| -> Vec<PathSeg> {
        keys.iter()
            .map(|k| PathSeg::Key((*k).to_string()))
            .collect()
    };
    let fail = |keys: &[&str], problem: String| {
        (
            ConfigErrorKind::OutOfRange {
                key: keys.last().copied().unwrap_or_default().to_string(),
                problem,
            },
            at(keys),
        )
    };
    let seconds = |value: Option<f64>, min: f64, max: f64, keys: &[&str]| {
        value
            .map(|v| bounds::seconds(v, min, max).map_err(|p| fail(keys, p)))
            .transpose()
    };
    let number = |value: Option<f64>, min: f64, max: f64, keys: &[&str]| {
        value.map_or(Ok(()), |v| {
            bounds::check(v, min, max)
                .map(drop)
                .map_err(|p| fail(keys, p))
        })
    };
    let count = |value: Option<u64>, min: u64, max: u64, keys: &[&str]| {
        value.map_or(Ok(()), |v| {
            bounds::count(v, min, max)
                .map(drop)
                .map_err(|p| fail(keys, p))
        })
    };
    let (min_t, max_t) = (bounds::MIN_TIMEOUT_SECONDS, bounds::MAX_TIMEOUT_SECONDS);
    let timeout = seconds(spec.timeout_seconds, min_t, max_t, &["timeout_seconds"])?;
    let first_byte_timeout = seconds(
        spec.first_byte_timeout_seconds,
        min_t,
        max_t,
        &["first_byte_timeout_seconds"],
    )?;
    let breaker = spec.circuit_breaker.clone().unwrap_or_default();
    let cool_down = seconds(
        breaker.cool_down_seconds,
        0.0,
        max_t,
        &["circuit_breaker", "cool_down_seconds"],
    )?;
    count(
        breaker.failures.map(u64::from),
        1,
        bounds::MAX_BREAKER_FAILURES,
        &["circuit_breaker", "failures"],
    )?;
    count(
        spec.max_tokens.map(u64::from),
        1,
        bounds::MAX_MAX_TOKENS,
        &["max_tokens"],
    )?;
    number(
        spec.temperature,
        0.0,
        bounds::MAX_TEMPERATURE,
        &["temperature"],
    )?;
    let limits = spec.limits.clone().unwrap_or_default();
    count(
        limits.requests_per_minute.map(u64::from),
        1,
        bounds::MAX_REQUESTS_PER_MINUTE,
        &["limits", "requests_per_minute"],
    )?;
    count(
        limits.tokens_per_minute.map(u64::from),
        1,
        bounds::MAX_TOKENS_PER_MINUTE,
        &["limits", "tokens_per_minute"],
    )?;
    count(
        limits.max_concurrency.map(u64::from),
        1,
        bounds::MAX_CONCURRENCY,
        &["limits", "max_concurrency"],
    )?;
    if let Some(price) = &spec.price {
        let max = bounds::MAX_PRICE_PER_MTOK;
        number(
            Some(price.input_per_mtok),
            0.0,
            max,
            &["price", "input_per_mtok"],
        )?;
        number(
            Some(price.output_per_mtok),
            0.0,
            max,
            &["price", "output_per_mtok"],
        )?;
        number(
            price.cached_input_per_mtok,
            0.0,
            max,
            &["price", "cached_input_per_mtok"],
        )?;
    }
    let ms = bounds::MAX_MOCK_LATENCY_MS;
    count(spec.latency_ms, 0, ms, &["latency_ms"])?;
    count(spec.jitter_ms, 0, ms, &["jitter_ms"])?;
    let attempts = bounds::MAX_MOCK_ATTEMPTS;
    count(
        spec.fail_attempts.map(u64::from),
        0,
        attempts,
        &["fail_attempts"],
    )?;
    count(
        spec.invalid_json_attempts.map(u64::from),
        0,
        attempts,
        &["invalid_json_attempts"],
    )?;
    count(spec.vocabulary.map(u64::from), 1, 64_000, &["vocabulary"])?;
    number(spec.fail_rate, 0.0, 1.0, &["fail_rate"])?;
    number(spec.zipf, 0.0, 4.0, &["zipf"])?;
    number(spec.yield_rate, 0.0, 1.0, &["yield"])?;
    number(spec.feedback_adherence, 0.0, 1.0, &["feedback_adherence"])?;
    Ok(ProfileDurations {
        timeout,
        first_byte_timeout,
        cool_down,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_exist() {
        let set = ProfileSet::builtin();
        let mock = set.get("mock").expect("mock profile");
        assert_eq!(mock.provider, ProviderKind::Mock);
        assert_eq!(mock.origin, Origin::Builtin);
        assert!(set.get("mock-fast").is_some());
    }
}
