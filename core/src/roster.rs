//! The roster: who is connected, their nicks and rooms, and the id counter.
//!
//! Every shard (and the bus's replica) holds a copy and changes it only by
//! applying envelopes in bus order, so all copies agree at every bus position.

use std::collections::BTreeMap;
use std::fmt;

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
    pub(crate) room: Box<str>,
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

/// A place in a room: enough to deliver without looking the member up.
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
        from_room: Box<str>,
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

/// The replicated state of the whole server.
#[derive(Clone, Debug)]
pub(crate) struct Roster {
    next_id: u64,
    members: BTreeMap<ClientId, Member>,
    by_conn: BTreeMap<ConnRef, ClientId>,
    /// Lower-cased nick to holder, so nicks are unique case-insensitively.
    nicks: BTreeMap<String, ClientId>,
    /// Each room's seats in id order, which is connect order; `lobby` always exists.
    rooms: BTreeMap<Box<str>, Vec<Seat>>,
}

const SNAPSHOT: u8 = 0x53;

impl Roster {
    pub(crate) fn new() -> Roster {
        let mut rooms = BTreeMap::new();
        rooms.insert(Box::from(LOBBY), Vec::new());
        Roster {
            next_id: 1,
            members: BTreeMap::new(),
            by_conn: BTreeMap::new(),
            nicks: BTreeMap::new(),
            rooms,
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

    /// The seats of `room`, in connect order.
    pub(crate) fn seats(&self, room: &str) -> &[Seat] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Every room with its head count: lobby first, then the rest sorted.
    pub(crate) fn rooms(&self) -> impl Iterator<Item = (&str, usize)> {
        let lobby = self.rooms.get(LOBBY).map_or(0, Vec::len);
        std::iter::once((LOBBY, lobby)).chain(
            self.rooms
                .iter()
                .filter(|(name, _)| &***name != LOBBY)
                .map(|(name, seats)| (&**name, seats.len())),
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
        self.insert(Member { id, conn, nick: None, room: Box::from(LOBBY) });
        Effect::Admitted { id }
    }

    fn insert(&mut self, member: Member) {
        let seat = Seat { id: member.id, conn: member.conn };
        let seats = self.rooms.entry(member.room.clone()).or_default();
        if let Err(at) = seats.binary_search_by_key(&seat.id, |s| s.id) {
            seats.insert(at, seat);
        }
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
        self.unseat(id, &member.room);
        Some(member)
    }

    fn unseat(&mut self, id: ClientId, room: &str) {
        if let Some(seats) = self.rooms.get_mut(room) {
            if let Ok(at) = seats.binary_search_by_key(&id, |s| s.id) {
                seats.remove(at);
            }
            if seats.is_empty() && room != LOBBY {
                self.rooms.remove(room);
            }
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
        let from_room = std::mem::replace(&mut member.room, Box::from(room));
        let seat = Seat { id, conn: member.conn };
        self.unseat(id, &from_room);
        let seats = self.rooms.entry(Box::from(room)).or_default();
        if let Err(at) = seats.binary_search_by_key(&id, |s| s.id) {
            seats.insert(at, seat);
        }
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
    pub(crate) fn from_snapshot(bytes: &[u8]) -> Result<Roster, DecodeError> {
        let mut r = Reader::new(bytes);
        match r.u8()? {
            SNAPSHOT => {}
            other => return Err(DecodeError::UnknownTag(other)),
        }
        let mut roster = Roster::new();
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
            roster.insert(Member { id, conn, nick, room: Box::from(room) });
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
        let mut roster = Roster::new();
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
        let mut roster = Roster::new();
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
        let mut roster = Roster::new();
        roster.apply(&Envelope::Connect { from: conn(1, 0) }, 10);
        roster.apply(&Envelope::Join { from: conn(1, 0), room: "games".into() }, 10);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 0), ("games", 1)]);
        roster.apply(&Envelope::Close { from: conn(1, 0) }, 10);
        assert_eq!(roster.rooms().collect::<Vec<_>>(), [("lobby", 0)]);
    }

    #[test]
    fn shard_gone_removes_exactly_that_shard() {
        let mut roster = Roster::new();
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
        let mut roster = Roster::new();
        roster.apply(&Envelope::Connect { from: conn(1, 0) }, 10);
        roster.apply(&Envelope::Connect { from: conn(2, 0) }, 10);
        roster.apply(&Envelope::Nick { from: conn(2, 0), nick: "bob".into() }, 10);
        roster.apply(&Envelope::Join { from: conn(1, 0), room: "x".into() }, 10);
        let copy = Roster::from_snapshot(&roster.snapshot()).expect("valid snapshot");
        assert_eq!(copy.snapshot(), roster.snapshot());
        assert_eq!(copy.members().count(), 2);
        assert!(Roster::from_snapshot(&[]).is_err());
        assert!(
            Roster::from_snapshot(&[SNAPSHOT, 1, 1, 5, 1, 0, 0, 5, b'l', b'o', b'b', b'b', b'y']).is_err()
        );
    }
}
