//! The shard: one sans-IO chat machine owning the connections its frontend accepted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::command::{self, Request, Target, HELP};
use crate::config::Config;
use crate::envelope::{Envelope, Recipient};
use crate::framing::{Frame, LineDecoder};
use crate::id::{ClientId, ConnId, ConnRef, ShardId};
use crate::output::{CloseReason, OutQueue, Output};
use crate::roster::{Effect, Member, Roster};
use crate::sanitize::sanitize;
use crate::time::{format_civil, UnixTime};
use crate::wire::DecodeError;

/// One shard of the chat server: the connections its frontend accepted, as pure state.
///
/// Feed it events with the `handle_*` methods, then drain [`Shard::poll_output`]
/// to `None` and sleep until readiness or [`Shard::poll_timeout`]. It never
/// reads a clock and nothing a peer sends can make it panic.
#[derive(Debug)]
pub struct Shard {
    config: Config,
    /// `"text\n"` sent to each connection once admitted, sanitised once.
    welcome: Option<Box<[u8]>>,
    roster: Roster,
    local: Local,
    next_tick: Option<Instant>,
    shutting_down: bool,
    /// Reused for formatting, so a broadcast line is built once without allocating.
    scratch: Vec<u8>,
}

/// Counters a frontend shows in its status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStats {
    /// Connections this shard holds (admitted or not yet).
    pub connections: usize,
    /// Connections admitted on the whole server, as this shard's roster has them.
    pub server_connections: usize,
    /// Lines received from this shard's connections.
    pub lines_in: u64,
    /// Lines queued to this shard's connections.
    pub lines_out: u64,
    /// Bytes queued for this shard's connections and not yet written.
    pub queued_bytes: usize,
    /// Connections closed because they read too slowly.
    pub slow_consumers: u64,
}

/// One connection as [`Shard::connections`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The frontend's handle.
    pub conn: ConnId,
    /// The server-wide id, once admitted.
    pub client: Option<ClientId>,
    /// The nick, if one was taken.
    pub nick: Option<String>,
    /// The room, once admitted.
    pub room: Option<String>,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Bytes reported written to the peer.
    pub bytes_out: u64,
    /// Bytes queued and not yet written.
    pub queued: usize,
}

/// The connections of one shard and what the shard wants done with them.
#[derive(Debug)]
struct Local {
    id: ShardId,
    /// Where this shard's envelopes go.
    route: Route,
    /// Envelopes applied here as they are published, without the bus.
    loopback: VecDeque<Envelope>,
    /// Envelopes published to the bus and not delivered back yet.
    in_flight: u64,
    max_queue: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    ready: Vec<ConnId>,
    outputs: VecDeque<Output>,
    stats: ShardStats,
}

/// How a shard's envelopes reach the bus order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// No bus: envelopes loop straight back.
    Loopback,
    /// Published, and applied when the bus delivers them back.
    Bus,
    /// Published for the bus's copy, and applied at once: no other shard
    /// publishes, so publish order is bus order (see [`Shard::go_solo`]).
    Solo,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Reading input; admitted once `client` is set.
    Open,
    /// Its close is published; it still receives until the close comes back.
    Leaving,
    /// Output::Close was emitted; waiting for the frontend's `handle_close`.
    Closing,
}

#[derive(Debug)]
struct Conn {
    phase: Phase,
    client: Option<ClientId>,
    decoder: LineDecoder,
    out: OutQueue,
    /// Local replies waiting behind this connection's envelopes still in flight.
    deferred: VecDeque<Deferred>,
    deferred_bytes: usize,
    published: u64,
    echoed: u64,
    close_published: bool,
    /// A Transmit for it is already waiting in `ready`.
    notified: bool,
    rate: RateWindow,
    bytes_in: u64,
    bytes_out: u64,
}

impl Conn {
    /// Bytes held for the connection: queued, and replies waiting behind its envelopes.
    fn queued(&self) -> usize {
        self.out.len() + self.deferred_bytes
    }
}

#[derive(Debug)]
struct Deferred {
    /// Released once this many of the connection's envelopes have come back.
    after: u64,
    bytes: Box<[u8]>,
    lines: u64,
}

/// Lines counted over each second from the connection's first line.
#[derive(Debug, Default)]
struct RateWindow {
    start: Option<Instant>,
    count: u32,
    warned: bool,
}

