//! `fanout`: C clients in one room, S of them sending numbered, timestamped
//! lines; every delivery is checked for loss, duplication and reordering.

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::net::Swarm;
use crate::procfs::{tree_rss, tree_usage, Usage};
use crate::report::Report;
use crate::swarmsync::{bring_in, Crowd};

/// How long a sender-bound fanout polls on after the last input before it
/// sleeps in the poll. The clients stand for machines of their own: asleep, they
/// would make every write the server sends them also wake this process (on a
/// VM, an interrupt to another core: at 100 clients, 5 - 27% fewer deliveries
/// per second for chat-mio with one worker in four A/B pairs); polling without end
/// would hold a core that the server needs while it has nothing to send.
const SPIN: Duration = Duration::from_micros(200);

/// How a fanout run is shaped.
#[derive(Clone, Debug)]
pub struct Fanout {
    pub clients: usize,
    pub senders: usize,
    pub duration: Duration,
    /// Lines per second per sender; `None` sends as fast as the window allows.
    pub rate: Option<f64>,
    /// Lines a sender may have in flight (sent, own echo not yet back).
    pub window: u32,
    pub server_pid: Option<i32>,
    pub notice_limit: Duration,
    /// Sample the server's RSS this often (the soak's flatness check).
    pub rss_every: Option<Duration>,
}

struct Run {
    base: Instant,
    clients: usize,
    senders: usize,
    next_seq: Vec<u64>,
    in_flight: Vec<u32>,
    sent: Vec<u64>,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    garbled: u64,
    latency: Histogram<u64>,
}

impl Run {
    fn on_line(&mut self, receiver: usize, line: &[u8]) {
        let Some(at) = find(line, b": L ") else { return };
        let Some((sender, seq, stamp)) = parse_numbers(&line[at + 4..]) else {
            self.garbled += 1;
            return;
        };
        let sender = sender as usize;
        if sender >= self.senders || receiver >= self.clients {
            self.garbled += 1;
            return;
        }
        if line.starts_with(b"You: ") {
            if receiver != sender {
                self.garbled += 1;
            }
            self.in_flight[sender] = self.in_flight[sender].saturating_sub(1);
        }
        let now = self.base.elapsed().as_micros() as u64;
        let _ = self.latency.record(now.saturating_sub(stamp).max(1));
        self.delivered += 1;
        let expected = &mut self.next_seq[receiver * self.senders + sender];
        if seq == *expected {
            *expected += 1;
        } else if seq > *expected {
            self.lost += seq - *expected;
            self.reordered += 1;
            *expected = seq + 1;
        } else {
            self.duplicated += 1;
        }
    }

