//! The store's tables, and the migrations that bring an older file up to date
//! (`PRAGMA user_version` counts the migrations applied; they run under the write lock, so
//! two processes opening a new store at once create it once).
//!
//! - `runs`: one row per run: what ran (ensemble name, file, its hash and text), on what
//!   input, with which options, by which process (`owner_*`, to tell a dead run from a
//!   running one), its status, times and totals, and the last event number stored.
//! - `events`: the event log, in batches: each row holds consecutive events of one run as
//!   JSON lines (`first_seq..=last_seq`), so recording a busy run is one insert per batch.
//! - `calls`: every provider call: request hash, profile, model, attempt, tokens, cost,
//!   latency, status, error kind, finish reason, where the answer came from, and the answer
//!   text (resume and the cache read it back). Never a key or a header.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: runs, events, calls.
    "
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        ensemble TEXT NOT NULL,
        ensemble_path TEXT,
        ensemble_hash TEXT,
        ensemble_source TEXT,
        input TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        owner_host TEXT,
        owner_pid INTEGER,
        owner_started TEXT,
        agents INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        calls INTEGER NOT NULL DEFAULT 0,
        calls_saved INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started_at ON runs (started_at);
    CREATE INDEX runs_status ON runs (status);

    CREATE TABLE events (
        run_id TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        data TEXT NOT NULL
    );
    CREATE UNIQUE INDEX events_run ON events (run_id, first_seq);

    CREATE TABLE calls (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        agent TEXT NOT NULL,
        path TEXT NOT NULL DEFAULT '',
        call INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        producer INTEGER,
        request_hash TEXT NOT NULL,
        profile TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        usage_unknown INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL,
        latency_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        error_kind TEXT,
        error TEXT,
        finish_reason TEXT,
        finish_reason_raw TEXT,
        source TEXT NOT NULL,
        response TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (run_id, seq)
    );
    CREATE INDEX calls_request ON calls (request_hash, created_at);
    CREATE INDEX calls_created_at ON calls (created_at);
    ",
];

fn mismatch(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISMATCH),
        Some(message),
    )
}

fn newer(version: usize) -> rusqlite::Error {
    mismatch(format!(
        "the store was written by a newer orc (schema version {version}, this orc knows {})",
        MIGRATIONS.len()
    ))
}

/// Applies the migrations the file has not seen yet, all in one transaction.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(newer(version));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    // Two processes may find a new store at once: whoever takes the write lock first
    // migrates, and the other, let in after it, finds the work done.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(newer(version));
    }
    for sql in MIGRATIONS.iter().skip(version) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())?;
    tx.commit()
}

/// Checks that a store opened read-only is at this orc's version (it cannot be migrated).
pub(super) fn check(conn: &Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version.cmp(&MIGRATIONS.len()) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(newer(version)),
        std::cmp::Ordering::Less => Err(mismatch(format!(
            "the store was written by an older orc (schema version {version}) and is read-only, so it cannot be upgraded"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
    }

    #[test]
    fn processes_creating_one_store_together_migrate_it_once() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..10 {
            let path = dir.path().join(format!("orc-{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), std::sync::Arc::clone(&start));
                    std::thread::spawn(move || {
                        let conn = Connection::open(&path).unwrap();
                        super::super::configure(&conn).unwrap();
                        let mut conn = conn;
                        start.wait();
                        migrate(&mut conn)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }
}
