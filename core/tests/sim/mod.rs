//! A deterministic simulated world for the property tests, after quinn's `Pair::drive` and
//! firezone's `TunnelTest`: shards, the party that orders their bus (with its
//! [`Replica`]), clients that record every byte they read, and a clock.
//!
//! A test applies [`Step`]s. After each one the world drains every shard until it is
//! quiet (clients read what is queued for them unless they are stalled, closes are
//! honoured, published envelopes wait in their shard's outbox) and checks the
//! invariants that hold at every moment: no queue above `max_queue`, and each shard
//! holds exactly the connections its clients think are open.
//!
//! The bus has two stages, as the mio master does: [`Step::Handoff`] moves envelopes
//! from one shard's outbox to the orderer (the order of handoffs is the bus order), and
//! [`Step::DeliverBus`] delivers the oldest ordered envelopes to every live shard and to
//! the replica. [`Step::KillShard`] drops what the dead shard had not handed off and
//! queues its "shard gone" envelope; [`Step::StartShard`] starts a shard from the
//! replica's snapshot, so it gets exactly the envelopes delivered after it.
#![allow(dead_code)] // every test crate uses a different part of the simulation

pub mod gen;
pub mod pair;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chat_core::{
    shard_gone_envelope, ClientId, CloseReason, Config, ConnId, Output, Replica, Shard, ShardId, UnixTime,
};
use proptest::test_runner::Config as ProptestConfig;

/// Wall-clock seconds at the start of every world: 2026-11-25 00:00:00 UTC, so that
/// `Server Time` lines read the simulated time of day.
pub const WALL_BASE: i64 = 1_795_564_800;

/// The most shards alive at once; [`Step::StartShard`] does nothing beyond it.
pub const MAX_LIVE_SHARDS: usize = 4;

/// An arbitrary base instant for a world: the core only ever sees time as an argument.
#[allow(clippy::disallowed_methods)] // the one clock read of the tests; everything after it is simulated
pub fn base_instant() -> Instant {
    Instant::now()
}

/// A proptest configuration with `cases` cases, unless `PROPTEST_CASES` says otherwise.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, max_shrink_iters: 2048, ..ProptestConfig::default() }
}

/// One thing that happens in the world. Client and shard numbers that name nothing
/// (yet) make the step a no-op; a shard number is taken modulo the live shards.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// A client connects to a shard; clients are numbered in connect order.
    Connect { shard: usize },
    /// A client sends bytes, read by its shard in these chunks.
    Send { client: usize, chunks: Vec<Vec<u8>> },
    /// A client ends its stream cleanly.
    Eof { client: usize },
    /// A client's connection is reset (or the frontend gives up flushing it).
    Close { client: usize },
    /// Time passes; every timer due on the way fires at its deadline.
    Advance { millis: u64 },
    /// A client stops reading.
    Stall { client: usize },
    /// A client reads everything again.
    Resume { client: usize },
    /// A client, stalled or not, reads at most `max` bytes once.
    Read { client: usize, max: usize },
    /// The orderer takes up to `n` envelopes from a shard's outbox, in publishing order.
    Handoff { shard: usize, n: usize },
    /// The orderer delivers up to `n` ordered envelopes to every live shard.
    DeliverBus { n: usize },
    /// A new shard starts late, from the replica's snapshot.
    StartShard,
    /// A shard dies (only if another one lives).
    KillShard { shard: usize },
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Connect { shard } => write!(f, "Connect {{ shard: {shard} }}"),
            Step::Send { client, chunks } => {
                write!(f, "Send {{ client: {client}, chunks: [")?;
                for (i, chunk) in chunks.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}b\"{}\"", chunk.escape_ascii())?;
                }
                write!(f, "] }}")
            }
            Step::Eof { client } => write!(f, "Eof {{ client: {client} }}"),
            Step::Close { client } => write!(f, "Close {{ client: {client} }}"),
            Step::Advance { millis } => write!(f, "Advance {{ millis: {millis} }}"),
            Step::Stall { client } => write!(f, "Stall {{ client: {client} }}"),
            Step::Resume { client } => write!(f, "Resume {{ client: {client} }}"),
            Step::Read { client, max } => write!(f, "Read {{ client: {client}, max: {max} }}"),
            Step::Handoff { shard, n } => write!(f, "Handoff {{ shard: {shard}, n: {n} }}"),
            Step::DeliverBus { n } => write!(f, "DeliverBus {{ n: {n} }}"),
            Step::StartShard => write!(f, "StartShard"),
            Step::KillShard { shard } => write!(f, "KillShard {{ shard: {shard} }}"),
        }
    }
}

