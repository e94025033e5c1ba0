//! The small commands: validate, plan, list, profiles, schema, init.

use std::path::PathBuf;

use super::Context;
use crate::config::{self, SchemaKind};
use crate::diagnostics::Exit;
use crate::plan::{Plan, PlanFormat, render};

pub(crate) fn validate(ctx: &Context, paths: &[PathBuf]) -> Exit {
    let files: Vec<PathBuf> = if paths.is_empty() {
        let found: Vec<PathBuf> = ctx
            .dirs
            .list_ensembles()
            .into_iter()
            .map(|f| f.path)
            .collect();
        if found.is_empty() {
            ctx.error("no ensembles found on the search path");
            errln!("  help: pass files to check, or run `orc init` to create .orc/ensembles");
            return Exit::Invalid;
        }
        found
    } else {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                // llm-orc keeps ensembles in subfolders; orc's own folders are flat.
                let depth = if in_llm_orc_dir(path) { 16 } else { 1 };
                let mut inside: Vec<PathBuf> = walkdir::WalkDir::new(path)
                    .min_depth(1)
                    .max_depth(depth)
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_file())
                    .map(walkdir::DirEntry::into_path)
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                    .collect();
                inside.sort();
                files.extend(inside);
            } else {
                files.push(path.clone());
            }
        }
        files
    };
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let mut failed = 0usize;
    for file in &files {
        let (summary, report) = if file.file_name().is_some_and(|n| n == "prices.yaml") {
            let report = match config::read_source(file) {
                Ok(source) => config::PriceTable::default().merge_file(source),
                Err(e) => {
                    let mut report = config::ConfigReport::default();
                    report.push(e);
                    report
                }
            };
            ("prices".to_string(), report)
        } else if config::is_llm_orc_file(file) {
            (
                "llm-orc profiles".to_string(),
                config::check_llm_orc_file(file),
            )
        } else if config::is_profiles_file(file) {
            let report = config::check_profiles_file(file);
            ("profiles".to_string(), report)
        } else {
            let (ensemble, report) = config::load_ensemble_in(file, &profiles, &ctx.dirs);
            let summary = ensemble.map_or_else(String::new, |e| {
                format!(
                    "ensemble `{}`, {} agent{}",
                    e.name,
                    e.agents.len(),
                    if e.agents.len() == 1 { "" } else { "s" }
                )
            });
            (summary, report)
        };
        ctx.print_report(&report);
        if report.has_errors() {
            failed += 1;
        } else {
            // A closed stdout (`orc validate | head -1`) must not stop the checking.
            let _ = super::output::write_stdout(&format!("ok  {}  ({summary})\n", file.display()));
        }
    }
    if failed > 0 {
        errln!(
            "{failed} of {} file{} invalid",
            files.len(),
            if files.len() == 1 { "" } else { "s" }
        );
        Exit::Invalid
    } else {
        Exit::Ok
    }
}

/// Whether `path` is `.llm-orc` or inside it.
fn in_llm_orc_dir(path: &std::path::Path) -> bool {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .components()
        .any(|c| c.as_os_str() == ".llm-orc")
}

pub(crate) fn plan(ctx: &Context, ensemble: &str, format: PlanFormat) -> Exit {
    match ctx.load(ensemble) {
        Ok((ensemble, _)) => {
            let plan = Plan::new(ensemble);
            super::output::write_stdout(&render(&plan, format))
        }
        Err(exit) => exit,
    }
}

pub(crate) fn list(ctx: &Context) -> Exit {
    let found = ctx.dirs.list_ensembles();
    if found.is_empty() {
        errln!("no ensembles found");
        let dirs: Vec<String> = ctx
            .dirs
            .ensemble_dirs()
            .iter()
            .map(|(d, _)| d.display().to_string())
            .collect();
        errln!(
            "  looked in: {}",
            if dirs.is_empty() {
                "(no .orc directory and no HOME)".into()
            } else {
                dirs.join(", ")
            }
        );
        errln!("  help: run `orc init` to create .orc/ensembles with an example");
        return Exit::Ok;
    }
    // Every column has a header and every row the same columns (#12). The path, the
    // widest, comes last, so nothing is padded to its width.
    let rows: Vec<(String, String, String, String)> = found
        .iter()
        .map(|f| {
            let mut description = config::ensemble_description(&f.path).unwrap_or_default();
            if f.shadowed {
                description = format!("(shadowed by the project's) {description}")
                    .trim_end()
                    .to_string();
            }
            (
                f.name.clone(),
                f.scope.to_string(),
                f.path.display().to_string(),
                description,
            )
        })
        .collect();
    let width = |column: fn(&(String, String, String, String)) -> &String, header: &str| {
        rows.iter()
            .map(|r| column(r).chars().count())
            .max()
            .unwrap_or(0)
            .max(header.len())
    };
    let (name_w, scope_w, description_w) = (
        width(|r| &r.0, "NAME"),
        width(|r| &r.1, "SCOPE"),
        width(|r| &r.3, "DESCRIPTION"),
    );
    let line = |name: &str, scope: &str, path: &str, description: &str| {
        format!("{name:<name_w$}  {scope:<scope_w$}  {description:<description_w$}  {path}\n")
    };
    let mut out = line("NAME", "SCOPE", "PATH", "DESCRIPTION");
    for (name, scope, path, description) in &rows {
        out.push_str(&line(name, scope, path, description));
    }
    super::output::write_stdout(&out)
}

