//! API keys: from the environment (the profile's `api_key_env`, else the provider's
//! conventional variable), else from the key store that `orc auth set` writes
//! (`~/.config/orc/credentials.json`, mode 0600). A key lives in `ApiKey`, whose `Debug`
//! is redacted and which has no `Display`, so it cannot end up in output, logs or errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ProviderError;
use crate::config::Profile;
use crate::config::ProviderKind;

/// A secret. Read it only with `expose`, only where it goes into a request header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where a key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    Store(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env(var) => write!(f, "environment variable {var}"),
            KeySource::Store(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The environment variables a provider's key is read from, in order.
pub fn env_vars(provider: ProviderKind, profile_var: Option<&str>) -> Vec<String> {
    if let Some(var) = profile_var {
        return vec![var.to_string()];
    }
    match provider {
        ProviderKind::Openai => vec!["OPENAI_API_KEY".into()],
        ProviderKind::Anthropic => vec!["ANTHROPIC_API_KEY".into()],
        ProviderKind::Gemini => vec!["GEMINI_API_KEY".into(), "GOOGLE_API_KEY".into()],
        ProviderKind::Mock | ProviderKind::Ollama | ProviderKind::OpenaiCompatible => Vec::new(),
    }
}

/// Whether calls fail without a key.
pub fn needs_key(provider: ProviderKind, profile_var: Option<&str>) -> bool {
    matches!(
        provider,
        ProviderKind::Openai | ProviderKind::Anthropic | ProviderKind::Gemini
    ) || (profile_var.is_some() && provider != ProviderKind::Mock)
}

/// The key store written by `orc auth set`.
pub fn store_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("orc").join("credentials.json"))
}

/// The key store is a small JSON object; anything bigger is not one.
const MAX_STORE_BYTES: u64 = 1024 * 1024;

/// Why the key store cannot be used. Never holds a key: serde_json's messages give a
/// position, not the text.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set")]
    NoHome,
    #[error("cannot read the key store `{}`: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: crate::config::ReadError,
    },
    #[error(
        "the key store `{}` is not a JSON object of provider names to keys ({message}); fix or remove it",
        .path.display()
    )]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write the key store `{}`: {source}", .path.display())]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The stored keys; empty when there is no store yet. A store that exists but cannot be
/// read or parsed is an error naming it: `orc auth set` must not replace it (dropping the
/// other keys) because one key was being added (issue 13).
pub fn read_store() -> Result<BTreeMap<String, String>, StoreError> {
    let path = store_path().ok_or(StoreError::NoHome)?;
    read_store_at(&path)
}

fn read_store_at(path: &std::path::Path) -> Result<BTreeMap<String, String>, StoreError> {
    let bytes = match crate::config::read_capped(path, MAX_STORE_BYTES, "key stores") {
        Ok(bytes) => bytes,
        Err(crate::config::ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(BTreeMap::new());
        }
        Err(source) => {
            return Err(StoreError::Unreadable {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes the store with owner-only permissions, atomically: a new temporary file next to
/// it, created exclusively (`O_EXCL`, so a symlink planted at its name is never followed
/// and nothing existing is written through), then renamed over the store.
pub fn write_store(keys: &BTreeMap<String, String>) -> Result<PathBuf, StoreError> {
    let path = store_path().ok_or(StoreError::NoHome)?;
    write_store_at(&path, keys)
}

fn write_store_at(
    path: &std::path::Path,
    keys: &BTreeMap<String, String>,
) -> Result<PathBuf, StoreError> {
    let unwritable = |source: std::io::Error| StoreError::Unwritable {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(unwritable)?;
    }
    let text = serde_json::to_string_pretty(keys).expect("a map of strings serializes");
    let tmp = path.with_extension("json.tmp");
    let mut file = match create_exclusive(&tmp) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Left by a run that died, or planted: removing a name never follows it.
            std::fs::remove_file(&tmp).map_err(unwritable)?;
            create_exclusive(&tmp).map_err(unwritable)?
        }
        Err(e) => return Err(unwritable(e)),
    };
    let written = {
        use std::io::Write;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
    };
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(unwritable(e));
    }
    if let Some(dir) = path.parent() {
        // Make the rename itself durable; a failure here loses nothing already written.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(path.to_path_buf())
}

/// A new file, owner-only, failing if anything (a symlink included) is at `path`.
fn create_exclusive(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// The key of a profile and where it came from, or `None` when the provider needs none.
pub fn lookup(provider: ProviderKind, profile_var: Option<&str>) -> Option<(ApiKey, KeySource)> {
    for var in env_vars(provider, profile_var) {
        if let Some(value) = std::env::var(&var).ok().filter(|v| !v.trim().is_empty()) {
            return Some((ApiKey::new(value.trim().to_string()), KeySource::Env(var)));
        }
    }
    let path = store_path()?;
    let stored = match read_store_at(&path) {
        Ok(stored) => stored,
        Err(e) => {
            // The run goes on without stored keys; `orc auth` commands refuse the file.
            tracing::warn!(error = %e, "ignoring the key store");
            return None;
        }
    };
    stored
        .get(provider.as_str())
        .map(|k| (ApiKey::new(k.clone()), KeySource::Store(path)))
}

/// The key for a profile, or the error that names what to set.
pub fn key_for(profile: &Profile) -> Result<Option<ApiKey>, ProviderError> {
    let var = profile.api_key_env.as_deref();
    match lookup(profile.provider, var) {
        Some((key, _)) => Ok(Some(key)),
        None if needs_key(profile.provider, var) => Err(ProviderError::MissingKey {
            variable: env_vars(profile.provider, var).join(" or "),
            provider: profile.provider.to_string(),
        }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_store_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        std::fs::write(&path, "{\"openai\": \"sk-1\",").unwrap();
        let e = read_store_at(&path).unwrap_err();
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert!(!e.to_string().contains("sk-1"), "{e}");
    }

    #[test]
    fn missing_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_store_at(&dir.path().join("credentials.json"))
                .unwrap()
                .is_empty()
        );
    }

    #[cfg(unix)]
    #[test]
    fn writes_never_follow_a_planted_temp_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("json.tmp")).unwrap();
        let keys = BTreeMap::from([("openai".to_string(), "sk-1".to_string())]);
        write_store_at(&path, &keys).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(read_store_at(&path).unwrap(), keys);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn debug_is_redacted() {
        let key = ApiKey::new("sk-secret-123".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