enum RateVerdict {
    Pass,
    Drop,
    DropAndWarn,
}

impl RateWindow {
    fn check(&mut self, now: Instant, limit: u32) -> RateVerdict {
        if limit == 0 {
            return RateVerdict::Pass;
        }
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            self.start = Some(start + Duration::from_secs(elapsed.as_secs()));
            self.count = 0;
            self.warned = false;
        }
        self.count = self.count.saturating_add(1);
        if self.count <= limit {
            RateVerdict::Pass
        } else if self.warned {
            RateVerdict::Drop
        } else {
            self.warned = true;
            RateVerdict::DropAndWarn
        }
    }
}

impl Shard {
    /// Creates the only shard of a server: no bus, its envelopes loop straight back.
    pub fn standalone(config: Config, now: Instant) -> Shard {
        Shard::build(config, ShardId(0), Roster::new(Some(ShardId(0))), true, now)
    }

    /// Creates a shard that joins a bus from its very first envelope.
    pub fn new(config: Config, id: ShardId, now: Instant) -> Shard {
        Shard::build(config, id, Roster::new(Some(id)), false, now)
    }

    /// Creates a shard that joins a running bus from a [`crate::Replica::snapshot`];
    /// it must then get exactly the envelopes published after that snapshot.
    pub fn from_snapshot(
        config: Config,
        id: ShardId,
        snapshot: &[u8],
        now: Instant,
    ) -> Result<Shard, DecodeError> {
        Ok(Shard::build(config, id, Roster::from_snapshot(snapshot, Some(id))?, false, now))
    }

    fn build(config: Config, id: ShardId, roster: Roster, standalone: bool, now: Instant) -> Shard {
        let welcome =
            config.welcome.as_deref().map(|w| sanitize(w.as_bytes())).filter(|w| !w.is_empty()).map(
                |mut w| {
                    w.push('\n');
                    w.into_bytes().into_boxed_slice()
                },
            );
        let next_tick = (config.tick > 0).then(|| now + Duration::from_secs(config.tick));
        Shard {
            local: Local {
                id,
                route: if standalone { Route::Loopback } else { Route::Bus },
                loopback: VecDeque::new(),
                in_flight: 0,
                max_queue: config.max_queue,
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                ready: Vec::new(),
                outputs: VecDeque::new(),
                stats: ShardStats::default(),
            },
            config,
            welcome,
            roster,
            next_tick,
            shutting_down: false,
            scratch: Vec::new(),
        }
    }

    /// Accepts a new connection and returns its handle.
    ///
    /// Its admission (an id, or `Error: server full`) is decided in bus order.
    pub fn handle_connect(&mut self, _now: Instant) -> ConnId {
        let conn = self.local.insert();
        if self.shutting_down {
            self.local.enqueue(conn, b"* server shutting down\n", 1);
            self.local.close(conn, CloseReason::Shutdown);
        } else {
            self.local.publish(Envelope::Connect { from: self.local.conn_ref(conn) });
        }
        self.pump();
        conn
    }

    /// Takes bytes read from a connection, split anywhere.
    pub fn handle_bytes(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        let Some(c) = self.local.get_mut(conn) else { return };
        if c.phase != Phase::Open {
            return;
        }
        c.bytes_in += bytes.len() as u64;
        let mut decoder = std::mem::replace(&mut c.decoder, LineDecoder::new());
        decoder.feed(bytes, self.config.max_line, |frame| self.on_frame(conn, frame, now));
        self.restore_decoder(conn, decoder);
        self.pump();
    }

    /// Reports a clean end of stream: a last unterminated line still counts,
    /// then the connection leaves once its queued output is flushed.
    pub fn handle_eof(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.local.get_mut(conn) else { return };
        if c.phase != Phase::Open {
            return;
        }
        let mut decoder = std::mem::replace(&mut c.decoder, LineDecoder::new());
        decoder.finish(self.config.max_line, |frame| self.on_frame(conn, frame, now));
        self.restore_decoder(conn, decoder);
        if self.local.get(conn).is_some_and(|c| c.phase == Phase::Open) {
            self.local.leave(conn);
        }
        self.pump();
    }

