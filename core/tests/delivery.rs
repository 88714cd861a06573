//! Property 2, delivery: every relayed line reaches every other connection in the room
//! exactly once and in per-sender order, the sender gets its `You:` line, and nobody
//! sees what was said before their connect or after their close.
//!
//! Clients type lines whose meaning the test knows (plain lines, commands, good and
//! bad), dressed in noise the server must strip (telnet commands, control characters,
//! blanks, all three line ends) and split anywhere. An independent model, written from
//! PROTOCOL.md and DESIGN.md at the level of lines, says who was connected when and
//! therefore what every client must read, line for line; the world's transcripts must
//! match it exactly. The model sees the bus only as the order in which each client's
//! actions took effect (DESIGN.md: "apply on echo"), never the core's state.

mod sim;

use std::collections::{BTreeMap, VecDeque};

use chat_core::{Config, UtcOffset};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sim::gen::BAD_COMMANDS;
use sim::{Delivery, Step, World, MAX_LIVE_SHARDS};

/// Long enough for every generated line but a too-long one.
const MAX_LINE: usize = 200;

/// Words of plain lines; none starts with `/` and none has blanks at its ends.
const WORDS: &[&str] = &["hi", "hello  world", "a\tb", "héllo", "✓ ok", "😀", "x", "Client #1: fake", "* no"];

/// `/msg` targets: ids that may or may not exist, nicks in any case, nobody.
const TARGETS: &[&str] = &["#1", "#2", "#3", "#4", "#0", "alice", "ALICE", "Alice", "bob", "nobody", "#"];

/// A few nicks, so that claims collide and differ in case, and bad ones.
const NICKS: &[&str] = &["alice", "Alice", "bob", "9lives", "Client", "x y", ""];

/// A few rooms, two of them differing in case, and bad ones.
const ROOMS: &[&str] = &["lobby", "games", "Games", "a b", ""];

