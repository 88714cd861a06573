//! The replica: the bus orderer's copy of the roster, for shards that start late.

use crate::config::Config;
use crate::envelope::Envelope;
use crate::roster::Roster;
use crate::wire::DecodeError;

/// A roster that applies every envelope and owns no connection.
///
/// The party that orders the bus (the mio master) keeps one, applies each
/// envelope as it forwards it, and hands a new shard a [`Replica::snapshot`]
/// taken at the bus position from which that shard will receive.
#[derive(Clone, Debug)]
pub struct Replica {
    max_conns: usize,
    roster: Roster,
}

impl Replica {
    /// Creates an empty replica for a server with this configuration.
    pub fn new(config: &Config) -> Replica {
        Replica { max_conns: config.max_conns, roster: Roster::new(None) }
    }

    /// Applies one envelope in bus order.
    pub fn apply(&mut self, envelope: &[u8]) -> Result<(), DecodeError> {
        let envelope = Envelope::decode(envelope)?;
        self.roster.apply(&envelope, self.max_conns);
        Ok(())
    }

    /// Encodes the roster as of the last envelope applied.
    pub fn snapshot(&self) -> Vec<u8> {
        self.roster.snapshot()
    }

    /// Returns how many connections the server has admitted and not yet closed.
    pub fn connection_count(&self) -> usize {
        self.roster.len()
    }
}
