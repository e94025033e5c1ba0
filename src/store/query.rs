//! Reading the store back: runs (with the owner check that turns a dead process's `running`
//! run into `interrupted`), a run's events and calls, removal and garbage collection, what
//! `orc resume` needs, cached answers, and spend per profile per day.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::Store;
use super::owner;
use crate::exec::{
    AgentStatus, CallSource, Event, EventKind, ResumeAnswers, ResumeData, RunState, StoredAnswer,
    Timestamp,
};
use crate::providers::{FinishKind, FinishReason, Usage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the run store `{}`: {message}", .path.display())]
    Open { path: PathBuf, message: String },
    #[error("no run store at `{}` yet: no run has been recorded", .path.display())]
    Missing { path: PathBuf },
    #[error("the run store failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("no run `{0}` in the store")]
    NotFound(String),
    #[error("`{prefix}` matches {} runs: {}", .matches.len(), .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("the stored event log of run `{run}` is damaged: {message}")]
    Damaged { run: String, message: String },
}

impl StoreError {
    pub(super) fn open(path: &Path, e: &rusqlite::Error) -> StoreError {
        StoreError::Open {
            path: path.to_path_buf(),
            message: describe(e),
        }
    }
}

/// What went wrong with the store, in words that say what to do: SQLite's own name neither
/// the file nor a remedy.
pub(super) fn describe(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return e.to_string();
    };
    match f.code {
        ErrorCode::NotADatabase => "the file is not an orc store (not a SQLite database)".into(),
        ErrorCode::DatabaseCorrupt => {
            "the file is damaged (move it aside and orc starts a new store)".into()
        }
        ErrorCode::ReadOnly => {
            "it cannot be written (the file or its directory is read-only)".into()
        }
        ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
            "it cannot be opened or created (is its directory writable?)".into()
        }
        ErrorCode::DiskFull => "the disk is full".into(),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            "another process held it locked for too long".into()
        }
        _ => e.to_string(),
    }
}

/// One run, as `orc runs list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub ensemble: String,
    pub ensemble_path: Option<String>,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[serde(skip)]
    pub started_ms: u64,
    #[serde(skip)]
    pub finished_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub agents: u64,
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub calls: u64,
    pub calls_saved: u64,
    #[serde(skip)]
    pub input: String,
    #[serde(skip)]
    pub ensemble_hash: Option<String>,
    #[serde(skip)]
    pub ensemble_source: Option<String>,
    #[serde(skip)]
    pub options: serde_json::Value,
    #[serde(skip)]
    pub last_seq: u64,
    #[serde(skip)]
    pub owner_pid: Option<u32>,
}

/// What `orc runs list` and `GET /api/runs` may filter on.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub ensemble: Option<String>,
    pub status: Option<String>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// One provider call of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    pub seq: u64,
    pub agent: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub call: u64,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<u32>,
    pub request_hash: String,
    pub profile: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
    pub latency_ms: u64,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub source: String,
    pub at: String,
}

/// Spend of one profile on one day.
#[derive(Debug, Clone, Serialize)]
pub struct CostRow {
    pub day: String,
    pub profile: String,
    pub calls: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: Option<f64>,
}

const RUN_COLUMNS: &str = "id, ensemble, ensemble_path, status, started_at, finished_at, agents,
    input_tokens, output_tokens, cost_usd, calls, calls_saved, input, ensemble_hash,
    ensemble_source, options, last_seq, owner_host, owner_pid, owner_started";

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(RunRow, Option<String>, Option<String>)> {
    let started_ms: u64 = r.get(4)?;
    let finished_ms: Option<u64> = r.get(5)?;
    let input_tokens: u64 = r.get(7)?;
    let output_tokens: u64 = r.get(8)?;
    let options: String = r.get(15)?;
    Ok((
        RunRow {
            id: r.get(0)?,
            ensemble: r.get(1)?,
            ensemble_path: r.get(2)?,
            status: r.get(3)?,
            started_at: Timestamp(started_ms).to_rfc3339(),
            finished_at: finished_ms.map(|t| Timestamp(t).to_rfc3339()),
            started_ms,
            finished_ms,
            duration_ms: finished_ms.map(|f| f.saturating_sub(started_ms)),
            agents: r.get(6)?,
            tokens: input_tokens + output_tokens,
            input_tokens,
            output_tokens,
            cost_usd: r.get(9)?,
            calls: r.get(10)?,
            calls_saved: r.get(11)?,
            input: r.get(12)?,
            ensemble_hash: r.get(13)?,
            ensemble_source: r.get(14)?,
            options: serde_json::from_str(&options).unwrap_or_default(),
            last_seq: r.get(16)?,
            owner_pid: r.get(18)?,
        },
        r.get(17)?,
        r.get(19)?,
    ))
}