/// What one typed line means.
#[derive(Clone, Debug)]
enum Act {
    Say(String),
    /// `//text`, relayed as `/text`.
    Escaped(String),
    Nick(&'static str),
    Join(&'static str),
    Msg(&'static str, String),
    Who,
    Rooms,
    Help,
    Quit,
    /// A command refused before it reaches the bus.
    Bad(&'static str),
    /// Only blanks and noise: ignored.
    Blank,
    TooLong(usize),
    /// The start of a line, then `IAC IP`.
    Interrupt(String),
}

impl Act {
    fn content(&self) -> String {
        match self {
            Act::Say(text) | Act::Interrupt(text) => text.clone(),
            Act::Escaped(text) => format!("//{text}"),
            Act::Nick(nick) => format!("/nick {nick}"),
            Act::Join(room) => format!("/join {room}"),
            Act::Msg(target, text) => format!("/msg {target} {text}"),
            Act::Who => "/who".into(),
            Act::Rooms => "/rooms".into(),
            Act::Help => "/help".into(),
            Act::Quit => "/quit".into(),
            Act::Bad(command) => (*command).into(),
            Act::Blank => String::new(),
            Act::TooLong(n) => "z".repeat(*n),
        }
    }
}

/// A typed line as bytes: pieces that may be sent in different reads, the content
/// (with its noise) in one piece.
#[derive(Clone, Debug)]
struct Typed {
    act: Act,
    pieces: Vec<Vec<u8>>,
    /// Pieces before this one hold all of the content.
    content_end: usize,
}

fn say() -> impl Strategy<Value = String> {
    vec(select(WORDS), 1..4).prop_map(|w| w.join(" "))
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => say().prop_map(Act::Say),
        1 => say().prop_map(Act::Escaped),
        4 => select(NICKS).prop_map(Act::Nick),
        4 => select(ROOMS).prop_map(Act::Join),
        4 => (select(TARGETS), say()).prop_map(|(t, x)| Act::Msg(t, x)),
        3 => Just(Act::Who),
        1 => Just(Act::Rooms),
        1 => Just(Act::Help),
        1 => Just(Act::Quit),
        2 => select(BAD_COMMANDS).prop_map(Act::Bad),
        1 => Just(Act::Blank),
        1 => (1..60usize).prop_map(|n| Act::TooLong(MAX_LINE + n)),
        1 => say().prop_map(Act::Interrupt),
    ]
}

/// Bytes that must vanish without a trace (telnet requests only leave replies, which
/// the comparison sets aside).
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let controls: Vec<u8> = (1u8..0x20).filter(|b| !b"\t\n\r".contains(b)).chain([0x7f]).collect();
    prop_oneof![
        3 => select(controls).prop_map(|b| vec![b]),
        2 => (0x80u8..0xa0).prop_map(|b| vec![0xc2, b]),
        1 => Just(vec![0x1b]),
        1 => Just(vec![b'\r']),
        1 => select(vec![241u8, 246, 249]).prop_map(|c| vec![0xff, c]),
        3 => (select(vec![251u8, 252, 253, 254]), prop_oneof![Just(6u8), any::<u8>()])
            .prop_map(|(v, o)| vec![0xff, v, o]),
        2 => (0u8..0xff, vec(any::<u8>().prop_map(|b| b.min(0xfe)), 0..16)).prop_map(|(o, p)| {
            let mut sb = vec![0xff, 250, o];
            sb.extend(p);
            sb.extend([0xff, 240]);
            sb
        }),
    ]
}

fn typed() -> impl Strategy<Value = Typed> {
    let blanks = || select(vec!["", "", " ", "\t ", "  "]);
    let end = select(vec![&b"\n"[..], b"\r\n", b"\r\0"]);
    (
        act(),
        blanks(),
        vec(noise(), 0..2),
        vec((any::<usize>(), noise()), 0..3),
        vec(noise(), 0..2),
        blanks(),
        end,
    )
        .prop_map(|(act, before, lead, inside, trail, after, end)| {
            let text = act.content();
            let mut content = before.as_bytes().to_vec();
            for n in lead {
                content.extend(n);
            }
            // Noise goes between characters, never inside one.
            let mut at: Vec<(usize, Vec<u8>)> = inside
                .into_iter()
                .map(|(i, n)| {
                    let bounds: Vec<usize> =
                        text.char_indices().map(|(b, _)| b).chain([text.len()]).collect();
                    (bounds[i % bounds.len()], n)
                })
                .collect();
            at.sort_by_key(|(b, _)| *b);
            let mut from = 0;
            for (b, n) in at {
                content.extend_from_slice(&text.as_bytes()[from..b]);
                content.extend(n);
                from = b;
            }
            content.extend_from_slice(&text.as_bytes()[from..]);
            let mut pieces = vec![content];
            if let Act::Interrupt(_) = act {
                pieces[0].extend([0xff, 244]);
                return Typed { act, pieces, content_end: 1 };
            }
            pieces.extend(trail);
            pieces.push(after.as_bytes().to_vec());
            pieces.extend(end.iter().map(|&b| vec![b]));
            Typed { act, pieces, content_end: 1 }
        })
}

/// A plan step before its client number is known.
#[derive(Clone, Debug)]
enum Raw {
    Connect(usize),
    Type(usize, Vec<Typed>, Option<usize>, Vec<usize>),
    Eof(usize),
    Close(usize),
    Advance(u64),
    Stall(usize),
    Resume(usize),
    Read(usize, usize),
    Handoff(usize, usize),
    Deliver(usize),
    Start,
    Kill(usize),
}

fn raw(cluster: bool) -> BoxedStrategy<Raw> {
    let common = prop_oneof![
        4 => any::<usize>().prop_map(Raw::Connect),
        14 => (any::<usize>(), vec(typed(), 0..4), prop::option::weighted(0.3, any::<usize>()), vec(any::<usize>(), 0..5))
            .prop_map(|(c, lines, open, cuts)| Raw::Type(c, lines, open, cuts)),
        1 => any::<usize>().prop_map(Raw::Eof),
        1 => any::<usize>().prop_map(Raw::Close),
        2 => (1u64..4000).prop_map(Raw::Advance),
        1 => any::<usize>().prop_map(Raw::Stall),
        1 => any::<usize>().prop_map(Raw::Resume),
        1 => (any::<usize>(), 1usize..40).prop_map(|(c, n)| Raw::Read(c, n)),
    ];
    if !cluster {
        return common.boxed();
    }
    prop_oneof![
        26 => common,
        6 => (any::<usize>(), 1usize..5).prop_map(|(s, n)| Raw::Handoff(s, n)),
        6 => (1usize..8).prop_map(Raw::Deliver),
        1 => Just(Raw::Start),
        1 => any::<usize>().prop_map(Raw::Kill),
    ]
    .boxed()
}

/// What a step means to the model.
#[derive(Clone, Debug)]
enum Note {
    /// Lines that ended in this read, in order (a line left open ends in a later one).
    Typed {
        done: Vec<Act>,
    },
    /// A clean end of stream; a line left open counts.
    Eof {
        open: Option<Act>,
    },
    Other,
}

/// Resolves client numbers and cuts lines across reads: a line left open is cut after
/// its content, and its rest starts the client's next read.
fn plan(raws: &[Raw]) -> Vec<(Step, Note)> {
    let mut out = Vec::new();
    let mut clients = 0usize;
    let mut carry: BTreeMap<usize, (Act, Vec<u8>)> = BTreeMap::new();
    for r in raws {
        let pick = |c: usize| (clients > 0).then(|| c % clients);
        let item = match r {
            Raw::Connect(shard) if clients < 6 => {
                clients += 1;
                Some((Step::Connect { shard: *shard }, Note::Other))
            }
            Raw::Connect(_) => None,
            Raw::Type(c, lines, open, cuts) => pick(*c).map(|client| {
                let mut bytes = Vec::new();
                let mut done = Vec::new();
                if let Some((act, rest)) = carry.remove(&client) {
                    bytes.extend(rest);
                    done.push(act);
                }
                for (i, line) in lines.iter().enumerate() {
                    let last = i + 1 == lines.len();
                    let cut = open
                        .filter(|_| last && line.content_end < line.pieces.len())
                        .map(|o| line.content_end + o % (line.pieces.len() - line.content_end));
                    match cut {
                        Some(cut) => {
                            bytes.extend(line.pieces[..cut].concat());
                            // A line too long is refused as soon as its content is read.
                            let later = match &line.act {
                                Act::TooLong(_) => {
                                    done.push(line.act.clone());
                                    Act::Blank
                                }
                                act => act.clone(),
                            };
                            carry.insert(client, (later, line.pieces[cut..].concat()));
                        }
                        None => {
                            bytes.extend(line.pieces.concat());
                            done.push(line.act.clone());
                        }
                    }
                }
                let chunks = sim::gen::chunk(&bytes, cuts);
                (Step::Send { client, chunks }, Note::Typed { done })
            }),
            Raw::Eof(c) => pick(*c).map(|client| {
                let open = carry.remove(&client).map(|(act, _)| act);
                (Step::Eof { client }, Note::Eof { open })
            }),
            Raw::Close(c) => pick(*c).map(|client| {
                carry.remove(&client);
                (Step::Close { client }, Note::Other)
            }),
            Raw::Advance(millis) => Some((Step::Advance { millis: *millis }, Note::Other)),
            Raw::Stall(c) => pick(*c).map(|client| (Step::Stall { client }, Note::Other)),
            Raw::Resume(c) => pick(*c).map(|client| (Step::Resume { client }, Note::Other)),
            Raw::Read(c, max) => pick(*c).map(|client| (Step::Read { client, max: *max }, Note::Other)),
            Raw::Handoff(shard, n) => Some((Step::Handoff { shard: *shard, n: *n }, Note::Other)),
            Raw::Deliver(n) => Some((Step::DeliverBus { n: *n }, Note::Other)),
            Raw::Start => Some((Step::StartShard, Note::Other)),
            Raw::Kill(shard) => Some((Step::KillShard { shard: *shard }, Note::Other)),
        };
        out.extend(item);
    }
    out
}

/// A line a client must read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Line(String),
    /// Any refusal: its wording is free.
    Error,
}

/// An action that takes effect in bus order.
#[derive(Clone, Debug)]
enum Pub {
    Connect,
    Say(String),
    Nick(String),
    Join(String),
    Who,
    Rooms,
    Msg(String, String),
    Close,
}

/// What a connection waits for: its own actions in flight, and the local replies
/// queued behind them.
#[derive(Clone, Debug)]
enum Item {
    Publish(Pub),
    Local(Vec<Expect>),
}

#[derive(Debug)]
struct Person {
    node: usize,
    /// It still reads what is sent to it.
    live: bool,
    /// Its input is still read.
    input: bool,
    /// It had stopped reading.
    stalled: bool,
    /// It was reset or its shard died while it had stopped reading: what it read may
    /// stop anywhere short of what it was sent.
    cut: bool,
    pending: VecDeque<Item>,
    expected: Vec<Expect>,
}

#[derive(Clone, Debug)]
struct Member {
    person: usize,
    nick: Option<String>,
    room: String,
}

impl Member {
    fn name(&self, id: u64) -> String {
        self.nick.clone().unwrap_or_else(|| format!("Client #{id}"))
    }
}

/// The model: who is connected, with which name, in which room, as of each bus position.
struct Model {
    standalone: bool,
    config: Config,
    now_ms: u64,
    /// Each shard's start time, `None` once it died.
    nodes: Vec<Option<u64>>,
    people: Vec<Person>,
    members: BTreeMap<u64, Member>,
    next_id: u64,
}

fn nick_ok(nick: &str) -> bool {
    (1..=32).contains(&nick.len())
        && nick.as_bytes()[0].is_ascii_alphabetic()
        && nick.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !["client", "you", "server"].contains(&nick.to_ascii_lowercase().as_str())
}

fn room_ok(room: &str) -> bool {
    !room.is_empty() && !room.contains(char::is_whitespace) && room.chars().count() <= 32
}

impl Model {
    fn new(config: &Config, shards: usize) -> Model {
        Model {
            standalone: shards == 0,
            config: config.clone(),
            now_ms: 0,
            nodes: vec![Some(0); shards.max(1)],
            people: Vec::new(),
            members: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&n| self.nodes[n].is_some()).collect()
    }

