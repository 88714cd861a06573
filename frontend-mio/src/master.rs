//! The master process: owns the listeners, forks and supervises the workers,
//! orders the bus, and answers signals and the control socket.
//!
//! It runs one mio `Poll` and never starts a thread, so it may fork at any time.
//! Bus order is the order in which this loop reads whole frames from the
//! workers: each envelope is applied to the replica and queued to every live
//! worker (its publisher included) before the next frame is looked at.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_core::{shard_gone_envelope, Config, Replica, ShardId};
use log::{error, info, warn};
use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::bus::{self, BusConn, Frame, Kind, ReadEnd};
use crate::control::{ControlConn, ControlInput, ControlListener, Request as ControlRequest};
use crate::daemon::{PidFile, Startup};
use crate::privileges::Credentials;
use crate::report::{self, ConnRow, WorkerStatus};
use crate::signals::{self, Request as SignalRequest, Signals};
use crate::sys::{self, Fork};
use crate::worker;

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
/// Worker bus tokens are this plus the shard id (ids are never reused).
const WORKER_BASE: usize = 1 << 20;
/// Control client tokens start here.
const CLIENT_BASE: usize = 1 << 48;

/// How long the master waits for its first workers to report ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long workers answer a status or connections request before the master
/// answers without them.
const REPORT_TIMEOUT: Duration = Duration::from_millis(800);
/// How long a control client may stay connected without sending its request.
const CONTROL_IDLE: Duration = Duration::from_secs(5);
/// How long an immediate stop waits for workers before killing them.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// A worker that ran this long before dying is respawned without delay.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// The longest delay between respawns of a worker that keeps crashing.
const MAX_RESPAWN_DELAY: Duration = Duration::from_secs(10);
/// How long a solo worker may take to say where its solo ends before it is
/// killed as stuck: the new worker waits for it.
const SOLO_END_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything the master starts with, prepared before it daemonized.
pub struct Setup {
    /// The chat's settings.
    pub config: Config,
    /// The address the listeners are bound to.
    pub addr: SocketAddr,
    /// One bound listener per worker slot.
    pub listeners: Vec<TcpListener>,
    /// The locked pid file.
    pub pid_file: PidFile,
    /// The bound control socket.
    pub control: ControlListener,
    /// Bus bytes held for one worker before it is killed as stuck.
    pub max_bus_queue: usize,
    /// Identity the workers switch to, if any.
    pub credentials: Option<Credentials>,
    /// Where to report that the server is up.
    pub startup: Startup,
    /// Extra text for the startup report (the log file in daemon mode).
    pub log_note: String,
}

struct WorkerProc {
    slot: usize,
    pid: Pid,
    bus: Option<BusConn>,
    ready: bool,
    /// Replaced by a reload or told to stop: not respawned when it exits.
    retiring: bool,
    /// Killed by the master (stuck bus): nothing more is sent to it.
    doomed: bool,
    exited: bool,
    started: Instant,
    /// Gets its own envelopes relayed back: not while it is solo.
    echo: bool,
}

/// The lone worker of a one-worker server applies its own envelopes as it
/// publishes them, which spares each line the trip through the master (the
/// master still orders them, for its replica); it must share the bus again
/// before a second worker may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Solo {
    /// `Solo` sent; the worker answers `SoloBegins` once its envelopes in
    /// flight came back.
    Offered(u64),
    On(u64),
    /// `Shared` sent; no worker starts before its `SoloEnds`.
    Ending {
        shard: u64,
        deadline: Instant,
    },
}

impl Solo {
    fn shard(self) -> u64 {
        match self {
            Solo::Offered(shard) | Solo::On(shard) | Solo::Ending { shard, .. } => shard,
        }
    }
}

struct Slot {
    listener: Option<TcpListener>,
    /// The worker that currently serves the slot.
    current: Option<u64>,
    /// Quick deaths in a row, for the growing respawn delay.
    failures: u32,
    respawn_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting(Instant),
    Running,
    /// Stopping; with a deadline when immediate.
    Stopping {
        graceful: bool,
        deadline: Option<Instant>,
    },
}

struct Reload {
    graceful: bool,
    next_slot: usize,
    /// The slot being replaced and its new worker.
    waiting: Option<(usize, u64)>,
    /// Old workers of the current slot that must exit first (immediate reloads).
    old: BTreeSet<u64>,
    /// Control clients waiting for the reload to finish.
    waiters: Vec<Token>,
}

struct Pending {
    id: u64,
    client: Token,
    kind: ControlRequest,
    waiting: BTreeSet<u64>,
    statuses: BTreeMap<u64, WorkerStatus>,
    rows: BTreeMap<u64, Vec<ConnRow>>,
    deadline: Instant,
}

