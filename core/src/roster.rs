//! The roster: who is connected, their nicks and rooms, and the id counter.
//!
//! Every shard (and the bus's replica) holds a copy and changes it only by
//! applying envelopes in bus order, so all copies agree at every bus position.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::command::{check_nick, LOBBY};
use crate::envelope::{Envelope, Recipient};
use crate::id::{ClientId, ConnId, ConnRef, ShardId};
use crate::wire::{put_str, put_u64, DecodeError, Reader};

/// One admitted connection as every shard knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: ClientId,
    pub(crate) conn: ConnRef,
    pub(crate) nick: Option<Box<str>>,
    /// Shared with the room's key in [`Roster::rooms`]: a member costs no
    /// allocation of its own for its room's name.
    pub(crate) room: Arc<str>,
}

impl Member {
    /// The name others see: the nick, or `Client #7`.
    pub(crate) fn name(&self) -> Name<'_> {
        Name(self)
    }
}

/// A member's name as shown, formatted without allocating.
pub(crate) struct Name<'a>(&'a Member);

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.nick {
            Some(nick) => f.write_str(nick),
            None => write!(f, "Client #{}", self.0.id.0),
        }
    }
}

/// A place in a room for a connection of the roster's own shard: enough to
/// deliver without looking the member up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seat {
    pub(crate) id: ClientId,
    pub(crate) conn: ConnRef,
}

/// What applying one envelope did, for the shards to show.
#[derive(Debug)]
pub(crate) enum Effect<'e> {
    /// The envelope's connection is not (or no longer) admitted: nothing happens.
    Nothing,
    Admitted {
        id: ClientId,
    },
    Refused {
        conn: ConnRef,
    },
    Said {
        id: ClientId,
        text: &'e str,
    },
    Renamed {
        id: ClientId,
        old_name: String,
    },
    Moved {
        id: ClientId,
        from_room: Arc<str>,
    },
    Who {
        id: ClientId,
    },
    Rooms {
        id: ClientId,
    },
    Private {
        from: ClientId,
        to: ClientId,
        text: &'e str,
    },
    /// A refusal decided by shared state, such as a taken nick.
    Refusal {
        to: ConnRef,
        error: String,
    },
    Left {
        member: Member,
    },
    ShardGone {
        members: Vec<Member>,
    },
}

/// One room: how many are in it, and which of them the roster's shard delivers to.
#[derive(Clone, Debug, Default)]
struct Room {
    headcount: usize,
    /// The seats of the roster's own shard, in id order, which is connect
    /// order. Other shards' members are counted only: every shard holds the
    /// whole roster, so a seat apiece for them would be paid once per shard.
    seats: Vec<Seat>,
}

/// The replicated state of the whole server.
#[derive(Clone, Debug)]
pub(crate) struct Roster {
    next_id: u64,
    /// The shard whose connections get seats; `None` for the bus's replica.
    local: Option<ShardId>,
    members: BTreeMap<ClientId, Member>,
    by_conn: BTreeMap<ConnRef, ClientId>,
    /// Lower-cased nick to holder, so nicks are unique case-insensitively.
    nicks: BTreeMap<String, ClientId>,
    /// `lobby` always exists; any other room exists while someone is in it.
    rooms: BTreeMap<Arc<str>, Room>,
}

const SNAPSHOT: u8 = 0x53;

impl Roster {
    /// An empty roster; `local` is the shard that delivers from it, if any.
    pub(crate) fn new(local: Option<ShardId>) -> Roster {
        let mut rooms = BTreeMap::new();
        rooms.insert(Arc::from(LOBBY), Room::default());
        Roster {
            next_id: 1,
            local,
            members: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            nicks: BTreeMap::new(),
            rooms,
        }
    }