    fn expected_deliveries(&self) -> u64 {
        self.sent.iter().sum::<u64>() * self.clients as u64
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_numbers(text: &[u8]) -> Option<(u64, u64, u64)> {
    let mut fields = text.split(|&b| b == b' ');
    let mut next = || -> Option<u64> { std::str::from_utf8(fields.next()?).ok()?.parse().ok() };
    Some((next()?, next()?, next()?))
}

pub fn run(addr: std::net::SocketAddr, spec: &Fanout) -> io::Result<Report> {
    let base = Instant::now();
    let mut swarm = Swarm::new(addr)?;
    let mut crowd = Crowd::new(spec.clients);
    let senders = spec.senders.min(spec.clients);
    let mut run = Run {
        base,
        clients: spec.clients,
        senders,
        next_seq: vec![0; spec.clients * senders],
        in_flight: vec![0; senders],
        sent: vec![0; senders],
        delivered: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        garbled: 0,
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).map_err(io::Error::other)?,
    };
    let arrival = bring_in(&mut swarm, &mut crowd, spec.clients, 64, spec.notice_limit, |_, _| {})?;
    if crowd.open[..senders].iter().any(|&o| !o) {
        return Err(io::Error::other("a sender was refused by the server"));
    }
    let before: Option<Usage> = spec.server_pid.map(tree_usage);
    let mut rss_samples = Vec::new();
    let mut next_sample = Instant::now();
    let started = Instant::now();
    let stop_at = started + spec.duration;
    let interval = spec.rate.map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    let mut next_due: Vec<Instant> = (0..senders)
        .map(|i| started + interval.map_or(Duration::ZERO, |d| d.mul_f64(i as f64 / senders as f64)))
        .collect();
    let mut lagging = 0u64;
    let mut line = Vec::with_capacity(64);
    let mut delivered_at_stop = 0;
    let mut last_heard = Instant::now();
    loop {
        let now = Instant::now();
        let sending = now < stop_at;
        if !sending && delivered_at_stop == 0 {
            delivered_at_stop = run.delivered.max(1);
        }
        if sending {
            for (i, due_at) in next_due.iter_mut().enumerate() {
                if interval.is_some() && *due_at > now {
                    continue;
                }
                if run.in_flight[i] >= spec.window {
                    if let Some(d) = interval {
                        lagging += 1;
                        *due_at += d;
                    }
                    continue;
                }
                line.clear();
                let stamp = base.elapsed().as_micros() as u64;
                line.extend_from_slice(format!("L {i} {} {stamp}\n", run.sent[i]).as_bytes());
                swarm.send(i, &line);
                run.sent[i] += 1;
                run.in_flight[i] += 1;
                if let Some(d) = interval {
                    *due_at += d;
                }
            }
        } else if run.delivered >= run.expected_deliveries() || now > stop_at + Duration::from_secs(30) {
            break;
        }
        if let (Some(every), Some(pid)) = (spec.rss_every, spec.server_pid) {
            if now >= next_sample {
                rss_samples.push((started.elapsed().as_secs_f64(), tree_rss(pid)));
                next_sample = now + every;
            }
        }
        let wait = match interval {
            Some(_) if sending => {
                next_due.iter().min().map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
            }
            // Only an echo frees a sender's window, and echoes come as
            // readiness: poll on while the server is sending (see `SPIN`),
            // then sleep until it sends again.
            _ if sending && now.duration_since(last_heard) < SPIN => Duration::ZERO,
            _ if sending => stop_at.saturating_duration_since(now),
            _ => Duration::from_millis(20),
        };
        let mut heard = false;
        swarm.turn(wait.min(Duration::from_millis(20)), |i, e| {
            heard = true;
            if let Some(text) = crowd.on_event(i, e) {
                run.on_line(i, text);
            }
        })?;
        if heard {
            last_heard = Instant::now();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = spec.server_pid.map(tree_usage);
    let expected = run.expected_deliveries();
    let missing = expected.saturating_sub(run.delivered);
    let mut report = Report::new("fanout");
    report.int("clients", spec.clients as u64);
    report.int("senders", senders as u64);
    report.float("duration_s", spec.duration.as_secs_f64());
    match spec.rate {
        Some(rate) => report.float("rate_per_sender", rate),
        None => report.int("window", u64::from(spec.window)),
    };
    arrival.record(&mut report);
    report.int("lines_sent", run.sent.iter().sum());
    report.int("deliveries", run.delivered);
    report
        .float("deliveries_per_s", delivered_at_stop.min(run.delivered) as f64 / spec.duration.as_secs_f64());
    if run.latency.is_empty() {
        // Nothing arrived: no latency to speak of, and zero would read as instant.
        for key in ["p50_us", "p99_us", "p999_us", "max_us"] {
            report.text(key, "none");
        }
    } else {
        report.float("p50_us", run.latency.value_at_quantile(0.5) as f64);
        report.float("p99_us", run.latency.value_at_quantile(0.99) as f64);
        report.float("p999_us", run.latency.value_at_quantile(0.999) as f64);
        report.float("max_us", run.latency.max() as f64);
    }
    report.int("lost", run.lost + missing);
    report.int("duplicated", run.duplicated);
    report.int("reordered", run.reordered);
    report.int("garbled", run.garbled);
    report.int("generator_lagged", lagging);
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        report.float("server_cpu_s", cpu);
        report.float("server_cpu_us_per_delivery", cpu * 1e6 / run.delivered.max(1) as f64);
        report.float("server_cpu_pct", cpu * 100.0 / elapsed);
        report.int("server_rss_kib", a.rss_bytes / 1024);
    }
    if !rss_samples.is_empty() {
        report.rss_samples(&rss_samples);
    }
    report.fail_if(
        run.lost + missing + run.duplicated + run.reordered + run.garbled > 0,
        "lines lost, duplicated, reordered or garbled",
    );
    Ok(report)
}
