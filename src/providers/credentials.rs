//! API keys: from the environment (the profile's `api_key_env`, else the provider's
//! conventional variable), else from the key store that `orc auth set` writes
//! (`~/.config/orc/credentials.json`, mode 0600). A key lives in `ApiKey`, whose `Debug`
//! is redacted and which has no `Display`, so it cannot end up in output, logs or errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ProviderError;
use crate::config::Profile;
use crate::config::spec::ProviderKind;

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

pub fn read_store() -> BTreeMap<String, String> {
    store_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

/// Writes the store with owner-only permissions.
pub fn write_store(keys: &BTreeMap<String, String>) -> std::io::Result<PathBuf> {
    let path = store_path()
        .ok_or_else(|| std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(keys).expect("a map of strings serializes");
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The key of a profile and where it came from, or `None` when the provider needs none.
pub fn lookup(provider: ProviderKind, profile_var: Option<&str>) -> Option<(ApiKey, KeySource)> {
    for var in env_vars(provider, profile_var) {
        if let Some(value) = std::env::var(&var).ok().filter(|v| !v.trim().is_empty()) {
            return Some((ApiKey::new(value.trim().to_string()), KeySource::Env(var)));
        }
    }
    let stored = read_store();
    let path = store_path()?;
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
    fn debug_is_redacted() {
        let key = ApiKey::new("sk-secret-123".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