/// How the shards of a world are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One `Shard::standalone`: its envelopes loop straight back, there is no bus.
    Standalone,
    /// Shards built with `Shard::new` joined by the simulated bus.
    Cluster,
    /// One shard built with `Shard::new` that went solo: it applies its own
    /// envelopes as it publishes them, and the bus gives them only to the
    /// replica (until [`World::end_solo`]).
    Solo,
}

/// Where a client's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Connected; its input is read.
    Open,
    /// The shard asked to close it; bytes are still queued for it (it is stalled).
    Closing,
    /// Closed and reported closed to the shard.
    Gone,
    /// Its shard died.
    Dead,
}

/// One client: a telnet user at the other end of one connection.
#[derive(Debug)]
pub struct Client {
    /// Index of its shard in [`World::nodes`].
    pub node: usize,
    pub conn: ConnId,
    /// Every byte it read, in order.
    pub transcript: Vec<u8>,
    /// Every byte it sent, in order.
    pub sent: Vec<u8>,
    pub stalled: bool,
    /// Never reads at all, not even when the world settles.
    pub held: bool,
    /// Still reads, but records nothing more (a reference client whose twin died).
    pub frozen: bool,
    pub state: State,
    /// Why the shard closed it, if it did.
    pub reason: Option<CloseReason>,
    /// The step during which the shard closed it.
    pub closed_at: Option<usize>,
    /// Its server-wide number, once its shard has admitted it.
    pub id: Option<ClientId>,
    /// Bytes queued for it were lost (it was reset, kicked, or its shard died): what it
    /// read may stop anywhere.
    pub cut: bool,
}

impl Client {
    fn reachable(&self) -> bool {
        matches!(self.state, State::Open | State::Closing)
    }
}

/// One shard incarnation.
#[derive(Debug)]
pub struct Node {
    pub id: ShardId,
    /// `None` once it died.
    pub shard: Option<Shard>,
    /// Envelopes it published that the orderer has not taken yet.
    pub outbox: VecDeque<Vec<u8>>,
}

/// One envelope as the bus delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// An action of this client's connection.
    From { client: usize, envelope: Vec<u8> },
    /// The "shard gone" envelope of this node.
    Gone { node: usize },
}

/// The simulated world.
pub struct World {
    pub config: Config,
    pub mode: Mode,
    start: Instant,
    now: Instant,
    pub nodes: Vec<Node>,
    next_shard: u64,
    /// Envelopes the orderer took, in bus order, not yet delivered.
    pub queue: VecDeque<Vec<u8>>,
    replica: Replica,
    pub clients: Vec<Client>,
    owners: BTreeMap<(ShardId, ConnId), usize>,
    held: BTreeSet<usize>,
    /// Every envelope delivered, in bus order.
    pub log: Vec<Delivery>,
    /// How many steps were applied.
    pub step: usize,
}

impl World {
    /// A world of one standalone shard.
    pub fn standalone(config: Config) -> World {
        let start = base_instant();
        let shard = Shard::standalone(config.clone(), start);
        let mut world = World::empty(config, Mode::Standalone, start);
        world.nodes.push(Node { id: shard.id(), shard: Some(shard), outbox: VecDeque::new() });
        world
    }

    /// A world of one shard on the simulated bus that went solo from the start.
    pub fn solo(config: Config) -> World {
        let mut world = World::cluster(config, 1);
        world.mode = Mode::Solo;
        let went = world.nodes[0].shard.as_mut().is_some_and(Shard::go_solo);
        assert!(went, "a new shard refused to go solo");
        world
    }

