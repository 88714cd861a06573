//! A worker process: one mio `Poll` over one core shard, its slot's listener,
//! its clients' sockets and its end of the bus to the master.
//!
//! The loop: wait for readiness or the next deadline; take `now` once; accept,
//! read (with a per-connection budget), write, fire timers; after every input
//! to the shard, drain `poll_output` completely.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use chat_core::{BuildConnIdHasher, CloseReason, Config, ConnId, Output, Shard, ShardId, UnixTime};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::socket::{setsockopt, sockopt};

use crate::bus::{BusConn, Frame, Kind, ReadEnd};
use crate::report::{self, ConnRow, WorkerStatus};
use crate::rounds::WriteRounds;

const LISTENER: Token = Token(usize::MAX);
const BUS: Token = Token(usize::MAX - 1);
const WRITE_TIMER: Token = Token(usize::MAX - 2);

/// Bytes read from one connection per loop turn, so one client cannot starve the rest.
const READ_BUDGET: usize = 64 << 10;
/// Bytes read from all connections together per loop turn: what one turn
/// publishes comes back over the bus to every worker, so this bounds how far
/// the bus can fall behind in one turn.
const TURN_READ_BUDGET: usize = 256 << 10;
/// Connections written per loop turn: a big room's fan-out goes out in slices
/// with input read between them, so a line that arrives meanwhile joins the
/// queues not yet written and shares their write instead of needing its own.
const WRITE_BUDGET: usize = 256;
/// Connections accepted per loop turn, so one burst cannot starve the rest.
const ACCEPT_BUDGET: usize = 128;
/// Bus bytes per turn from which the worker reads the bus before more client
/// input (see the run loop).
const BUS_CATCH_UP: usize = 64 << 10;
/// How long a closing connection may take to take its queued output.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);
/// How long a closed connection's unread input is drained before the socket goes
/// (closing with unread input would reset the connection and could destroy the
/// last lines on their way to the peer).
const LINGER: Duration = Duration::from_secs(2);
/// How long accepting pauses when the process or system is out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);
/// Bytes written since the last trim after which an idle worker returns freed
/// memory to the system.
const TRIM_AFTER: u64 = 1 << 20;
/// How long a worker must have had nothing to do before it trims: trimming
/// between two lines of a steady conversation would only free buffers that
/// the next line allocates again, and delay that line.
const TRIM_QUIET: Duration = Duration::from_millis(200);
/// How long a stopping worker flushes before it exits regardless.
const STOP_FLUSH: Duration = Duration::from_secs(3);

/// Everything a freshly forked worker starts from.
pub struct Setup {
    /// The worker's slot, shown as `worker N`.
    pub slot: usize,
    /// The shard incarnation it runs.
    pub shard: ShardId,
    /// The chat's settings.
    pub config: Config,
    /// The master's replica snapshot at the bus position of the fork.
    pub snapshot: Vec<u8>,
    /// The slot's listener (a duplicate owned by this process).
    pub listener: std::net::TcpListener,
    /// The worker's end of the bus.
    pub bus: UnixStream,
}

/// Where a connection's socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading and writing for the shard.
    Open,
    /// The shard asked to close it; flushing until this deadline.
    Closing(Instant),
    /// Flushed and half-closed; draining unread input until this deadline.
    /// The shard has already forgotten it.
    Lingering(Instant),
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    state: State,
    interest: Interest,
    /// The peer sent FIN.
    read_closed: bool,
    /// Waits in `Worker::carry` for its next read budget.
    carried: bool,
    /// Waits in `Worker::to_write` for its turn to be written.
    write_due: bool,
}

/// When reading a connection may stop short of `WouldBlock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadsEnd {
    /// A read that did not fill the buffer emptied the socket; bytes that
    /// arrive later raise a new edge, so the read that would say `WouldBlock`
    /// is skipped (one syscall per input event instead of two).
    AtShortRead,
    /// Read until `WouldBlock`: no edge is due for what is already there (an
    /// end of stream reported with the event, a connection carried over from
    /// the last turn, one just accepted).
    AtWouldBlock,
}

