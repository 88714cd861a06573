//! Identifiers: shard incarnations, the frontend's connection handles, and the
//! server-wide client numbers people see as `Client #7`.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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

/// Hashes connection handles (or their [`ConnId::as_u64`] numbers) for the
/// maps a frontend keeps beside the shard, which it looks up for every
/// recipient of every line: the shard hands the handles out, so no peer can
/// choose colliding ones, and one multiplication replaces SipHash.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnIdHasher(u64);

/// Builds [`ConnIdHasher`]s: `HashMap<ConnId, T, BuildConnIdHasher>`.
pub type BuildConnIdHasher = BuildHasherDefault<ConnIdHasher>;

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        // A product's low bits depend only on its factors' low bits, and a
        // map picks its bucket from the low bits: the well-mixed high bits go
        // there (the rotation rustc-hash uses for the same reason).
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn handles_spread_over_buckets_and_tags() {
        let build = BuildConnIdHasher::default();
        // Few slots, each used many times: slot and generation both vary.
        let ids = (0..64u32).flat_map(|slot| (0..64u32).map(move |generation| ConnId::new(slot, generation)));
        let hashes: Vec<u64> = ids.map(|id| build.hash_one(id)).collect();
        let distinct: BTreeSet<u64> = hashes.iter().copied().collect();
        assert_eq!(distinct.len(), hashes.len(), "two handles hash alike");
        // hashbrown picks the bucket from the low bits and a tag from the top 7.
        let buckets: BTreeSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let tags: BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        // 4,096 random hashes would fill about 63% of 4,096 buckets.
        assert!(buckets.len() > 4096 / 2, "buckets used: {} of 4096", buckets.len());
        assert!(tags.len() > 120, "tags used: {} of 128", tags.len());
    }

    #[test]
    fn a_handle_and_its_number_hash_alike() {
        let build = BuildConnIdHasher::default();
        let id = ConnId::new(7, 3);
        assert_eq!(build.hash_one(id), build.hash_one(id.as_u64()));
    }
}