pub(crate) fn profiles(ctx: &Context) -> Exit {
    let profiles = match ctx.profiles() {
        Ok(p) => p,
        Err(exit) => return exit,
    };
    let width = profiles
        .names()
        .chain(profiles.unusable_profiles().map(|u| u.name.as_str()))
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<17}  {:<24}  {}\n",
        "NAME", "PROVIDER", "MODEL", "ORIGIN"
    );
    for p in profiles.iter() {
        out.push_str(&format!(
            "{:<width$}  {:<17}  {:<24}  {}\n",
            p.name,
            p.provider.as_str(),
            p.model,
            p.origin
        ));
    }
    let unusable: Vec<&config::Unusable> = profiles.unusable_profiles().collect();
    if !unusable.is_empty() {
        out.push_str("\nllm-orc profiles orc cannot run:\n");
        for u in unusable {
            let at = u
                .error
                .line_col()
                .map_or_else(String::new, |(l, c)| format!(":{l}:{c}"));
            out.push_str(&format!(
                "{:<width$}  {:<17}  {:<24}  {}{at}: {}\n",
                u.name,
                u.provider,
                u.model,
                u.path.display(),
                u.error
            ));
        }
    }
    super::output::write_stdout(&out)
}

pub(crate) fn schema(kind: SchemaKind) -> Exit {
    super::output::write_stdout(&config::schema_text(kind))
}

const INIT_CONFIG: &str = "\
# yaml-language-server: $schema=schemas/profiles.schema.json
# Project configuration for orc. Profiles defined here (and in .orc/profiles/*.yaml)
# override the user's (~/.config/orc) and the built-in ones; `orc profiles` lists them.
#
# model_profiles:
#   claude-fast:
#     provider: anthropic
#     model: claude-haiku-4-5
#     api_key_env: ANTHROPIC_API_KEY
model_profiles: {}
";

const INIT_ENSEMBLE: &str = "\
# yaml-language-server: $schema=../schemas/ensemble.schema.json
# Try it: echo 'fn add(a: i32, b: i32) -> i32 { a - b }' | orc invoke example
name: example
description: two reviewers and a synthesizer, on the offline mock model
defaults:
  model_profile: mock
agents:
  - name: correctness
    system_prompt: Find correctness bugs. Be specific.
  - name: clarity
    system_prompt: Suggest how to make this clearer.
  - name: summary
    depends_on: [correctness, clarity]
    system_prompt: Merge the reviews into three short bullet points.
";

pub(crate) fn init(ctx: &Context, force: bool) -> Exit {
    let root = ctx.cwd.join(".orc");
    let ensemble_schema = config::schema_text(SchemaKind::Ensemble);
    let profiles_schema = config::schema_text(SchemaKind::Profiles);
    let files = [
        (root.join("config.yaml"), INIT_CONFIG),
        (root.join("ensembles/example.yaml"), INIT_ENSEMBLE),
        (
            root.join("schemas/ensemble.schema.json"),
            ensemble_schema.as_str(),
        ),
        (
            root.join("schemas/profiles.schema.json"),
            profiles_schema.as_str(),
        ),
    ];
    if !force {
        if let Some((existing, _)) = files.iter().find(|(p, _)| p.exists()) {
            ctx.error(&format!("`{}` already exists", existing.display()));
            errln!("  help: use `orc init --force` to overwrite it");
            return Exit::Invalid;
        }
    }
    for dir in [
        root.join("ensembles"),
        root.join("profiles"),
        root.join("schemas"),
    ] {
        if let Err(e) = std::fs::create_dir_all(&dir) {
            ctx.error(&format!("cannot create `{}`: {e}", dir.display()));
            return Exit::Invalid;
        }
    }
    for (path, text) in &files {
        if let Err(e) = std::fs::write(path, text) {
            ctx.error(&format!("cannot write `{}`: {e}", path.display()));
            return Exit::Invalid;
        }
    }
    errln!(
        "created {}/ with config.yaml, ensembles/example.yaml, profiles/ and schemas/",
        root.display()
    );
    errln!("try: echo 'fn add(a: i32, b: i32) -> i32 {{ a - b }}' | orc invoke example");
    Exit::Ok
}