/// Whether the worker applies its own envelopes as it publishes them (the
/// master's `Solo`: no other worker publishes meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Solo {
    Off,
    /// Asked to; waits, reading no client, until its envelopes in flight are back.
    Wanted,
    On,
}

/// How the worker is stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopping {
    /// Clients got `* server shutting down`; exit once flushed or at the deadline.
    Now(Instant),
    /// Not accepting; exit once every client has left.
    Graceful,
}

struct Worker {
    slot: usize,
    poll: Poll,
    shard: Shard,
    listener: Option<TcpListener>,
    bus: BusConn,
    bus_open: bool,
    conns: HashMap<u64, Conn, BuildConnIdHasher>,
    /// Closing and lingering deadlines, checked against each connection's state.
    deadlines: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Connections whose read budget ran out with input left.
    carry: Vec<u64>,
    /// Connections with output queued, written at the end of a turn so that
    /// every line produced meanwhile for one client goes out in one write.
    to_write: VecDeque<u64>,
    rounds: WriteRounds,
    accept_more: bool,
    /// The last bus read was large: client input waits for the bus.
    catching_up: bool,
    /// The last bus read stopped at its limit: more is waiting on the socket,
    /// and edge-triggered readiness will not say so again.
    bus_more: bool,
    /// Client bytes this turn may still read (see `TURN_READ_BUDGET`).
    turn_budget: usize,
    accept_paused_until: Option<Instant>,
    /// Accepting is failing for lack of descriptors (logged once per episode).
    accept_starved: bool,
    stopping: Option<Stopping>,
    solo: Solo,
    buf: Vec<u8>,
    accepted: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// `bytes_out` when freed memory was last handed back.
    trimmed_at: u64,
    /// When the worker, quiet since, trims (see `TRIM_QUIET`).
    trim_at: Option<Instant>,
}

/// Runs a worker until it is told to stop or loses the master; returns the exit code.
pub fn run(setup: Setup) -> i32 {
    match Worker::new(setup) {
        Ok(mut worker) => match worker.run() {
            Ok(()) => 0,
            Err(e) => {
                error!("worker {}: {e}", worker.slot);
                1
            }
        },
        Err(e) => {
            error!("worker could not start: {e}");
            1
        }
    }
}

fn conn_token(id: u64) -> Option<Token> {
    usize::try_from(id).ok().filter(|&t| t < WRITE_TIMER.0).map(Token)
}