    /// Reports that the first `written` bytes of [`Shard::transmit`] went out.
    pub fn handle_written(&mut self, conn: ConnId, written: usize, _now: Instant) {
        if let Some(c) = self.local.get_mut(conn) {
            let taken = c.out.consume(written);
            c.bytes_out += taken as u64;
        }
    }

    /// Reports that a connection is gone: reset, failed, or closed after an
    /// [`Output::Close`]. Its handle is dead afterwards; unsent bytes are dropped.
    pub fn handle_close(&mut self, conn: ConnId, _now: Instant) {
        if let Some(c) = self.local.get_mut(conn) {
            if !c.close_published {
                c.close_published = true;
                self.local.publish(Envelope::Close { from: self.local.conn_ref(conn) });
            }
            self.local.remove(conn);
        }
        self.pump();
    }

    /// Applies an envelope delivered by the bus, in bus order.
    pub fn handle_envelope(&mut self, envelope: &[u8], _now: Instant) -> Result<(), DecodeError> {
        let envelope = Envelope::decode(envelope)?;
        if envelope.origin().is_some_and(|from| from.shard == self.local.id) {
            self.local.in_flight = self.local.in_flight.saturating_sub(1);
        }
        self.apply(&envelope);
        self.pump();
        Ok(())
    }

    /// Fires the timers that are due: `Server Time` lines every `tick` seconds.
    ///
    /// `wall` is the wall-clock time to print; calls before the deadline do nothing.
    pub fn handle_timeout(&mut self, now: Instant, wall: UnixTime) {
        let Some(due) = self.next_tick else { return };
        if now < due {
            return;
        }
        let tick = Duration::from_secs(self.config.tick);
        let mut next = due + tick;
        while next <= now {
            next += tick;
        }
        self.next_tick = Some(next);
        let line = format!("Server Time: {}\n", format_civil(wall, self.config.utc_offset));
        for conn in self.local.conn_ids() {
            if self.local.get(conn).is_some_and(|c| c.client.is_some()) {
                self.local.enqueue(conn, line.as_bytes(), 1);
            }
        }
        self.pump();
    }

    /// Stops the shard: each connection gets what is queued for it, then
    /// `* server shutting down`, then closes; nobody is told of the others.
    pub fn handle_shutdown(&mut self, _now: Instant) {
        self.shutting_down = true;
        self.next_tick = None;
        for conn in self.local.conn_ids() {
            let Some(c) = self.local.get_mut(conn) else { continue };
            if c.phase == Phase::Closing {
                continue;
            }
            c.close_published = true;
            let deferred = std::mem::take(&mut c.deferred);
            c.deferred_bytes = 0;
            for item in deferred {
                self.local.enqueue(conn, &item.bytes, item.lines);
            }
            self.local.enqueue(conn, b"* server shutting down\n", 1);
            self.local.close(conn, CloseReason::Shutdown);
        }
    }

    /// Frees the buffers of connections that have nothing queued or half-read.
    ///
    /// Buffers are kept between bursts so that busy connections do not
    /// allocate for every write; call this at quiet moments (a timer wake-up
    /// with no I/O, say) so that idle connections cost only their state. It
    /// also rebuilds the roster, which takes time in proportion to the
    /// server's connections: call it after a burst, not on every turn.
    pub fn shrink_buffers(&mut self) {
        for c in self.local.slots.iter_mut().filter_map(|s| s.conn.as_mut()) {
            c.out.shrink();
            c.decoder.shrink();
        }
        // A burst of connects grows the roster among queue buffers that are
        // free again now; its nodes, scattered over the heap, would each keep
        // a page resident. A packed copy lets the allocator hand those pages
        // back to the system.
        self.roster = self.roster.compacted();
    }

