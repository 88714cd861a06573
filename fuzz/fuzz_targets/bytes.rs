//! Byte chunks through one shard: framing, telnet and sanitising under arbitrary limits.
//!
//! A few clients of one standalone shard send arbitrary chunks, stall, read a little,
//! end their streams, and time passes. The simulated world checks after every step
//! that no queue exceeds `max_queue` and that the shard holds exactly the open
//! connections; at the end every client must have read clean text.
#![no_main]

#[path = "../../core/tests/sim/mod.rs"]
#[allow(clippy::all, unreachable_pub)]
mod sim;

mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sim::{Step, World};

#[derive(Arbitrary, Debug)]
struct Input {
    limits: common::Limits,
    clients: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Send { client: u8, bytes: Vec<u8> },
    Connect,
    Eof { client: u8 },
    Close { client: u8 },
    Stall { client: u8 },
    Resume { client: u8 },
    Read { client: u8, max: u16 },
    Advance { millis: u16 },
}

fn step(op: Op, clients: usize) -> Step {
    let c = |client: u8| usize::from(client) % clients.max(1);
    match op {
        Op::Send { client, bytes } => Step::Send { client: c(client), chunks: vec![bytes] },
        Op::Connect => Step::Connect { shard: 0 },
        Op::Eof { client } => Step::Eof { client: c(client) },
        Op::Close { client } => Step::Close { client: c(client) },
        Op::Stall { client } => Step::Stall { client: c(client) },
        Op::Resume { client } => Step::Resume { client: c(client) },
        Op::Read { client, max } => Step::Read { client: c(client), max: usize::from(max) },
        Op::Advance { millis } => Step::Advance { millis: u64::from(millis) },
    }
}

fuzz_target!(|input: Input| {
    let mut world = World::standalone(input.limits.any());
    for _ in 0..=input.clients % 4 {
        world.apply(&Step::Connect { shard: 0 });
    }
    for op in input.ops.into_iter().take(256) {
        let clients = world.clients.len();
        world.apply(&step(op, clients));
    }
    world.settle();
    for (i, client) in world.clients.iter().enumerate() {
        common::check_clean(i, client);
    }
});
