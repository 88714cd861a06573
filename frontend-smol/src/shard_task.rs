//! One shard's task: a core [`Shard`], the sockets of its connections, and its
//! place on the bus.
//!
//! The task is the only owner of the shard and of its connections' sockets,
//! so the core needs no lock. Each turn of its loop it applies what the bus
//! holds for it, fires due timers, takes the connections the accept loop sent,
//! reads the connections the reactor reported ready (within a budget), and
//! drains the core's outputs after every event: `Publish` goes to the bus,
//! `Close` flushes and closes, and `Transmit` marks the connection for a write
//! at the end of the turn: one nonblocking write of everything the core queued
//! for it, however many lines the turn produced (under load, turns within
//! [`COALESCE`] of the last writes share the next; a round of writes to a big
//! room goes [`WRITE_SLICE`] connections a turn). Then it sleeps until the
//! reactor, the accept loop, the bus, a timer or the stop signal wakes it.
//!
//! The core's per-connection queue is the only output queue: when a write
//! would block, the socket is armed for writability, and the shard writes
//! whatever the queue holds by the time it is reported.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chat_core::{BuildConnIdHasher, CloseReason, ConnId, Output, Shard, UnixTime};
use smol::channel::{Receiver, Sender};
use smol::future::{self, FutureExt};
use smol::{Async, Timer};

use crate::bus::BusPort;
use crate::conn::{self, Conn, ReadyList};
use crate::server;

/// Batches of accepted connections a shard's inbox holds.
pub const INBOX_CAPACITY: usize = 16;

/// Batches of accepted connections taken per turn before the shard reads its
/// clients and the bus again.
const ACCEPT_BATCHES: usize = 4;

/// Ready connections read per turn before the shard reads the bus and yields.
const READ_BATCH: usize = 64;

/// Most bytes read from one connection at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Most bytes of client input read per turn: a client that sends faster than
/// the shard handles it finds its socket left unread, and TCP pushes back.
const TURN_READ_BUDGET: usize = 256 * 1024;

/// Lines (input lines, envelopes, connects, closes) handled between two
/// rounds of writes within a turn. Coalescing a turn's lines into one write
/// per connection saves syscalls, but everything a line makes the core queue
/// for every recipient sits in memory until the round of writes. A burst of
/// 10,000 connects announced to 10,000 connections, measured: 256 lines took
/// 9 s and left a 60 MB heap (which the allocator keeps), 32 lines took 25 s
/// (three times the writes) and 30 MB; 64 lines is about 1.5 KB of short
/// lines per connection at the peak.
const WRITE_EVERY_LINES: usize = 64;

/// Bytes of input and envelopes handled between two rounds of writes, for
/// long lines: what one turn queues for a connection must not approach the
/// core's queue limit before the socket had a chance to take it.
const WRITE_EVERY_BYTES: usize = 64 * 1024;

/// Bytes written since the last trim after which a quiet shard frees the
/// core's spare buffers and returns freed heap to the system.
const TRIM_AFTER: usize = 1 << 20;

/// How long a shard must have had nothing to do before it trims: a trim
/// walks every connection and the whole heap, so it waits for the end of a
/// burst rather than running between its lines.
const QUIET: Duration = Duration::from_secs(1);

/// The shortest time between the starts of two rounds of writes at the end
/// of turns; the gap is three times what the last round took, within
/// [`COALESCE`] and [`COALESCE_MAX`], so writing takes at most about a third
/// of the shard's time when lines keep coming. The first line after a pause
/// goes out at once; under load, the lines that arrive within the gap share
/// one write per connection. A send on loopback costs about 5 us of CPU
/// whatever it carries, so lines per write decide the CPU per delivered line.
///
/// Measured with chat-load fanout 100 clients / 10 senders, window 1, on a
/// loaded 2-core box, server CPU us per delivery: no coalescing 0.87-1.12; a
/// fixed 500 us 0.77-1.20; a fixed 1 ms 0.71-0.90 but fewer deliveries per
/// second when the box was quiet (0.44-0.72 M against 0.85-1.06 M); this
/// rule 0.62-0.81 in four runs interleaved with the fixed 500 us (0.77-1.20)
/// and tokio-chat (4.75-5.73).
const COALESCE: Duration = Duration::from_micros(500);