    /// Returns the next thing the frontend must do; drain it to `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(output) = self.local.outputs.pop_front() {
            return Some(output);
        }
        while let Some(conn) = self.local.ready.pop() {
            if let Some(c) = self.local.get_mut(conn) {
                c.notified = false;
                if !c.out.is_empty() {
                    return Some(Output::Transmit(conn));
                }
            }
        }
        None
    }

    /// Returns when [`Shard::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Returns the bytes queued for `conn`, oldest first (empty for a dead handle).
    pub fn transmit(&self, conn: ConnId) -> &[u8] {
        self.local.get(conn).map_or(&[], |c| c.out.pending())
    }

    /// Returns how many connections this shard holds.
    pub fn connection_count(&self) -> usize {
        self.local.live
    }

    /// Returns this shard's identity on the bus.
    pub fn id(&self) -> ShardId {
        self.local.id
    }

    /// Lines received from this shard's connections so far, as
    /// [`Shard::stats`] counts them, without walking the connections: what
    /// a frontend reads to know how many lines a chunk of input held.
    pub fn lines_in(&self) -> u64 {
        self.local.stats.lines_in
    }

    /// Returns the counters for a status display.
    pub fn stats(&self) -> ShardStats {
        let mut stats = self.local.stats;
        stats.connections = self.local.live;
        stats.server_connections = self.roster.len();
        stats.queued_bytes =
            self.local.slots.iter().filter_map(|s| s.conn.as_ref()).map(|c| c.out.len()).sum();
        stats
    }

    /// Lists this shard's connections, for an operator.
    pub fn connections(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.local.slots.iter().enumerate().filter_map(move |(slot, s)| {
            let c = s.conn.as_ref()?;
            let member = c.client.and_then(|id| self.roster.member(id));
            Some(ConnInfo {
                conn: ConnId::new(slot as u32, s.generation),
                client: c.client,
                nick: member.and_then(|m| m.nick.as_deref().map(str::to_owned)),
                room: member.map(|m| m.room.to_string()),
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                queued: c.out.len(),
            })
        })
    }

    fn restore_decoder(&mut self, conn: ConnId, decoder: LineDecoder) {
        if let Some(c) = self.local.get_mut(conn) {
            c.decoder = decoder;
        }
    }

    /// Handles one frame of input; returns whether to keep reading.
    fn on_frame(&mut self, conn: ConnId, frame: Frame<'_>, now: Instant) -> bool {
        match frame {
            Frame::Line(bytes) => self.on_line(conn, bytes, now),
            Frame::TooLong => {
                let error = format!("Error: line too long (limit {} bytes)\n", self.config.max_line);
                self.local.reply(conn, error.as_bytes(), 1);
            }
            Frame::Reply(bytes) => self.local.reply(conn, &bytes, 0),
            Frame::Interrupt => self.local.leave(conn),
        }
        self.local.get(conn).is_some_and(|c| c.phase == Phase::Open)
    }

    fn on_line(&mut self, conn: ConnId, bytes: &[u8], now: Instant) {
        let text = sanitize(bytes);
        if text.is_empty() {
            return;
        }
        let limit = self.config.max_lines_per_second;
        let Some(c) = self.local.get_mut(conn) else { return };
        match c.rate.check(now, limit) {
            RateVerdict::Pass => {}
            RateVerdict::Drop => return,
            RateVerdict::DropAndWarn => return self.local.reply(conn, b"Error: slow down\n", 1),
        }
        self.local.stats.lines_in += 1;
        let from = self.local.conn_ref(conn);
        let envelope = match command::parse(&text) {
            Request::Say(said) if said.len() == text.len() => Envelope::Line { from, text },
            Request::Say(said) => Envelope::Line { from, text: said.to_owned() },
            Request::Nick(nick) => Envelope::Nick { from, nick: nick.to_owned() },
            Request::Join(room) => Envelope::Join { from, room: room.to_owned() },
            Request::Who => Envelope::Who { from },
            Request::Rooms => Envelope::Rooms { from },
            Request::Msg { target, text } => Envelope::Msg {
                from,
                target: match target {
                    Target::Id(id) => Recipient::Id(id),
                    Target::Nick(nick) => Recipient::Nick(nick.to_owned()),
                },
                text: text.to_owned(),
            },
            Request::Help => return self.local.reply(conn, HELP.as_bytes(), HELP.lines().count() as u64),
            Request::Quit => return self.local.leave(conn),
            Request::Invalid(mut error) => {
                error.push('\n');
                return self.local.reply(conn, error.as_bytes(), 1);
            }
        };
        self.local.publish(envelope);
    }

    /// Starts applying this shard's envelopes as it publishes them, which is
    /// right only while no other shard publishes and the bus delivers none of
    /// them back: publish order is then bus order. The bus must learn at this
    /// point of the envelope stream that it stops delivering them back (and
    /// make no other shard publish until told the solo ended, see
    /// [`Shard::end_solo`]). Refused, returning false, while envelopes
    /// published before are still on their way back: applying newer ones
    /// first would break the order.
    pub fn go_solo(&mut self) -> bool {
        if self.local.route != Route::Bus || self.local.in_flight > 0 {
            return self.local.route == Route::Solo;
        }
        self.local.route = Route::Solo;
        true
    }

    /// Goes back to applying envelopes as the bus delivers them: from this
    /// point of the envelope stream on, the bus delivers this shard's
    /// envelopes back to it again.
    pub fn end_solo(&mut self) {
        if self.local.route == Route::Solo {
            self.local.route = Route::Bus;
        }
    }

    /// Envelopes this shard published that the bus has not delivered back yet.
    pub fn in_flight(&self) -> u64 {
        self.local.in_flight
    }

    /// Applies the envelopes this shard routes straight back to itself.
    fn pump(&mut self) {
        while let Some(envelope) = self.local.loopback.pop_front() {
            self.apply(&envelope);
        }
    }

    fn apply(&mut self, envelope: &Envelope) {
        if let Envelope::ShardGone { shard } = envelope {
            if *shard == self.local.id {
                for conn in self.local.conn_ids() {
                    if let Some(c) = self.local.get_mut(conn) {
                        c.close_published = true;
                    }
                    self.local.kick(conn, CloseReason::ShardGone);
                }
            }
        }
        let effect = self.roster.apply(envelope, self.config.max_conns);
        self.render(effect);
        if let Some(from) = envelope.origin() {
            if from.shard == self.local.id {
                self.local.echoed(from.conn);
            }
        }
    }

    /// Shows what an envelope did to this shard's connections.
    fn render(&mut self, effect: Effect<'_>) {
        let mut view = View { roster: &self.roster, local: &mut self.local, scratch: &mut self.scratch };
        let roster = view.roster;
        match effect {
            Effect::Nothing => {}
            Effect::Admitted { id } => {
                let Some(member) = roster.member(id) else { return };
                if let Some(c) = view.local.get_local_mut(member.conn) {
                    c.client = Some(id);
                    if let Some(welcome) = &self.welcome {
                        view.local.enqueue(member.conn.conn, welcome, 1);
                    }
                }
                view.tell_room(&member.room, Some(id), format_args!("Client #{} is connected", id.0));
            }
            Effect::Refused { conn } => {
                if view.local.get_local_mut(conn).is_some() {
                    view.local.refuse(conn.conn);
                }
            }
            Effect::Said { id, text } => {
                let Some(member) = roster.member(id) else { return };
                view.tell_room(&member.room, Some(id), format_args!("{}: {text}", member.name()));
                view.tell(member.conn, format_args!("You: {text}"));
            }
            Effect::Renamed { id, old_name } => {
                let Some(member) = roster.member(id) else { return };
                let name = member.name();
                view.tell(member.conn, format_args!("* You are now {name}"));
                view.tell_room(&member.room, Some(id), format_args!("{old_name} is now {name}"));
            }
            Effect::Moved { id, from_room } => {
                let Some(member) = roster.member(id) else { return };
                let (name, room) = (member.name(), &member.room);
                view.tell_room(&from_room, None, format_args!("{name} left {from_room}"));
                view.tell_room(room, Some(id), format_args!("{name} joined {room}"));
                view.tell(member.conn, format_args!("* You left {from_room} and joined {room}"));
            }
            Effect::Who { id } => view.who(id),
            Effect::Rooms { id } => view.rooms(id),
            Effect::Private { from, to, text } => {
                let (Some(sender), Some(target)) = (roster.member(from), roster.member(to)) else { return };
                view.tell(target.conn, format_args!("[private] {}: {text}", sender.name()));
                view.tell(sender.conn, format_args!("[private to {}] {text}", target.name()));
            }
            Effect::Refusal { to, error } => view.tell(to, format_args!("{error}")),
            Effect::Left { member } => view.announce_close(&member),
            Effect::ShardGone { members } => {
                for member in &members {
                    view.announce_close(member);
                }
            }
        }
    }
}