impl Worker {
    fn new(setup: Setup) -> io::Result<Worker> {
        let now = Instant::now();
        let shard = Shard::from_snapshot(setup.config, setup.shard, &setup.snapshot, now)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad snapshot: {e}")))?;
        let poll = Poll::new()?;
        setup.listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(setup.listener);
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut bus = BusConn::new(setup.bus);
        poll.registry().register(bus.stream_mut(), BUS, Interest::READABLE | Interest::WRITABLE)?;
        let rounds = WriteRounds::new(now)?;
        poll.registry().register(&mut SourceFd(&rounds.fd()), WRITE_TIMER, Interest::READABLE)?;
        Ok(Worker {
            slot: setup.slot,
            poll,
            shard,
            listener: Some(listener),
            bus,
            bus_open: true,
            conns: HashMap::default(),
            deadlines: BinaryHeap::new(),
            carry: Vec::new(),
            to_write: VecDeque::new(),
            rounds,
            // Connections may already wait in the slot's accept queue, and an
            // edge-triggered listener reports only new ones.
            accept_more: true,
            catching_up: false,
            bus_more: false,
            turn_budget: TURN_READ_BUDGET,
            accept_paused_until: None,
            accept_starved: false,
            stopping: None,
            solo: Solo::Off,
            buf: vec![0; READ_BUDGET],
            accepted: 0,
            bytes_in: 0,
            bytes_out: 0,
            trimmed_at: 0,
            trim_at: None,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        self.bus.queue(Kind::Ready, &[]);
        self.flush_bus();
        info!("worker {} ({}) ready, pid {}", self.slot, self.shard.id(), std::process::id());
        let mut events = Events::with_capacity(1024);
        loop {
            if self.finished() {
                self.flush_bus();
                info!("worker {} exits", self.slot);
                return Ok(());
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            if events.is_empty() {
                self.trim_if_quiet(now);
            }
            let written_before = self.bytes_out;
            // The bus first: it is the rest of the server's input. While it
            // delivers this much per turn the master likely holds more for us,
            // so our own clients' input waits (TCP pushes back on them) until
            // the bus has caught up; otherwise a flood would pile up in the
            // master until it kills us as stuck.
            let bus_due = self.catching_up || events.iter().any(|e| e.token() == BUS);
            let bus_bytes = if bus_due { self.on_bus(now) } else { 0 };
            self.try_solo();
            self.catching_up = self.bus_more || bus_bytes >= BUS_CATCH_UP;
            // Going solo waits for the envelopes in flight: no new ones meanwhile.
            let input_waits = self.catching_up || self.solo == Solo::Wanted;
            self.turn_budget = if input_waits { 0 } else { TURN_READ_BUDGET };
            // Connections left over from the last turn go first.
            for id in std::mem::take(&mut self.carry) {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.carried = false;
                }
                self.read_conn(id, now, ReadsEnd::AtWouldBlock);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_more = true,
                    BUS => {}
                    WRITE_TIMER => self.rounds.on_timer(),
                    Token(t) => {
                        let id = t as u64;
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let ends = if event.is_read_closed() || event.is_error() {
                                ReadsEnd::AtWouldBlock
                            } else {
                                ReadsEnd::AtShortRead
                            };
                            self.read_conn(id, now, ends);
                        }
                        if event.is_writable() {
                            self.write_conn(id, now);
                        }
                    }
                }
            }
            self.accept(now);
            self.fire_timers(now);
            // Publish before writing: the other workers fan this turn's lines
            // out while this one writes to its own clients.
            self.flush_bus();
            self.write_when_due(now)?;
            self.flush_bus();
            if self.bytes_out != written_before && self.bytes_out - self.trimmed_at > TRIM_AFTER {
                self.trim_at = Some(now + TRIM_QUIET);
            }
        }
    }

    /// Returns memory freed since a burst of output to the system, once the
    /// worker has been quiet for a while, so it shrinks back to what its
    /// connections hold.
    fn trim_if_quiet(&mut self, now: Instant) {
        if self.trim_at.is_some_and(|t| t <= now) {
            self.trim_at = None;
            self.shard.shrink_buffers();
            crate::sys::release_free_memory();
            self.trimmed_at = self.bytes_out;
        }
    }

    /// Writes the connections that got output, oldest first, up to the turn's
    /// budget, if a round of writes is due (see `WriteRounds`).
    ///
    /// A worker catching up on its bus writes everything each part of the
    /// backlog queued before it applies the next part, so that clients that
    /// keep reading never see their queue pass the limit because of it.
    fn write_when_due(&mut self, now: Instant) -> io::Result<()> {
        let urgent = self.stopping.is_some() || self.catching_up;
        if self.to_write.is_empty() || !self.rounds.may_write(now, urgent)? {
            return Ok(());
        }
        let budget = if self.catching_up { usize::MAX } else { WRITE_BUDGET };
        for _ in 0..budget {
            let Some(id) = self.to_write.pop_front() else { break };
            if let Some(c) = self.conns.get_mut(&id) {
                c.write_due = false;
                self.write_conn(id, now);
            }
        }
        self.rounds.wrote(self.to_write.is_empty());
        Ok(())
    }

    /// Tells whether the worker is done: stopped and flushed, or past its deadline.
    fn finished(&self) -> bool {
        // Lingering sockets are flushed and half-closed already: the exit
        // closes them, so they do not hold a stopping worker back.
        let flushed = || self.conns.values().all(|c| matches!(c.state, State::Lingering(_)));
        match self.stopping {
            None => false,
            Some(Stopping::Now(deadline)) => flushed() || Instant::now() >= deadline,
            Some(Stopping::Graceful) => flushed() && self.shard.connection_count() == 0,
        }
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        // Input held back while going solo waits for the bus, which will wake us.
        let input_ready = self.solo != Solo::Wanted
            && (!self.carry.is_empty() || (self.accept_more && self.can_accept(now)));
        if input_ready || (self.rounds.is_open() && !self.to_write.is_empty()) || self.catching_up {
            return Some(Duration::ZERO);
        }
        let mut next = self.shard.poll_timeout();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        consider(self.deadlines.peek().map(|Reverse((t, _))| *t));
        consider(self.accept_paused_until);
        consider(self.trim_at);
        consider(self.rounds.armed());
        if let Some(Stopping::Now(deadline)) = self.stopping {
            consider(Some(deadline));
        }
        // Round up to the next millisecond so an early wake-up does not spin.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn can_accept(&self, now: Instant) -> bool {
        self.listener.is_some()
            && self.solo != Solo::Wanted
            && !matches!(self.accept_paused_until, Some(t) if now < t)
    }

