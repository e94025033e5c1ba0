//! Tiny launcher used by bench.py: `rusage_exec OUT PROGRAM [ARGS...]` runs PROGRAM with the
//! inherited stdin/stdout/stderr, waits for it with wait4(2) and writes
//! "<wall ns> <ru_maxrss> <exit code>" to the file OUT.
//!
//! Why not measure from Python directly: Linux charges the pre-exec memory of the spawning
//! process to the child's ru_maxrss (exec_mmap keeps the old mm's high-water mark, and with
//! vfork/posix_spawn the old mm is the parent's). Spawned from Python, every child would report
//! at least the Python interpreter's RSS. Spawned from this ~1 MiB process, the floor is tiny.
//! Built with plain `rustc` (no crates); the struct layout is that of 64-bit Linux and macOS.

use std::process::{Command, exit};
use std::time::Instant;

#[repr(C)]
struct RUsage {
    // ru_utime, ru_stime (two 16-byte timevals), then 14 longs starting with ru_maxrss.
    words: [i64; 18],
}

unsafe extern "C" {
    fn wait4(pid: i32, status: *mut i32, options: i32, rusage: *mut RUsage) -> i32;
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: rusage_exec OUT PROGRAM [ARGS...]");
        exit(2);
    }
    let started = Instant::now();
    let child = match Command::new(&args[1]).args(&args[2..]).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("rusage_exec: cannot run {}: {e}", args[1]);
            exit(127);
        }
    };
    let mut status = 0i32;
    let mut usage = RUsage { words: [0; 18] };
    let pid = child.id() as i32;
    let rc = loop {
        let r = unsafe { wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break r;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r;
        }
    };
    let wall = started.elapsed();
    if rc != pid {
        eprintln!("rusage_exec: wait4 failed: {}", std::io::Error::last_os_error());
        exit(125);
    }
    let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
    let line = format!("{} {} {}\n", wall.as_nanos(), usage.words[4], code);
    if let Err(e) = std::fs::write(&args[0], line) {
        eprintln!("rusage_exec: cannot write {}: {e}", args[0]);
        exit(125);
    }
    exit(code);
}