/// Formats each line once and queues it to the connections of this shard it concerns.
struct View<'a> {
    roster: &'a Roster,
    local: &'a mut Local,
    scratch: &'a mut Vec<u8>,
}

impl View<'_> {
    fn announce_close(&mut self, member: &Member) {
        self.tell_room(&member.room, None, format_args!("{} is close", member.name()));
    }

    fn who(&mut self, id: ClientId) {
        let Some(member) = self.roster.member(id) else { return };
        if member.conn.shard != self.local.id {
            return;
        }
        let (conn, room) = (member.conn.conn, &member.room);
        self.scratch.clear();
        let mut count = 0;
        // Walks everyone: /who is rare, and a seat per remote member would
        // cost every shard memory for the whole server.
        for other in self.roster.room_members(room) {
            match other.nick.as_deref() {
                Some(nick) => self.append(format_args!("* {nick} (#{})", other.id.0)),
                None => self.append(format_args!("* Client #{}", other.id.0)),
            }
            count += 1;
        }
        self.append(format_args!("* {count} in {room}"));
        self.local.enqueue(conn, self.scratch, count + 1);
    }

    fn rooms(&mut self, id: ClientId) {
        let Some(member) = self.roster.member(id) else { return };
        if member.conn.shard != self.local.id {
            return;
        }
        self.scratch.clear();
        let mut count = 0;
        for (room, people) in self.roster.rooms() {
            self.append(format_args!("* {room}: {people}"));
            count += 1;
        }
        self.append(format_args!("* {count} rooms"));
        self.local.enqueue(member.conn.conn, self.scratch, count + 1);
    }

    /// Queues one line to a connection if it lives on this shard.
    fn tell(&mut self, conn: ConnRef, line: std::fmt::Arguments<'_>) {
        if conn.shard != self.local.id {
            return;
        }
        self.scratch.clear();
        self.append(line);
        self.local.enqueue(conn.conn, self.scratch, 1);
    }

    /// Queues one line to everyone in `room` on this shard but `except`.
    fn tell_room(&mut self, room: &str, except: Option<ClientId>, line: std::fmt::Arguments<'_>) {
        self.scratch.clear();
        self.append(line);
        for seat in self.roster.local_seats(room) {
            if Some(seat.id) != except {
                self.local.enqueue(seat.conn.conn, self.scratch, 1);
            }
        }
    }

    fn append(&mut self, line: std::fmt::Arguments<'_>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = self.scratch.write_fmt(line);
        self.scratch.push(b'\n');
    }
}