/// A `running` row whose process is gone is `interrupted`: say so, and write it down.
/// Either way, a run that has not finished has no totals of its own yet: they are what its
/// calls paid so far (written down with the `interrupted`, so a dead run lists what it
/// cost).
fn settle(conn: &Connection, row: (RunRow, Option<String>, Option<String>)) -> RunRow {
    let (mut run, host, started) = row;
    if run.status != "running" {
        return run;
    }
    // Only `provider` rows: a `resume` row repeats one of them, and cached and coalesced
    // answers cost nothing.
    let paid = conn.query_row(
        "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), sum(cost_usd),
                count(cost_usd), count(*), coalesce(sum(source IN ('cache', 'coalesced')), 0)
         FROM calls WHERE run_id = ?1 AND source IN ('provider', 'cache', 'coalesced')",
        params![run.id],
        |r| {
            let saved: u64 = r.get(5)?;
            let calls = r.get::<_, u64>(4)? - saved;
            let priced: u64 = r.get(3)?;
            let cost: Option<f64> = r.get(2)?;
            Ok((
                r.get::<_, u64>(0)?,
                r.get::<_, u64>(1)?,
                cost,
                priced,
                calls,
                saved,
            ))
        },
    );
    if let Ok((input, output, cost, priced, calls, saved)) = paid {
        run.input_tokens = input;
        run.output_tokens = output;
        run.tokens = input + output;
        // Unknown when some call had no known price: never a guessed zero.
        run.cost_usd = if priced == calls + saved {
            Some(cost.unwrap_or(0.0))
        } else {
            None
        };
        run.calls = calls;
        run.calls_saved = saved;
    }
    if !owner::is_alive(host.as_deref(), run.owner_pid, started.as_deref()) {
        run.status = "interrupted".into();
        // A store that cannot be written (read-only) still answers, unsettled on disk.
        let _ = conn.execute(
            "UPDATE runs SET status = 'interrupted', input_tokens = ?2, output_tokens = ?3,
                 cost_usd = ?4, calls = ?5, calls_saved = ?6
             WHERE id = ?1 AND status = 'running'",
            params![
                run.id,
                run.input_tokens,
                run.output_tokens,
                run.cost_usd,
                run.calls,
                run.calls_saved
            ],
        );
    }
    run
}