    /// Ends a solo world's solo: the bus takes and delivers what the shard
    /// published so far (to the replica alone), then delivers everything to
    /// the shard again, as a clustered world does.
    pub fn end_solo(&mut self) {
        assert_eq!(self.mode, Mode::Solo, "only a solo world ends its solo");
        self.flush_bus();
        for node in &mut self.nodes {
            if let Some(shard) = node.shard.as_mut() {
                shard.end_solo();
            }
        }
        self.mode = Mode::Cluster;
    }

    /// Puts a clustered world of one shard back into solo, once every
    /// envelope it published came back; returns whether it went.
    pub fn go_solo(&mut self) -> bool {
        if self.mode != Mode::Cluster || self.live_nodes().len() != 1 {
            return false;
        }
        self.flush_bus();
        let went = self.nodes.iter_mut().filter_map(|n| n.shard.as_mut()).all(Shard::go_solo);
        assert!(went, "a settled shard refused to go solo");
        self.mode = Mode::Solo;
        true
    }

    /// Hands every outbox to the orderer and delivers everything ordered,
    /// until nothing is left on the bus (clients read no more than they would).
    pub fn flush_bus(&mut self) {
        for _ in 0..10_000 {
            let live = self.live_nodes();
            if self.queue.is_empty() && live.iter().all(|&n| self.nodes[n].outbox.is_empty()) {
                return;
            }
            let handoffs = (0..live.len()).map(|shard| Step::Handoff { shard, n: usize::MAX });
            let steps: Vec<Step> = handoffs.chain([Step::DeliverBus { n: usize::MAX }]).collect();
            self.run(&steps);
        }
        panic!("the bus never emptied");
    }

    /// How many connections the bus's replica counts.
    pub fn replica_connections(&self) -> usize {
        self.replica.connection_count()
    }

    /// A world of `shards` shards joined by the simulated bus from its first envelope.
    pub fn cluster(config: Config, shards: usize) -> World {
        let start = base_instant();
        let mut world = World::empty(config, Mode::Cluster, start);
        for _ in 0..shards.max(1) {
            let id = world.fresh_shard_id();
            let shard = Shard::new(world.config.clone(), id, start);
            world.nodes.push(Node { id, shard: Some(shard), outbox: VecDeque::new() });
        }
        world
    }

    fn empty(config: Config, mode: Mode, start: Instant) -> World {
        World {
            replica: Replica::new(&config),
            config,
            mode,
            start,
            now: start,
            nodes: Vec::new(),
            next_shard: 1,
            queue: VecDeque::new(),
            clients: Vec::new(),
            owners: BTreeMap::new(),
            held: BTreeSet::new(),
            log: Vec::new(),
            step: 0,
        }
    }

    fn fresh_shard_id(&mut self) -> ShardId {
        let id = ShardId(self.next_shard);
        self.next_shard += 1;
        id
    }

    /// Marks the client that will get number `client` as one that never reads.
    pub fn hold(&mut self, client: usize) {
        self.held.insert(client);
    }

    /// Milliseconds since the world started.
    pub fn elapsed_millis(&self) -> u64 {
        u64::try_from(self.now.duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// The wall-clock time the world's frontends would read now.
    pub fn wall(&self) -> UnixTime {
        let secs = i64::try_from(self.now.duration_since(self.start).as_secs()).unwrap_or(i64::MAX);
        UnixTime(WALL_BASE + secs)
    }

    /// The indices of the live shards, in start order.
    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&n| self.nodes[n].shard.is_some()).collect()
    }

    fn pick_live(&self, k: usize) -> Option<usize> {
        let live = self.live_nodes();
        if live.is_empty() {
            None
        } else {
            Some(live[k % live.len()])
        }
    }

    /// What a client has read so far.
    pub fn transcript(&self, client: usize) -> &[u8] {
        &self.clients[client].transcript
    }