/// The longest gap between two rounds of writes (see [`COALESCE`]), which
/// bounds what coalescing adds to a line's latency.
const COALESCE_MAX: Duration = Duration::from_millis(1);

/// Connections written per turn within a round of writes. A line to a big
/// room marks thousands of connections; writing them in slices, with the
/// inbox and the bus read between two slices, lets a line that arrives
/// meanwhile join the queues not yet written, so those connections take both
/// lines in one write instead of one write each (the mio worker's
/// `WRITE_BUDGET`, which lifted its 10,000-client fan-out from 0.74x to 1.62x
/// tokio-chat's deliveries per second).
const WRITE_SLICE: usize = 256;

/// How long a closing connection may take to take its last bytes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// New connections the accept loop gave to a shard, through its inbox.
#[derive(Debug)]
pub struct Accepted {
    pub conns: Vec<(Async<TcpStream>, SocketAddr)>,
    /// Dropped once their connects are published, so the next batch comes
    /// later in bus order.
    pub published: Sender<()>,
}

/// The shard's side of one connection: kept small, there is one per
/// connection (the peer's address is asked of the socket when a log needs it).
struct Handle {
    conn: Conn,
    /// The socket is armed for writability: don't write until it is reported.
    waiting: bool,
    /// The peer has not ended its input, nor has the socket failed.
    reading: bool,
    /// Set once the core asked to close (the deadline is in [`ShardTask::closing`]).
    closing: bool,
    /// Already listed in [`ShardTask::dirty`].
    dirty: bool,
}

impl Handle {
    /// The peer's address, for logs.
    fn peer(&self) -> String {
        match self.conn.stream().peer_addr() {
            Ok(peer) => peer.to_string(),
            Err(_) => "a gone peer".to_string(),
        }
    }
}

/// One shard and everything its task owns.
pub struct ShardTask {
    shard: Shard,
    bus: Option<BusPort>,
    inbox: Receiver<Accepted>,
    /// Where the reactor lists this shard's connections that became ready.
    ready: Arc<ReadyList>,
    /// Ready connections not read yet, oldest first: taken from the list, or
    /// left over from a turn whose read budget ran out.
    to_read: VecDeque<ConnId>,
    /// Where input is read to, on its way into the core.
    scratch: Vec<u8>,
    /// Closed (never sent on) when the server stops.
    stop: Receiver<()>,
    conns: HashMap<ConnId, Handle, BuildConnIdHasher>,
    /// Closing connections by flush deadline; an entry whose connection is
    /// gone already is skipped when its deadline comes.
    closing: BTreeSet<(Instant, ConnId)>,
    /// Connections with output to write, oldest first: the rest of the round
    /// under way, then those marked since.
    dirty: VecDeque<ConnId>,
    /// When the round of writes under way began, if one is.
    round: Option<Instant>,
    /// Lines handled since the last round of writes.
    unwritten_lines: usize,
    /// Input and envelope bytes handled since the last round of writes.
    unwritten_bytes: usize,
    /// Reused buffer for envelopes read from the bus.
    envelopes: Vec<Arc<[u8]>>,
    /// Bytes written since the last trim (see [`TRIM_AFTER`]).
    written_since_trim: usize,
    /// When the shard last handled a message or an envelope (see [`QUIET`]).
    last_work: Instant,
    /// When the last round of writes began (see [`COALESCE`]).
    last_flush: Instant,
    /// The least time from the start of the last round of writes to the next.
    round_gap: Duration,
}

/// What ended a shard task's sleep.
enum Wake {
    Accepted(Accepted),
    /// The reactor, the bus, a timer or the stop: the next turn sees what changed.
    Other,
}