    fn tell(&mut self, person: usize, line: Expect) {
        if self.people[person].live {
            self.people[person].expected.push(line);
        }
    }

    /// Tells everyone in `room` but `except`.
    fn tell_room(&mut self, room: &str, except: Option<usize>, line: &str) {
        let people: Vec<usize> = self
            .members
            .values()
            .filter(|m| m.room == room && Some(m.person) != except)
            .map(|m| m.person)
            .collect();
        for p in people {
            self.tell(p, Expect::Line(line.to_owned()));
        }
    }

    fn member_of(&self, person: usize) -> Option<u64> {
        self.members.iter().find(|(_, m)| m.person == person).map(|(&id, _)| id)
    }

    fn step(&mut self, step: &Step, note: &Note, deliveries: &[Delivery]) {
        match (step, note) {
            (Step::Connect { shard }, _) => {
                let live = self.live_nodes();
                self.people.push(Person {
                    node: live[shard % live.len()],
                    live: true,
                    input: true,
                    stalled: false,
                    cut: false,
                    pending: VecDeque::from([Item::Publish(Pub::Connect)]),
                    expected: Vec::new(),
                });
                self.settle_standalone(self.people.len() - 1);
            }
            (Step::Send { client, .. }, Note::Typed { done, .. }) => {
                for act in done {
                    self.act(*client, act);
                }
                self.release(*client);
                self.settle_standalone(*client);
            }
            (Step::Eof { client }, Note::Eof { open }) => {
                if let Some(act) = open {
                    self.act(*client, act);
                }
                self.act(*client, &Act::Quit);
                self.release(*client);
                self.settle_standalone(*client);
            }
            (Step::Close { client }, _) => {
                let p = &mut self.people[*client];
                if p.input {
                    p.input = false;
                    p.pending.push_back(Item::Publish(Pub::Close));
                }
                p.cut |= p.stalled;
                p.live = false;
                self.settle_standalone(*client);
            }
            (Step::Advance { millis }, _) => self.advance(*millis),
            (Step::Stall { client }, _) => self.people[*client].stalled = true,
            (Step::Resume { client }, _) => self.people[*client].stalled = false,
            (Step::StartShard, _) if !self.standalone && self.live_nodes().len() < MAX_LIVE_SHARDS => {
                self.nodes.push(Some(self.now_ms));
            }
            (Step::KillShard { shard }, _) if !self.standalone && self.live_nodes().len() >= 2 => {
                let live = self.live_nodes();
                let node = live[shard % live.len()];
                self.nodes[node] = None;
                for p in self.people.iter_mut().filter(|p| p.node == node) {
                    p.cut |= p.stalled;
                    p.live = false;
                    p.input = false;
                }
            }
            _ => {}
        }
        for delivery in deliveries {
            match *delivery {
                Delivery::From { client, .. } => self.deliver(client),
                Delivery::Gone { node } => {
                    let gone: Vec<u64> = self
                        .members
                        .iter()
                        .filter(|(_, m)| self.people[m.person].node == node)
                        .map(|(&id, _)| id)
                        .collect();
                    let gone: Vec<(u64, Member)> =
                        gone.into_iter().filter_map(|id| Some((id, self.members.remove(&id)?))).collect();
                    for (id, member) in gone {
                        self.tell_room(&member.room, None, &format!("{} is close", member.name(id)));
                    }
                }
            }
        }
    }