    fn accept(&mut self, now: Instant) {
        if !self.accept_more || !self.can_accept(now) {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.recovered_accepting();
                    self.on_accepted(stream, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.recovered_accepting();
                    self.accept_more = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_resources(&e) => {
                    // Edge-triggered readiness will not report the waiting
                    // connections again, so retry on a timer instead of spinning.
                    if !self.accept_starved {
                        warn!("worker {}: accept: {e}; retrying every {ACCEPT_PAUSE:?}", self.slot);
                        self.accept_starved = true;
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                // The peer gave up between SYN and accept, or similar: only that
                // connection is affected.
                Err(e) => debug!("worker {}: accept: {e}", self.slot),
            }
        }
    }

    fn recovered_accepting(&mut self) {
        if self.accept_starved {
            self.accept_starved = false;
            info!("worker {}: accepting again", self.slot);
        }
    }

    fn on_accepted(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
        self.accepted += 1;
        // Small interactive lines: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        // Reap peers that vanished without a FIN.
        let _ = setsockopt(&stream, sockopt::KeepAlive, &true);
        let conn = self.shard.handle_connect(now);
        let id = conn.as_u64();
        let registered =
            conn_token(id).map(|token| self.poll.registry().register(&mut stream, token, Interest::READABLE));
        if !matches!(registered, Some(Ok(()))) {
            warn!("worker {}: cannot watch connection from {peer}", self.slot);
            self.shard.handle_close(conn, now);
            self.drain(now);
            return;
        }
        self.conns.insert(
            id,
            Conn {
                stream,
                peer,
                state: State::Open,
                interest: Interest::READABLE,
                read_closed: false,
                carried: false,
                write_due: false,
            },
        );
        self.drain(now);
        // Bytes may have arrived with the connection; edge-triggered readiness
        // could already have fired for them.
        self.read_conn(id, now, ReadsEnd::AtWouldBlock);
    }

    fn read_conn(&mut self, id: u64, now: Instant, ends: ReadsEnd) {
        let mut budget = READ_BUDGET.min(self.turn_budget);
        if budget == 0 {
            self.defer_read(id);
            return;
        }
        loop {
            let Some(c) = self.conns.get_mut(&id) else { return };
            if c.read_closed || c.carried {
                return;
            }
            let lingering = matches!(c.state, State::Lingering(_));
            let want = budget.min(self.buf.len());
            match c.stream.read(&mut self.buf[..want]) {
                Ok(0) => {
                    c.read_closed = true;
                    if lingering {
                        self.forget(id);
                    } else if c.state == State::Open {
                        self.shard.handle_eof(ConnId::from_u64(id), now);
                        self.drain(now);
                    }
                    return;
                }
                Ok(n) => {
                    if c.state == State::Open {
                        self.bytes_in += n as u64;
                        self.shard.handle_bytes(ConnId::from_u64(id), &self.buf[..n], now);
                        self.drain(now);
                    }
                    budget -= n;
                    self.turn_budget -= n;
                    if budget == 0 {
                        self.defer_read(id);
                        return;
                    }
                    if ends == ReadsEnd::AtShortRead && n < want {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(id, now);
                    return;
                }
            }
        }
    }

    /// Leaves a connection's input for a later turn; once per turn, so a
    /// connection already waiting for its next budget does not get two.
    fn defer_read(&mut self, id: u64) {
        if let Some(c) = self.conns.get_mut(&id) {
            if !c.carried {
                c.carried = true;
                self.carry.push(id);
            }
        }
    }

    /// Writes what the shard holds for the connection, in as few writes as the
    /// socket allows (the queue is one contiguous buffer).
    fn write_conn(&mut self, id: u64, now: Instant) {
        let conn = ConnId::from_u64(id);
        loop {
            let Some(c) = self.conns.get_mut(&id) else { return };
            if matches!(c.state, State::Lingering(_)) {
                return;
            }
            let pending = self.shard.transmit(conn);
            if pending.is_empty() {
                break;
            }
            match c.stream.write(pending) {
                Ok(0) => {
                    self.fail(id, now);
                    return;
                }
                Ok(n) => {
                    self.bytes_out += n as u64;
                    self.shard.handle_written(conn, n, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(id, now);
                    return;
                }
            }
        }
        let empty = self.shard.transmit(conn).is_empty();
        let Some(c) = self.conns.get_mut(&id) else { return };
        if empty && matches!(c.state, State::Closing(_)) {
            self.finish_close(id, now);
            return;
        }
        // Interest follows the shard's queue: WRITABLE only while bytes wait.
        let want = if empty { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
        if want != c.interest {
            if let Some(token) = conn_token(id) {
                if self.poll.registry().reregister(&mut c.stream, token, want).is_ok() {
                    c.interest = want;
                }
            }
        }
    }

    /// The shard's output for a connection is flushed: half-close it and drain
    /// what the peer still sends for a moment, so the close is not a reset.
    fn finish_close(&mut self, id: u64, now: Instant) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let _ = c.stream.shutdown(Shutdown::Write);
        let deadline = now + LINGER;
        c.state = State::Lingering(deadline);
        let read_closed = c.read_closed;
        self.shard.handle_close(ConnId::from_u64(id), now);
        if read_closed {
            self.forget(id);
        } else {
            self.deadlines.push(Reverse((deadline, id)));
            self.read_conn(id, now, ReadsEnd::AtWouldBlock);
        }
        self.drain(now);
    }

    /// The socket failed (reset, broken pipe): it is gone for the shard too.
    fn fail(&mut self, id: u64, now: Instant) {
        let state = self.conns.get(&id).map(|c| c.state);
        self.forget(id);
        if !matches!(state, Some(State::Lingering(_))) {
            self.shard.handle_close(ConnId::from_u64(id), now);
            self.drain(now);
        }
    }

    /// Drops a connection's socket.
    fn forget(&mut self, id: u64) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Drains every output of the shard; called after every input to it.
    fn drain(&mut self, now: Instant) {
        while let Some(output) = self.shard.poll_output() {
            match output {
                Output::Transmit(conn) => {
                    let id = conn.as_u64();
                    if let Some(c) = self.conns.get_mut(&id) {
                        if !c.write_due {
                            c.write_due = true;
                            self.to_write.push_back(id);
                        }
                    }
                }
                Output::Close { conn, reason } => self.on_close(conn, reason, now),
                Output::Publish(envelope) => self.bus.queue(Kind::Publish, &envelope),
                other => debug!("worker {}: ignoring {other:?}", self.slot),
            }
        }
    }

    fn on_close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        let id = conn.as_u64();
        let Some(c) = self.conns.get_mut(&id) else {
            // Never had a socket (registration failed): just confirm.
            self.shard.handle_close(conn, now);
            return;
        };
        if reason == CloseReason::SlowConsumer {
            info!("worker {}: closing slow consumer {} (queue over the limit)", self.slot, c.peer);
        }
        if c.state != State::Open {
            return;
        }
        let deadline = now + CLOSE_FLUSH;
        c.state = State::Closing(deadline);
        self.deadlines.push(Reverse((deadline, id)));
        self.write_conn(id, now);
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.shard.poll_timeout().is_some_and(|t| t <= now) {
            let wall = UnixTime::from_system_time(SystemTime::now());
            self.shard.handle_timeout(now, wall);
            self.drain(now);
        }
        while let Some(&Reverse((deadline, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            match self.conns.get(&id).map(|c| c.state) {
                Some(State::Closing(d)) if d == deadline => {
                    // It would not take its output in time: drop it.
                    self.forget(id);
                    self.shard.handle_close(ConnId::from_u64(id), now);
                    self.drain(now);
                }
                Some(State::Lingering(d)) if d == deadline => self.forget(id),
                _ => {}
            }
        }
    }

    /// Reads and handles what the master sent; returns how many bytes that was.
    fn on_bus(&mut self, now: Instant) -> usize {
        if !self.bus_open {
            return 0;
        }
        let mut frames = Vec::new();
        // A part at a time: a worker that fell behind (paused, busy) writes what
        // each part queued before it applies the next, so clients that keep up
        // never see their queue pass the limit because of the backlog.
        let end = self.bus.read_frames_upto(&mut frames, BUS_CATCH_UP);
        let bytes = frames.iter().map(|f| f.payload.len() + 5).sum();
        for frame in frames {
            self.on_frame(frame, now);
        }
        self.bus_more = matches!(end, Ok(ReadEnd::Limit));
        match end {
            Ok(ReadEnd::WouldBlock | ReadEnd::Limit) => self.flush_bus(),
            Ok(ReadEnd::Closed) => {
                warn!("worker {}: the master is gone; stopping", self.slot);
                self.lose_bus(now);
            }
            Err(e) => {
                error!("worker {}: bus: {e}; stopping", self.slot);
                self.lose_bus(now);
            }
        }
        bytes
    }

    fn lose_bus(&mut self, now: Instant) {
        self.bus_open = false;
        let _ = self.poll.registry().deregister(self.bus.stream_mut());
        self.stop(false, now);
    }

    fn on_frame(&mut self, frame: Frame, now: Instant) {
        match frame.kind {
            Kind::Envelope => {
                if let Err(e) = self.shard.handle_envelope(&frame.payload, now) {
                    error!("worker {}: undecodable envelope: {e}", self.slot);
                }
                self.drain(now);
            }
            Kind::StatusRequest => {
                let mut reply = frame.payload;
                self.status().encode(&mut reply);
                self.bus.queue(Kind::StatusReply, &reply);
            }
            Kind::ConnectionsRequest => {
                let mut reply = frame.payload;
                report::encode_rows(&self.rows(), &mut reply);
                self.bus.queue(Kind::ConnectionsReply, &reply);
            }
            Kind::Stop => self.stop(false, now),
            Kind::GracefulStop => self.stop(true, now),
            Kind::Solo => {
                if self.solo == Solo::Off && self.stopping.is_none() {
                    self.solo = Solo::Wanted;
                    self.try_solo();
                }
            }
            Kind::Shared => self.end_solo(now),
            other => warn!("worker {}: unexpected bus frame {other:?}", self.slot),
        }
    }

    /// Goes solo once nothing it published is still on its way back: newer
    /// envelopes applied first would break the bus order.
    fn try_solo(&mut self) {
        if self.solo == Solo::Wanted && self.shard.go_solo() {
            self.solo = Solo::On;
            self.bus.queue(Kind::SoloBegins, &[]);
            debug!("worker {}: solo", self.slot);
        }
    }

    /// Shares the bus again, and tells the master from which envelope on.
    fn end_solo(&mut self, now: Instant) {
        // What was published solo goes on the bus before the marker.
        self.drain(now);
        self.shard.end_solo();
        self.solo = Solo::Off;
        self.bus.queue(Kind::SoloEnds, &[]);
        debug!("worker {}: solo ended", self.slot);
    }

    fn stop(&mut self, graceful: bool, now: Instant) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        match (graceful, self.stopping) {
            (_, Some(Stopping::Now(_))) => {}
            (true, Some(Stopping::Graceful)) => {}
            (true, None) => {
                info!(
                    "worker {}: stopping gracefully, {} connections left",
                    self.slot,
                    self.shard.connection_count()
                );
                self.stopping = Some(Stopping::Graceful);
            }
            (false, _) => {
                info!("worker {}: stopping", self.slot);
                // Nobody hears of the closes a stop makes (the master stops
                // relaying): the lone worker must not tell its clients either.
                if self.solo != Solo::Off {
                    self.end_solo(now);
                }
                self.stopping = Some(Stopping::Now(now + STOP_FLUSH));
                self.shard.handle_shutdown(now);
                self.drain(now);
            }
        }
    }

    fn flush_bus(&mut self) {
        if !self.bus_open {
            return;
        }
        if let Err(e) = self.bus.flush() {
            error!("worker {}: bus write: {e}", self.slot);
            self.bus_open = false;
            let _ = self.poll.registry().deregister(self.bus.stream_mut());
            self.stop(false, Instant::now());
        }
    }

    fn status(&self) -> WorkerStatus {
        let stats = self.shard.stats();
        WorkerStatus {
            pid: std::process::id(),
            connections: stats.connections as u64,
            lines_in: stats.lines_in,
            lines_out: stats.lines_out,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            queued: stats.queued_bytes as u64,
            accepted: self.accepted,
        }
    }

    fn rows(&self) -> Vec<ConnRow> {
        self.shard
            .connections()
            .map(|info| ConnRow {
                id: info.client.map(|c| c.0),
                nick: info.nick,
                room: info.room.unwrap_or_default(),
                peer: self.conns.get(&info.conn.as_u64()).map_or_else(String::new, |c| c.peer.to_string()),
                bytes_in: info.bytes_in,
                bytes_out: info.bytes_out,
                queued: info.queued as u64,
            })
            .collect()
    }
}

/// Tells whether an accept error means "out of descriptors or memory", which
/// clears by itself later rather than by retrying at once.
fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpStream as StdTcpStream;
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;

    use chat_core::Replica;

    use super::*;
    use crate::bus;

    /// Plays the master for one worker: relays each published envelope straight
    /// back (a one-shard bus), and sends `Stop` once `stop` is set.
    fn relay(mut master: StdUnixStream, stop: Arc<AtomicBool>) {
        master.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut inbound = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut stopped = false;
        loop {
            if stop.load(Ordering::SeqCst) && !stopped {
                let mut frame = Vec::new();
                bus::encode(&mut frame, Kind::Stop, &[]);
                master.write_all(&frame).unwrap();
                stopped = true;
            }
            match master.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => inbound.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
            let mut frames = Vec::new();
            bus::decode(&mut inbound, &mut frames).unwrap();
            for frame in frames {
                if frame.kind == Kind::Publish {
                    let mut out = Vec::new();
                    bus::encode(&mut out, Kind::Envelope, &frame.payload);
                    master.write_all(&out).unwrap();
                }
            }
        }
    }

    fn line(reader: &mut BufReader<StdTcpStream>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn a_worker_serves_its_clients_over_the_bus_and_stops_when_told() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (master, worker_end) = StdUnixStream::pair().unwrap();
        worker_end.set_nonblocking(true).unwrap();
        let config = Config { tick: 0, ..Config::default() };
        let setup = Setup {
            slot: 0,
            shard: ShardId(1),
            snapshot: Replica::new(&config).snapshot(),
            config,
            listener,
            bus: UnixStream::from_std(worker_end),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let relay_stop = Arc::clone(&stop);
        let relay = thread::spawn(move || relay(master, relay_stop));
        let worker = thread::spawn(move || run(setup));

        let alice = StdTcpStream::connect(addr).unwrap();
        alice.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut alice_in = BufReader::new(alice.try_clone().unwrap());
        let mut alice_out = alice;
        // Alice is admitted before Bob connects, so the ids are known.
        alice_out.write_all(b"/nick alice\r\n").unwrap();
        assert_eq!(line(&mut alice_in), "* You are now alice\n");
        let bob = StdTcpStream::connect(addr).unwrap();
        bob.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut bob_in = BufReader::new(bob.try_clone().unwrap());
        assert_eq!(line(&mut alice_in), "Client #2 is connected\n");
        // Split anywhere, and the line still arrives whole.
        alice_out.write_all(b"he").unwrap();
        alice_out.write_all(b"llo\n").unwrap();
        assert_eq!(line(&mut alice_in), "You: hello\n");
        assert_eq!(line(&mut bob_in), "alice: hello\n");

        stop.store(true, Ordering::SeqCst);
        assert_eq!(worker.join().unwrap(), 0);
        assert_eq!(line(&mut alice_in), "* server shutting down\n");
        assert_eq!(line(&mut bob_in), "* server shutting down\n");
        assert_eq!(line(&mut bob_in), "", "then end of stream");
        relay.join().unwrap();
    }
}
