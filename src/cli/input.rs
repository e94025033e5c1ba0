//! Where a run's input comes from: the argument, `--input`, `--input-file`, stdin, or the
//! ensemble's `default_task`; and reading it within a cap. Reads only what can end: regular
//! files, pipes and sockets, never a device such as `/dev/zero` (issue 13), and never more
//! than `--max-input-bytes` (default 64 MiB: far above any prompt a model takes, far below
//! what would hurt the machine), whole or (`--each-line`) per line.

use std::io::{BufRead, Read};
use std::path::Path;

use super::Context;
use crate::config::human_bytes;
use crate::diagnostics::Exit;

/// `67108864`, `64MiB`, `64M`, `512KiB`, `1GiB`: a size in bytes, at least 1.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => 0,
    };
    match digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a size; write it in bytes or like `64MiB`, `512KiB`, `1GiB`"
        )),
    }
}

/// What stdin is, as far as reading input goes.
pub(crate) enum Stdin {
    /// A terminal: nothing was piped.
    Terminal,
    /// `/dev/null`: piped, and empty.
    Null,
    /// A pipe, a file or a socket: read it.
    Readable {
        /// A regular file with nothing in it.
        empty_file: bool,
    },
    /// A device or something else that may never end (`< /dev/zero`).
    Refused(&'static str),
}

pub(crate) fn stdin_kind() -> Stdin {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Stdin::Terminal;
    }
    stdin_kind_of_fd()
}

#[cfg(unix)]
fn stdin_kind_of_fd() -> Stdin {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    // The metadata of whatever fd 0 is, without taking it over.
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return Stdin::Readable { empty_file: false };
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return Stdin::Readable { empty_file: false };
    };
    let t = meta.file_type();
    if t.is_file() {
        return Stdin::Readable {
            empty_file: meta.len() == 0,
        };
    }
    if t.is_fifo() || t.is_socket() {
        return Stdin::Readable { empty_file: false };
    }
    if t.is_char_device() {
        let is_null = std::fs::metadata("/dev/null").is_ok_and(|null| null.rdev() == meta.rdev());
        return if is_null {
            Stdin::Null
        } else {
            Stdin::Refused("a character device")
        };
    }
    if t.is_dir() {
        return Stdin::Refused("a directory");
    }
    Stdin::Refused("a block device or special file")
}

#[cfg(not(unix))]
fn stdin_kind_of_fd() -> Stdin {
    Stdin::Readable { empty_file: false }
}

/// The refusal of stdin that is not a file or a pipe.
pub(crate) fn refuse_stdin(ctx: &Context, what: &str) -> Exit {
    ctx.error(&format!(
        "stdin is {what}, not a file or a pipe; orc reads input only from what ends"
    ));
    errln!("  help: pipe the input (`cat notes.md | orc invoke ...`) or use --input-file");
    Exit::Invalid
}

fn too_large(ctx: &Context, what: &str, cap: u64) -> Exit {
    ctx.error(&format!(
        "{what} is larger than {}, the limit for inputs",
        human_bytes(cap)
    ));
    errln!(
        "  help: raise it with --max-input-bytes (or ORC_MAX_INPUT_BYTES), e.g. `--max-input-bytes 256MiB`"
    );
    Exit::Invalid
}

/// The whole of `reader`, at most `cap` bytes, as text; `what` names it in errors.
fn read_capped(ctx: &Context, reader: impl Read, what: &str, cap: u64) -> Result<String, Exit> {
    let mut bytes = Vec::new();
    if let Err(e) = reader.take(cap.saturating_add(1)).read_to_end(&mut bytes) {
        ctx.error(&format!("cannot read {what}: {e}"));
        return Err(Exit::Invalid);
    }
    if bytes.len() as u64 > cap {
        return Err(too_large(ctx, what, cap));
    }
    String::from_utf8(bytes).map_err(|_| {
        ctx.error(&format!("{what} is not UTF-8 text"));
        Exit::Invalid
    })
}

/// `--input-file PATH`: a regular file or a pipe (`--input-file <(cmd)`), at most `cap`.
pub(crate) fn read_file(ctx: &Context, path: &Path, cap: u64) -> Result<String, Exit> {
    let shown = format!("`{}`", path.display());
    let meta = std::fs::metadata(path).map_err(|e| {
        ctx.error(&format!("cannot read {shown}: {e}"));
        Exit::Invalid
    })?;
    if let Some(what) = not_readable(&meta) {
        ctx.error(&format!(
            "{shown} is {what}, not a regular file or a pipe; orc reads input only from what ends"
        ));
        return Err(Exit::Invalid);
    }
    if meta.is_file() && meta.len() > cap {
        return Err(too_large(ctx, &shown, cap));
    }
    let file = std::fs::File::open(path).map_err(|e| {
        ctx.error(&format!("cannot read {shown}: {e}"));
        Exit::Invalid
    })?;
    read_capped(ctx, file, &shown, cap)
}

/// Why a file is not read as input, or `None` when it may be.
fn not_readable(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    if t.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() || t.is_socket() {
            return None;
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
    }
    Some("a special file")
}

/// All of stdin, at most `cap` bytes.
pub(crate) fn read_stdin(ctx: &Context, cap: u64) -> Result<String, Exit> {
    read_capped(ctx, std::io::stdin().lock(), "stdin", cap)
}

/// A line of `--each-line` input, or why reading stopped.
pub(crate) enum Line {
    Text(String),
    End,
    Error(String),
}

/// Reads `--each-line` input one line at a time, never holding more than `cap` bytes of
/// one line: a line without an end (`/dev/zero`, a huge single-line file) is an error, not
/// a growing buffer.
pub(crate) struct Lines<R> {
    reader: R,
    cap: u64,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, cap: u64) -> Lines<R> {
        Lines {
            reader,
            cap,
            number: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn next_line(&mut self) -> Line {
        self.buf.clear();
        self.number += 1;
        let limit = self.cap.saturating_add(1);
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf);
        match read {
            Ok(0) => return Line::End,
            Ok(_) => {}
            Err(e) => return Line::Error(format!("cannot read stdin: {e}")),
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() as u64 > self.cap {
            return Line::Error(format!(
                "line {} of stdin is longer than {}, the limit for inputs (--max-input-bytes)",
                self.number,
                human_bytes(self.cap)
            ));
        }
        match String::from_utf8(std::mem::take(&mut self.buf)) {
            Ok(text) => Line::Text(text),
            Err(_) => Line::Error(format!("line {} of stdin is not UTF-8 text", self.number)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999999999999G").is_err());
    }

    fn lines(text: &[u8], cap: u64) -> Vec<String> {
        let mut lines = Lines::new(text, cap);
        let mut out = Vec::new();
        loop {
            match lines.next_line() {
                Line::Text(t) => out.push(t),
                Line::End => return out,
                Line::Error(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }

    #[test]
    fn lines_end_with_or_without_a_newline() {
        assert_eq!(lines(b"a\r\nb\n\nc", 10), ["a", "b", "", "c"]);
    }

    #[test]
    fn a_line_over_the_cap_is_an_error_and_reading_stops() {
        assert_eq!(
            lines(b"short\n0123456789abc\nnever read\n", 10),
            [
                "short".to_string(),
                "error: line 2 of stdin is longer than 10 bytes, the limit for inputs (--max-input-bytes)"
                    .to_string()
            ]
        );
        // Exactly the cap, with or without its newline, fits.
        assert_eq!(
            lines(b"0123456789\n0123456789", 10),
            ["0123456789", "0123456789"]
        );
    }
}
