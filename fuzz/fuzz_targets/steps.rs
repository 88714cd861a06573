//! Whole step sequences over several shards, the property tests' [`Step`]s drawn by the
//! fuzzer: connects, arbitrary bytes, closes, stalls, time, bus handoffs and
//! deliveries, shards that start late and shards that die.
//!
//! The system (1 to 3 shards over the simulated bus) runs beside its reference (one
//! shard fed the same events in the system's bus order), as in the shard property: at
//! the end every client's transcript matches, `Server Time` lines aside. The world
//! checks its invariants after every step (no queue above `max_queue`, each shard holds
//! exactly its clients' connections and agrees with the replica), and every client
//! must have read clean text.
#![no_main]

#[path = "../../core/tests/sim/mod.rs"]
#[allow(clippy::all, unreachable_pub)]
mod sim;

mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sim::pair::Pair;
use sim::Step;

#[derive(Arbitrary, Debug)]
struct Input {
    limits: common::Limits,
    shards: u8,
    steps: Vec<FuzzStep>,
}

/// [`Step`] with small numbers, so that most steps name something.
#[derive(Arbitrary, Debug)]
enum FuzzStep {
    Connect { shard: u8 },
    Send { client: u8, chunks: Vec<Vec<u8>> },
    Eof { client: u8 },
    Close { client: u8 },
    Advance { millis: u16 },
    Stall { client: u8 },
    Resume { client: u8 },
    Read { client: u8, max: u16 },
    Handoff { shard: u8, n: u8 },
    DeliverBus { n: u8 },
    StartShard,
    KillShard { shard: u8 },
}

impl FuzzStep {
    fn step(self, clients: usize) -> Step {
        // A number past the clients names nothing and makes the step a no-op; keep most
        // steps meaningful.
        let c = |client: u8| usize::from(client) % (clients + 1);
        match self {
            FuzzStep::Connect { shard } => Step::Connect { shard: usize::from(shard) },
            FuzzStep::Send { client, chunks } => {
                Step::Send { client: c(client), chunks: chunks.into_iter().take(8).collect() }
            }
            FuzzStep::Eof { client } => Step::Eof { client: c(client) },
            FuzzStep::Close { client } => Step::Close { client: c(client) },
            FuzzStep::Advance { millis } => Step::Advance { millis: u64::from(millis) },
            FuzzStep::Stall { client } => Step::Stall { client: c(client) },
            FuzzStep::Resume { client } => Step::Resume { client: c(client) },
            FuzzStep::Read { client, max } => Step::Read { client: c(client), max: usize::from(max) },
            FuzzStep::Handoff { shard, n } => Step::Handoff { shard: usize::from(shard), n: usize::from(n) },
            FuzzStep::DeliverBus { n } => Step::DeliverBus { n: usize::from(n) },
            FuzzStep::StartShard => Step::StartShard,
            FuzzStep::KillShard { shard } => Step::KillShard { shard: usize::from(shard) },
        }
    }
}

fuzz_target!(|input: Input| {
    let shards = 1 + usize::from(input.shards % 3);
    let mut pair = Pair::new(&input.limits.comparable(), shards);
    for step in input.steps.into_iter().take(128) {
        let clients = pair.system.clients.len();
        if clients >= common::MAX_CLIENTS && matches!(step, FuzzStep::Connect { .. }) {
            continue;
        }
        pair.apply(&step.step(clients));
    }
    pair.settle();
    if let Err(failure) = pair.check() {
        panic!("{failure}");
    }
    for (i, client) in pair.system.clients.iter().enumerate() {
        common::check_clean(i, client);
    }
});
