//! Which process owns a running run, and whether it is still alive: a run whose process died
//! (`kill -9`, power loss) must list as `interrupted`, never as `running`. A process is
//! named by host, pid and start time, so a recycled pid is not mistaken for the owner.

use std::sync::OnceLock;

/// This process.
pub(super) struct Owner {
    pub host: String,
    pub pid: u32,
    pub started: String,
}

pub(super) fn this_process() -> &'static Owner {
    static OWNER: OnceLock<Owner> = OnceLock::new();
    OWNER.get_or_init(|| {
        let pid = std::process::id();
        Owner {
            host: host_name(),
            pid,
            started: start_time(pid).unwrap_or_default(),
        }
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The start time of a process (clock ticks since boot, from `/proc`), or `None` when it
/// does not exist.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the command name.
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Whether the process that recorded a run is still running it. Runs owned by another host
/// cannot be checked and are taken at their word.
pub(super) fn is_alive(host: Option<&str>, pid: Option<u32>, started: Option<&str>) -> bool {
    let me = this_process();
    let (Some(host), Some(pid)) = (host, pid) else {
        return false;
    };
    if host != me.host {
        return true;
    }
    if pid == me.pid {
        return started.is_none_or(|s| s == me.started);
    }
    if std::path::Path::new("/proc/self/stat").exists() {
        return match (start_time(pid), started) {
            (Some(now), Some(then)) if !then.is_empty() => now == then,
            (Some(_), _) => true,
            (None, _) => false,
        };
    }
    // No /proc: ask the kernel whether the pid exists.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = this_process();
        assert!(is_alive(Some(&me.host), Some(me.pid), Some(&me.started)));
        // Pid numbers near the top of the range are not in use on a test machine.
        assert!(!is_alive(Some(&me.host), Some(4_194_000), Some("1")));
        assert!(!is_alive(
            Some(&me.host),
            Some(me.pid),
            Some("not-the-start-time")
        ));
    }
}