struct Master {
    config: Config,
    addr: SocketAddr,
    poll: Poll,
    signals: Signals,
    control: ControlListener,
    pid_file: PidFile,
    credentials: Option<Credentials>,
    max_bus_queue: usize,
    startup: Option<Startup>,
    log_note: String,
    replica: Replica,
    slots: Vec<Slot>,
    workers: BTreeMap<u64, WorkerProc>,
    next_shard: u64,
    phase: Phase,
    reload: Option<Reload>,
    solo: Option<Solo>,
    clients: HashMap<Token, ControlConn>,
    next_client: usize,
    pending: Vec<Pending>,
    next_request: u64,
    exits: BTreeMap<String, u64>,
    started_wall: i64,
    started: Instant,
    /// The server never came up: exit 1.
    failed: bool,
}

/// Runs the master until it stops; returns the process exit code.
pub fn run(setup: Setup) -> i32 {
    let mut master = match Master::new(setup) {
        Ok(master) => master,
        Err((startup, e)) => {
            error!("cannot start: {e}");
            startup.failed(&format!("cannot start: {e}"));
            return 1;
        }
    };
    let code = match master.run() {
        Ok(code) => code,
        Err(e) => {
            error!("master: {e}");
            master.kill_all();
            1
        }
    };
    master.pid_file.remove();
    master.control.remove();
    code
}

impl Master {
    fn new(setup: Setup) -> Result<Master, (Startup, io::Error)> {
        let Setup {
            config,
            addr,
            listeners,
            pid_file,
            mut control,
            max_bus_queue,
            credentials,
            startup,
            log_note,
        } = setup;
        let prepared = (|| {
            let signals = Signals::new()?;
            let poll = Poll::new()?;
            poll.registry().register(&mut SourceFd(&signals.raw_fd()), SIGNALS, Interest::READABLE)?;
            poll.registry().register(control.listener_mut(), CONTROL, Interest::READABLE)?;
            Ok::<_, io::Error>((signals, poll))
        })();
        let (signals, poll) = match prepared {
            Ok(pair) => pair,
            Err(e) => return Err((startup, e)),
        };
        let now = Instant::now();
        Ok(Master {
            replica: Replica::new(&config),
            config,
            addr,
            poll,
            signals,
            control,
            pid_file,
            credentials,
            max_bus_queue,
            startup: Some(startup),
            log_note,
            slots: listeners
                .into_iter()
                .map(|listener| Slot {
                    listener: Some(listener),
                    current: None,
                    failures: 0,
                    respawn_at: None,
                })
                .collect(),
            workers: BTreeMap::new(),
            next_shard: 1,
            phase: Phase::Starting(now + STARTUP_TIMEOUT),
            reload: None,
            solo: None,
            clients: HashMap::new(),
            next_client: CLIENT_BASE,
            pending: Vec::new(),
            next_request: 1,
            exits: BTreeMap::new(),
            started_wall: unix_now(),
            started: now,
            failed: false,
        })
    }

