//! The store's one writer: a thread of its own that takes everything recorded from a channel
//! and writes it in batches, one transaction each (whatever queued up while the previous
//! transaction ran), so recording never slows a run and a busy run costs a few inserts per
//! batch. A failure is reported once; the runs go on without the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use rusqlite::{Connection, params};
use xxhash_rust::xxh3::xxh3_128;

use super::owner::this_process;
use crate::exec::{CallSource, CallStatus, Event, EventKind, RunRecord, Timestamp};
use crate::providers::FinishKind;

pub(super) enum Msg {
    /// A run, and when it started.
    RunStarted(RunRecord, Timestamp),
    Events(Vec<Arc<Event>>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Most messages written in one transaction: enough to keep commits rare, few enough that a
/// batch's buffers stay a few MB.
const BATCH: usize = 4_096;

/// How long the writer waits with nothing to do before it checkpoints the log into the
/// database: checkpoints happen while runs wait on their providers, rather than in the
/// burst when agents finish together, and what is left to copy when the store closes
/// (SQLite checkpoints then, so `orc.db` alone holds everything after orc exits) is only
/// what came after the last pause.
const IDLE_CHECKPOINT: Duration = Duration::from_millis(50);

/// Consecutive events of one run, as JSON lines.
struct Blob {
    first: u64,
    last: u64,
    data: Vec<u8>,
}

pub(super) fn run(
    mut conn: Connection,
    path: &Path,
    rx: &Receiver<Msg>,
    warn: &(dyn Fn(String) + Send),
) {
    let mut broken = false;
    let mut batch: Vec<Msg> = Vec::new();
    let size = |m: &Msg| match m {
        Msg::Events(events) => events.len(),
        _ => 1,
    };
    // Frames written since the last checkpoint may be in the log (a previous process's too).
    let mut unchecked = true;
    loop {
        let next = if unchecked {
            rx.recv_timeout(IDLE_CHECKPOINT)
        } else {
            // Nothing new since the last checkpoint: sleep until there is.
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let first = match next {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                // Only waited for with something unchecked.
                if !broken {
                    // PASSIVE: never waits for readers; what it cannot copy now, a later
                    // checkpoint will (and the log's own autocheckpoint bounds it).
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    unchecked = false;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        unchecked = true;
        let mut queued = size(&first);
        batch.push(first);
        while queued < BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    queued += size(&m);
                    batch.push(m);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut flushes = Vec::new();
        if !broken {
            if let Err(e) = write(&mut conn, &mut batch, &mut flushes) {
                broken = true;
                warn(format!(
                    "cannot write the run store `{}`: {}; runs go on without it",
                    path.display(),
                    super::query::describe(&e)
                ));
            }
        }
        for m in batch.drain(..) {
            if let Msg::Flush(done) = m {
                flushes.push(done);
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

fn write(
    conn: &mut Connection,
    batch: &mut Vec<Msg>,
    flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let mut blobs: BTreeMap<Arc<str>, Blob> = BTreeMap::new();
    for m in batch.drain(..) {
        match m {
            Msg::RunStarted(run, at) => run_started(&tx, &run, at)?,
            Msg::Events(events) => {
                for event in events {
                    write_event(&tx, &mut blobs, &event)?;
                }
            }
            Msg::Flush(done) => flushes.push(done),
        }
    }
    store_blobs(&tx, &blobs)?;
    tx.commit()
}

/// Records one event: its row where it has one (calls, the run's end), and its line in the
/// run's batch of the event log.
fn write_event(
    tx: &rusqlite::Transaction<'_>,
    blobs: &mut BTreeMap<Arc<str>, Blob>,
    event: &Arc<Event>,
) -> rusqlite::Result<()> {
    record_event(tx, event)?;
    let blob = blobs.entry(Arc::clone(&event.run_id)).or_insert(Blob {
        first: event.seq,
        last: event.seq,
        data: Vec::new(),
    });
    blob.last = event.seq;
    match &event.kind {
        // The result's agents are in the `agent_finished` events already; a 100,000-agent
        // run must not write them twice (`RunState` puts them back).
        EventKind::RunFinished { result } if event.path.is_empty() && !result.agents.is_empty() => {
            let slim = result.clone_without_agents();
            let stored = Event {
                kind: EventKind::RunFinished {
                    result: Arc::new(slim),
                },
                ..(*event).clone_header()
            };
            serde_json::to_writer(&mut blob.data, &stored).expect("events serialize");
        }
        _ => serde_json::to_writer(&mut blob.data, event).expect("events serialize"),
    }
    blob.data.push(b'\n');
    Ok(())
}

fn store_blobs(
    tx: &rusqlite::Transaction<'_>,
    blobs: &BTreeMap<Arc<str>, Blob>,
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (run_id, first_seq, last_seq, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut seq =
        tx.prepare_cached("UPDATE runs SET last_seq = max(last_seq, ?2) WHERE id = ?1")?;
    for (run_id, blob) in blobs {
        let data = std::str::from_utf8(&blob.data).expect("serde_json writes UTF-8");
        insert.execute(params![&**run_id, blob.first, blob.last, data])?;
        seq.execute(params![&**run_id, blob.last])?;
    }
    Ok(())
}

fn run_started(
    tx: &rusqlite::Transaction<'_>,
    run: &RunRecord,
    at: Timestamp,
) -> rusqlite::Result<()> {
    let me = this_process();
    if run.resumed {
        tx.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, owner_host = ?2, owner_pid = ?3,
                 owner_started = ?4, ensemble_path = coalesce(?5, ensemble_path),
                 ensemble_hash = coalesce(?6, ensemble_hash), ensemble_source = coalesce(?7, ensemble_source)
             WHERE id = ?1",
            params![
                run.id,
                me.host,
                me.pid,
                me.started,
                run.path.as_ref().map(|p| p.display().to_string()),
                run.source.as_deref().map(source_hash),
                run.source,
            ],
        )?;
        return Ok(());
    }
    tx.execute(
        "INSERT INTO runs (id, ensemble, ensemble_path, ensemble_hash, ensemble_source, input, options,
             status, started_at, owner_host, owner_pid, owner_started)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9, ?10, ?11)",
        params![
            run.id,
            run.ensemble,
            run.path.as_ref().map(|p| p.display().to_string()),
            run.source.as_deref().map(source_hash),
            run.source,
            run.input,
            run.options.to_string(),
            at.0,
            me.host,
            me.pid,
            me.started,
        ],
    )?;
    Ok(())
}

/// The hash that tells whether an ensemble file changed.
pub(super) fn source_hash(text: &str) -> String {
    format!("{:032x}", xxh3_128(text.as_bytes()))
}

fn record_event(tx: &rusqlite::Transaction<'_>, event: &Event) -> rusqlite::Result<()> {
    match &event.kind {
        EventKind::CallFinished(call) => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO calls (run_id, seq, agent, path, call, attempt, producer, request_hash,
                     profile, provider, model, input_tokens, output_tokens, cached_input_tokens, cost_usd,
                     latency_ms, status, error_kind, error, finish_reason, source, response, created_at,
                     reasoning_tokens, usage_unknown, finish_reason_raw)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
            )?;
            insert.execute(params![
                &*event.run_id,
                event.seq,
                call.agent,
                event.path.join("/"),
                call.call,
                call.attempt,
                call.producer,
                call.request_hash,
                call.profile,
                call.provider,
                call.model,
                call.usage.input_tokens,
                call.usage.output_tokens,
                call.usage.cached_input_tokens,
                call.cost_usd,
                call.latency_ms,
                match call.status {
                    CallStatus::Ok => "ok",
                    CallStatus::Error => "error",
                },
                call.error_kind,
                call.error,
                call.finish_reason.map(FinishKind::as_str),
                source_name(call.source),
                call.response.as_deref(),
                event.ts.0,
                call.usage.reasoning_tokens,
                call.usage.unknown,
                call.finish_reason_raw,
            ])?;
        }
        EventKind::RunFinished { result } if event.path.is_empty() => {
            let t = &result.totals;
            tx.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, agents = ?4, input_tokens = ?5,
                     output_tokens = ?6, cost_usd = ?7, calls = ?8, calls_saved = ?9
                 WHERE id = ?1",
                params![
                    &*event.run_id,
                    result.status.as_str(),
                    event.ts.0,
                    t.agents,
                    t.usage.input_tokens,
                    t.usage.output_tokens,
                    t.cost_usd,
                    t.attempts,
                    t.calls_saved,
                ],
            )?;
        }
        _ => {}
    }
    Ok(())
}

pub(super) fn source_name(source: CallSource) -> &'static str {
    match source {
        CallSource::Provider => "provider",
        CallSource::Cache => "cache",
        CallSource::Coalesced => "coalesced",
        CallSource::Resume => "resume",
    }
}
