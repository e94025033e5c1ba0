//! `orc runs`: the run store from the command line: list, show, export, rm, gc.

use std::sync::Arc;

use super::Context;
use super::args::{ExportFormat, ListFormat, RunsAction};
use super::output::write_stdout;
use crate::diagnostics::Exit;
use crate::exec::RunStatus;
use crate::store::{ListFilter, RunRow, Store, StoreError};

pub(crate) fn runs(ctx: &Context, action: Option<RunsAction>, output: ListFormat) -> Exit {
    let action = action.unwrap_or(RunsAction::List {
        ensemble: None,
        status: None,
        limit: 20,
        output,
    });
    let store = match open(ctx) {
        Ok(s) => s,
        // No store yet: nothing recorded, which is a fine answer for `list`.
        Err(StoreError::Missing { .. }) if matches!(action, RunsAction::List { .. }) => {
            return match action {
                RunsAction::List {
                    output: ListFormat::Json,
                    ..
                } => write_stdout("[]\n"),
                _ => {
                    errln!("no runs recorded yet");
                    Exit::Ok
                }
            };
        }
        Err(e) => {
            ctx.error(&e.to_string());
            return Exit::Invalid;
        }
    };
    let result = match action {
        RunsAction::List {
            ensemble,
            status,
            limit,
            output,
        } => list(ctx, &store, ensemble, status, limit, output),
        RunsAction::Show {
            run,
            events,
            output,
        } => show(&store, &run, events, output),
        RunsAction::Export { run, format } => export(&store, &run, format),
        RunsAction::Rm { runs, output } => rm(ctx, &store, &runs, output),
        RunsAction::Gc { older_than, output } => gc(&store, older_than, output),
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            ctx.error(&e.to_string());
            if let StoreError::NotFound(_) = e {
                errln!("  help: `orc runs` lists the recorded runs");
            }
            Exit::Invalid
        }
    }
}

/// The store `orc runs` reads: the default one, which must exist.
pub(crate) fn open(ctx: &Context) -> Result<Arc<Store>, StoreError> {
    let _ = ctx;
    let Some(path) = crate::store::default_path() else {
        return Err(StoreError::Open {
            path: "ORC_STORE=off".into(),
            message: "the run store is turned off".into(),
        });
    };
    Store::open_existing(&path)
}

fn list(
    ctx: &Context,
    store: &Store,
    ensemble: Option<String>,
    status: Option<String>,
    limit: usize,
    output: ListFormat,
) -> Result<Exit, StoreError> {
    if let Some(s) = &status {
        if RunStatus::parse(s).is_none() && s != "running" {
            ctx.error(&format!("unknown status `{s}`"));
            errln!(
                "  help: one of running, succeeded, failed, timed_out, budget_exceeded, interrupted, cancelled"
            );
            return Ok(Exit::Invalid);
        }
    }
    let rows = store.list(&ListFilter {
        ensemble,
        status,
        limit: Some(limit),
        offset: 0,
    })?;
    if output == ListFormat::Json {
        let mut text = serde_json::to_string_pretty(&rows).expect("rows serialize");
        text.push('\n');
        return Ok(write_stdout(&text));
    }
    if rows.is_empty() {
        errln!("no runs recorded");
        return Ok(Exit::Ok);
    }
    Ok(write_stdout(&table(&rows)))
}

