//! `churn`: connect, say one line, wait for its own echo, close; over and over.

use std::io;
use std::time::{Duration, Instant};

use crate::net::{Event, Swarm};
use crate::report::Report;

pub fn run(addr: std::net::SocketAddr, parallel: usize, duration: Duration) -> io::Result<Report> {
    let mut swarm = Swarm::new(addr)?;
    // What each swarm slot is waiting for: its own echo, as bytes.
    let mut awaiting: Vec<Option<Vec<u8>>> = Vec::new();
    let (mut cycles, mut failures, mut serial) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    let stop_at = started + duration;
    let mut to_send: Vec<usize> = Vec::new();
    let mut to_close: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        if now < stop_at {
            while swarm.open() < parallel {
                let index = swarm.connect()?;
                if awaiting.len() <= index {
                    awaiting.resize(index + 1, None);
                }
                awaiting[index] = None;
            }
        }
        swarm.turn(Duration::from_millis(20), |i, e| match e {
            Event::Connected => to_send.push(i),
            Event::Line(line) => {
                if let Some(Some(want)) = awaiting.get(i) {
                    if line.strip_prefix(b"You: ") == Some(want.as_slice()) {
                        to_close.push(i);
                    }
                }
            }
            Event::Closed => {
                if awaiting.get(i).is_some_and(Option::is_some) {
                    failures += 1;
                }
                if let Some(slot) = awaiting.get_mut(i) {
                    *slot = None;
                }
            }
        })?;
        for i in to_send.drain(..) {
            serial += 1;
            let text = format!("churn {serial}").into_bytes();
            let mut line = text.clone();
            line.push(b'\n');
            awaiting[i] = Some(text);
            swarm.send(i, &line);
        }
        for i in to_close.drain(..) {
            awaiting[i] = None;
            swarm.close(i);
            cycles += 1;
        }
        if Instant::now() >= stop_at {
            for (i, slot) in awaiting.iter_mut().enumerate() {
                *slot = None;
                swarm.close(i);
            }
            break;
        }
    }
    let secs = duration.as_secs_f64();
    let mut report = Report::new("churn");
    report.int("parallel", parallel as u64);
    report.float("duration_s", secs);
    report.int("cycles", cycles);
    report.float("cycles_per_s", cycles as f64 / secs);
    report.int("failures", failures);
    report.fail_if(failures > 0, "connections closed before their echo");
    report.fail_if(cycles == 0, "no cycle completed");
    Ok(report)
}
