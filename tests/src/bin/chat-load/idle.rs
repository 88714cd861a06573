//! `idle`: hold N connections and measure what they cost the server at rest.

use std::io;
use std::time::{Duration, Instant};

use crate::net::Swarm;
use crate::procfs::{tree_rss, tree_usage};
use crate::report::Report;
use crate::swarmsync::{bring_in, Crowd};

pub fn run(
    addr: std::net::SocketAddr,
    conns: usize,
    server_pid: i32,
    quiet: Duration,
    notice_limit: Duration,
) -> io::Result<Report> {
    let empty = tree_usage(server_pid);
    let mut swarm = Swarm::new(addr)?;
    let mut crowd = Crowd::new(conns);
    let arrival = bring_in(&mut swarm, &mut crowd, conns, 64, notice_limit, |_, _| {})?;
    // Let the server finish what the arrival caused before measuring it at rest.
    swarm.run_until(
        Duration::from_secs(1),
        |i, e| {
            crowd.on_event(i, e);
        },
        || false,
    )?;
    let full = tree_usage(server_pid);
    let full_by_process = tree_rss(server_pid);
    let started = Instant::now();
    swarm.run_until(
        quiet,
        |i, e| {
            crowd.on_event(i, e);
        },
        || false,
    )?;
    let rested = tree_usage(server_pid);
    let held = crowd.open.iter().filter(|&&o| o).count();
    let mut report = Report::new("idle");
    report.int("connections", conns as u64);
    arrival.record(&mut report);
    report.int("accepted", held as u64);
    report.int("server_processes", full.processes as u64);
    report.int("rss_empty_kib", empty.rss_bytes / 1024);
    report.int("rss_full_kib", full.rss_bytes / 1024);
    // Which process holds what: with several workers, each also holds a roster
    // replica of everyone.
    let by_process: Vec<String> =
        full_by_process.iter().map(|(pid, rss)| format!("{pid}:{}", rss / 1024)).collect();
    report.text("rss_full_kib_by_pid", &by_process.join(" "));
    report.float("bytes_per_conn", (full.rss_bytes as f64 - empty.rss_bytes as f64) / held.max(1) as f64);
    let secs = started.elapsed().as_secs_f64();
    report.float("quiet_s", secs);
    report.float("idle_cpu_pct", (rested.cpu_secs - full.cpu_secs) * 100.0 / secs);
    report.fail_if(held == 0, "no connection was accepted");
    Ok(report)
}
