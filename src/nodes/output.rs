//! Files that nodes write as they go (`generate`'s `output:`). An engine owns one
//! `OutputFiles`; runs that name the same path (every run of `--each-line`) share one file,
//! created once and appended to a whole line at a time. Writing happens on a thread of its
//! own, never on the async workers.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

enum Line {
    Text(String),
    Flush(tokio::sync::oneshot::Sender<Result<(), String>>),
}

struct Writer {
    tx: Mutex<mpsc::Sender<Line>>,
}

/// The files open in one engine, by absolute path.
#[derive(Default)]
pub struct OutputFiles {
    files: Mutex<HashMap<PathBuf, Arc<Writer>>>,
}

/// One node's handle on a file.
pub struct OutputFile {
    writer: Arc<Writer>,
}

impl OutputFiles {
    /// Opens `path` for a node: created (or emptied) the first time this engine opens it,
    /// appended to after that, or always appended to with `append`.
    pub fn open(&self, path: &Path, append: bool) -> std::io::Result<OutputFile> {
        let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut files = self.files.lock().expect("not poisoned");
        if let Some(writer) = files.get(&key) {
            return Ok(OutputFile {
                writer: Arc::clone(writer),
            });
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<Line>();
        std::thread::Builder::new()
            .name("orc-output".into())
            .spawn(move || write_lines(file, &rx))?;
        let writer = Arc::new(Writer { tx: Mutex::new(tx) });
        files.insert(key, Arc::clone(&writer));
        Ok(OutputFile { writer })
    }
}

/// The writer thread: lines in order; a failure is kept and reported at the next flush.
fn write_lines(file: std::fs::File, rx: &mpsc::Receiver<Line>) {
    let mut out = std::io::BufWriter::new(file);
    let mut error: Option<String> = None;
    loop {
        // Whatever is queued is written in one go; when the queue runs dry the file is
        // flushed, so a process killed with -9 leaves the items found up to then.
        let line = match rx.try_recv() {
            Ok(line) => line,
            Err(mpsc::TryRecvError::Empty) => {
                if error.is_none() {
                    if let Err(e) = out.flush() {
                        error = Some(e.to_string());
                    }
                }
                match rx.recv() {
                    Ok(line) => line,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        match line {
            Line::Text(text) => {
                if error.is_none() {
                    if let Err(e) = out.write_all(text.as_bytes()) {
                        error = Some(e.to_string());
                    }
                }
            }
            Line::Flush(done) => {
                if error.is_none() {
                    if let Err(e) = out.flush() {
                        error = Some(e.to_string());
                    }
                }
                let _ = done.send(error.clone().map_or(Ok(()), Err));
            }
        }
    }
    let _ = out.flush();
}

impl OutputFile {
    /// Queues one line (a newline is added).
    pub fn write_line(&self, mut line: String) {
        line.push('\n');
        let _ = self
            .writer
            .tx
            .lock()
            .expect("not poisoned")
            .send(Line::Text(line));
    }

    /// Waits until everything written so far is on disk; the first write error, if any.
    pub async fn finish(self) -> Result<(), String> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let sent = self
            .writer
            .tx
            .lock()
            .expect("not poisoned")
            .send(Line::Flush(done));
        if sent.is_err() {
            return Err("the writer stopped".into());
        }
        wait.await
            .unwrap_or_else(|_| Err("the writer stopped".into()))
    }
}