    /// A standalone shard applies a connection's actions at once.
    fn settle_standalone(&mut self, person: usize) {
        if self.standalone {
            while matches!(self.people[person].pending.front(), Some(Item::Publish(_))) {
                self.deliver(person);
            }
        }
    }

    fn act(&mut self, person: usize, act: &Act) {
        let p = &mut self.people[person];
        if !p.input {
            return;
        }
        let item = match act {
            Act::Say(text) => Item::Publish(Pub::Say(text.clone())),
            Act::Escaped(text) => Item::Publish(Pub::Say(format!("/{text}"))),
            Act::Nick(nick) if nick_ok(nick) => Item::Publish(Pub::Nick((*nick).to_owned())),
            Act::Join(room) if room_ok(room) => Item::Publish(Pub::Join((*room).to_owned())),
            Act::Msg(target, text) => Item::Publish(Pub::Msg((*target).to_owned(), text.clone())),
            Act::Who => Item::Publish(Pub::Who),
            Act::Rooms => Item::Publish(Pub::Rooms),
            Act::Quit | Act::Interrupt(_) => {
                p.input = false;
                Item::Publish(Pub::Close)
            }
            Act::Help => Item::Local(sim::help_lines().iter().map(|l| Expect::Line(l.clone())).collect()),
            Act::Nick(_) | Act::Join(_) | Act::Bad(_) | Act::TooLong(_) => Item::Local(vec![Expect::Error]),
            Act::Blank => return,
        };
        p.pending.push_back(item);
    }

