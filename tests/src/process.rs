//! Processes by pid: liveness, children, signals, bounded waits.
//!
//! The servers under test fork (the chat-mio master and its workers, a daemon
//! that is not our child), so the harness tracks them by pid through `/proc`
//! and signals them with kill(2), never by name.

use std::fs;
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

/// How often bounded waits look again.
const POLL: Duration = Duration::from_millis(20);

/// A process id on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub i32);

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The fields of `/proc/PID/stat` that the harness reads.
struct Stat {
    state: char,
    ppid: i32,
    /// Clock ticks after boot when the process started: with the pid, it names
    /// one process even if the pid is reused later.
    start: u64,
}

fn stat(pid: Pid) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{}/stat", pid.0)).ok()?;
    // The command name is in parentheses and may hold blanks: parse after the
    // last ')', where field 3 (state) comes first.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some(Stat { state, ppid, start })
}

/// One process: a pid and its start time, so that a reused pid is never
/// taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    /// Its pid.
    pub pid: Pid,
    start: u64,
}

impl Process {
    /// Names the process that has `pid` now, if one does.
    pub fn of(pid: Pid) -> Option<Process> {
        stat(pid).map(|s| Process { pid, start: s.start })
    }

    /// Tells whether this very process still runs (not a zombie, pid not reused).
    pub fn alive(self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z' && s.state != 'X')
    }
}

/// Tells whether `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn alive(pid: Pid) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Returns the live children of `pid`.
pub fn children(pid: Pid) -> Vec<Pid> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<Pid> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok().map(Pid))
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid.0 && s.state != 'Z'))
        .collect();
    found.sort();
    found
}

/// Returns the live descendants of `pid`, children first.
pub fn descendants(pid: Pid) -> Vec<Pid> {
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    // Bounded: a process tree of a test server is small.
    for _ in 0..8 {
        let next: Vec<Pid> = frontier.iter().flat_map(|&p| children(p)).collect();
        if next.is_empty() {
            break;
        }
        found.extend_from_slice(&next);
        frontier = next;
    }
    found
}

/// Returns the command line of `pid` with blanks for the NULs, or "" if it is gone.
pub fn cmdline(pid: Pid) -> String {
    fs::read(format!("/proc/{}/cmdline", pid.0))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_owned())
        .unwrap_or_default()
}

/// Asks `ps` which of `pids` still run, and returns its lines (`PID STAT ARGS`)
/// for those that are not zombies.
pub fn ps(pids: &[Pid]) -> Vec<String> {
    if pids.is_empty() {
        return Vec::new();
    }
    let list: Vec<String> = pids.iter().map(|p| p.0.to_string()).collect();
    let output = std::process::Command::new("ps")
        .arg("-o")
        .arg("pid=,stat=,args=")
        .arg("-p")
        .arg(list.join(","))
        .output();
    match output {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|stat| !stat.starts_with('Z')))
            .map(str::to_owned)
            .collect(),
        // Without ps, /proc tells the same.
        Err(_) => pids.iter().filter(|&&p| alive(p)).map(|p| format!("{p} ? {}", cmdline(*p))).collect(),
    }
}

/// Returns the CPU time (user and system) `pid` has used, or `None` if it is gone.
pub fn cpu_time(pid: Pid) -> Option<std::time::Duration> {
    let text = fs::read_to_string(format!("/proc/{}/stat", pid.0)).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from 1 with the state as field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Some(std::time::Duration::from_millis((utime + stime) * 1000 / hz))
}

/// Returns the resident memory of `pid` in bytes (`VmRSS`), or `None` if it is gone.
pub fn rss(pid: Pid) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{}/status", pid.0)).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Returns how many descriptors `pid` has open, or `None` if it is gone.
pub fn open_fds(pid: Pid) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{}/fd", pid.0)).ok()?.count())
}

/// Sends `signal` to `pid`; a process already gone is not an error.
pub fn signal(pid: Pid, signal: i32) {
    if pid.0 <= 0 {
        return;
    }
    // SAFETY: kill(2) has no memory effects; a positive pid names one process.
    unsafe {
        libc::kill(pid.0, signal);
    }
}

/// Waits until `pid` is gone or `within` passes; tells whether it is gone.
pub fn wait_gone(pid: Pid, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// Waits for a child to exit within `within`, reaping it.
pub fn wait_child(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            _ => return None,
        }
    }
}

/// Stops `pids`: SIGTERM, up to `grace` to go, then SIGKILL. Returns the ones
/// that needed SIGKILL.
pub fn terminate(pids: &[Pid], grace: Duration) -> Vec<Pid> {
    for &pid in pids {
        signal(pid, libc::SIGTERM);
    }
    kill_stragglers(pids, grace)
}

/// Waits up to `grace` for `pids` to exit, then SIGKILLs the rest and returns them.
pub fn kill_stragglers(pids: &[Pid], grace: Duration) -> Vec<Pid> {
    let deadline = Instant::now() + grace;
    let mut killed = Vec::new();
    for &pid in pids {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_gone(pid, left) {
            signal(pid, libc::SIGKILL);
            wait_gone(pid, Duration::from_secs(5));
            killed.push(pid);
        }
    }
    killed
}

/// Retries `probe` until it returns `Some` or `within` passes.
pub fn eventually<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL * 5);
    }
}
