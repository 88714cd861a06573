//! Identifiers: shard incarnations, the frontend's connection handles, and the
//! server-wide client numbers people see as `Client #7`.

use std::fmt;

/// One incarnation of a shard (a worker process, an executor task).
///
/// The party that orders the bus hands these out and never reuses one, so an
/// envelope from a dead worker can never be mistaken for one from its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u64);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.0)
    }
}

/// A shard-local handle for one connection, issued by [`crate::Shard::handle_connect`].
///
/// Never reused within a shard, so a stale handle (a connection already closed)
/// is recognised and ignored rather than confused with a newer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(u64);

impl ConnId {
    pub(crate) fn new(slot: u32, generation: u32) -> ConnId {
        ConnId(u64::from(generation) << 32 | u64::from(slot))
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Returns the handle as a number, for event-loop tokens and logs.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Rebuilds a handle from [`ConnId::as_u64`]; a number that names no live
    /// connection is simply ignored by the shard.
    pub fn from_u64(raw: u64) -> ConnId {
        ConnId(raw)
    }
}

/// The server-wide number of an admitted connection, shown as `Client #7`.
///
/// Assigned in bus order from a counter every shard replicates, so the numbers
/// count up as in the demo, never collide across shards and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A connection named server-wide: the shard that owns it and its handle there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnRef {
    /// The owning shard.
    pub shard: ShardId,
    /// The handle on that shard.
    pub conn: ConnId,
}
