//! The chat protocol of `PROTOCOL.md` as a sans-IO state machine.
//!
//! A [`Shard`] owns the connections one frontend accepted. It does no I/O and
//! reads no clock: the frontend feeds it events and time, and drains what it
//! wants done. The whole run loop of a frontend is:
//!
//! ```
//! use std::time::Instant;
//! use chat_core::{Config, Output, Shard};
//!
//! let now = Instant::now();
//! let mut shard = Shard::standalone(Config::default(), now);
//! let alice = shard.handle_connect(now);
//! let bob = shard.handle_connect(now);
//! shard.handle_bytes(alice, b"hi\r\n", now);
//! // Every mutation is followed by a complete drain of poll_output.
//! while let Some(output) = shard.poll_output() {
//!     match output {
//!         Output::Transmit(conn) => {
//!             let bytes = shard.transmit(conn).to_vec(); // a socket write, really
//!             shard.handle_written(conn, bytes.len(), now);
//!         }
//!         Output::Close { conn, .. } => shard.handle_close(conn, now),
//!         Output::Publish(_envelope) => unreachable!("a standalone shard has no bus"),
//!         _ => {}
//!     }
//! }
//! // Then sleep until socket readiness or shard.poll_timeout().
//! # let _ = bob;
//! ```
//!
//! # Shards and the bus
//!
//! Several shards (worker processes, executor threads) become one chat server
//! by exchanging envelopes over a bus that delivers every envelope to every
//! shard, the publisher included, in one total order that keeps each shard's
//! own publishing order. Everything others can see takes effect when its
//! envelope comes back ("apply on echo"), so every shard's roster agrees at
//! every bus position, ids are assigned without collisions, and contested nick
//! claims are won by the first claim in bus order. Each connection's replies
//! still come out in the order of its input: a purely local reply waits behind
//! that connection's envelopes in flight. The party that orders the bus keeps a
//! [`Replica`] to start late shards from a snapshot, and publishes
//! [`shard_gone_envelope`] when a shard dies.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
mod command;
mod config;
mod envelope;
mod framing;
mod id;
mod output;
mod replica;
mod roster;
mod sanitize;
mod shard;
mod telnet;
mod time;
mod wire;

pub use config::{parse_size, Config, ParseSizeError};
pub use envelope::shard_gone_envelope;
pub use id::{BuildConnIdHasher, ClientId, ConnId, ConnIdHasher, ConnRef, ShardId};
pub use output::{CloseReason, Output};
pub use replica::Replica;
pub use sanitize::sanitize;
pub use shard::{ConnInfo, Shard, ShardStats};
pub use time::{ParseOffsetError, UnixTime, UtcOffset};
pub use wire::DecodeError;