    /// The bytes queued for a client and not yet read.
    pub fn queued(&self, client: usize) -> usize {
        let c = &self.clients[client];
        match &self.nodes[c.node].shard {
            Some(shard) if c.reachable() => shard.transmit(c.conn).len(),
            _ => 0,
        }
    }

    /// How many connections the whole server has admitted and not closed.
    pub fn server_connections(&self) -> usize {
        match self.mode {
            Mode::Cluster => self.replica.connection_count(),
            Mode::Standalone | Mode::Solo => {
                self.nodes.iter().filter_map(|n| n.shard.as_ref()).map(|s| s.stats().server_connections).sum()
            }
        }
    }

    /// A client's server-wide number: as its shard reported it, or else (when it died or
    /// closed before anyone looked) its rank among the connects the bus delivered, which
    /// is its number as long as no connect was refused.
    pub fn client_id(&self, client: usize) -> Option<u64> {
        if let Some(id) = self.clients.get(client)?.id {
            return Some(id.0);
        }
        let mut seen = BTreeSet::new();
        for delivery in &self.log {
            if let Delivery::From { client: c, .. } = delivery {
                if seen.insert(*c) && *c == client {
                    return Some(seen.len() as u64);
                }
            }
        }
        None
    }

    /// Applies one step, drains every shard until quiet, and checks the invariants.
    pub fn apply(&mut self, step: &Step) {
        match *step {
            Step::Connect { shard } => self.connect(shard),
            Step::Send { client, ref chunks } => self.send(client, chunks),
            Step::Eof { client } => {
                let now = self.now;
                if let Some((shard, conn)) = self.open_conn(client) {
                    shard.handle_eof(conn, now);
                }
            }
            Step::Close { client } => self.reset(client),
            Step::Advance { millis } => self.advance(Duration::from_millis(millis)),
            Step::Stall { client } => {
                if let Some(c) = self.clients.get_mut(client) {
                    c.stalled = true;
                }
            }
            Step::Resume { client } => {
                if let Some(c) = self.clients.get_mut(client) {
                    if !c.held {
                        c.stalled = false;
                        self.read(client, usize::MAX);
                    }
                }
            }
            Step::Read { client, max } => {
                if self.clients.get(client).is_some_and(|c| !c.held) {
                    self.read(client, max);
                }
            }
            Step::Handoff { shard, n } => self.handoff(shard, n),
            Step::DeliverBus { n } => {
                for _ in 0..n {
                    if self.deliver_next().is_none() {
                        break;
                    }
                }
            }
            Step::StartShard => self.start_shard(),
            Step::KillShard { shard } => self.kill(shard),
        }
        self.drain();
        self.step += 1;
        self.check();
    }

    /// Applies every step in order.
    pub fn run(&mut self, steps: &[Step]) {
        for step in steps {
            self.apply(step);
        }
    }

    /// The steps that bring the world closer to quiet: every client reads, every
    /// outbox goes to the orderer, every ordered envelope is delivered. Empty once quiet.
    pub fn settle_round(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        for (client, c) in self.clients.iter().enumerate() {
            if c.stalled && !c.held && c.reachable() {
                steps.push(Step::Resume { client });
            }
        }
        let live = self.live_nodes();
        let mut handed = false;
        for (k, &n) in live.iter().enumerate() {
            if !self.nodes[n].outbox.is_empty() {
                steps.push(Step::Handoff { shard: k, n: usize::MAX });
                handed = true;
            }
        }
        if handed || !self.queue.is_empty() {
            steps.push(Step::DeliverBus { n: usize::MAX });
        }
        steps
    }

