//! `orc auth` (stored keys) and `orc profiles check` (can each profile be reached?).

use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Instant;

use super::Context;
use super::args::AuthAction;
use super::output::write_stdout;
use crate::config::ProviderKind;
use crate::diagnostics::Exit;
use crate::providers::credentials::{self, ApiKey};
use crate::providers::{CompletionRequest, Factory, ProviderError};

fn parse_provider(ctx: &Context, name: &str) -> Result<ProviderKind, Exit> {
    match ProviderKind::ALL.iter().find(|p| p.as_str() == name) {
        Some(p) => Ok(*p),
        None => {
            ctx.error(&format!("unknown provider `{name}`"));
            let names: Vec<&str> = ProviderKind::ALL.iter().map(|p| p.as_str()).collect();
            match crate::suggest::closest(name, names.iter().copied()) {
                Some(s) => errln!("  help: did you mean `{s}`?"),
                None => errln!("  help: providers are {}", names.join(", ")),
            }
            Err(Exit::Invalid)
        }
    }
}

pub(crate) fn auth(ctx: &Context, action: AuthAction) -> Exit {
    match action {
        AuthAction::Set { provider } => {
            let provider = match parse_provider(ctx, &provider) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let key = match read_key(provider) {
                Ok(k) if !k.expose().is_empty() => k,
                Ok(_) => {
                    ctx.error("no key given");
                    return Exit::Invalid;
                }
                Err(e) => {
                    ctx.error(&format!("cannot read the key: {e}"));
                    return Exit::Invalid;
                }
            };
            let mut store = match credentials::read_store() {
                Ok(store) => store,
                Err(e) => {
                    ctx.error(&e.to_string());
                    return Exit::Invalid;
                }
            };
            store.insert(provider.as_str().to_string(), key.expose().to_string());
            match credentials::write_store(&store) {
                Ok(path) => {
                    errln!(
                        "saved the key for `{provider}` in {} (readable by you only)",
                        path.display()
                    );
                    Exit::Ok
                }
                Err(e) => {
                    ctx.error(&format!("cannot save the key: {e}"));
                    Exit::Failed
                }
            }
        }
        AuthAction::Remove { provider } => {
            let provider = match parse_provider(ctx, &provider) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let mut store = match credentials::read_store() {
                Ok(store) => store,
                Err(e) => {
                    ctx.error(&e.to_string());
                    return Exit::Invalid;
                }
            };
            if store.remove(provider.as_str()).is_none() {
                errln!("no stored key for `{provider}`");
                return Exit::Ok;
            }
            match credentials::write_store(&store) {
                Ok(path) => {
                    errln!("removed the key for `{provider}` from {}", path.display());
                    Exit::Ok
                }
                Err(e) => {
                    ctx.error(&format!("cannot update the key store: {e}"));
                    Exit::Failed
                }
            }
        }
        AuthAction::List => {
            match credentials::read_store() {
                Ok(_) | Err(credentials::StoreError::NoHome) => {}
                Err(e) => {
                    ctx.error(&e.to_string());
                    return Exit::Invalid;
                }
            }
            let mut out = format!("{:<18}  {}\n", "PROVIDER", "KEY FROM");
            for provider in ProviderKind::ALL
                .into_iter()
                .filter(|p| *p != ProviderKind::Mock)
            {
                let source = match credentials::lookup(provider, None) {
                    Some((_, source)) => source.to_string(),
                    None if credentials::needs_key(provider, None) => format!(
                        "not set (set {} or run `orc auth set {provider}`)",
                        credentials::env_vars(provider, None).join(" or ")
                    ),
                    None => "no key needed".to_string(),
                };
                out.push_str(&format!("{:<18}  {source}\n", provider.as_str()));
            }
            write_stdout(&out)
        }
    }
}