fn table(rows: &[RunRow]) -> String {
    let header = [
        "RUN", "ENSEMBLE", "STATUS", "STARTED", "DURATION", "TOKENS", "COST",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.ensemble.clone(),
                r.status.clone(),
                r.started_at
                    .replace('T', " ")
                    .trim_end_matches('Z')
                    .to_string(),
                r.duration_ms
                    .map_or_else(|| "-".into(), |d| format!("{:.2}s", d as f64 / 1000.0)),
                r.tokens.to_string(),
                r.cost_usd
                    .map_or_else(|| "unknown".into(), |c| format!("${c:.4}")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[&str]| {
        let cols: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cols.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for row in &cells {
        line(&mut out, &row.each_ref().map(String::as_str));
    }
    out
}

/// The run document (as `invoke --output json` printed it) plus its calls.
fn document(store: &Store, id: &str) -> Result<serde_json::Value, StoreError> {
    let row = store.run(id)?;
    let state = store.state(id)?;
    let status = RunStatus::parse(&row.status).unwrap_or(RunStatus::Interrupted);
    let mut doc = serde_json::to_value(state.to_outcome(status)).expect("outcomes serialize");
    if let Some(map) = doc.as_object_mut() {
        // A run that did not finish has no document of its own: the store's word counts.
        map.insert("status".into(), serde_json::json!(row.status));
        map.insert("started_at".into(), serde_json::json!(row.started_at));
        map.insert("finished_at".into(), serde_json::json!(row.finished_at));
        map.insert("ensemble_path".into(), serde_json::json!(row.ensemble_path));
        map.insert(
            "calls".into(),
            serde_json::to_value(store.calls(id)?).expect("calls serialize"),
        );
    }
    Ok(doc)
}

fn show(store: &Store, run: &str, events: bool, output: ListFormat) -> Result<Exit, StoreError> {
    let id = store.resolve(run)?;
    if events {
        let mut out = String::new();
        for (_, line) in store.events_raw(&id, 0)? {
            out.push_str(&line);
            out.push('\n');
        }
        return Ok(write_stdout(&out));
    }
    let doc = document(store, &id)?;
    if output == ListFormat::Json {
        let mut text = serde_json::to_string_pretty(&doc).expect("documents serialize");
        text.push('\n');
        return Ok(write_stdout(&text));
    }
    let row = store.run(&id)?;
    let mut out = format!(
        "run       {}\nensemble  {}{}\nstatus    {}\nstarted   {}\nfinished  {}\ntokens    {} in, {} out\ncost      {}\ncalls     {} ({} saved)\n\n",
        row.id,
        row.ensemble,
        row.ensemble_path
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        row.status,
        row.started_at,
        row.finished_at.unwrap_or_else(|| "-".into()),
        row.input_tokens,
        row.output_tokens,
        row.cost_usd
            .map_or_else(|| "unknown".into(), |c| format!("${c:.4}")),
        row.calls,
        row.calls_saved,
    );
    if let Some(agents) = doc["agents"].as_array() {
        for a in agents {
            out.push_str(&format!(
                "  {:<24} {:<10} {:>6} ms  {}\n",
                a["name"].as_str().unwrap_or(""),
                a["status"].as_str().unwrap_or(""),
                a["latency_ms"].as_u64().unwrap_or(0),
                a["error"].as_str().unwrap_or_default(),
            ));
        }
    }
    Ok(write_stdout(&out))
}

fn export(store: &Store, run: &str, format: ExportFormat) -> Result<Exit, StoreError> {
    let id = store.resolve(run)?;
    let text = match format {
        ExportFormat::Json => {
            let mut doc = document(store, &id)?;
            let events: Vec<serde_json::Value> = store
                .events_raw(&id, 0)?
                .into_iter()
                .filter_map(|(_, line)| serde_json::from_str(&line).ok())
                .collect();
            doc["events"] = serde_json::Value::Array(events);
            let mut s = serde_json::to_string_pretty(&doc).expect("documents serialize");
            s.push('\n');
            s
        }
        ExportFormat::Jsonl => {
            let mut s = String::new();
            for (_, line) in store.events_raw(&id, 0)? {
                s.push_str(&line);
                s.push('\n');
            }
            s
        }
        ExportFormat::Csv => {
            let mut s = String::from(
                "seq,agent,path,call,attempt,producer,profile,provider,model,input_tokens,output_tokens,cost_usd,latency_ms,status,error_kind,finish_reason,source,request_hash,at\n",
            );
            for c in store.calls(&id)? {
                let fields = [
                    c.seq.to_string(),
                    c.agent,
                    c.path,
                    c.call.to_string(),
                    c.attempt.to_string(),
                    c.producer.map(|p| p.to_string()).unwrap_or_default(),
                    c.profile,
                    c.provider,
                    c.model,
                    c.input_tokens.to_string(),
                    c.output_tokens.to_string(),
                    c.cost_usd.map(|c| c.to_string()).unwrap_or_default(),
                    c.latency_ms.to_string(),
                    c.status,
                    c.error_kind.unwrap_or_default(),
                    c.finish_reason.unwrap_or_default(),
                    c.source,
                    c.request_hash,
                    c.at,
                ];
                let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                s.push_str(&row.join(","));
                s.push('\n');
            }
            s
        }
    };
    Ok(write_stdout(&text))
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn rm(
    ctx: &Context,
    store: &Store,
    runs: &[String],
    output: ListFormat,
) -> Result<Exit, StoreError> {
    let ids: Vec<String> = runs
        .iter()
        .map(|r| store.resolve(r))
        .collect::<Result<_, _>>()?;
    // A live run's process goes on writing its events and calls: removing its row would
    // leave them behind with no run to list or collect them.
    for id in &ids {
        let run = store.run(id)?;
        if run.status == "running" {
            ctx.error(&format!(
                "run `{id}` is still running{}",
                run.owner_pid
                    .map(|p| format!(" (process {p})"))
                    .unwrap_or_default()
            ));
            errln!("  help: stop it first (Ctrl-C or SIGTERM keeps what it finished)");
            return Ok(Exit::Invalid);
        }
    }
    for id in &ids {
        store.remove(id)?;
    }
    Ok(removed(&ids, output))
}

fn gc(store: &Store, age: std::time::Duration, output: ListFormat) -> Result<Exit, StoreError> {
    let ids = store.gc(age)?;
    Ok(removed(&ids, output))
}

fn removed(ids: &[String], output: ListFormat) -> Exit {
    if output == ListFormat::Json {
        let mut s = serde_json::to_string_pretty(&serde_json::json!({ "removed": ids }))
            .expect("ids serialize");
        s.push('\n');
        return write_stdout(&s);
    }
    for id in ids {
        errln!("removed {id}");
    }
    errln!(
        "{} run{} removed",
        ids.len(),
        if ids.len() == 1 { "" } else { "s" }
    );
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