    /// A copy with every map rebuilt from its sorted entries, which packs
    /// the tree nodes full: ids only grow, so a roster built by connects
    /// leaves its nodes about half full (a node splits in two as it fills).
    /// The copy's allocations are fresh, too, so the allocator can return
    /// the pages the old ones kept scattered among freed buffers.
    pub(crate) fn compacted(&self) -> Roster {
        Roster {
            next_id: self.next_id,
            local: self.local,
            members: self.members.iter().map(|(id, m)| (*id, m.clone())).collect(),
            by_conn: self.by_conn.iter().map(|(conn, id)| (*conn, *id)).collect(),
            nicks: self.nicks.iter().map(|(nick, id)| (nick.clone(), *id)).collect(),
            rooms: self.rooms.iter().map(|(name, room)| (Arc::clone(name), room.clone())).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn member(&self, id: ClientId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub(crate) fn id_of(&self, conn: ConnRef) -> Option<ClientId> {
        self.by_conn.get(&conn).copied()
    }

    /// The seats of the local shard's connections in `room`, in connect order.
    pub(crate) fn local_seats(&self, room: &str) -> &[Seat] {
        self.rooms.get(room).map_or(&[], |r| r.seats.as_slice())
    }

    /// Everyone in `room`, on every shard, in connect order.
    pub(crate) fn room_members<'a>(&'a self, room: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.members.values().filter(move |m| &*m.room == room)
    }

    /// How many are in `room`, on every shard.
    pub(crate) fn headcount(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |r| r.headcount)
    }

    /// Every room with its head count: lobby first, then the rest sorted.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        std::iter::once((LOBBY, self.headcount(LOBBY))).chain(
            self.rooms
                .iter()
                .filter(|(name, _)| &***name != LOBBY)
                .map(|(name, room)| (&**name, room.headcount)),
        )
    }

    /// Every member, in connect order.
    #[cfg(test)]
    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Applies one envelope; `max_conns` decides admission.
    pub(crate) fn apply<'e>(&mut self, envelope: &'e Envelope, max_conns: usize) -> Effect<'e> {
        match envelope {
            Envelope::Connect { from } => self.connect(*from, max_conns),
            Envelope::ShardGone { shard } => Effect::ShardGone { members: self.remove_shard(*shard) },
            Envelope::Line { from, text } => self.with_member(*from, |_, id| Effect::Said { id, text }),
            Envelope::Nick { from, nick } => self.with_member(*from, |r, id| r.rename(id, nick)),
            Envelope::Join { from, room } => self.with_member(*from, |r, id| r.join(id, room)),
            Envelope::Who { from } => self.with_member(*from, |_, id| Effect::Who { id }),
            Envelope::Rooms { from } => self.with_member(*from, |_, id| Effect::Rooms { id }),
            Envelope::Msg { from, target, text } => {
                self.with_member(*from, |r, id| match r.resolve(target) {
                    Some(to) => Effect::Private { from: id, to, text },
                    None => Effect::Refusal {
                        to: *from,
                        error: match target {
                            Recipient::Id(n) => format!("Error: no such user: #{n}"),
                            Recipient::Nick(nick) => format!("Error: no such user: {nick}"),
                        },
                    },
                })
            }
            Envelope::Close { from } => match self.remove(*from) {
                Some(member) => Effect::Left { member },
                None => Effect::Nothing,
            },
        }
    }

    fn with_member<'e>(
        &mut self,
        conn: ConnRef,
        act: impl FnOnce(&mut Roster, ClientId) -> Effect<'e>,
    ) -> Effect<'e> {
        match self.id_of(conn) {
            Some(id) => act(self, id),
            None => Effect::Nothing,
        }
    }

    fn connect<'e>(&mut self, conn: ConnRef, max_conns: usize) -> Effect<'e> {
        if self.by_conn.contains_key(&conn) {
            return Effect::Nothing;
        }
        if self.members.len() >= max_conns {
            return Effect::Refused { conn };
        }
        let id = ClientId(self.next_id);
        self.next_id += 1;
        let room = self.room_name(LOBBY);
        self.insert(Member { id, conn, nick: None, room });
        Effect::Admitted { id }
    }

    fn insert(&mut self, member: Member) {
        self.seat(member.id, member.conn, &member.room);
        if let Some(nick) = &member.nick {
            self.nicks.insert(nick.to_ascii_lowercase(), member.id);
        }
        self.by_conn.insert(member.conn, member.id);
        self.members.insert(member.id, member);
    }

    fn remove(&mut self, conn: ConnRef) -> Option<Member> {
        let id = self.by_conn.remove(&conn)?;
        let member = self.members.remove(&id)?;
        if let Some(nick) = &member.nick {
            self.nicks.remove(&nick.to_ascii_lowercase());
        }
        self.unseat(id, conn, &member.room);
        Some(member)
    }

    /// The room's name as the roster holds it, creating the room if new.
    fn room_name(&mut self, room: &str) -> Arc<str> {
        if let Some((name, _)) = self.rooms.get_key_value(room) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(room);
        self.rooms.insert(Arc::clone(&name), Room::default());
        name
    }

    /// Counts a member into `room`, with a seat if it is the local shard's.
    fn seat(&mut self, id: ClientId, conn: ConnRef, room: &Arc<str>) {
        let local = self.local == Some(conn.shard);
        let room = self.rooms.entry(Arc::clone(room)).or_default();
        room.headcount += 1;
        if local {
            if let Err(at) = room.seats.binary_search_by_key(&id, |s| s.id) {
                room.seats.insert(at, Seat { id, conn });
            }
        }
    }

    fn unseat(&mut self, id: ClientId, conn: ConnRef, name: &str) {
        let local = self.local == Some(conn.shard);
        let Some(room) = self.rooms.get_mut(name) else { return };
        room.headcount = room.headcount.saturating_sub(1);
        if local {
            if let Ok(at) = room.seats.binary_search_by_key(&id, |s| s.id) {
                room.seats.remove(at);
            }
        }
        if room.headcount == 0 && name != LOBBY {
            self.rooms.remove(name);
        }
    }

    fn remove_shard(&mut self, shard: ShardId) -> Vec<Member> {
        let gone: Vec<ConnRef> =
            self.members.values().filter(|m| m.conn.shard == shard).map(|m| m.conn).collect();
        gone.into_iter().filter_map(|conn| self.remove(conn)).collect()
    }

    fn rename<'e>(&mut self, id: ClientId, nick: &str) -> Effect<'e> {
        let Some(member) = self.members.get(&id) else {
            return Effect::Nothing;
        };
        let conn = member.conn;
        let refuse = |error: String| Effect::Refusal { to: conn, error };
        if let Err(error) = check_nick(nick) {
            return refuse(error);
        }
        if member.nick.as_deref() == Some(nick) {
            return refuse(format!("Error: you are already {nick}"));
        }
        let key = nick.to_ascii_lowercase();
        if self.nicks.get(&key).is_some_and(|&holder| holder != id) {
            return refuse(format!("Error: the nick {nick} is taken"));
        }
        let old_name = member.name().to_string();
        let old_nick = member.nick.as_deref().map(str::to_ascii_lowercase);
        if let Some(old) = old_nick {
            self.nicks.remove(&old);
        }
        self.nicks.insert(key, id);
        if let Some(member) = self.members.get_mut(&id) {
            member.nick = Some(Box::from(nick));
        }
        Effect::Renamed { id, old_name }
    }

    fn join<'e>(&mut self, id: ClientId, room: &str) -> Effect<'e> {
        let Some(member) = self.members.get_mut(&id) else {
            return Effect::Nothing;
        };
        if &*member.room == room {
            return Effect::Refusal { to: member.conn, error: format!("Error: you are already in {room}") };
        }
        let conn = member.conn;
        let name = self.room_name(room);
        let Some(member) = self.members.get_mut(&id) else {
            return Effect::Nothing;
        };
        let from_room = std::mem::replace(&mut member.room, Arc::clone(&name));
        self.unseat(id, conn, &from_room);
        self.seat(id, conn, &name);
        Effect::Moved { id, from_room }
    }

    fn resolve(&self, target: &Recipient) -> Option<ClientId> {
        match target {
            Recipient::Id(n) => Some(ClientId(*n)).filter(|id| self.members.contains_key(id)),
            Recipient::Nick(nick) => self.nicks.get(&nick.to_ascii_lowercase()).copied(),
        }
    }

    /// Encodes the whole roster, for a shard that starts late.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT];
        put_u64(&mut out, self.next_id);
        put_u64(&mut out, self.members.len() as u64);
        for member in self.members.values() {
            put_u64(&mut out, member.id.0);
            put_u64(&mut out, member.conn.shard.0);
            put_u64(&mut out, member.conn.conn.as_u64());
            put_str(&mut out, member.nick.as_deref().unwrap_or(""));
            put_str(&mut out, &member.room);
        }
        out
    }

    /// Decodes [`Roster::snapshot`], checking that it describes a possible roster.
    pub(crate) fn from_snapshot(bytes: &[u8], local: Option<ShardId>) -> Result<Roster, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.u8()? {
            SNAPSHOT => {}
            other => return Err(DecodeError::UnknownTag(other)),
        }
        let mut roster = Roster::new(local);
        roster.next_id = r.u64()?;
        let count = r.u64()?;
        for _ in 0..count {
            let id = ClientId(r.u64()?);
            let conn = ConnRef { shard: ShardId(r.u64()?), conn: ConnId::from_u64(r.u64()?) };
            let nick = r.str()?;
            let room = r.str()?;
            let nick_taken = roster.nicks.contains_key(&nick.to_ascii_lowercase());
            if id.0 == 0
                || id.0 >= roster.next_id
                || roster.members.contains_key(&id)
                || roster.by_conn.contains_key(&conn)
            {
                return Err(DecodeError::Inconsistent("duplicate or out-of-range member"));
            }
            if (!nick.is_empty() && (nick_taken || check_nick(nick).is_err())) || room.is_empty() {
                return Err(DecodeError::Inconsistent("invalid nick or room"));
            }
            let nick = (!nick.is_empty()).then(|| Box::from(nick));
            let room = roster.room_name(room);
            roster.insert(Member { id, conn, nick, room });
        }
        r.finish()?;
        Ok(roster)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(shard: u64, n: u32) -> ConnRef {
        ConnRef { shard: ShardId(shard), conn: ConnId::new(n, 0) }
    }

    #[test]
    fn admits_in_order_until_full() {
        let mut roster = Roster::new(None);
        for n in 0..3 {
            let envelope = Envelope::Connect { from: conn(1, n) };
            let effect = roster.apply(&envelope, 3);
            assert!(matches!(effect, Effect::Admitted { id } if id == ClientId(u64::from(n) + 1)));
        }
        let late = Envelope::Connect { from: conn(2, 0) };
        let refused = roster.apply(&late, 3);
        assert!(matches!(refused, Effect::Refused { .. }));
        roster.apply(&Envelope::Close { from: conn(1, 1) }, 3);
        let later = Envelope::Connect { from: conn(2, 1) };
        let after = roster.apply(&later, 3);
        assert!(matches!(after, Effect::Admitted { id: ClientId(4) }), "ids are never reused");
    }

    #[test]
    fn the_first_claim_in_bus_order_wins_a_nick() {
        let mut roster = Roster::new(None);
        roster.apply(&Envelope::Connect { from: conn(1, 0) }, 10);
        roster.apply(&Envelope::Connect { from: conn(2, 0) }, 10);
        let claim = Envelope::Nick { from: conn(2, 0), nick: "Alice".into() };
        let first = matches!(roster.apply(&claim, 10), Effect::Renamed { .. });
        let rival = Envelope::Nick { from: conn(1, 0), nick: "alice".into() };
        let second = roster.apply(&rival, 10);
        assert!(first);
        assert!(matches!(second, Effect::Refusal { error, .. } if error.contains("taken")));
    }

    #[test]
    fn rooms_disappear_when_empty_but_lobby_stays() {
        let mut roster = Roster::new(None);
        roster.apply(&Envelope::Connect { from: conn(1, 0) }, 10);
        roster.apply(&Envelope::Join { from: conn(1, 0), room: "games".into() }, 10);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 0), ("games", 1)]);
        roster.apply(&Envelope::Close { from: conn(1, 0) }, 10);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 0)]);
    }

    #[test]
    fn seats_are_kept_for_the_local_shard_only_and_everyone_is_counted() {
        let mut roster = Roster::new(Some(ShardId(1)));
        for (shard, n) in [(1, 0), (2, 0), (1, 1), (2, 1)] {
            roster.apply(&Envelope::Connect { from: conn(shard, n) }, 10);
        }
        let seats = |r: &Roster, room: &str| r.local_seats(room).iter().map(|s| s.id.0).collect::<Vec<_>>();
        let members = |r: &Roster, room: &str| r.room_members(room).map(|m| m.id.0).collect::<Vec<_>>();
        assert_eq!(seats(&roster, "lobby"), [1, 3]);
        assert_eq!(members(&roster, "lobby"), [1, 2, 3, 4]);
        roster.apply(&Envelope::Join { from: conn(2, 0), room: "games".into() }, 10);
        roster.apply(&Envelope::Join { from: conn(1, 1), room: "games".into() }, 10);
        assert_eq!(seats(&roster, "games"), [3]);
        assert_eq!(members(&roster, "games"), [2, 3]);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 2), ("games", 2)]);
        roster.apply(&Envelope::ShardGone { shard: ShardId(2) }, 10);
        roster.apply(&Envelope::Close { from: conn(1, 1) }, 10);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 1)]);
        assert_eq!(seats(&roster, "lobby"), [1]);
        let copy = Roster::from_snapshot(&roster.snapshot(), Some(ShardId(3))).expect("valid snapshot");
        assert!(copy.local_seats("lobby").is_empty(), "a new shard has no seats of its own yet");
        assert_eq!(copy.headcount("lobby"), 1);
    }

    #[test]
    fn shard_gone_removes_exactly_that_shard() {
        let mut roster = Roster::new(None);
        for (shard, n) in [(1, 0), (2, 0), (1, 1), (2, 1)] {
            roster.apply(&Envelope::Connect { from: conn(shard, n) }, 10);
        }
        let Effect::ShardGone { members } = roster.apply(&Envelope::ShardGone { shard: ShardId(1) }, 10)
        else {
            panic!("wrong effect");
        };
        assert_eq!(members.iter().map(|m| m.id.0).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(roster.len(), 2);
        let again = roster.apply(&Envelope::ShardGone { shard: ShardId(1) }, 10);
        assert!(matches!(again, Effect::ShardGone { members } if members.is_empty()));
    }

    #[test]
    fn snapshots_round_trip_and_reject_nonsense() {
        let mut roster = Roster::new(None);
        roster.apply(&Envelope::Connect { from: conn(1, 0) }, 10);
        roster.apply(&Envelope::Connect { from: conn(2, 0) }, 10);
        roster.apply(&Envelope::Nick { from: conn(2, 0), nick: "bob".into() }, 10);
        roster.apply(&Envelope::Join { from: conn(1, 0), room: "x".into() }, 10);
        let copy = Roster::from_snapshot(&roster.snapshot(), None).expect("valid snapshot");
        assert_eq!(copy.snapshot(), roster.snapshot());
        assert_eq!(copy.members().count(), 2);
        assert!(Roster::from_snapshot(&[], None).is_err());
        assert!(Roster::from_snapshot(&[SNAPSHOT, 1, 1, 5, 1, 0, 0, 5, b'l', b'o', b'b', b'b', b'y'], None)
            .is_err());
    }
}
