//! Envelopes: the actions shards publish on the bus and apply in bus order.

use crate::id::{ConnId, ConnRef, ShardId};
use crate::wire::{put_str, put_u64, DecodeError, Reader};

/// One action that every shard must apply at the same point of the bus order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Envelope {
    Connect { from: ConnRef },
    Line { from: ConnRef, text: String },
    Nick { from: ConnRef, nick: String },
    Join { from: ConnRef, room: String },
    Who { from: ConnRef },
    Rooms { from: ConnRef },
    Msg { from: ConnRef, target: Recipient, text: String },
    Close { from: ConnRef },
    ShardGone { shard: ShardId },
}

/// The target of a private message, as typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recipient {
    Id(u64),
    Nick(String),
}

const CONNECT: u8 = 1;
const LINE: u8 = 2;
const NICK: u8 = 3;
const JOIN: u8 = 4;
const WHO: u8 = 5;
const ROOMS: u8 = 6;
const MSG: u8 = 7;
const CLOSE: u8 = 8;
const SHARD_GONE: u8 = 9;

impl Envelope {
    /// The connection whose action this is, if any.
    pub(crate) fn origin(&self) -> Option<ConnRef> {
        match self {
            Envelope::Connect { from }
            | Envelope::Line { from, .. }
            | Envelope::Nick { from, .. }
            | Envelope::Join { from, .. }
            | Envelope::Who { from }
            | Envelope::Rooms { from }
            | Envelope::Msg { from, .. }
            | Envelope::Close { from } => Some(*from),
            Envelope::ShardGone { .. } => None,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        let put_from = |out: &mut Vec<u8>, tag: u8, from: &ConnRef| {
            out.push(tag);
            put_u64(out, from.shard.0);
            put_u64(out, from.conn.as_u64());
        };
        match self {
            Envelope::Connect { from } => put_from(&mut out, CONNECT, from),
            Envelope::Line { from, text } => {
                put_from(&mut out, LINE, from);
                put_str(&mut out, text);
            }
            Envelope::Nick { from, nick } => {
                put_from(&mut out, NICK, from);
                put_str(&mut out, nick);
            }
            Envelope::Join { from, room } => {
                put_from(&mut out, JOIN, from);
                put_str(&mut out, room);
            }
            Envelope::Who { from } => put_from(&mut out, WHO, from),
            Envelope::Rooms { from } => put_from(&mut out, ROOMS, from),
            Envelope::Msg { from, target, text } => {
                put_from(&mut out, MSG, from);
                match target {
                    Recipient::Id(id) => {
                        out.push(0);
                        put_u64(&mut out, *id);
                    }
                    Recipient::Nick(nick) => {
                        out.push(1);
                        put_str(&mut out, nick);
                    }
                }
                put_str(&mut out, text);
            }
            Envelope::Close { from } => put_from(&mut out, CLOSE, from),
            Envelope::ShardGone { shard } => {
                out.push(SHARD_GONE);
                put_u64(&mut out, shard.0);
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let mut r = Reader::new(bytes);
        let tag = r.u8()?;
        let from = |r: &mut Reader<'_>| -> Result<ConnRef, DecodeError> {
            Ok(ConnRef { shard: ShardId(r.u64()?), conn: ConnId::from_u64(r.u64()?) })
        };
        let envelope = match tag {
            CONNECT => Envelope::Connect { from: from(&mut r)? },
            LINE => Envelope::Line { from: from(&mut r)?, text: r.str()?.to_owned() },
            NICK => Envelope::Nick { from: from(&mut r)?, nick: r.str()?.to_owned() },
            JOIN => Envelope::Join { from: from(&mut r)?, room: r.str()?.to_owned() },
            WHO => Envelope::Who { from: from(&mut r)? },
            ROOMS => Envelope::Rooms { from: from(&mut r)? },
            MSG => {
                let from = from(&mut r)?;
                let target = match r.u8()? {
                    0 => Recipient::Id(r.u64()?),
                    1 => Recipient::Nick(r.str()?.to_owned()),
                    other => return Err(DecodeError::UnknownTag(other)),
                };
                Envelope::Msg { from, target, text: r.str()?.to_owned() }
            }
            CLOSE => Envelope::Close { from: from(&mut r)? },
            SHARD_GONE => Envelope::ShardGone { shard: ShardId(r.u64()?) },
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish()?;
        Ok(envelope)
    }
}

/// Encodes the envelope that announces a dead shard's connections closed.
///
/// The party that orders the bus publishes it once, after the last whole frame
/// it received from that shard, so each of its connections is announced exactly once.
pub fn shard_gone_envelope(shard: ShardId) -> Vec<u8> {
    Envelope::ShardGone { shard }.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> ConnRef {
        ConnRef { shard: ShardId(3), conn: ConnId::new(7, 2) }
    }

    #[test]
    fn every_kind_round_trips() {
        let all = [
            Envelope::Connect { from: from() },
            Envelope::Line { from: from(), text: "hé".into() },
            Envelope::Nick { from: from(), nick: "alice".into() },
            Envelope::Join { from: from(), room: "games".into() },
            Envelope::Who { from: from() },
            Envelope::Rooms { from: from() },
            Envelope::Msg { from: from(), target: Recipient::Id(9), text: "psst".into() },
            Envelope::Msg { from: from(), target: Recipient::Nick("bob".into()), text: "x".into() },
            Envelope::Close { from: from() },
            Envelope::ShardGone { shard: ShardId(u64::MAX) },
        ];
        for envelope in all {
            assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Envelope::decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(Envelope::decode(&[99]), Err(DecodeError::UnknownTag(99)));
        let mut bytes = Envelope::Who { from: from() }.encode();
        bytes.push(0);
        assert_eq!(Envelope::decode(&bytes), Err(DecodeError::TrailingBytes));
        let bytes = Envelope::Line { from: from(), text: "abc".into() }.encode();
        assert_eq!(Envelope::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated));
    }
}