    /// Applies settle rounds until the world is quiet.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let round = self.settle_round();
            if round.is_empty() {
                return;
            }
            self.run(&round);
        }
        panic!("the world never settled");
    }

    fn connect(&mut self, k: usize) {
        let Some(n) = self.pick_live(k) else { return };
        let node = &mut self.nodes[n];
        let Some(shard) = node.shard.as_mut() else { return };
        let conn = shard.handle_connect(self.now);
        let client = self.clients.len();
        let held = self.held.contains(&client);
        assert!(self.owners.insert((node.id, conn), client).is_none(), "{} reused {conn:?}", node.id);
        self.clients.push(Client {
            node: n,
            conn,
            transcript: Vec::new(),
            sent: Vec::new(),
            stalled: held,
            held,
            frozen: false,
            state: State::Open,
            reason: None,
            closed_at: None,
            id: None,
            cut: false,
        });
    }

    /// The shard and handle of a client whose input is still read.
    fn open_conn(&mut self, client: usize) -> Option<(&mut Shard, ConnId)> {
        let c = self.clients.get(client)?;
        if c.state != State::Open {
            return None;
        }
        Some((self.nodes[c.node].shard.as_mut()?, c.conn))
    }

    fn send(&mut self, client: usize, chunks: &[Vec<u8>]) {
        for chunk in chunks {
            let now = self.now;
            let Some((shard, conn)) = self.open_conn(client) else { return };
            shard.handle_bytes(conn, chunk, now);
            self.clients[client].sent.extend_from_slice(chunk);
            self.drain();
        }
    }

    /// Closes a client's connection from its side, at once.
    fn reset(&mut self, client: usize) {
        let Some(c) = self.clients.get_mut(client) else { return };
        if !c.reachable() {
            return;
        }
        if let Some(shard) = self.nodes[c.node].shard.as_mut() {
            c.cut |= !shard.transmit(c.conn).is_empty();
            shard.handle_close(c.conn, self.now);
            c.state = State::Gone;
        }
    }

    /// The client reads at most `max` queued bytes, then finishes a close that waited for them.
    fn read(&mut self, client: usize, max: usize) {
        let Some(c) = self.clients.get_mut(client) else { return };
        if !c.reachable() {
            return;
        }
        let Some(shard) = self.nodes[c.node].shard.as_mut() else { return };
        take(shard, c, max, self.now);
        if c.state == State::Closing && shard.transmit(c.conn).is_empty() {
            shard.handle_close(c.conn, self.now);
            c.state = State::Gone;
        }
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        for _ in 0..100_000 {
            let due = self.nodes.iter().filter_map(|n| n.shard.as_ref()?.poll_timeout()).min();
            match due {
                Some(due) if due <= target => {
                    self.now = self.now.max(due);
                    let (now, wall) = (self.now, self.wall());
                    for node in &mut self.nodes {
                        if let Some(shard) = node.shard.as_mut() {
                            if shard.poll_timeout().is_some_and(|t| t <= now) {
                                shard.handle_timeout(now, wall);
                            }
                        }
                    }
                    self.drain();
                }
                _ => {
                    self.now = target;
                    // A quiet moment, when frontends trim: what the shards
                    // do next must not change for it.
                    for node in &mut self.nodes {
                        if let Some(shard) = node.shard.as_mut() {
                            shard.shrink_buffers();
                        }
                    }
                    return;
                }
            }
        }
        panic!("poll_timeout never moved past {:?}", self.now - self.start);
    }

    fn handoff(&mut self, k: usize, n: usize) {
        if self.mode == Mode::Standalone {
            return;
        }
        let Some(node) = self.pick_live(k) else { return };
        let outbox = &mut self.nodes[node].outbox;
        let take = n.min(outbox.len());
        self.queue.extend(outbox.drain(..take));
    }

    /// Delivers the oldest ordered envelope, if any.
    pub fn deliver_next(&mut self) -> Option<Delivery> {
        let envelope = self.queue.pop_front()?;
        Some(self.deliver(envelope))
    }

    /// Delivers the oldest envelope that `client` published and the orderer has not taken,
    /// straight from its shard's outbox: the reference's bus follows the system's this way.
    pub fn deliver_from(&mut self, client: usize) -> Option<Vec<u8>> {
        let n = self.clients.get(client)?.node;
        let pos = self.nodes[n].outbox.iter().position(|e| self.origin(e) == Some(client))?;
        let envelope = self.nodes[n].outbox.remove(pos)?;
        self.deliver(envelope.clone());
        self.drain();
        Some(envelope)
    }

    /// Drops what `client` published and nobody took, except its close if `keep_close`.
    pub fn discard_pending(&mut self, client: usize, keep_close: bool) {
        let Some(n) = self.clients.get(client).map(|c| c.node) else { return };
        let outbox = std::mem::take(&mut self.nodes[n].outbox);
        let kept = outbox
            .into_iter()
            .filter(|e| self.origin(e) != Some(client) || (keep_close && header(e).kind == close_kind()))
            .collect();
        self.nodes[n].outbox = kept;
    }

    /// Stops recording what a client reads; it reads everything from now on.
    pub fn freeze(&mut self, client: usize) {
        if let Some(c) = self.clients.get_mut(client) {
            c.frozen = true;
            c.stalled = false;
        }
        self.read(client, usize::MAX);
        self.drain();
    }

    /// Closes a client's connection from its side, as [`Step::Close`] does, and drains.
    pub fn close_now(&mut self, client: usize) {
        self.reset(client);
        self.drain();
    }

    fn origin(&self, envelope: &[u8]) -> Option<usize> {
        let h = header(envelope);
        self.owners.get(&(h.shard, h.conn?)).copied()
    }

    fn deliver(&mut self, envelope: Vec<u8>) -> Delivery {
        if let Err(e) = self.replica.apply(&envelope) {
            panic!("the replica refused an envelope the bus carried: {e}");
        }
        let h = header(&envelope);
        let delivery = match h.conn {
            None => Delivery::Gone {
                node: self
                    .nodes
                    .iter()
                    .position(|n| n.id == h.shard)
                    .unwrap_or_else(|| panic!("shard gone for unknown {}", h.shard)),
            },
            Some(conn) => Delivery::From {
                client: *self
                    .owners
                    .get(&(h.shard, conn))
                    .unwrap_or_else(|| panic!("an envelope from unknown {}/{conn:?}", h.shard)),
                envelope: envelope.clone(),
            },
        };
        // A solo shard applied its own envelopes already.
        let shards = self.nodes.iter_mut().filter(|_| self.mode != Mode::Solo);
        for node in shards {
            if let Some(shard) = node.shard.as_mut() {
                if let Err(e) = shard.handle_envelope(&envelope, self.now) {
                    panic!("{} refused an envelope the bus carried: {e}", node.id);
                }
            }
        }
        self.drain();
        self.log.push(delivery.clone());
        delivery
    }

    fn start_shard(&mut self) {
        if self.mode != Mode::Cluster || self.live_nodes().len() >= MAX_LIVE_SHARDS {
            return;
        }
        let id = self.fresh_shard_id();
        let shard = match Shard::from_snapshot(self.config.clone(), id, &self.replica.snapshot(), self.now) {
            Ok(shard) => shard,
            Err(e) => panic!("the replica's snapshot does not decode: {e}"),
        };
        self.nodes.push(Node { id, shard: Some(shard), outbox: VecDeque::new() });
    }

    fn kill(&mut self, k: usize) {
        if self.mode != Mode::Cluster || self.live_nodes().len() < 2 {
            return;
        }
        let Some(n) = self.pick_live(k) else { return };
        let node = &mut self.nodes[n];
        for c in self.clients.iter_mut().filter(|c| c.node == n && c.reachable()) {
            c.cut |= node.shard.as_ref().is_some_and(|shard| !shard.transmit(c.conn).is_empty());
        }
        node.shard = None;
        // The orderer drops what the dead shard had not handed over, then says it is gone.
        node.outbox.clear();
        self.queue.push_back(shard_gone_envelope(node.id));
        for c in &mut self.clients {
            if c.node == n && c.state != State::Gone {
                c.state = State::Dead;
            }
        }
    }

    /// Drains every shard's outputs until none has any.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            for node in &mut self.nodes {
                let Some(shard) = node.shard.as_mut() else { continue };
                while let Some(output) = shard.poll_output() {
                    busy = true;
                    let owner = |conn: ConnId| {
                        *self
                            .owners
                            .get(&(node.id, conn))
                            .unwrap_or_else(|| panic!("{} named a connection it never had", node.id))
                    };
                    match output {
                        Output::Transmit(conn) => {
                            let c = &mut self.clients[owner(conn)];
                            if !c.stalled {
                                take(shard, c, usize::MAX, self.now);
                            }
                        }
                        Output::Close { conn, reason } => {
                            let c = &mut self.clients[owner(conn)];
                            assert_eq!(c.state, State::Open, "{} closed {conn:?} twice", node.id);
                            c.reason = Some(reason);
                            c.closed_at = Some(self.step);
                            // A connection closed at once loses what was queued for it.
                            c.cut |= matches!(reason, CloseReason::SlowConsumer | CloseReason::ShardGone);
                            if !c.stalled {
                                take(shard, c, usize::MAX, self.now);
                            }
                            if shard.transmit(conn).is_empty() {
                                shard.handle_close(conn, self.now);
                                c.state = State::Gone;
                            } else {
                                c.state = State::Closing;
                            }
                        }
                        Output::Publish(envelope) => {
                            assert_ne!(self.mode, Mode::Standalone, "a standalone shard published");
                            let h = header(&envelope);
                            assert_eq!(h.shard, node.id, "the tests read envelope headers wrongly");
                            if let Some(conn) = h.conn {
                                owner(conn);
                            }
                            node.outbox.push_back(envelope);
                        }
                        other => panic!("an output the simulation does not know: {other:?}"),
                    }
                }
            }
            if !busy {
                return;
            }
        }
    }

    /// The invariants that hold after every step.
    fn check(&mut self) {
        for (n, node) in self.nodes.iter().enumerate() {
            let Some(shard) = node.shard.as_ref() else { continue };
            let mut open = 0;
            for (i, c) in self.clients.iter().enumerate() {
                if c.node == n && c.reachable() {
                    open += 1;
                    let queued = shard.transmit(c.conn).len();
                    assert!(
                        queued <= self.config.max_queue,
                        "client {i} has {queued} bytes queued, above max_queue {}",
                        self.config.max_queue
                    );
                }
            }
            assert_eq!(
                shard.connection_count(),
                open,
                "{} holds other connections than its clients",
                node.id
            );
            if self.mode == Mode::Cluster {
                // Every shard has applied what the bus delivered, as the replica has.
                assert_eq!(
                    shard.stats().server_connections,
                    self.replica.connection_count(),
                    "{} disagrees with the replica on who is connected",
                    node.id
                );
            }
            for info in shard.connections() {
                if let (Some(id), Some(&c)) = (info.client, self.owners.get(&(node.id, info.conn))) {
                    self.clients[c].id = Some(id);
                }
            }
        }
    }
}

