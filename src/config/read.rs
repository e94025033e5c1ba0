//! Reading the files orc is pointed at: regular files only, never more than a cap, never
//! blocking. `orc validate /dev/zero` used to read forever and a FIFO to block forever
//! (issue 13); every file orc reads (ensembles, profiles, prices, recordings, credentials)
//! goes through `read_capped`.

use std::io::Read;
use std::path::Path;

/// Recordings (`--record`, read back by `--replay`) hold every response of a run; a
/// quarter of a GiB is thousands of large runs' worth.
pub const MAX_RECORDING_BYTES: u64 = 256 * 1024 * 1024;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is a {what}, not a regular file")]
    NotAFile { what: &'static str },
    #[error("it is larger than {}, the limit for {kind}", human_bytes(*.limit))]
    TooLarge { limit: u64, kind: &'static str },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads a whole regular file of at most `limit` bytes. `kind` names what the file is for
/// the error ("ensemble and profile files").
pub fn read_capped(path: &Path, limit: u64, kind: &'static str) -> Result<Vec<u8>, ReadError> {
    // Checked before opening for the message, and again on the open file, which is what
    // counts: the path may change in between.
    check_type(&std::fs::metadata(path)?)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Opening a FIFO for reading blocks until a writer appears; non-blocking, it opens
        // at once and the type check below refuses it. Regular files ignore the flag.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    check_type(&meta)?;
    // procfs files report size 0 and still have content, so the length read is what counts.
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit, kind });
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit, kind });
    }
    Ok(bytes)
}

fn check_type(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let what = if t.is_dir() {
        "directory"
    } else {
        describe_special(t)
    };
    Err(ReadError::NotAFile { what })
}

#[cfg(unix)]
fn describe_special(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn describe_special(_: std::fs::FileType) -> &'static str {
    "special file"
}

/// `4 MiB`, `512 KiB`, `1000 bytes`.
pub fn human_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, "name: a\n").unwrap();
        assert_eq!(read_capped(&path, 100, "x").unwrap(), b"name: a\n");
    }

    #[test]
    fn refuses_files_over_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, vec![b'x'; 2048]).unwrap();
        let e = read_capped(&path, 1024, "ensemble files").unwrap_err();
        assert_eq!(
            e.to_string(),
            "it is larger than 1 KiB, the limit for ensemble files"
        );
    }

    #[test]
    fn refuses_directories_and_devices() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_capped(dir.path(), 100, "x"),
            Err(ReadError::NotAFile { what: "directory" })
        ));
        #[cfg(unix)]
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 100, "x"),
            Err(ReadError::NotAFile {
                what: "character device"
            })
        ));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn procfs_files_are_capped_by_what_is_read() {
        // Reported as 0 bytes long, but longer than 16 bytes.
        let e = read_capped(Path::new("/proc/self/status"), 16, "x").unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
    }
}