/// A key from a hidden prompt on a terminal, else the first line of stdin.
fn read_key(provider: ProviderKind) -> std::io::Result<ApiKey> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("API key for {provider}: "))?
    } else {
        // A key is a line; a few KiB more is not a key, and an endless stdin must not be read.
        let mut text = String::new();
        std::io::stdin().take(64 * 1024).read_to_string(&mut text)?;
        text.lines().next().unwrap_or("").to_string()
    };
    Ok(ApiKey::new(text.trim().to_string()))
}

pub(crate) fn check_profiles(ctx: &Context, only: Option<&str>, timeout: f64) -> Exit {
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(e) => return e,
    };
    let selected: Vec<_> = profiles
        .iter()
        .filter(|p| only.is_none_or(|n| p.name == n))
        .cloned()
        .collect();
    if selected.is_empty() {
        let name = only.unwrap_or_default();
        ctx.error(&format!("no profile named `{name}`"));
        if let Some(s) = crate::suggest::closest(name, profiles.names()) {
            errln!("  help: did you mean `{s}`?");
        }
        return Exit::Invalid;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ctx.error(&format!("cannot start the async runtime: {e}"));
            return Exit::Failed;
        }
    };
    let timeout = match crate::config::bounds::seconds(
        timeout,
        crate::config::bounds::MIN_TIMEOUT_SECONDS,
        crate::config::bounds::MAX_TIMEOUT_SECONDS,
    ) {
        Ok(t) => t,
        Err(problem) => {
            ctx.error(&format!("`--timeout` {problem}"));
            return Exit::Invalid;
        }
    };
    let results = runtime.block_on(async {
        let mut factory = Factory::default();
        let mut checks = Vec::new();
        for profile in &selected {
            let provider = factory.build(profile);
            let profile = Arc::clone(profile);
            checks.push(tokio::spawn(async move {
                let provider = match provider {
                    Ok(p) => p,
                    Err(e) => return (profile, Err(e), None),
                };
                let request = CompletionRequest {
                    agent: "profiles-check".into(),
                    system: None,
                    prompt: "Reply with OK.".into(),
                    temperature: None,
                    max_tokens: Some(1),
                    options: Default::default(),
                    attempt: 1,
                    seed: 0,
                    deltas: None,
                    generation: None,
                    response_format: None,
                };
                let started = Instant::now();
                let result = tokio::time::timeout(timeout, provider.complete(request))
                    .await
                    .unwrap_or(Err(ProviderError::Timeout));
                (profile, result.map(|_| ()), Some(started.elapsed()))
            }));
        }
        let mut results = Vec::new();
        for check in checks {
            if let Ok(r) = check.await {
                results.push(r);
            }
        }
        results
    });
    let width = results
        .iter()
        .map(|(p, _, _)| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<17}  {:<8}  {}\n",
        "NAME", "PROVIDER", "LATENCY", "STATUS"
    );
    let mut all_ok = true;
    for (profile, result, latency) in &results {
        let status = match result {
            Ok(()) => "reachable".to_string(),
            Err(e) => {
                all_ok = false;
                match e {
                    ProviderError::MissingKey { .. } => format!("no key: {e}"),
                    ProviderError::Auth { .. } => format!("auth failed: {e}"),
                    ProviderError::Http { status: 404, .. } => {
                        format!("model `{}` not found: {e}", profile.model)
                    }
                    ProviderError::Timeout | ProviderError::Connection { .. } => {
                        format!("unreachable: {e}")
                    }
                    other => format!("error: {other}"),
                }
            }
        };
        let latency = latency.map_or_else(|| "-".to_string(), |d| format!("{} ms", d.as_millis()));
        out.push_str(&format!(
            "{:<width$}  {:<17}  {:<8}  {status}\n",
            profile.name,
            profile.provider.as_str(),
            latency
        ));
    }
    let written = write_stdout(&out);
    if written != Exit::Ok {
        return written;
    }
    if all_ok { Exit::Ok } else { Exit::Failed }
}