    /// Hands out the local replies no longer waiting behind an action in flight.
    fn release(&mut self, person: usize) {
        while let Some(Item::Local(_)) = self.people[person].pending.front() {
            if let Some(Item::Local(lines)) = self.people[person].pending.pop_front() {
                for line in lines {
                    self.tell(person, line);
                }
            }
        }
    }

    /// The bus delivered this person's oldest action in flight.
    fn deliver(&mut self, person: usize) {
        let Some(Item::Publish(action)) = self.people[person].pending.pop_front() else {
            panic!("the bus delivered an action of client {person} that the model did not expect");
        };
        let me = self.member_of(person);
        match (action, me) {
            (Pub::Connect, _) if self.members.len() >= self.config.max_conns => {
                self.tell(person, Expect::Line("Error: server full".into()));
                let p = &mut self.people[person];
                p.live = false;
                p.input = false;
                p.pending.retain(|i| matches!(i, Item::Publish(_)));
            }
            (Pub::Connect, _) => {
                let id = self.next_id;
                self.next_id += 1;
                self.members.insert(id, Member { person, nick: None, room: "lobby".into() });
                if let Some(welcome) = self.config.welcome.clone() {
                    self.tell(person, Expect::Line(welcome));
                }
                self.tell_room("lobby", Some(person), &format!("Client #{id} is connected"));
            }
            (Pub::Close, me) => {
                if let Some(member) = me.and_then(|id| Some((id, self.members.remove(&id)?))) {
                    let (id, member) = member;
                    self.tell_room(&member.room, None, &format!("{} is close", member.name(id)));
                }
                self.people[person].live = false;
            }
            (_, None) => {}
            (Pub::Say(text), Some(id)) => {
                let m = self.members[&id].clone();
                self.tell_room(&m.room, Some(person), &format!("{}: {text}", m.name(id)));
                self.tell(person, Expect::Line(format!("You: {text}")));
            }
            (Pub::Nick(nick), Some(id)) => {
                let m = self.members[&id].clone();
                let taken = self.members.iter().any(|(&other, o)| {
                    other != id && o.nick.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&nick))
                });
                if m.nick.as_deref() == Some(nick.as_str()) || taken {
                    self.tell(person, Expect::Error);
                } else {
                    let old = m.name(id);
                    if let Some(member) = self.members.get_mut(&id) {
                        member.nick = Some(nick.clone());
                    }
                    self.tell(person, Expect::Line(format!("* You are now {nick}")));
                    self.tell_room(&m.room, Some(person), &format!("{old} is now {nick}"));
                }
            }
            (Pub::Join(room), Some(id)) => {
                let m = self.members[&id].clone();
                if m.room == room {
                    self.tell(person, Expect::Error);
                } else {
                    if let Some(member) = self.members.get_mut(&id) {
                        member.room = room.clone();
                    }
                    let name = m.name(id);
                    self.tell_room(&m.room, Some(person), &format!("{name} left {}", m.room));
                    self.tell_room(&room, Some(person), &format!("{name} joined {room}"));
                    self.tell(person, Expect::Line(format!("* You left {} and joined {room}", m.room)));
                }
            }
            (Pub::Who, Some(id)) => {
                let room = self.members[&id].room.clone();
                let here: Vec<(u64, Member)> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.room == room)
                    .map(|(&i, m)| (i, m.clone()))
                    .collect();
                for (i, m) in &here {
                    let line = match &m.nick {
                        Some(nick) => format!("* {nick} (#{i})"),
                        None => format!("* Client #{i}"),
                    };
                    self.tell(person, Expect::Line(line));
                }
                self.tell(person, Expect::Line(format!("* {} in {room}", here.len())));
            }
            (Pub::Rooms, Some(_)) => {
                let mut rooms: BTreeMap<String, usize> = BTreeMap::new();
                for m in self.members.values() {
                    *rooms.entry(m.room.clone()).or_default() += 1;
                }
                let lobby = rooms.remove("lobby").unwrap_or(0);
                self.tell(person, Expect::Line(format!("* lobby: {lobby}")));
                for (room, n) in &rooms {
                    self.tell(person, Expect::Line(format!("* {room}: {n}")));
                }
                self.tell(person, Expect::Line(format!("* {} rooms", rooms.len() + 1)));
            }
            (Pub::Msg(target, text), Some(id)) => {
                let found = match target.strip_prefix('#') {
                    Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                        digits.parse::<u64>().ok().filter(|n| self.members.contains_key(n))
                    }
                    _ => self
                        .members
                        .iter()
                        .find(|(_, m)| m.nick.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&target)))
                        .map(|(&i, _)| i),
                };
                match found {
                    Some(to) => {
                        let (from, dest) = (self.members[&id].name(id), self.members[&to].clone());
                        self.tell(dest.person, Expect::Line(format!("[private] {from}: {text}")));
                        self.tell(person, Expect::Line(format!("[private to {}] {text}", dest.name(to))));
                    }
                    None => self.tell(person, Expect::Error),
                }
            }
        }
        self.release(person);
    }

    /// Time passes: each live shard ticks every `tick` seconds from its start.
    fn advance(&mut self, millis: u64) {
        let until = self.now_ms + millis;
        let period = self.config.tick * 1000;
        if period > 0 {
            let mut due: Vec<(u64, usize)> = Vec::new();
            for (node, born) in self.nodes.iter().enumerate() {
                let Some(born) = *born else { continue };
                let mut t = born + period * ((self.now_ms.saturating_sub(born)) / period + 1);
                while t <= until {
                    due.push((t, node));
                    t += period;
                }
            }
            due.sort_unstable();
            for (t, node) in due {
                let s = t / 1000;
                let line =
                    format!("Server Time: 2026-11-25 {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
                let people: Vec<usize> = self
                    .members
                    .values()
                    .map(|m| m.person)
                    .filter(|&p| self.people[p].node == node)
                    .collect();
                for p in people {
                    self.tell(p, Expect::Line(line.clone()));
                }
            }
        }
        self.now_ms = until;
    }
}