/// The client reads at most `max` of what is queued for it.
fn take(shard: &mut Shard, c: &mut Client, max: usize, now: Instant) {
    let queued = shard.transmit(c.conn);
    let n = queued.len().min(max);
    if !c.frozen {
        c.transcript.extend_from_slice(&queued[..n]);
    }
    shard.handle_written(c.conn, n, now);
}

/// The start of an envelope: its kind and where it comes from.
///
/// Envelopes are opaque to frontends, but the tests must attribute each one to the
/// client it acts for. They read only the header every envelope starts with: a kind
/// byte, then the shard and the connection as LEB128 numbers (a "shard gone"
/// envelope has just the shard). [`World`] checks this reading on every publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub shard: ShardId,
    pub conn: Option<ConnId>,
    /// Bytes the header takes.
    pub len: usize,
}

/// Reads an envelope's [`Header`].
pub fn header(envelope: &[u8]) -> Header {
    let leb = |at: usize| -> (u64, usize) {
        let mut value = 0u64;
        for (i, &b) in envelope[at..].iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (value, i + 1);
            }
        }
        panic!("a malformed envelope header: {envelope:?}");
    };
    let kind = envelope[0];
    let (shard, a) = leb(1);
    if kind == shard_gone_kind() {
        return Header { kind, shard: ShardId(shard), conn: None, len: 1 + a };
    }
    let (conn, b) = leb(1 + a);
    Header { kind, shard: ShardId(shard), conn: Some(ConnId::from_u64(conn)), len: 1 + a + b }
}