impl Local {
    fn conn_ref(&self, conn: ConnId) -> ConnRef {
        ConnRef { shard: self.id, conn }
    }

    fn get(&self, conn: ConnId) -> Option<&Conn> {
        let slot = self.slots.get(conn.slot())?;
        if slot.generation == conn.generation() {
            slot.conn.as_ref()
        } else {
            None
        }
    }

    fn get_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        let slot = self.slots.get_mut(conn.slot())?;
        if slot.generation == conn.generation() {
            slot.conn.as_mut()
        } else {
            None
        }
    }

    fn get_local_mut(&mut self, conn: ConnRef) -> Option<&mut Conn> {
        if conn.shard == self.id {
            self.get_mut(conn.conn)
        } else {
            None
        }
    }

    fn conn_ids(&self) -> Vec<ConnId> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| ConnId::new(i as u32, s.generation))
            .collect()
    }

    fn insert(&mut self) -> ConnId {
        let conn = Conn {
            phase: Phase::Open,
            client: None,
            decoder: LineDecoder::new(),
            out: OutQueue::default(),
            deferred: VecDeque::new(),
            deferred_bytes: 0,
            published: 0,
            echoed: 0,
            close_published: false,
            notified: false,
            rate: RateWindow::default(),
            bytes_in: 0,
            bytes_out: 0,
        };
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(conn);
            ConnId::new(index, slot.generation)
        } else {
            let index = self.slots.len() as u32;
            self.slots.push(Slot { generation: 0, conn: Some(conn) });
            ConnId::new(index, 0)
        }
    }

    fn remove(&mut self, conn: ConnId) {
        if let Some(slot) = self.slots.get_mut(conn.slot()) {
            if slot.generation == conn.generation() && slot.conn.take().is_some() {
                self.live -= 1;
                self.free.push(conn.slot() as u32);
            }
        }
    }

    fn publish(&mut self, envelope: Envelope) {
        if let Some(from) = envelope.origin() {
            if let Some(c) = self.get_local_mut(from) {
                c.published += 1;
            }
        }
        match self.route {
            Route::Loopback => self.loopback.push_back(envelope),
            Route::Bus => {
                self.in_flight += 1;
                self.outputs.push_back(Output::Publish(envelope.encode()));
            }
            Route::Solo => {
                self.outputs.push_back(Output::Publish(envelope.encode()));
                self.loopback.push_back(envelope);
            }
        }
    }

    /// Queues bytes for a connection now, closing it if that passes its limit.
    fn enqueue(&mut self, conn: ConnId, bytes: &[u8], lines: u64) {
        let max_queue = self.max_queue;
        let Some(c) = self.get_mut(conn) else { return };
        if c.phase == Phase::Closing {
            return;
        }
        if c.queued() + bytes.len() > max_queue {
            return self.too_slow(conn);
        }
        c.out.push(bytes);
        let notify = !c.notified;
        c.notified = true;
        self.stats.lines_out += lines;
        if notify {
            self.ready.push(conn);
        }
    }

    /// Queues a purely local reply behind the connection's envelopes still in flight.
    fn reply(&mut self, conn: ConnId, bytes: &[u8], lines: u64) {
        let max_queue = self.max_queue;
        let Some(c) = self.get_mut(conn) else { return };
        if c.published == c.echoed {
            return self.enqueue(conn, bytes, lines);
        }
        if c.phase == Phase::Closing {
            return;
        }
        if c.queued() + bytes.len() > max_queue {
            return self.too_slow(conn);
        }
        c.deferred_bytes += bytes.len();
        c.deferred.push_back(Deferred { after: c.published, bytes: bytes.into(), lines });
    }

    /// Counts one of the connection's envelopes back from the bus and releases
    /// the replies that waited for it.
    fn echoed(&mut self, conn: ConnId) {
        let Some(c) = self.get_mut(conn) else { return };
        c.echoed += 1;
        loop {
            let Some(c) = self.get_mut(conn) else { return };
            let echoed = c.echoed;
            let Some(item) = c.deferred.pop_front_if(|d| d.after <= echoed) else { break };
            c.deferred_bytes -= item.bytes.len();
            self.enqueue(conn, &item.bytes, item.lines);
        }
        if self.get(conn).is_some_and(|c| c.phase == Phase::Leaving && c.echoed == c.published) {
            self.close(conn, CloseReason::Quit);
        }
    }

    /// Stops reading and publishes the close; the connection closes when it comes back.
    fn leave(&mut self, conn: ConnId) {
        let Some(c) = self.get_mut(conn) else { return };
        if c.phase != Phase::Open {
            return;
        }
        c.phase = Phase::Leaving;
        if !c.close_published {
            c.close_published = true;
            self.publish(Envelope::Close { from: self.conn_ref(conn) });
        }
    }

    /// Tells the frontend to close the connection after flushing what is queued.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.get_mut(conn) else { return };
        if c.phase == Phase::Closing {
            return;
        }
        c.phase = Phase::Closing;
        c.deferred.clear();
        c.deferred_bytes = 0;
        self.outputs.push_back(Output::Close { conn, reason });
    }

    /// Closes a connection whose queue would pass the limit.
    fn too_slow(&mut self, conn: ConnId) {
        self.stats.slow_consumers += 1;
        self.kick(conn, CloseReason::SlowConsumer);
    }

    /// Closes the connection at once, dropping what is queued for it.
    fn kick(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.get_mut(conn) else { return };
        c.out.clear();
        let publish = !c.close_published;
        c.close_published = true;
        if publish {
            self.publish(Envelope::Close { from: self.conn_ref(conn) });
        }
        self.close(conn, reason);
    }

    fn refuse(&mut self, conn: ConnId) {
        let Some(c) = self.get_mut(conn) else { return };
        c.close_published = true;
        c.deferred.clear();
        c.deferred_bytes = 0;
        c.out.clear();
        self.enqueue(conn, b"Error: server full\n", 1);
        self.close(conn, CloseReason::ServerFull);
    }
}

#[cfg(test)]
mod tests;
