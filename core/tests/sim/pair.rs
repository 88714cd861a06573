//! The shard property's pair: the system under test (N shards over the simulated bus)
//! and its reference (one shard fed the same events in the system's bus order).
//!
//! Whenever the system's bus delivers the j-th envelope of client c, the reference's
//! bus delivers the j-th envelope of the reference's client c (the two must be equal
//! but for the connection they name). When the system delivers a dead shard's "shard
//! gone", the reference closes that shard's clients there and then, in client-id order;
//! a dead shard's clients are compared up to their death. Shared by `shards.rs` and the
//! fuzz targets.

use chat_core::Config;

use super::{header, show, without_ticks, Delivery, State, Step, World};

/// The system under test and its reference.
pub struct Pair {
    /// N shards over the simulated bus.
    pub system: World,
    /// One shard fed the same events in the system's bus order.
    pub reference: World,
}

impl Pair {
    /// A system of `shards` shards and its one-shard reference.
    pub fn new(config: &Config, shards: usize) -> Pair {
        Pair { system: World::cluster(config.clone(), shards), reference: World::cluster(config.clone(), 1) }
    }

    /// Applies a step to the system and, as it corresponds, to the reference.
    pub fn apply(&mut self, step: &Step) {
        match *step {
            Step::Handoff { .. } | Step::StartShard => self.system.apply(step),
            Step::Connect { .. } => {
                self.system.apply(step);
                self.reference.apply(&Step::Connect { shard: 0 });
            }
            Step::DeliverBus { n } => {
                for _ in 0..n {
                    if self.system.queue.is_empty() {
                        break;
                    }
                    self.system.apply(&Step::DeliverBus { n: 1 });
                    let delivered = self.system.log.last().cloned();
                    if let Some(delivery) = delivered {
                        self.mirror(&delivery);
                    }
                }
            }
            Step::KillShard { .. } => {
                self.system.apply(step);
                for (c, client) in self.system.clients.iter().enumerate() {
                    if client.state == State::Dead {
                        self.reference.freeze(c);
                    }
                }
            }
            _ => {
                self.system.apply(step);
                self.reference.apply(step);
            }
        }
    }

    /// Makes the reference's bus deliver what the system's just delivered.
    fn mirror(&mut self, delivery: &Delivery) {
        match delivery {
            Delivery::From { client, envelope } => {
                let Some(twin) = self.reference.deliver_from(*client) else {
                    panic!("the system delivered {envelope:?} of client {client}, the reference has none")
                };
                let (a, b) = (header(envelope), header(&twin));
                assert!(
                    a.kind == b.kind && envelope[a.len..] == twin[b.len..],
                    "client {client}'s envelopes differ: {envelope:?} in the system, {twin:?} in the reference"
                );
            }
            Delivery::Gone { node } => {
                let mut dead: Vec<usize> = (0..self.system.clients.len())
                    .filter(|&c| self.system.clients[c].node == *node)
                    .collect();
                // Ids are handed out in the bus order of connects, and a connect is a
                // client's first envelope: ordering by it is ordering by client id, even for
                // clients that closed before learning their id.
                let connected = |c: usize| {
                    let first = |d: &Delivery| matches!(d, Delivery::From { client, .. } if *client == c);
                    self.system.log.iter().position(first).unwrap_or(usize::MAX)
                };
                dead.sort_by_key(|&c| connected(c));
                for c in dead {
                    // What the system dropped with the dead shard never reaches the bus;
                    // a close already in flight is the one the reference applies now.
                    self.reference.discard_pending(c, true);
                    self.reference.close_now(c);
                    self.reference.deliver_from(c);
                }
            }
        }
    }

    /// Settles the system, mirroring every step in the reference.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let round = self.system.settle_round();
            if round.is_empty() {
                return;
            }
            for step in &round {
                self.apply(step);
            }
        }
        panic!("the system never settled");
    }

    /// Every client's transcript, `Server Time` lines aside, and every close, agree.
    pub fn check(&self) -> Result<(), String> {
        if self.system.clients.len() != self.reference.clients.len() {
            return Err(format!(
                "{} clients in the system, {} in the reference",
                self.system.clients.len(),
                self.reference.clients.len()
            ));
        }
        for (c, (s, r)) in self.system.clients.iter().zip(&self.reference.clients).enumerate() {
            let (got, want) = (without_ticks(&s.transcript), without_ticks(&r.transcript));
            if got != want {
                return Err(format!(
                    "client {} (shard #{}, {:?}) read differently:\n  system:    {}\n  reference: {}",
                    c,
                    s.node,
                    s.state,
                    show(&got),
                    show(&want)
                ));
            }
            if s.state != State::Dead && (s.state, s.reason) != (r.state, r.reason) {
                return Err(format!(
                    "client {c} ended as {:?} in the system, {:?} in the reference",
                    (s.state, s.reason),
                    (r.state, r.reason)
                ));
            }
        }
        Ok(())
    }
}