    fn run(&mut self) -> io::Result<i32> {
        info!("master pid {} starting {} workers on {}", std::process::id(), self.slots.len(), self.addr);
        for slot in 0..self.slots.len() {
            if let Err(e) = self.spawn(slot) {
                self.fail_startup(&format!("cannot fork a worker: {e}"));
                return Ok(1);
            }
        }
        let mut events = Events::with_capacity(256);
        loop {
            if let Some(code) = self.exit_code() {
                return Ok(code);
            }
            let now = Instant::now();
            let timeout = self.timeout(now);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signals()?,
                    CONTROL => self.accept_clients(),
                    Token(t) if (WORKER_BASE..CLIENT_BASE).contains(&t) => {
                        self.on_worker_bus((t - WORKER_BASE) as u64)
                    }
                    token => self.on_client(token),
                }
            }
            self.fire_timers(Instant::now());
            self.offer_solo();
            self.flush_workers();
        }
    }

    /// Returns the exit code once the master is done.
    fn exit_code(&mut self) -> Option<i32> {
        match self.phase {
            Phase::Stopping { .. } if self.workers.is_empty() => {
                info!("master pid {} stopped", std::process::id());
                Some(if self.failed { 1 } else { 0 })
            }
            _ => None,
        }
    }

    fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for slot in &self.slots {
            if let Some(t) = slot.respawn_at {
                consider(t);
            }
        }
        for pending in &self.pending {
            consider(pending.deadline);
        }
        for client in self.clients.values().filter(|c| !c.answered) {
            consider(client.since + CONTROL_IDLE);
        }
        if let Some(Solo::Ending { deadline, .. }) = self.solo {
            consider(deadline);
        }
        match self.phase {
            Phase::Starting(deadline) => consider(deadline),
            Phase::Stopping { deadline: Some(deadline), .. } => consider(deadline),
            _ => {}
        }
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    // ---- workers -------------------------------------------------------

    /// Forks a new worker for `slot`, starting from the replica at this bus
    /// position: every envelope relayed from now on is queued to it too.
    fn spawn(&mut self, slot: usize) -> io::Result<()> {
        // This worker takes the slot: a respawn still pending for it (say a
        // reload got here first) would only start a second, unsupervised one.
        self.slots[slot].respawn_at = None;
        let Some(listener) = self.slots[slot].listener.as_ref() else {
            return Ok(());
        };
        let shard = self.next_shard;
        self.next_shard += 1;
        let (mut master_end, worker_end) = UnixStream::pair()?;
        // The worker's copy of the listener: the master keeps its own, so the
        // accept queue survives the worker.
        let worker_listener = listener.try_clone()?;
        let snapshot = self.replica.snapshot();
        match sys::fork()? {
            Fork::Child => {
                let code = self.become_worker(slot, shard, snapshot, worker_listener, worker_end);
                std::process::exit(code);
            }
            Fork::Parent(pid) => {
                drop(worker_end);
                drop(worker_listener);
                let token = Token(WORKER_BASE + shard as usize);
                self.poll.registry().register(
                    &mut master_end,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                info!("worker {slot} (shard {shard}) started, pid {pid}");
                self.workers.insert(
                    shard,
                    WorkerProc {
                        slot,
                        pid,
                        bus: Some(BusConn::new(master_end)),
                        ready: false,
                        retiring: false,
                        doomed: false,
                        exited: false,
                        started: Instant::now(),
                        echo: true,
                    },
                );
                self.slots[slot].current = Some(shard);
                Ok(())
            }
        }
    }

    /// Runs in the forked child: drops everything of the master's and runs the
    /// worker loop. Never returns to the master's code.
    fn become_worker(
        &mut self,
        slot: usize,
        shard: u64,
        snapshot: Vec<u8>,
        listener: TcpListener,
        bus: UnixStream,
    ) -> i32 {
        let keep = [0, 1, 2, listener.as_raw_fd(), bus.as_raw_fd()];
        if let Err(e) = sys::close_fds_except(&keep) {
            error!("worker {slot}: cannot close inherited descriptors: {e}");
            return 1;
        }
        if let Err(e) = signals::setup_worker() {
            error!("worker {slot}: cannot set up signals: {e}");
            return 1;
        }
        sys::set_process_title(&format!("chat-mio: worker {slot}"));
        if let Some(credentials) = &self.credentials {
            if let Err(e) = credentials.apply() {
                error!("worker {slot}: cannot drop privileges: {e}");
                return 1;
            }
        }
        worker::run(worker::Setup {
            slot,
            shard: ShardId(shard),
            config: self.config.clone(),
            snapshot,
            listener,
            bus,
        })
    }

    fn on_worker_bus(&mut self, shard: u64) {
        let Some(worker) = self.workers.get_mut(&shard) else { return };
        let Some(bus) = worker.bus.as_mut() else { return };
        if !worker.doomed {
            if let Err(e) = bus.flush() {
                warn!("worker {} (pid {}): bus write: {e}", worker.slot, worker.pid);
            }
        }
        let mut frames = Vec::new();
        let end = bus.read_frames(&mut frames);
        for frame in frames {
            self.on_frame(shard, frame);
        }
        match end {
            Ok(ReadEnd::WouldBlock | ReadEnd::Limit) => {}
            Ok(ReadEnd::Closed) => self.bus_closed(shard),
            Err(e) => {
                warn!("shard {shard}: broken bus ({e}); killing the worker");
                self.doom(shard);
                self.bus_closed(shard);
            }
        }
    }

    fn on_frame(&mut self, shard: u64, frame: Frame) {
        match frame.kind {
            Kind::Publish => {
                if self.relaying() {
                    self.relay(&frame.payload);
                }
            }
            Kind::Ready => {
                if let Some(worker) = self.workers.get_mut(&shard) {
                    worker.ready = true;
                    info!("worker {} (pid {}) is ready", worker.slot, worker.pid);
                }
                self.check_started();
                self.step_reload();
            }
            Kind::StatusReply => self.on_reply(shard, &frame.payload, true),
            Kind::ConnectionsReply => self.on_reply(shard, &frame.payload, false),
            Kind::SoloBegins => {
                if let Some(worker) = self.workers.get_mut(&shard) {
                    worker.echo = false;
                    info!("worker {} is the only one: it applies its own lines at once", worker.slot);
                }
                if self.solo == Some(Solo::Offered(shard)) {
                    self.solo = Some(Solo::On(shard));
                }
            }
            Kind::SoloEnds => {
                if let Some(worker) = self.workers.get_mut(&shard) {
                    worker.echo = true;
                }
                if self.solo.is_some_and(|solo| solo.shard() == shard) {
                    self.solo = None;
                    self.step_reload();
                }
            }
            other => warn!("shard {shard}: unexpected bus frame {other:?}"),
        }
    }

    /// Tells whether envelopes still flow: not once an immediate stop began
    /// (nobody is told of the others' closes during a shutdown).
    fn relaying(&self) -> bool {
        !matches!(self.phase, Phase::Stopping { graceful: false, .. })
    }

    /// Puts one envelope at the next bus position: the replica, then every
    /// worker that still listens, in one order for all.
    fn relay(&mut self, envelope: &[u8]) {
        if let Err(e) = self.replica.apply(envelope) {
            error!("dropping an undecodable envelope: {e}");
            return;
        }
        let mut frame = Vec::with_capacity(envelope.len() + 5);
        bus::encode(&mut frame, Kind::Envelope, envelope);
        for worker in self.workers.values_mut() {
            if worker.doomed || !worker.echo {
                continue;
            }
            if let Some(bus) = worker.bus.as_mut() {
                // Written once per loop turn by `flush_workers`: many frames in
                // one write cost the socket far less than one write each.
                bus.queue_encoded(&frame);
            }
        }
    }

    /// Writes what waits for each worker, and kills a worker whose backlog
    /// passed `--max-bus-queue`: it stopped reading (stopped, stuck) and must
    /// not make the master buffer without bound.
    fn flush_workers(&mut self) {
        let mut stuck = Vec::new();
        for (&shard, worker) in &mut self.workers {
            if worker.doomed {
                continue;
            }
            let Some(bus) = worker.bus.as_mut() else { continue };
            // A write error shows up as EOF on the read side, which handles the death.
            let _ = bus.flush();
            if bus.queued() > self.max_bus_queue {
                stuck.push(shard);
            }
        }
        for shard in stuck {
            if let Some(worker) = self.workers.get(&shard) {
                warn!(
                    "worker {} (pid {}) does not read its bus (over {} queued); killing it",
                    worker.slot,
                    worker.pid,
                    report::human_bytes(self.max_bus_queue as u64)
                );
            }
            self.doom(shard);
        }
    }

    /// Kills a worker and stops sending to it; its bus is still read to EOF so
    /// every whole frame it sent before dying keeps its bus position.
    fn doom(&mut self, shard: u64) {
        if let Some(worker) = self.workers.get_mut(&shard) {
            worker.doomed = true;
            if let Some(bus) = worker.bus.as_mut() {
                bus.discard_outbound();
            }
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
    }

    /// A worker's bus reached EOF: every frame it sent is relayed, so its
    /// connections can be announced closed now, exactly once.
    fn bus_closed(&mut self, shard: u64) {
        let Some(worker) = self.workers.get_mut(&shard) else { return };
        if let Some(mut bus) = worker.bus.take() {
            let _ = self.poll.registry().deregister(bus.stream_mut());
        }
        if self.relaying() {
            self.relay(&shard_gone_envelope(ShardId(shard)));
        }
        self.forget_if_gone(shard);
        self.answer_pending_without(shard);
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, format!("exit {code}"), code == 0),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    self.exited(pid, signal.as_str().to_string(), false)
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error!("waitpid: {e}");
                    return;
                }
            }
        }
    }

    fn exited(&mut self, pid: Pid, status: String, clean: bool) {
        let Some((&shard, worker)) = self.workers.iter_mut().find(|(_, w)| w.pid == pid) else {
            return;
        };
        worker.exited = true;
        *self.exits.entry(status.clone()).or_default() += 1;
        let expected = worker.retiring || matches!(self.phase, Phase::Stopping { .. });
        let slot = worker.slot;
        if expected && clean {
            info!("worker {slot} (pid {pid}) exited ({status})");
        } else {
            warn!("worker {slot} (pid {pid}) exited ({status})");
        }
        let lived = worker.started.elapsed();
        let quick = !clean || lived < STABLE_AFTER;
        let was_ready = worker.ready;
        if matches!(self.phase, Phase::Starting(_)) && !was_ready {
            self.fail_startup(&format!("worker {slot} exited while starting ({status})"));
        }
        if self.slots[slot].current == Some(shard) {
            self.slots[slot].current = None;
            if !matches!(self.phase, Phase::Stopping { .. }) {
                let failures = if quick { self.slots[slot].failures + 1 } else { 0 };
                self.slots[slot].failures = failures;
                let delay = respawn_delay(failures);
                if !delay.is_zero() {
                    warn!("worker {slot} keeps dying; respawning in {delay:?}");
                }
                self.slots[slot].respawn_at = Some(Instant::now() + delay);
            }
        }
        self.forget_if_gone(shard);
    }

    /// Removes a worker once both its process is reaped and its bus is closed.
    fn forget_if_gone(&mut self, shard: u64) {
        let gone = self.workers.get(&shard).is_some_and(|w| w.exited && w.bus.is_none());
        if gone {
            self.workers.remove(&shard);
            if let Some(reload) = self.reload.as_mut() {
                reload.old.remove(&shard);
            }
            self.step_reload();
        }
    }

    // ---- lifecycle -----------------------------------------------------

    fn check_started(&mut self) {
        if !matches!(self.phase, Phase::Starting(_)) {
            return;
        }
        let all_ready = self
            .slots
            .iter()
            .all(|slot| slot.current.and_then(|shard| self.workers.get(&shard)).is_some_and(|w| w.ready));
        if !all_ready {
            return;
        }
        self.phase = Phase::Running;
        info!("chat-mio listening on {} with {} workers", self.addr, self.slots.len());
        if let Some(startup) = self.startup.take() {
            startup.ready(&format!(
                "chat-mio listening on {}\nchat-mio master pid {}, {} workers, pid file {}{}\n",
                self.addr,
                std::process::id(),
                self.slots.len(),
                self.pid_file.path().display(),
                self.log_note
            ));
        }
    }

    fn fail_startup(&mut self, message: &str) {
        error!("{message}");
        self.failed = true;
        if let Some(startup) = self.startup.take() {
            startup.failed(message);
        }
        self.stop(false);
    }

    fn stop(&mut self, graceful: bool) {
        match self.phase {
            Phase::Stopping { graceful: false, .. } => return,
            Phase::Stopping { graceful: true, .. } if graceful => return,
            _ => {}
        }
        if graceful {
            info!("stopping gracefully: no new connections, waiting for clients to leave");
        } else {
            info!("stopping");
        }
        self.phase =
            Phase::Stopping { graceful, deadline: (!graceful).then(|| Instant::now() + STOP_TIMEOUT) };
        for slot in &mut self.slots {
            // Closing the master's copies (the workers drop theirs) makes new
            // connections be refused rather than wait in a queue nobody reads.
            slot.listener = None;
            slot.respawn_at = None;
        }
        if let Some(reload) = self.reload.take() {
            for token in reload.waiters {
                self.answer(token, "chat-mio is stopping; reload abandoned\n");
            }
        }
        let kind = if graceful { Kind::GracefulStop } else { Kind::Stop };
        for worker in self.workers.values_mut() {
            worker.retiring = true;
            if let (Some(bus), false) = (worker.bus.as_mut(), worker.doomed) {
                bus.queue(kind, &[]);
                let _ = bus.flush();
            }
        }
    }

    /// Kills every worker and waits for them; the last resort of a stop.
    fn kill_all(&mut self) {
        for worker in self.workers.values() {
            let _ = kill(worker.pid, Signal::SIGKILL);
        }
        for worker in self.workers.values() {
            let _ = waitpid(worker.pid, None);
        }
        self.workers.clear();
    }

    fn on_signals(&mut self) -> io::Result<()> {
        for request in self.signals.drain()? {
            match request {
                SignalRequest::Stop => self.stop(false),
                SignalRequest::GracefulStop => self.stop(true),
                SignalRequest::Reload => self.start_reload(false, None),
                SignalRequest::GracefulReload => self.start_reload(true, None),
                SignalRequest::Child => self.reap(),
            }
        }
        Ok(())
    }

    fn fire_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Starting(deadline) if now >= deadline => {
                self.fail_startup("the workers did not become ready in time");
            }
            Phase::Stopping { deadline: Some(deadline), .. } if now >= deadline => {
                warn!("workers did not stop in time; killing them");
                self.kill_all();
            }
            _ => {}
        }
        if let Some(Solo::Ending { shard, deadline }) = self.solo {
            if now >= deadline {
                warn!("shard {shard} did not end its solo in time; killing its worker");
                self.doom(shard);
                self.step_reload();
            }
        }
        for slot in 0..self.slots.len() {
            if self.slots[slot].respawn_at.is_some_and(|t| t <= now) {
                if self.hold_for_solo() {
                    continue;
                }
                self.slots[slot].respawn_at = None;
                if let Err(e) = self.spawn(slot) {
                    error!("cannot respawn worker {slot}: {e}");
                    self.slots[slot].respawn_at = Some(now + MAX_RESPAWN_DELAY);
                }
                self.step_reload();
            }
        }
        let expired: Vec<u64> = self.pending.iter().filter(|p| p.deadline <= now).map(|p| p.id).collect();
        for id in expired {
            self.finish_pending(id);
        }
        let idle: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.answered && c.since + CONTROL_IDLE <= now)
            .map(|(&token, _)| token)
            .collect();
        for token in idle {
            self.drop_client(token);
        }
    }

    // ---- solo ----------------------------------------------------------

    /// Offers the lone worker of a one-worker server to go solo (see [`Solo`]).
    fn offer_solo(&mut self) {
        if self.solo.is_some()
            || self.phase != Phase::Running
            || self.reload.is_some()
            || self.slots.len() != 1
            || self.slots[0].respawn_at.is_some()
            || self.workers.len() != 1
        {
            return;
        }
        let Some((&shard, worker)) = self.workers.iter_mut().next() else { return };
        if !worker.ready || worker.retiring || worker.doomed || worker.exited {
            return;
        }
        let Some(bus) = worker.bus.as_mut() else { return };
        bus.queue(Kind::Solo, &[]);
        self.solo = Some(Solo::Offered(shard));
    }

    /// Tells whether a new worker must wait for a solo to end, and asks the
    /// solo worker to end it if it was not asked yet. A solo worker that died
    /// ends its solo: what it published is relayed to the others as usual.
    fn hold_for_solo(&mut self) -> bool {
        let Some(solo) = self.solo else { return false };
        let shard = solo.shard();
        let worker = self.workers.get_mut(&shard).filter(|w| !w.doomed && !w.exited);
        let Some(bus) = worker.and_then(|w| w.bus.as_mut()) else {
            self.solo = None;
            return false;
        };
        if !matches!(solo, Solo::Ending { .. }) {
            info!("shard {shard} shares the bus again: another worker is starting");
            bus.queue(Kind::Shared, &[]);
            let _ = bus.flush();
            self.solo = Some(Solo::Ending { shard, deadline: Instant::now() + SOLO_END_TIMEOUT });
        }
        true
    }

    // ---- reload --------------------------------------------------------

    fn start_reload(&mut self, graceful: bool, waiter: Option<Token>) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            if let Some(token) = waiter {
                self.answer(token, "chat-mio is stopping; not reloading\n");
            }
            return;
        }
        if let Some(reload) = self.reload.as_mut() {
            // One reload at a time; a second request waits for the running one.
            reload.waiters.extend(waiter);
            return;
        }
        info!("reloading {} workers{}", self.slots.len(), if graceful { " gracefully" } else { "" });
        self.reload = Some(Reload {
            graceful,
            next_slot: 0,
            waiting: None,
            old: BTreeSet::new(),
            waiters: waiter.into_iter().collect(),
        });
        self.step_reload();
    }

    /// Moves the reload on: replace slot after slot, each new worker ready
    /// before the old one is told to stop, so the slot keeps accepting.
    fn step_reload(&mut self) {
        loop {
            let Some(reload) = self.reload.as_mut() else { return };
            if !reload.old.is_empty() {
                return;
            }
            if let Some((slot, new)) = reload.waiting {
                match self.workers.get(&new) {
                    Some(w) if w.ready => {
                        let graceful = reload.graceful;
                        reload.waiting = None;
                        let kind = if graceful { Kind::GracefulStop } else { Kind::Stop };
                        let mut old = BTreeSet::new();
                        for (&shard, worker) in &mut self.workers {
                            if worker.slot == slot && shard != new && !worker.retiring {
                                worker.retiring = true;
                                if let (Some(bus), false) = (worker.bus.as_mut(), worker.doomed) {
                                    bus.queue(kind, &[]);
                                    let _ = bus.flush();
                                }
                                old.insert(shard);
                            }
                        }
                        if let Some(reload) = self.reload.as_mut() {
                            if !graceful {
                                reload.old = old;
                            }
                        }
                        continue;
                    }
                    Some(_) => return,
                    None => match self.slots[slot].current {
                        // The new worker died; wait for its replacement instead.
                        Some(current) => {
                            reload.waiting = Some((slot, current));
                            continue;
                        }
                        None => return,
                    },
                }
            }
            if reload.next_slot >= self.slots.len() {
                let waiters = std::mem::take(&mut reload.waiters);
                self.reload = None;
                info!("reload done");
                let text = format!("chat-mio reloaded {} workers\n", self.slots.len());
                for token in waiters {
                    self.answer(token, &text);
                }
                return;
            }
            if self.hold_for_solo() {
                return;
            }
            let Some(reload) = self.reload.as_mut() else { return };
            let slot = reload.next_slot;
            reload.next_slot += 1;
            match self.spawn(slot) {
                Ok(()) => {
                    if let (Some(reload), Some(new)) = (self.reload.as_mut(), self.slots[slot].current) {
                        reload.waiting = Some((slot, new));
                    }
                }
                Err(e) => error!("reload: cannot fork a worker for slot {slot}: {e}"),
            }
        }
    }

    // ---- control socket ------------------------------------------------

    fn accept_clients(&mut self) {
        loop {
            match self.control.listener_mut().accept() {
                Ok((stream, _)) => {
                    let token = Token(self.next_client);
                    self.next_client += 1;
                    let mut client = ControlConn::new(stream);
                    if self
                        .poll
                        .registry()
                        .register(&mut client.stream, token, Interest::READABLE | Interest::WRITABLE)
                        .is_ok()
                    {
                        self.clients.insert(token, client);
                        self.on_client(token);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("control socket accept: {e}");
                    return;
                }
            }
        }
    }

    fn on_client(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else { return };
        if client.flush().is_err() || client.done() {
            self.drop_client(token);
            return;
        }
        match client.read() {
            ControlInput::Pending => {}
            ControlInput::Gone => self.drop_client(token),
            ControlInput::Request(None) => self.answer(token, "unknown request\n"),
            ControlInput::Request(Some(request)) => self.on_request(token, request),
        }
    }

    fn drop_client(&mut self, token: Token) {
        if let Some(mut client) = self.clients.remove(&token) {
            let _ = self.poll.registry().deregister(&mut client.stream);
        }
    }

    fn answer(&mut self, token: Token, text: &str) {
        let Some(client) = self.clients.get_mut(&token) else { return };
        if client.answer(text).is_err() || client.done() {
            self.drop_client(token);
        }
    }

    fn on_request(&mut self, token: Token, request: ControlRequest) {
        match request {
            ControlRequest::Reload(graceful) => self.start_reload(graceful, Some(token)),
            ControlRequest::Status | ControlRequest::Connections => {
                let id = self.next_request;
                self.next_request += 1;
                let kind = if request == ControlRequest::Status {
                    Kind::StatusRequest
                } else {
                    Kind::ConnectionsRequest
                };
                let mut waiting = BTreeSet::new();
                for (&shard, worker) in &mut self.workers {
                    if let (Some(bus), true, false) = (worker.bus.as_mut(), worker.ready, worker.doomed) {
                        bus.queue(kind, &id.to_be_bytes());
                        let _ = bus.flush();
                        waiting.insert(shard);
                    }
                }
                self.pending.push(Pending {
                    id,
                    client: token,
                    kind: request,
                    waiting,
                    statuses: BTreeMap::new(),
                    rows: BTreeMap::new(),
                    deadline: Instant::now() + REPORT_TIMEOUT,
                });
                self.maybe_finish(id);
            }
        }
    }

    fn on_reply(&mut self, shard: u64, payload: &[u8], status: bool) {
        let Some((id_bytes, body)) = payload.split_first_chunk::<8>() else { return };
        let id = u64::from_be_bytes(*id_bytes);
        let Some(pending) = self.pending.iter_mut().find(|p| p.id == id) else { return };
        if !pending.waiting.remove(&shard) {
            return;
        }
        if status {
            match WorkerStatus::decode(body) {
                Ok(s) => {
                    pending.statuses.insert(shard, s);
                }
                Err(e) => warn!("shard {shard}: bad status reply: {e}"),
            }
        } else {
            match report::decode_rows(body) {
                Ok(rows) => {
                    pending.rows.insert(shard, rows);
                }
                Err(e) => warn!("shard {shard}: bad connections reply: {e}"),
            }
        }
        self.maybe_finish(id);
    }

    /// A worker went away: requests stop waiting for it.
    fn answer_pending_without(&mut self, shard: u64) {
        let ids: Vec<u64> =
            self.pending.iter_mut().filter_map(|p| p.waiting.remove(&shard).then_some(p.id)).collect();
        for id in ids {
            self.maybe_finish(id);
        }
    }

    fn maybe_finish(&mut self, id: u64) {
        if self.pending.iter().any(|p| p.id == id && p.waiting.is_empty()) {
            self.finish_pending(id);
        }
    }

    fn finish_pending(&mut self, id: u64) {
        let Some(index) = self.pending.iter().position(|p| p.id == id) else { return };
        let pending = self.pending.swap_remove(index);
        let text = match pending.kind {
            ControlRequest::Status => self.status_text(&pending),
            _ => self.connections_text(&pending),
        };
        self.answer(pending.client, &text);
    }

    fn status_text(&self, pending: &Pending) -> String {
        let mut out = String::new();
        let uptime = self.started.elapsed().as_secs();
        let _ = writeln!(out, "chat-mio is running");
        let _ = writeln!(
            out,
            "master pid {}, started {}, uptime {}",
            std::process::id(),
            report::utc_time(self.started_wall),
            report::human_duration(uptime)
        );
        let _ = writeln!(out, "load average {}", load_average());
        let _ = writeln!(
            out,
            "listening on {}, {} worker slots, {} server-wide connections",
            self.addr,
            self.slots.len(),
            self.replica.connection_count()
        );
        let exits = if self.exits.is_empty() {
            "none".to_string()
        } else {
            self.exits.iter().map(|(status, n)| format!("{status}: {n}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(out, "worker exits: {exits}");
        let mut rows = vec![[
            "worker",
            "pid",
            "shard",
            "state",
            "memory",
            "connections",
            "lines-in",
            "lines-out",
            "bytes-in",
            "bytes-out",
            "queued",
            "accepted",
        ]
        .map(String::from)
        .to_vec()];
        let mut total = 0;
        let mut workers: Vec<(&u64, &WorkerProc)> = self.workers.iter().collect();
        workers.sort_by_key(|(shard, w)| (w.slot, **shard));
        for (shard, worker) in workers {
            let state = if worker.doomed {
                "killed"
            } else if worker.retiring {
                "stopping"
            } else if worker.ready {
                "running"
            } else {
                "starting"
            };
            let mut row = vec![
                worker.slot.to_string(),
                worker.pid.to_string(),
                shard.to_string(),
                state.to_string(),
                memory_of(worker.pid),
            ];
            match pending.statuses.get(shard) {
                Some(s) => {
                    total += s.connections;
                    row.extend([
                        s.connections.to_string(),
                        s.lines_in.to_string(),
                        s.lines_out.to_string(),
                        s.bytes_in.to_string(),
                        s.bytes_out.to_string(),
                        s.queued.to_string(),
                        s.accepted.to_string(),
                    ]);
                }
                None => row.push("(no answer)".to_string()),
            }
            rows.push(row);
        }
        out.push_str(&report::table(&rows));
        let _ = writeln!(out, "{total} connections on {} workers", self.workers.len());
        out
    }

    fn connections_text(&self, pending: &Pending) -> String {
        let mut rows =
            vec![["id", "nick", "room", "worker", "pid", "peer", "bytes-in", "bytes-out", "queued"]
                .map(String::from)
                .to_vec()];
        let mut count = 0;
        let mut all: Vec<(Option<u64>, usize, &WorkerProc, &ConnRow)> = Vec::new();
        for (shard, list) in &pending.rows {
            let Some(worker) = self.workers.get(shard) else { continue };
            for row in list {
                all.push((row.id, worker.slot, worker, row));
            }
        }
        all.sort_by_key(|(id, slot, _, _)| (id.is_none(), *id, *slot));
        for (id, slot, worker, row) in all {
            count += 1;
            rows.push(vec![
                id.map_or_else(|| "-".to_string(), |id| id.to_string()),
                row.nick.clone().unwrap_or_else(|| "-".to_string()),
                if row.room.is_empty() { "-".to_string() } else { row.room.clone() },
                slot.to_string(),
                worker.pid.to_string(),
                if row.peer.is_empty() { "-".to_string() } else { row.peer.clone() },
                row.bytes_in.to_string(),
                row.bytes_out.to_string(),
                row.queued.to_string(),
            ]);
        }
        let mut out = report::table(&rows);
        let missing = self
            .workers
            .iter()
            .filter(|(shard, w)| w.ready && !w.doomed && !pending.rows.contains_key(shard))
            .count();
        let _ = write!(out, "{count} connections");
        if missing > 0 {
            let _ = write!(out, " ({missing} workers did not answer)");
        }
        out.push('\n');
        out
    }
}

/// The delay before respawning a worker after `failures` quick deaths in a row:
/// none for the first, then 100 ms doubling up to [`MAX_RESPAWN_DELAY`].
fn respawn_delay(failures: u32) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    let exp = (failures - 2).min(16);
    Duration::from_millis(100u64 << exp).min(MAX_RESPAWN_DELAY)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

/// A process's resident memory, from /proc/PID/status.
fn memory_of(pid: Pid) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or_else(|| "-".to_string(), |kb| report::human_bytes(kb * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respawn_delay_grows_and_is_capped() {
        assert_eq!(respawn_delay(0), Duration::ZERO);
        assert_eq!(respawn_delay(1), Duration::ZERO);
        assert_eq!(respawn_delay(2), Duration::from_millis(100));
        assert_eq!(respawn_delay(3), Duration::from_millis(200));
        assert_eq!(respawn_delay(40), MAX_RESPAWN_DELAY);
    }
}
