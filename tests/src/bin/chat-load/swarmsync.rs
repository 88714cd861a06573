//! Bringing a crowd in: connect many clients, wait for the join notices, and
//! synchronise on a line everyone must see before measuring anything.

use std::io;
use std::time::{Duration, Instant};

use crate::net::{Event, Swarm};
use crate::report::Report;

/// What happened while the crowd connected.
#[derive(Debug, Default, Clone)]
pub struct Arrival {
    /// Clients whose TCP connection came up.
    pub connected: usize,
    /// Clients told `Error: server full`, or closed before they were in.
    pub refused: usize,
    /// Seconds from the first connect to the last completed one.
    pub connect_secs: f64,
    /// Seconds from the last completed connect until every `is connected`
    /// notice arrived; `None` if they did not all arrive in time.
    pub notices_secs: Option<f64>,
    /// Every client saw the line said after the arrival: the server had
    /// delivered the arrival's output before the measuring began. When not,
    /// the figures that follow include the server still working through it.
    pub caught_up: bool,
}

impl Arrival {
    /// Puts the arrival's figures in `report`, and fails it if the server had
    /// not caught up before the measuring began.
    pub fn record(&self, report: &mut Report) {
        report.int("connected", self.connected as u64);
        report.int("refused", self.refused as u64);
        report.float("connect_s", self.connect_secs);
        match self.notices_secs {
            Some(s) => report.float("join_notices_s", s),
            None => report.text("join_notices_s", "incomplete"),
        };
        report.fail_if(
            !self.caught_up,
            "the server had not delivered the arrival's output (the line said after the join notices) in time",
        );
    }
}

/// How long the clients may take to see the line said after the arrival.
const READY_LIMIT: Duration = Duration::from_secs(120);

/// Connection-phase bookkeeping, fed every event until the crowd is in.
pub struct Crowd {
    pub open: Vec<bool>,
    pub connected: usize,
    /// Handshakes that failed before the connection came up.
    pub failed: usize,
    pub refused: usize,
    pub notices: u64,
    pub last_connect: Option<Instant>,
    ready_token: Vec<u8>,
    pub ready_seen: Vec<bool>,
    pub ready_count: usize,
}

impl Crowd {
    pub fn new(clients: usize) -> Crowd {
        Crowd {
            open: vec![false; clients],
            connected: 0,
            failed: 0,
            refused: 0,
            notices: 0,
            last_connect: None,
            ready_token: Vec::new(),
            ready_seen: vec![false; clients],
            ready_count: 0,
        }
    }

    /// Feeds one event; returns the line back if the crowd did not use it.
    pub fn on_event<'a>(&mut self, index: usize, event: Event<'a>) -> Option<&'a [u8]> {
        match event {
            Event::Connected => {
                self.connected += 1;
                self.open[index] = true;
                self.last_connect = Some(Instant::now());
                None
            }
            Event::Closed => {
                if self.open[index] {
                    self.open[index] = false;
                } else {
                    self.failed += 1;
                }
                self.refused += 1;
                None
            }
            Event::Line(line) => {
                if line.ends_with(b" is connected") {
                    self.notices += 1;
                    None
                } else if !self.ready_token.is_empty() && line.ends_with(&self.ready_token) {
                    if !self.ready_seen[index] {
                        self.ready_seen[index] = true;
                        self.ready_count += 1;
                    }
                    None
                } else {
                    Some(line)
                }
            }
        }
    }

    fn admitted(&self) -> u64 {
        self.connected.saturating_sub(self.refused) as u64
    }

    fn notices_complete(&self) -> bool {
        let a = self.admitted();
        self.notices >= a * a.saturating_sub(1) / 2
    }
}

/// Connects `clients` clients with at most `parallel` handshakes at once,
/// waits (up to `notice_limit`) for every join notice, then makes sure every
/// client is in by having client 0 say a token that everyone must receive.
pub fn bring_in(
    swarm: &mut Swarm,
    crowd: &mut Crowd,
    clients: usize,
    parallel: usize,
    notice_limit: Duration,
    mut other: impl FnMut(usize, &[u8]),
) -> io::Result<Arrival> {
    let started = Instant::now();
    let connect_deadline = started + Duration::from_secs(60 + clients as u64 / 100);
    let mut begun = 0;
    while crowd.connected + crowd.failed < clients {
        while begun < clients && begun - (crowd.connected + crowd.failed) < parallel {
            swarm.connect()?;
            begun += 1;
        }
        if Instant::now() > connect_deadline {
            return Err(io::Error::other(format!(
                "only {} of {clients} clients connected within the time limit",
                crowd.connected
            )));
        }
        swarm.turn(Duration::from_millis(20), |i, e| {
            if let Some(line) = crowd.on_event(i, e) {
                other(i, line);
            }
        })?;
    }
    let last = crowd.last_connect.unwrap_or(started);
    let deadline = Instant::now() + notice_limit;
    while !crowd.notices_complete() && Instant::now() < deadline {
        swarm.turn(Duration::from_millis(20), |i, e| {
            if let Some(line) = crowd.on_event(i, e) {
                other(i, line);
            }
        })?;
    }
    let complete = crowd.notices_complete();
    let notices_secs = complete.then(|| last.elapsed().as_secs_f64());
    let first_open =
        crowd.open.iter().position(|&o| o).ok_or_else(|| io::Error::other("no client got in"))?;
    crowd.ready_token = format!("ready {}", std::process::id()).into_bytes();
    let mut say = crowd.ready_token.clone();
    say.push(b'\n');
    swarm.send(first_open, &say);
    let open = crowd.open.iter().filter(|&&o| o).count();
    let deadline = Instant::now() + READY_LIMIT;
    while crowd.ready_count < open && Instant::now() < deadline {
        swarm.turn(Duration::from_millis(20), |i, e| {
            if let Some(line) = crowd.on_event(i, e) {
                other(i, line);
            }
        })?;
    }
    let caught_up = crowd.ready_count >= open;
    if !caught_up {
        eprintln!(
            "only {} of {open} clients saw the ready line within {} s; measuring the server as it is",
            crowd.ready_count,
            READY_LIMIT.as_secs()
        );
    }
    Ok(Arrival {
        connected: crowd.connected,
        refused: crowd.refused,
        connect_secs: last.duration_since(started).as_secs_f64(),
        notices_secs,
        caught_up,
    })
}