/// The kind byte of a "shard gone" envelope.
pub fn shard_gone_kind() -> u8 {
    shard_gone_envelope(ShardId(0))[0]
}

/// The kind byte of a close envelope, learnt once from a shard.
pub fn close_kind() -> u8 {
    static KIND: OnceLock<u8> = OnceLock::new();
    *KIND.get_or_init(|| {
        let now = base_instant();
        let mut shard = Shard::new(Config::default(), ShardId(1), now);
        let conn = shard.handle_connect(now);
        while shard.poll_output().is_some() {}
        shard.handle_close(conn, now);
        let mut kind = None;
        while let Some(output) = shard.poll_output() {
            if let Output::Publish(envelope) = output {
                kind = Some(envelope[0]);
            }
        }
        kind.unwrap_or_else(|| panic!("a closed connection published no envelope"))
    })
}

/// The `/help` text, one entry per line, learnt once from a shard.
pub fn help_lines() -> &'static [String] {
    static HELP: OnceLock<Vec<String>> = OnceLock::new();
    HELP.get_or_init(|| {
        let mut world = World::standalone(Config { tick: 0, ..Config::default() });
        world.run(&[Step::Connect { shard: 0 }, Step::Send { client: 0, chunks: vec![b"/help\n".to_vec()] }]);
        lines(world.transcript(0)).0
    })
}