impl ShardTask {
    /// Prepares a shard task; `bus` is `None` for a standalone shard.
    pub fn new(
        shard: Shard,
        bus: Option<BusPort>,
        inbox: Receiver<Accepted>,
        stop: Receiver<()>,
    ) -> ShardTask {
        ShardTask {
            shard,
            bus,
            inbox,
            ready: Arc::default(),
            to_read: VecDeque::new(),
            scratch: vec![0; READ_CHUNK],
            stop,
            conns: HashMap::default(),
            closing: BTreeSet::new(),
            dirty: VecDeque::new(),
            round: None,
            unwritten_lines: 0,
            unwritten_bytes: 0,
            envelopes: Vec::new(),
            written_since_trim: 0,
            last_work: Instant::now(),
            last_flush: Instant::now(),
            round_gap: COALESCE,
        }
    }

    /// Runs the shard until the server stops and its connections are closed.
    pub async fn run(mut self) {
        let mut timer = Timer::never();
        // Set once stopping: by then every connection must be closed.
        let mut stop_deadline: Option<Instant> = None;
        loop {
            // Listen before reading, so an append right after the read still wakes us.
            let bell = self.bus.as_ref().map(BusPort::listen);
            let now = Instant::now();
            // Checked every turn, not only when idle: a shard busy with a
            // storm of work must still stop promptly.
            if stop_deadline.is_none() && self.stop.is_closed() {
                stop_deadline = Some(self.shut_down(now));
            }
            let mut busy = self.read_bus(now);
            self.fire_timers(now);
            let congested = self.bus.as_ref().is_some_and(BusPort::congested);
            if !congested {
                busy |= self.take_accepted(now);
                busy |= self.read_ready(now);
            }
            let (write_due, writing) = self.flush_when_due(now, stop_deadline.is_some());
            busy |= writing;
            if let Some(deadline) = stop_deadline {
                if self.conns.is_empty() || now >= deadline {
                    self.close_all(now);
                    break;
                }
            }
            if busy {
                // Let this thread's other tasks (the accept loop, lingering
                // connections) run before the next batch.
                future::yield_now().await;
                continue;
            }

            let trim_due = self.trim_when_quiet(now);
            match self.next_deadline([stop_deadline, trim_due, write_due]) {
                Some(deadline) => timer.set_at(deadline),
                None => timer = Timer::never(),
            }
            let stopped = stop_deadline.is_some();
            let stop = async {
                if stopped {
                    future::pending::<()>().await;
                }
                // Nothing is ever sent: the sender is dropped to stop.
                let _ = self.stop.recv().await;
                Wake::Other
            };
            let accepted = async {
                if congested {
                    future::pending::<()>().await;
                }
                match self.inbox.recv().await {
                    Ok(accepted) => Wake::Accepted(accepted),
                    // The accept loop is gone: the server is stopping.
                    Err(_) => future::pending().await,
                }
            };
            let ready_list = Arc::clone(&self.ready);
            let ready = async {
                if congested {
                    future::pending::<()>().await;
                }
                ready_list.wait().await;
                Wake::Other
            };
            let bell = async {
                match bell {
                    Some(bell) => bell.await,
                    None => future::pending().await,
                }
                Wake::Other
            };
            let tick = async {
                (&mut timer).await;
                Wake::Other
            };
            if let Wake::Accepted(accepted) = stop.or(accepted).or(ready).or(bell).or(tick).await {
                self.accept(accepted, Instant::now());
            }
        }
        log::debug!("{} stopped", self.shard.id());
    }

    /// Applies what the bus holds for this shard; returns whether more is waiting.
    fn read_bus(&mut self, now: Instant) -> bool {
        let Some(bus) = &self.bus else { return false };
        let more = bus.read(&mut self.envelopes);
        let mut envelopes = std::mem::take(&mut self.envelopes);
        if !envelopes.is_empty() {
            self.last_work = now;
        }
        for envelope in envelopes.drain(..) {
            if let Err(e) = self.shard.handle_envelope(&envelope, now) {
                // Only this server's shards publish, so this is a bug, not bad input.
                log::error!("{}: undecodable envelope on the bus: {e}", self.shard.id());
            }
            self.drain_outputs(now);
            self.count_work(1, envelope.len(), now);
        }
        self.envelopes = envelopes;
        more
    }

    /// Takes up to a few batches of accepted connections; returns whether
    /// more may be waiting.
    fn take_accepted(&mut self, now: Instant) -> bool {
        for _ in 0..ACCEPT_BATCHES {
            match self.inbox.try_recv() {
                Ok(accepted) => self.accept(accepted, now),
                Err(_) => return false,
            }
        }
        true
    }

