//! Measures the core alone: a line broadcast to a room of 1, 100 and 10,000
//! connections, with every socket write instantly complete.
//!
//! Prints lines per second, deliveries per second, bytes copied into queues per
//! delivered line, and heap allocations per delivered line (a counting allocator).
//! Run with `cargo bench -p chat-core --bench broadcast`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::{Config, ConnId, Output, Shard};

/// Counts allocations so the bench can report them per delivered line.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `realloc`'s contract, passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Feeds every output back as an instant write; returns bytes handed out.
fn drain(shard: &mut Shard, now: Instant) -> u64 {
    let mut bytes = 0;
    while let Some(output) = shard.poll_output() {
        if let Output::Transmit(conn) = output {
            let n = shard.transmit(conn).len();
            shard.handle_written(conn, n, now);
            bytes += n as u64;
        }
    }
    bytes
}

struct Figures {
    lines_per_sec: f64,
    deliveries_per_sec: f64,
    ns_per_delivery: f64,
    bytes_per_delivery: f64,
    allocs_per_delivery: f64,
}

fn run(room: usize, budget: Duration) -> Figures {
    #[allow(clippy::disallowed_methods)] // a bench measures real time; the core still gets it as an argument
    let now = Instant::now();
    let config = Config { tick: 0, max_conns: room + 1, ..Config::default() };
    let mut shard = Shard::standalone(config, now);
    let conns: Vec<ConnId> = (0..room).map(|_| shard.handle_connect(now)).collect();
    drain(&mut shard, now);
    let sender = conns[0];
    let line = b"the quick brown fox jumps over the lazy dog\r\n";
    // Warm up: queues reach their working capacity.
    for _ in 0..10 {
        shard.handle_bytes(sender, line, now);
        drain(&mut shard, now);
    }
    let (mut lines, mut bytes) = (0u64, 0u64);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    while started.elapsed() < budget {
        for _ in 0..10 {
            shard.handle_bytes(sender, line, now);
            bytes += drain(&mut shard, now);
            lines += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    let deliveries = lines * room as u64;
    Figures {
        lines_per_sec: lines as f64 / elapsed,
        deliveries_per_sec: deliveries as f64 / elapsed,
        ns_per_delivery: elapsed * 1e9 / deliveries as f64,
        bytes_per_delivery: bytes as f64 / deliveries as f64,
        allocs_per_delivery: allocations as f64 / deliveries as f64,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let budget = if quick { Duration::from_millis(100) } else { Duration::from_secs(2) };
    println!("chat-core broadcast (one sender, every write instantly complete; a delivery is one line queued to one connection)");
    println!(
        "{:>8} {:>12} {:>14} {:>10} {:>12} {:>12}",
        "room", "lines/s", "deliveries/s", "ns/deliv", "bytes/deliv", "allocs/deliv"
    );
    for room in [1, 100, 10_000] {
        let f = run(room, budget);
        println!(
            "{room:>8} {:>12.0} {:>14.0} {:>10.1} {:>12.1} {:>12.4}",
            f.lines_per_sec,
            f.deliveries_per_sec,
            f.ns_per_delivery,
            f.bytes_per_delivery,
            f.allocs_per_delivery
        );
    }
}