/// Removes the telnet replies (`IAC WONT x`, `IAC DONT x`) a client was sent, and
/// returns them separately. A 0xFF byte never occurs in UTF-8, so this is unambiguous.
pub fn split_telnet(transcript: &[u8]) -> (Vec<u8>, Vec<[u8; 3]>) {
    let (mut text, mut replies) = (Vec::with_capacity(transcript.len()), Vec::new());
    let mut i = 0;
    while i < transcript.len() {
        if transcript[i] == 0xff {
            let mut reply = [0xff, 0, 0];
            for (k, slot) in reply.iter_mut().enumerate().skip(1) {
                *slot = transcript.get(i + k).copied().unwrap_or(0);
            }
            replies.push(reply);
            i += 3;
        } else {
            text.push(transcript[i]);
            i += 1;
        }
    }
    (text, replies)
}

/// Splits a transcript (telnet replies removed) into its lines and what follows the last line end.
pub fn lines(transcript: &[u8]) -> (Vec<String>, Vec<u8>) {
    let (text, _) = split_telnet(transcript);
    let mut lines: Vec<String> = Vec::new();
    let mut rest = text.as_slice();
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        lines.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end + 1..];
    }
    (lines, rest.to_vec())
}

/// Whether a line is a `Server Time: YYYY-MM-DD HH:MM:SS` tick.
pub fn is_server_time(line: &str) -> bool {
    line.strip_prefix("Server Time: ").is_some_and(|t| {
        t.len() == 19
            && t.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                10 => b == b' ',
                13 | 16 => b == b':',
                _ => b.is_ascii_digit(),
            })
    })
}

/// A transcript without its `Server Time` lines, telnet replies kept in place.
pub fn without_ticks(transcript: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(transcript.len());
    let mut rest = transcript;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |e| e + 1);
        let (segment, tail) = rest.split_at(end);
        // A segment may start with telnet replies queued between two lines.
        let mut text = segment;
        while text.first() == Some(&0xff) && text.len() >= 3 {
            out.extend_from_slice(&text[..3]);
            text = &text[3..];
        }
        let line = text.strip_suffix(b"\n").unwrap_or(text);
        if !(text.ends_with(b"\n") && std::str::from_utf8(line).is_ok_and(is_server_time)) {
            out.extend_from_slice(text);
        }
        rest = tail;
    }
    out
}

/// Shows a transcript readably in a failure message.
pub fn show(transcript: &[u8]) -> String {
    format!("b\"{}\"", transcript.escape_ascii())
}