    fn accept(&mut self, accepted: Accepted, now: Instant) {
        self.last_work = now;
        for (stream, peer) in accepted.conns {
            let conn = self.shard.handle_connect(now);
            log::debug!("{}: connection from {peer}", self.shard.id());
            let handle = Handle {
                conn: Conn::new(conn, stream, &self.ready),
                waiting: false,
                reading: true,
                closing: false,
                dirty: false,
            };
            self.conns.insert(conn, handle);
            // Bytes may have come with the connection; reading also arms the socket.
            self.to_read.push_back(conn);
            // Drained right away, so the connects are on the bus before the accept loop goes on.
            self.drain_outputs(now);
            self.count_work(1, 0, now);
        }
        drop(accepted.published);
    }

    /// Reads the connections the reactor reported ready, up to a batch and
    /// the turn's read budget; returns whether some are left for the next turn.
    fn read_ready(&mut self, now: Instant) -> bool {
        self.ready.take(&mut self.to_read);
        let mut budget = TURN_READ_BUDGET;
        for _ in 0..READ_BATCH {
            if budget == 0 {
                break;
            }
            let Some(conn) = self.to_read.pop_front() else { break };
            budget -= self.serve(conn, budget, now);
        }
        !self.to_read.is_empty()
    }

    /// Takes up one ready connection: writes if it takes writes again, and
    /// reads its input, up to `budget` bytes; returns the bytes read.
    fn serve(&mut self, conn: ConnId, budget: usize, now: Instant) -> usize {
        let Some(handle) = self.conns.get_mut(&conn) else { return 0 };
        handle.conn.unlist();
        if handle.waiting && handle.conn.arm_write() {
            handle.waiting = false;
            self.write(conn, now);
            // A failed write closes the connection, which the bus must hear of.
            self.drain_outputs(now);
        }
        self.last_work = now;
        let mut read = 0;
        loop {
            let Some(handle) = self.conns.get_mut(&conn) else { return read };
            if !handle.reading {
                return read;
            }
            if read == budget {
                // The rest waits for the next turn; no new event will say it is there.
                self.to_read.push_back(conn);
                return read;
            }
            let want = (budget - read).min(self.scratch.len());
            match handle.conn.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    handle.reading = false;
                    self.shard.handle_eof(conn, now);
                    self.drain_outputs(now);
                    self.count_work(1, 0, now);
                    return read;
                }
                Ok(n) => {
                    read += n;
                    let lines_before = self.shard.lines_in();
                    self.shard.handle_bytes(conn, &self.scratch[..n], now);
                    // A chunk of many lines is written out after it on its own.
                    let lines =
                        usize::try_from(self.shard.lines_in() - lines_before).unwrap_or(usize::MAX).max(1);
                    self.drain_outputs(now);
                    self.count_work(lines, n, now);
                    // A short read emptied the socket: arm it, unless input
                    // was reported meanwhile (then read on).
                    if n < want && !self.rearm_read(conn) {
                        return read;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.rearm_read(conn) {
                        return read;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("{}: reading from {} failed: {e}", self.shard.id(), handle.peer());
                    self.drop_conn(conn, now);
                    self.drain_outputs(now);
                    self.count_work(1, 0, now);
                    return read;
                }
            }
        }
    }