/// Checks one client's transcript against the model, line by line.
fn matches(client: usize, transcript: &[u8], person: &Person) -> Result<(), TestCaseError> {
    let (lines, rest) = sim::lines(transcript);
    let show = || {
        format!(
            "client {client}{}\n  read:     {lines:#?}\n  expected: {:#?}",
            if person.cut { " (cut off while it did not read)" } else { "" },
            person.expected
        )
    };
    if person.cut {
        prop_assert!(lines.len() <= person.expected.len(), "{}", show());
    } else {
        prop_assert!(rest.is_empty(), "a line without its end: {:?}\n{}", rest, show());
        prop_assert_eq!(lines.len(), person.expected.len(), "{}", show());
    }
    for (i, (got, want)) in lines.iter().zip(&person.expected).enumerate() {
        let ok = match want {
            Expect::Line(line) => got == line,
            Expect::Error => got.starts_with("Error: "),
        };
        prop_assert!(ok, "line {} is {:?}, not {:?}\n{}", i, got, want, show());
    }
    Ok(())
}

fn scenario() -> impl Strategy<Value = (Config, usize, Vec<(Step, Note)>)> {
    let config = (
        select(vec![0u64, 1, 3]),
        prop_oneof![2 => Just(1000usize), 1 => 2..4usize],
        prop::option::of(Just("Welcome to chat".to_owned())),
    )
        .prop_map(|(tick, max_conns, welcome)| Config {
            tick,
            utc_offset: UtcOffset::UTC,
            welcome,
            max_line: MAX_LINE,
            max_queue: 1 << 20,
            max_conns,
            max_lines_per_second: 0,
        });
    (config, 0..=3usize).prop_flat_map(|(config, shards)| {
        (Just(config), Just(shards), vec(raw(shards > 0), 1..80).prop_map(|raws| plan(&raws)))
    })
}

proptest! {
    #![proptest_config(sim::proptest_config(1024))]

    #[test]
    fn every_line_reaches_exactly_the_room_of_its_time((config, shards, plan) in scenario()) {
        let mut world = if shards == 0 {
            World::standalone(config.clone())
        } else {
            World::cluster(config.clone(), shards)
        };
        let mut model = Model::new(&config, shards);
        let mut drive = |world: &mut World, step: &Step, note: &Note| {
            let seen = world.log.len();
            world.apply(step);
            model.step(step, note, &world.log[seen..]);
        };
        for (step, note) in &plan {
            drive(&mut world, step, note);
        }
        loop {
            let round = world.settle_round();
            if round.is_empty() {
                break;
            }
            for step in &round {
                drive(&mut world, step, &Note::Other);
            }
        }
        for (i, person) in model.people.iter().enumerate() {
            matches(i, world.transcript(i), person)?;
        }
    }
}
