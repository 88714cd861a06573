//! Measures what the core holds per connection at rest: a connection of the
//! shard's own, a member of another shard (every shard keeps the whole roster),
//! and a member in the bus orderer's replica; and how long a shard's trim
//! takes, since it rebuilds the roster.
//!
//! A chat-mio server with W workers holds each connection once as its own and
//! W copies of its roster entry (W - 1 workers and the master's replica; with
//! one worker, the worker's own and the replica), so the roster entry is what
//! a second worker adds per connection.
//!
//! Bytes are counted by a wrapping allocator, as malloc chunks (glibc: the
//! request plus 8 bytes of header, rounded up to 16, at least 32), which is
//! what they cost in resident memory once touched.
//! Run with `cargo bench -p chat-core --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use chat_core::{Config, Output, Replica, Shard, ShardId};

/// Keeps the live total of heap bytes, as malloc chunks.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

fn chunk(size: usize) -> i64 {
    (((size + 8 + 15) & !15).max(32)) as i64
}

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(chunk(new_size) - chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// Writes everything queued at once; returns the envelopes published.
fn drain(shard: &mut Shard, now: Instant) -> Vec<Vec<u8>> {
    let mut published = Vec::new();
    while let Some(output) = shard.poll_output() {
        match output {
            Output::Transmit(conn) => {
                let n = shard.transmit(conn).len();
                shard.handle_written(conn, n, now);
            }
            Output::Publish(envelope) => published.push(envelope),
            _ => {}
        }
    }
    published
}

/// Applies the envelopes to the shard in order, writing what they queue.
fn apply_all(shard: &mut Shard, envelopes: &[Vec<u8>], now: Instant) {
    for envelope in envelopes {
        if let Err(e) = shard.handle_envelope(envelope, now) {
            panic!("the bench's own envelope did not decode: {e:?}");
        }
        drain(shard, now);
    }
}

struct Figures {
    own: f64,
    member: f64,
    replica: f64,
    /// How long a trim takes, the roster's rebuild included.
    trim_ms: f64,
}

fn run(conns: usize) -> Figures {
    #[allow(clippy::disallowed_methods)] // a bench has no frontend to hand it the time
    let now = Instant::now();
    let config = Config { tick: 0, max_conns: conns + 1, ..Config::default() };

    // Shard 0's connects, in bus order, as every shard and the replica get them.
    let mut first = Shard::new(config.clone(), ShardId(0), now);
    let mut connects = Vec::with_capacity(conns);
    for _ in 0..conns {
        first.handle_connect(now);
        connects.extend(drain(&mut first, now));
    }

    let before = live();
    let mut own = Shard::standalone(config.clone(), now);
    for _ in 0..conns {
        own.handle_connect(now);
        drain(&mut own, now);
    }
    own.shrink_buffers();
    let own_bytes = live() - before;

    let before = live();
    let mut other = Shard::new(config.clone(), ShardId(1), now);
    apply_all(&mut other, &connects, now);
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    other.shrink_buffers();
    let trim_ms = started.elapsed().as_secs_f64() * 1e3;
    let member_bytes = live() - before;

    let before = live();
    let mut replica = Replica::new(&config);
    for envelope in &connects {
        if let Err(e) = replica.apply(envelope) {
            panic!("the bench's own envelope did not decode: {e:?}");
        }
    }
    let replica_bytes = live() - before;

    assert_eq!(replica.connection_count(), conns, "every connect was replicated");
    drop((own, other, replica, first));
    let per = |bytes: i64| bytes as f64 / conns as f64;
    Figures { own: per(own_bytes), member: per(member_bytes), replica: per(replica_bytes), trim_ms }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    println!("chat-core memory at rest, heap bytes per connection (malloc chunks)");
    println!(
        "{:>8} {:>14} {:>16} {:>16} {:>10}",
        "conns", "own (1 shard)", "other shard's", "in the replica", "trim ms"
    );
    let sizes: &[usize] = if quick { &[100] } else { &[1_000, 10_000] };
    for &conns in sizes {
        let f = run(conns);
        println!("{conns:>8} {:>14.0} {:>16.0} {:>16.0} {:>10.2}", f.own, f.member, f.replica, f.trim_ms);
    }
}
