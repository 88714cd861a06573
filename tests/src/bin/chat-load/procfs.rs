//! What the server costs, read from /proc: resident memory and CPU time of a
//! process and all its descendants (the chat-mio master and its workers).

use std::fs;

/// Memory and CPU of a process tree at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu_secs: f64,
    pub processes: usize,
}

/// Sums RSS and user+system CPU over `root` and every descendant.
pub fn tree_usage(root: i32) -> Usage {
    let ticks = clock_ticks();
    let mut usage = Usage::default();
    for (_, stat) in tree(root) {
        usage.rss_bytes += stat.rss_pages * PAGE;
        usage.cpu_secs += (stat.utime + stat.stime) as f64 / ticks;
        usage.processes += 1;
    }
    usage
}

/// Resident memory of `root` and of each descendant, by pid.
pub fn tree_rss(root: i32) -> Vec<(i32, u64)> {
    tree(root).into_iter().map(|(pid, stat)| (pid, stat.rss_pages * PAGE)).collect()
}

const PAGE: u64 = 4096;

/// `root` and its descendants, each with its stat line.
fn tree(root: i32) -> Vec<(i32, Stat)> {
    let mut all = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if let Some(stat) = read_stat(pid) {
                all.push((pid, stat));
            }
        }
    }
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        for (child, stat) in &all {
            if stat.ppid == parent && !members.contains(child) {
                members.push(*child);
            }
        }
        i += 1;
    }
    all.retain(|(pid, _)| members.contains(pid));
    all
}

struct Stat {
    ppid: i32,
    utime: u64,
    stime: u64,
    rss_pages: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
        rss_pages: fields.get(21)?.parse().ok()?,
    })
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}