impl Store {
    /// Runs, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<RunRow>, StoreError> {
        self.with_conn(|conn| {
            let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
            let mut args: Vec<String> = Vec::new();
            if let Some(e) = &filter.ensemble {
                args.push(e.clone());
                sql.push_str(&format!(" AND ensemble = ?{}", args.len()));
            }
            // `interrupted` includes dead `running` rows, settled below.
            if let Some(s) = &filter.status {
                args.push(s.clone());
                if s == "interrupted" {
                    sql.push_str(&format!(" AND status IN (?{}, 'running')", args.len()));
                } else {
                    sql.push_str(&format!(" AND status = ?{}", args.len()));
                }
            }
            sql.push_str(" ORDER BY started_at DESC, id DESC");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), run_row)?;
            let mut out = Vec::new();
            let mut skipped = 0;
            for row in rows {
                if filter.limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
                let run = settle(conn, row?);
                if filter.status.as_ref().is_some_and(|s| *s != run.status) {
                    continue;
                }
                if skipped < filter.offset {
                    skipped += 1;
                    continue;
                }
                out.push(run);
            }
            Ok(out)
        })
    }

    /// The full id of the run that `prefix` names (a unique prefix is enough, as in git).
    pub fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        if prefix.is_empty() {
            return Err(StoreError::NotFound(String::new()));
        }
        self.with_conn(|conn| {
            let exact: Option<String> = conn
                .query_row("SELECT id FROM runs WHERE id = ?1", params![prefix], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = exact {
                return Ok(id);
            }
            let mut stmt = conn
                .prepare("SELECT id FROM runs WHERE substr(id, 1, ?2) = ?1 ORDER BY id LIMIT 11")?;
            let matches: Vec<String> = stmt
                .query_map(params![prefix, prefix.len()], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            match matches.len() {
                0 => Err(StoreError::NotFound(prefix.to_string())),
                1 => Ok(matches.into_iter().next().expect("one match")),
                _ => Err(StoreError::Ambiguous {
                    prefix: prefix.to_string(),
                    matches,
                }),
            }
        })
    }

    pub fn run(&self, id: &str) -> Result<RunRow, StoreError> {
        self.with_conn(|conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                    params![id],
                    run_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            Ok(settle(conn, row))
        })
    }

    /// The stored events of a run after `after` (0 for all), as JSON lines in order.
    pub fn events_raw(&self, id: &str, after: u64) -> Result<Vec<(u64, String)>, StoreError> {
        self.events_raw_page(id, after, usize::MAX)
    }

    /// As `events_raw`, stopping once `limit` events are read (the last stored batch is
    /// read whole), for readers that page through a long log in bounded memory.
    pub fn events_raw_page(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut lines = self.stored_lines(id, after, limit)?;
        self.inflate(id, &mut lines)?;
        Ok(lines)
    }

    /// A run's `run_finished` is stored without its result's agents (their outcomes are in
    /// the `agent_finished` events before it; see `writer.rs`). Readers get it whole again,
    /// exactly as it was published: rebuilt from the events before it.
    fn inflate(&self, id: &str, lines: &mut [(u64, String)]) -> Result<(), StoreError> {
        let damaged = |e: serde_json::Error| StoreError::Damaged {
            run: id.to_string(),
            message: e.to_string(),
        };
        let mut before: Option<Vec<Event>> = None;
        for (seq, line) in lines.iter_mut() {
            if !line.contains("\"type\":\"run_finished\"") {
                continue;
            }
            let event: Event = serde_json::from_str(line).map_err(damaged)?;
            let EventKind::RunFinished { result } = &event.kind else {
                continue;
            };
            if !event.path.is_empty() || !result.agents.is_empty() {
                continue;
            }
            if before.is_none() {
                let all = self.stored_lines(id, 0, usize::MAX)?;
                before = Some(
                    all.iter()
                        .map(|(_, l)| serde_json::from_str(l))
                        .collect::<Result<_, _>>()
                        .map_err(damaged)?,
                );
            }
            let mut state = RunState::new();
            for e in before.iter().flatten().take_while(|e| e.seq < *seq) {
                state.apply(e);
            }
            let status = result.status;
            state.apply(&event);
            let whole = Event {
                kind: EventKind::RunFinished {
                    result: std::sync::Arc::new(state.to_outcome(status)),
                },
                ..event.clone_header()
            };
            *line = serde_json::to_string(&whole).expect("events serialize");
        }
        Ok(())
    }

    /// The event lines as stored.
    fn stored_lines(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT data FROM events WHERE run_id = ?1 AND last_seq > ?2 ORDER BY first_seq",
            )?;
            let mut out = Vec::new();
            for data in stmt.query_map(params![id, after], |r| r.get::<_, String>(0))? {
                for line in data?.lines() {
                    let seq = seq_of(line).ok_or_else(|| StoreError::Damaged {
                        run: id.to_string(),
                        message: format!("no `seq` in `{}`", crate::providers::http::excerpt(line)),
                    })?;
                    if seq > after {
                        out.push((seq, line.to_string()));
                    }
                }
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// The stored events of a run, parsed.
    pub fn events(&self, id: &str) -> Result<Vec<Event>, StoreError> {
        self.stored_lines(id, 0, usize::MAX)?
            .into_iter()
            .map(|(_, line)| {
                serde_json::from_str(&line).map_err(|e| StoreError::Damaged {
                    run: id.to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// The run rebuilt from its events.
    pub fn state(&self, id: &str) -> Result<RunState, StoreError> {
        let mut state = RunState::new();
        for event in self.events(id)? {
            state.apply(&event);
        }
        Ok(state)
    }

    pub fn calls(&self, id: &str) -> Result<Vec<CallRow>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, agent, path, call, attempt, producer, request_hash, profile, provider, model,
                        input_tokens, output_tokens, cost_usd, latency_ms, status, error_kind, error,
                        finish_reason, source, created_at
                 FROM calls WHERE run_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok(CallRow {
                    seq: r.get(0)?,
                    agent: r.get(1)?,
                    path: r.get(2)?,
                    call: r.get(3)?,
                    attempt: r.get(4)?,
                    producer: r.get(5)?,
                    request_hash: r.get(6)?,
                    profile: r.get(7)?,
                    provider: r.get(8)?,
                    model: r.get(9)?,
                    input_tokens: r.get(10)?,
                    output_tokens: r.get(11)?,
                    cost_usd: r.get(12)?,
                    latency_ms: r.get(13)?,
                    status: r.get(14)?,
                    error_kind: r.get(15)?,
                    error: r.get(16)?,
                    finish_reason: r.get(17)?,
                    source: r.get(18)?,
                    at: Timestamp(r.get(19)?).to_rfc3339(),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Deletes a run with its events and calls.
    pub fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute("DELETE FROM events WHERE run_id = ?1", params![id])?;
            tx.execute("DELETE FROM calls WHERE run_id = ?1", params![id])?;
            let n = tx.execute("DELETE FROM runs WHERE id = ?1", params![id])?;
            tx.commit()?;
            if n == 0 {
                return Err(StoreError::NotFound(id.to_string()));
            }
            Ok(())
        })
    }

    /// Deletes finished runs that started more than `age` ago; returns their ids. Running runs
    /// are kept whatever their age.
    pub fn gc(&self, age: Duration) -> Result<Vec<String>, StoreError> {
        let cutoff = Timestamp::now().0.saturating_sub(age.as_millis() as u64);
        let old = self.list(&ListFilter::default())?;
        let ids: Vec<String> = old
            .into_iter()
            .filter(|r| r.started_ms < cutoff && r.status != "running")
            .map(|r| r.id)
            .collect();
        for id in &ids {
            self.remove(id)?;
        }
        if !ids.is_empty() {
            let _ =
                self.with_conn(|conn| Ok(conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?));
        }
        Ok(ids)
    }

    /// An earlier successful answer to the same request, at most `ttl` old.
    pub(crate) fn cached(
        &self,
        hash: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<StoredAnswer>, StoreError> {
        let since = ttl.map_or(0, |t| {
            Timestamp::now().0.saturating_sub(t.as_millis() as u64)
        });
        self.with_conn(|conn| {
            Ok(conn
                .query_row(
                    "SELECT response, input_tokens, output_tokens, cached_input_tokens, cost_usd, finish_reason,
                            finish_reason_raw, reasoning_tokens, usage_unknown
                     FROM calls
                     WHERE request_hash = ?1 AND status = 'ok' AND response IS NOT NULL AND created_at >= ?2
                     ORDER BY created_at DESC LIMIT 1",
                    params![hash, since],
                    |r| {
                        Ok(StoredAnswer {
                            text: r.get(0)?,
                            usage: Usage {
                                input_tokens: r.get(1)?,
                                output_tokens: r.get(2)?,
                                cached_input_tokens: r.get(3)?,
                                reasoning_tokens: r.get(7)?,
                                estimated: false,
                                unknown: r.get(8)?,
                            },
                            cost_usd: r.get(4)?,
                            finish_reason: finish_reason(r.get(5)?, r.get(6)?),
                        })
                    },
                )
                .optional()?)
        })
    }

    /// What `orc resume` starts from: the agents that succeeded, the calls completed by the
    /// others (answered again without a call), and what `generate` nodes had found. The
    /// answers of `generate` producers' calls are not among the calls: their items come back
    /// instead, and the producers go on with new calls (which may well send the same request
    /// again, as every call does without feedback: those are new samples, not repeats).
    pub fn resume_data(&self, id: &str) -> Result<ResumeData, StoreError> {
        let run = self.run(id)?;
        let events = self.events(id)?;
        let mut state = RunState::new();
        for event in &events {
            state.apply(event);
        }
        let succeeded: Vec<_> = state
            .agents
            .iter()
            .filter_map(|a| a.outcome.as_deref())
            .filter(|o| o.status == AgentStatus::Succeeded)
            .cloned()
            .collect();
        let done: HashSet<&str> = succeeded.iter().map(|o| o.name.as_str()).collect();
        let mut generate: BTreeMap<String, crate::nodes::generate::Resume> = BTreeMap::new();
        for event in &events {
            if !event.path.is_empty() {
                continue;
            }
            match &event.kind {
                EventKind::ItemAccepted {
                    agent,
                    text,
                    producer,
                    profile,
                    call,
                    at,
                } if !done.contains(agent.as_str()) => {
                    generate.entry(agent.clone()).or_default().items.push(
                        crate::nodes::generate::Item {
                            text: text.clone(),
                            producer: *producer,
                            profile: profile.clone(),
                            call: *call,
                            at: *at,
                            subtopic: None,
                        },
                    );
                }
                EventKind::CallFinished(c) if !done.contains(c.agent.as_str()) => {
                    if let Some(p) = c.producer {
                        let g = generate.entry(c.agent.clone()).or_default();
                        *g.producer_calls.entry(p).or_insert(0) += 1;
                        g.calls += 1;
                        if c.source.is_paid() {
                            g.usage += c.usage;
                        }
                        g.cost_usd = match (g.calls, g.cost_usd, c.cost_usd) {
                            (1, _, c) => c,
                            (_, Some(a), Some(b)) => Some(a + b),
                            _ => None,
                        };
                    }
                }
                _ => {}
            }
        }
        let answers = self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT request_hash, response, input_tokens, output_tokens, cached_input_tokens, cost_usd,
                        finish_reason, agent, path, source, finish_reason_raw, reasoning_tokens, usage_unknown
                 FROM calls WHERE run_id = ?1 AND status = 'ok' AND response IS NOT NULL
                     AND producer IS NULL ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                let path: String = r.get(8)?;
                let agent: String = r.get(7)?;
                let owner = path.split('/').next().filter(|p| !p.is_empty()).map_or(agent, str::to_string);
                let source: String = r.get(9)?;
                Ok((
                    owner,
                    source,
                    r.get::<_, String>(0)?,
                    StoredAnswer {
                        text: r.get(1)?,
                        usage: Usage {
                            input_tokens: r.get(2)?,
                            output_tokens: r.get(3)?,
                            cached_input_tokens: r.get(4)?,
                            reasoning_tokens: r.get(11)?,
                            estimated: false,
                            unknown: r.get(12)?,
                        },
                        cost_usd: r.get(5)?,
                        finish_reason: finish_reason(r.get(6)?, r.get(10)?),
                    },
                ))
            })?;
            let mut answers = Vec::new();
            for row in rows {
                let (owner, source, hash, answer) = row?;
                // Answers this run paid for, of agents that will run again. A `resume` row
                // repeats a `provider` row of an earlier process of this run: counted once,
                // or a run resumed twice would hand the same answer out twice.
                let paid = source == super::writer::source_name(CallSource::Provider);
                if paid && !done.contains(owner.as_str()) {
                    answers.push((owner, hash, answer));
                }
            }
            Ok(answers)
        })?;
        Ok(ResumeData {
            succeeded,
            answers: ResumeAnswers::new(answers),
            generate: generate.into_iter().collect(),
            last_seq: run.last_seq.max(state.last_seq),
        })
    }

    /// Spend and tokens per profile per day (UTC), newest day first.
    pub fn cost_by_day(&self, days: u32) -> Result<Vec<CostRow>, StoreError> {
        let since = Timestamp::now()
            .0
            .saturating_sub(u64::from(days) * 86_400_000);
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(
                "SELECT date(created_at / 1000, 'unixepoch') AS day, profile, count(*),
                        sum(input_tokens), sum(output_tokens), sum(cost_usd), count(cost_usd)
                 FROM calls WHERE created_at >= ?1 AND source IN ('provider', 'resume')
                 GROUP BY day, profile ORDER BY day DESC, profile",
            )?;
            let rows = stmt.query_map(params![since], |r| {
                let calls: u64 = r.get(2)?;
                let priced: u64 = r.get(6)?;
                Ok(CostRow {
                    day: r.get(0)?,
                    profile: r.get(1)?,
                    calls,
                    input_tokens: r.get(3)?,
                    output_tokens: r.get(4)?,
                    // Unknown when some call had no known price: never a guessed zero.
                    cost_usd: if priced == calls { r.get(5)? } else { None },
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

/// A stored finish reason (normalised kind and the provider's value).
fn finish_reason(kind: Option<String>, raw: Option<String>) -> Option<FinishReason> {
    let kind: FinishKind = serde_json::from_value(serde_json::Value::String(kind?)).ok()?;
    let raw = raw.unwrap_or_else(|| kind.as_str().to_string());
    Some(FinishReason::new(kind, raw))
}

/// The `seq` of a stored event line, read without parsing the whole event.
fn seq_of(line: &str) -> Option<u64> {
    let at = line.find("\"seq\":")? + 6;
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seq_without_parsing() {
        assert_eq!(seq_of(r#"{"run_id":"r","seq":42,"ts":"x"}"#), Some(42));
        assert_eq!(seq_of(r#"{"run_id":"r"}"#), None);
    }
}