    /// Arms a connection's socket for its next input; returns true if input
    /// was reported since it was last armed, so there is more to read now.
    fn rearm_read(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|handle| handle.conn.arm_read())
    }

    /// Does everything the core asked for, until it asks for nothing more.
    fn drain_outputs(&mut self, now: Instant) {
        while let Some(output) = self.shard.poll_output() {
            match output {
                Output::Transmit(conn) => self.mark_dirty(conn),
                Output::Close { conn, reason } => self.close(conn, reason, now),
                Output::Publish(envelope) => match &self.bus {
                    Some(bus) => bus.publish(envelope),
                    None => log::error!("a standalone shard asked to publish an envelope"),
                },
                other => log::debug!("{}: ignoring {other:?}", self.shard.id()),
            }
        }
    }

    /// Remembers to write to `conn` at the end of the turn, so that everything
    /// the turn queued for it goes out in one write rather than one per line.
    fn mark_dirty(&mut self, conn: ConnId) {
        if let Some(handle) = self.conns.get_mut(&conn) {
            if !handle.dirty {
                handle.dirty = true;
                self.dirty.push_back(conn);
            }
        }
    }

    /// Counts lines and bytes handled, and writes once enough piled up (see
    /// [`WRITE_EVERY_LINES`] and [`WRITE_EVERY_BYTES`]).
    fn count_work(&mut self, lines: usize, bytes: usize, now: Instant) {
        self.unwritten_lines += lines;
        self.unwritten_bytes += bytes;
        if self.unwritten_lines >= WRITE_EVERY_LINES || self.unwritten_bytes >= WRITE_EVERY_BYTES {
            self.write_round(now, usize::MAX);
        }
    }

    /// Writes the next slice of the round under way, or starts a round if
    /// the last one began at least the round gap ago (see [`COALESCE`]) or
    /// the shard is stopping (then everything goes out at once). Returns when
    /// the next round is due if it is not yet, and whether this round has
    /// connections left for the next turn.
    fn flush_when_due(&mut self, now: Instant, stopping: bool) -> (Option<Instant>, bool) {
        if self.dirty.is_empty() {
            return (None, false);
        }
        let due = self.last_flush + self.round_gap;
        if self.round.is_none() && now < due && !stopping {
            return (Some(due), false);
        }
        let slice = if stopping { usize::MAX } else { WRITE_SLICE };
        (None, !self.write_round(now, slice))
    }

    /// Writes up to `slice` marked connections, oldest first, starting a
    /// round if none is under way; returns whether the round is over.
    fn write_round(&mut self, now: Instant, slice: usize) -> bool {
        if self.round.is_none() && !self.dirty.is_empty() {
            self.round = Some(Instant::now());
            self.last_flush = now;
        }
        self.unwritten_lines = 0;
        self.unwritten_bytes = 0;
        let mut written = 0;
        while written < slice {
            let Some(conn) = self.dirty.pop_front() else { break };
            if let Some(handle) = self.conns.get_mut(&conn) {
                handle.dirty = false;
                self.write(conn, now);
                written += 1;
            }
            // A failed write closes its connection, which may queue more.
            self.drain_outputs(now);
        }
        if !self.dirty.is_empty() {
            return false;
        }
        if let Some(started) = self.round.take() {
            self.round_gap = (started.elapsed() * 3).clamp(COALESCE, COALESCE_MAX);
        }
        true
    }

    /// Writes what the core holds for `conn` until it is empty or the socket
    /// is full, then finishes a pending close once everything went out.
    fn write(&mut self, conn: ConnId, now: Instant) {
        let Some(handle) = self.conns.get_mut(&conn) else { return };
        if !handle.waiting {
            loop {
                let pending = self.shard.transmit(conn);
                if pending.is_empty() {
                    break;
                }
                // A nonblocking write of everything queued: one syscall for many lines.
                match handle.conn.stream().write(pending) {
                    Ok(0) => return self.fail(conn, io::ErrorKind::WriteZero.into(), now),
                    Ok(written) => {
                        self.shard.handle_written(conn, written, now);
                        self.written_since_trim += written;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Reported already since it was last armed: try again.
                        if handle.conn.arm_write() {
                            continue;
                        }
                        handle.waiting = true;
                        break;
                    }
                    Err(e) => return self.fail(conn, e, now),
                }
            }
        }
        if handle.closing && self.shard.transmit(conn).is_empty() {
            self.finish_close(conn, now);
        }
    }

    /// Frees the core's spare buffers and the allocator's free heap once a
    /// burst wrote enough to have grown them and has been over for
    /// [`QUIET`], so idle connections cost only their state again; returns
    /// when to look again if the burst may not be over yet.
    fn trim_when_quiet(&mut self, now: Instant) -> Option<Instant> {
        if self.written_since_trim <= TRIM_AFTER {
            return None;
        }
        let due = self.last_work + QUIET;
        if now < due {
            return Some(due);
        }
        self.shard.shrink_buffers();
        crate::sys::release_free_memory();
        self.written_since_trim = 0;
        None
    }

    /// Starts closing a connection the core is done with: flush, then close.
    fn close(&mut self, conn: ConnId, reason: CloseReason, now: Instant) {
        let Some(handle) = self.conns.get_mut(&conn) else {
            self.shard.handle_close(conn, now);
            return;
        };
        match reason {
            CloseReason::SlowConsumer => {
                log::info!("{}: closing {}: it reads too slowly", self.shard.id(), handle.peer());
            }
            CloseReason::ServerFull => {
                log::info!("{}: refusing {}: server full", self.shard.id(), handle.peer())
            }
            _ => log::debug!("{}: closing {} ({reason:?})", self.shard.id(), handle.peer()),
        }
        if !handle.closing {
            handle.closing = true;
            self.closing.insert((now + FLUSH_TIMEOUT, conn));
        }
        self.write(conn, now);
    }

    /// Closes a flushed (or timed-out) connection: FIN after the last byte,
    /// then a task lingers on its input, if the peer may still send, and
    /// drops the socket.
    fn finish_close(&mut self, conn: ConnId, now: Instant) {
        if let Some(handle) = self.conns.remove(&conn) {
            // The peer may be gone already; there is nothing left to tell it.
            let _ = handle.conn.stream().shutdown(Shutdown::Write);
            if handle.reading {
                server::spawn_here(conn::linger(handle.conn.into_stream()));
            }
        }
        self.shard.handle_close(conn, now);
    }

    /// Reports a connection that failed while writing.
    fn fail(&mut self, conn: ConnId, error: io::Error, now: Instant) {
        if let Some(handle) = self.conns.get(&conn) {
            log::debug!("{}: writing to {} failed: {error}", self.shard.id(), handle.peer());
        }
        self.drop_conn(conn, now);
    }

    /// Drops a broken connection at once.
    fn drop_conn(&mut self, conn: ConnId, now: Instant) {
        self.conns.remove(&conn);
        self.shard.handle_close(conn, now);
    }

    /// Fires the core's timers and closes connections whose flush timed out.
    fn fire_timers(&mut self, now: Instant) {
        if self.shard.poll_timeout().is_some_and(|due| due <= now) {
            self.shard.handle_timeout(now, UnixTime::from_system_time(SystemTime::now()));
            self.drain_outputs(now);
        }
        while let Some(&(deadline, conn)) = self.closing.first() {
            if deadline > now {
                break;
            }
            self.closing.pop_first();
            // Ids are never reused: a connection that is gone was closed already.
            let Some(handle) = self.conns.get(&conn) else { continue };
            log::debug!("{}: {} did not take its last output in time", self.shard.id(), handle.peer());
            self.finish_close(conn, now);
            self.drain_outputs(now);
        }
    }

    fn next_deadline(&self, others: [Option<Instant>; 3]) -> Option<Instant> {
        [self.shard.poll_timeout(), self.closing.first().map(|&(deadline, _)| deadline)]
            .into_iter()
            .chain(others)
            .flatten()
            .min()
    }

    /// Starts stopping: every connection gets what is queued, then
    /// `* server shutting down`, and closes. Returns the deadline for that.
    fn shut_down(&mut self, now: Instant) -> Instant {
        // Connections accepted before the stop still get the goodbye.
        while let Ok(accepted) = self.inbox.try_recv() {
            self.accept(accepted, now);
        }
        // The stop is one point of the bus order: the first shard here ends
        // the log, and every shard applies all that came before it (a sender
        // may have its echo already, so everyone here must get the line too).
        if let Some(bus) = &self.bus {
            bus.end();
        }
        for _ in 0..1024 {
            if !self.read_bus(now) {
                break;
            }
        }
        log::debug!("{}: shutting down {} connections", self.shard.id(), self.conns.len());
        self.shard.handle_shutdown(now);
        self.drain_outputs(now);
        now + FLUSH_TIMEOUT
    }

    /// Closes whatever is left once the stop deadline passed.
    fn close_all(&mut self, now: Instant) {
        let left: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in left {
            self.finish_close(conn, now);
        }
        self.drain_outputs(now);
    }
}
