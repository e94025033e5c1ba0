//! The run store: every run recorded in an embedded SQLite database (`rusqlite` with its
//! bundled SQLite, WAL mode, versioned migrations), at `$ORC_STORE`, else
//! `$XDG_DATA_HOME/orc/orc.db`, else `~/.local/share/orc/orc.db`.
//!
//! The store subscribes to the engine through `exec::Recorder`: a lossless channel into one
//! writer thread (`writer.rs`) that batches transactions. Reads (`query.rs`: `orc runs`,
//! `orc resume`, the cache, the server) open their own connections. Several `orc` processes
//! can share one file. A store that cannot be opened or written gives one warning; runs go on
//! without it. Never records a key or an auth header: only what events carry.

mod owner;
mod query;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use query::{CallRow, CostRow, ListFilter, RunRow, StoreError};

use crate::exec::{BoxFuture, Event, Recorder, RunRecord, StoredAnswer};

/// How long a connection waits for another process's write before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An open run store.
pub struct Store {
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<writer::Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Idle read connections, reused.
    readers: Mutex<Vec<Connection>>,
    /// Opened read-only (`orc runs` on a store it cannot write): new connections are too.
    read_only: bool,
}

/// Where the store lives when nothing says otherwise, or `None` when `ORC_STORE=off`.
pub fn default_path() -> Option<PathBuf> {
    match std::env::var_os("ORC_STORE") {
        Some(v) if v == "off" || v == "0" || v == "false" => return None,
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        })?;
    Some(data.join("orc").join("orc.db"))
}

/// A `file:` URI for `path` with SQLite URI parameters. Hand-written because it is one loop:
/// every byte but unreserved ones and `/` is percent-encoded.
fn file_uri(path: &Path, query: &str) -> String {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push('?');
    uri.push_str(query);
    uri
}

/// Opens a store that cannot be written (a read-only file or directory), for reading only.
/// Reading a WAL database needs its `-shm` file, which a read-only directory may not let
/// SQLite create; then the file is opened as immutable, which is what it is to us.
fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut last = None;
    for query in ["mode=ro", "immutable=1"] {
        let opened = Connection::open_with_flags(file_uri(path, query), flags).and_then(|conn| {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            schema::check(&conn)?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => return Ok(conn),
            Err(e) => last = Some(e),
        }
    }
    Err(StoreError::open(
        path,
        &last.expect("at least one way to open was tried"),
    ))
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Larger pages suit the event batches (a few KB to MBs each); it only takes effect when
    // the file is created.
    conn.pragma_update(None, "page_size", 8192)?;
    // 32 MiB of page cache: a busy run's inserts stay in memory between checkpoints.
    conn.pragma_update(None, "cache_size", -32_768)?;
    // Checkpoint every ~40 MB of log rather than every 4 MB: pages a busy run rewrites are
    // copied into the database once, not again and again.
    conn.pragma_update(None, "wal_autocheckpoint", 5_000)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with synchronous=NORMAL: a commit survives the process dying (kill -9); only a
    // power loss can take the last transactions.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(())
}

/// Runs `f` again while the database is busy, until `BUSY_TIMEOUT`. The busy timeout alone
/// is not enough while two processes create one store at once: where waiting could deadlock
/// (both hold a read lock and want to write, as switching to WAL does), SQLite answers
/// busy at once instead of waiting.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut wait = Duration::from_millis(2);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

fn open_connection(path: &Path, create: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::open(path, &e))?;
    retry_busy(|| configure(&conn)).map_err(|e| StoreError::open(path, &e))?;
    Ok(conn)
}

impl Store {
    /// Opens (creating when missing) the store at `path` and starts its writer. `warn`
    /// receives the one warning given if writing fails later.
    pub fn open(path: &Path, warn: Box<dyn Fn(String) + Send>) -> Result<Arc<Store>, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let mut conn = open_connection(path, true)?;
        retry_busy(|| schema::migrate(&mut conn)).map_err(|e| StoreError::open(path, &e))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("orc-store".into())
            .spawn({
                let path = path.to_path_buf();
                move || writer::run(conn, &path, &rx, &*warn)
            })
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        Ok(Arc::new(Store {
            path: path.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            readers: Mutex::new(Vec::new()),
            read_only: false,
        }))
    }

    /// Opens an existing store for reading and editing (`orc runs`), without a writer. A
    /// store that cannot be written is opened for reading: runs can still be listed and
    /// shown (removing them fails).
    pub fn open_existing(path: &Path) -> Result<Arc<Store>, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let writable = open_connection(path, false).and_then(|mut conn| {
            retry_busy(|| schema::migrate(&mut conn)).map_err(|e| StoreError::open(path, &e))?;
            Ok(conn)
        });
        let (conn, read_only) = match writable {
            Ok(conn) => (conn, false),
            Err(e) => match open_read_only(path) {
                Ok(conn) => (conn, true),
                Err(_) => return Err(e),
            },
        };
        Ok(Arc::new(Store {
            path: path.to_path_buf(),
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            readers: Mutex::new(vec![conn]),
            read_only,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, msg: writer::Msg) {
        if let Some(tx) = &*self.tx.lock().expect("not poisoned") {
            let _ = tx.send(msg);
        }
    }

    /// Runs `f` with a read connection (reused across calls).
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().expect("not poisoned").pop();
        let conn = match conn {
            Some(c) => c,
            None if self.read_only => open_read_only(&self.path)?,
            None => open_connection(&self.path, false)?,
        };
        let result = f(&conn);
        self.readers.lock().expect("not poisoned").push(conn);
        result
    }

    /// Stops the writer after everything queued is written.
    pub fn close(&self) {
        self.tx.lock().expect("not poisoned").take();
        if let Some(thread) = self.thread.lock().expect("not poisoned").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

impl Recorder for Store {
    fn run_started(&self, run: RunRecord) {
        // Stamped here, not when the writer gets to it: a quick run can be over by then.
        self.send(writer::Msg::RunStarted(run, crate::exec::Timestamp::now()));
    }

    fn events(&self, events: Vec<Arc<Event>>) {
        self.send(writer::Msg::Events(events));
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.send(writer::Msg::Flush(done));
        Box::pin(async move {
            let _ = wait.await;
        })
    }

    fn cached_answer<'a>(
        &'a self,
        request_hash: &'a str,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Option<StoredAnswer>> {
        Box::pin(async move {
            let hash = request_hash.to_string();
            let read = || self.cached(&hash, ttl).ok().flatten();
            // A read is a short blocking call; let the runtime move other tasks away.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
                _ => read(),
            }
        })
    }
}
