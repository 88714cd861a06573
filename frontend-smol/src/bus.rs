//! The in-process bus: one total order of envelopes that every shard reads.
//!
//! The bus is a shared append-only log rather than a sequencer task with a
//! channel per shard. Publishing appends under a short lock and never waits,
//! so a shard can never block on the bus while the bus waits on that shard's
//! inbox (the classic deadlock of channel-based sequencers). Each shard keeps
//! a cursor into the log and reads everything past it on every turn of its
//! loop; entries that every shard has read are trimmed.
//!
//! The order is the order of appends. A shard appends its envelopes in the
//! order the core emits them, so the log keeps each shard's own publishing
//! order, and every shard (the publisher included) reads the same sequence.
//!
//! A stop is a point of that order too, as it is for one shard: the first
//! shard to stop ends the log, every shard applies what came before, and an
//! envelope published after it is dropped for everyone, its publisher
//! included (so no sender is told `You: …` of a line the others never see).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::{Event, EventListener};

/// Bytes of envelopes held for the slowest shard past which shards stop
/// reading client input until it catches up, so the log stays bounded.
const HIGH_WATER_BYTES: usize = 16 << 20;

/// Envelopes one [`BusPort::read`] hands out at most, so a shard that fell
/// behind still interleaves applying them with writing to its sockets.
const READ_BATCH: usize = 4096;

/// The log every shard of one server shares.
#[derive(Debug)]
struct Bus {
    log: Mutex<Log>,
    /// Rung on every append and whenever trimming ends a congestion, so shards
    /// asleep on [`BusPort::listen`] read on.
    bell: Event,
}

#[derive(Debug)]
struct Log {
    /// The sequence number of `entries[0]`.
    base: u64,
    entries: VecDeque<Arc<[u8]>>,
    /// Total length of `entries`, for the high-water mark.
    bytes: usize,
    /// The next sequence number each shard reads; `None` once its port is dropped.
    cursors: Vec<Option<u64>>,
    /// The server stopped: the log takes no more envelopes.
    ended: bool,
}

impl Log {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn congested(&self) -> bool {
        self.bytes >= HIGH_WATER_BYTES
    }

    /// Drops the entries every remaining shard has read.
    fn trim(&mut self) {
        let oldest = self.cursors.iter().flatten().copied().min().unwrap_or_else(|| self.end());
        while self.base < oldest {
            let Some(entry) = self.entries.pop_front() else { break };
            self.bytes -= entry.len();
            self.base += 1;
        }
    }
}

/// One shard's end of the bus: it publishes into the shared order and reads
/// all of it back. Dropping the port takes the shard out of the trimming.
#[derive(Debug)]
pub struct BusPort {
    bus: Arc<Bus>,
    index: usize,
}

/// Creates a bus for `shards` shards and returns one port per shard.
pub fn new(shards: usize) -> Vec<BusPort> {
    let bus = Arc::new(Bus {
        log: Mutex::new(Log {
            base: 0,
            entries: VecDeque::new(),
            bytes: 0,
            cursors: vec![Some(0); shards],
            ended: false,
        }),
        bell: Event::new(),
    });
    (0..shards).map(|index| BusPort { bus: Arc::clone(&bus), index }).collect()
}

impl BusPort {
    /// Appends an envelope to the one order; never waits. After
    /// [`BusPort::end`] the envelope is dropped.
    pub fn publish(&self, envelope: Vec<u8>) {
        {
            let mut log = self.lock();
            if log.ended {
                return;
            }
            log.bytes += envelope.len();
            log.entries.push_back(envelope.into());
        }
        self.bus.bell.notify(usize::MAX);
    }

    /// Moves up to a batch of the envelopes this shard has not read yet into
    /// `out`, oldest first; returns whether more are waiting.
    pub fn read(&self, out: &mut Vec<Arc<[u8]>>) -> bool {
        let ended_congestion = {
            let mut log = self.lock();
            let Some(cursor) = log.cursors[self.index] else { return false };
            let start = usize::try_from(cursor - log.base).unwrap_or(usize::MAX);
            let take = log.entries.len().saturating_sub(start).min(READ_BATCH);
            out.extend(log.entries.range(start..start + take).cloned());
            let cursor = cursor + take as u64;
            log.cursors[self.index] = Some(cursor);
            let was_congested = log.congested();
            log.trim();
            if cursor < log.end() {
                return true;
            }
            was_congested && !log.congested()
        };
        if ended_congestion {
            self.bus.bell.notify(usize::MAX);
        }
        false
    }

    /// Ends the order here, for every shard, if no shard has yet: what is on
    /// the log stays to be read; nothing more is appended.
    pub fn end(&self) {
        self.lock().ended = true;
    }

    /// Tells whether the log holds so much that shards should stop taking
    /// client input until the slowest shard catches up.
    pub fn congested(&self) -> bool {
        self.lock().congested()
    }

    /// Returns a listener that fires on the next append (or end of
    /// congestion); take it before [`BusPort::read`] so no wake-up is lost.
    pub fn listen(&self) -> EventListener {
        self.bus.bell.listen()
    }

    /// Locks the log; a panic elsewhere while holding it cannot leave it
    /// half-updated (every update is a few infallible steps), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.bus.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for BusPort {
    fn drop(&mut self) {
        let ended_congestion = {
            let mut log = self.lock();
            log.cursors[self.index] = None;
            let was_congested = log.congested();
            log.trim();
            was_congested && !log.congested()
        };
        if ended_congestion {
            self.bus.bell.notify(usize::MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(port: &BusPort) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while port.read(&mut out) {}
        out.iter().map(|e| e.to_vec()).collect()
    }

    #[test]
    fn every_port_reads_one_order_including_its_own() {
        let ports = new(3);
        ports[0].publish(b"a1".to_vec());
        ports[1].publish(b"b1".to_vec());
        ports[0].publish(b"a2".to_vec());
        let expected: Vec<Vec<u8>> = vec![b"a1".to_vec(), b"b1".to_vec(), b"a2".to_vec()];
        for port in &ports {
            assert_eq!(read_all(port), expected);
            assert!(read_all(port).is_empty());
        }
    }

    #[test]
    fn trims_what_every_port_has_read() {
        let ports = new(2);
        ports[0].publish(vec![0; 10]);
        ports[0].publish(vec![1; 10]);
        read_all(&ports[0]);
        assert_eq!(ports[0].lock().entries.len(), 2);
        read_all(&ports[1]);
        assert_eq!(ports[0].lock().entries.len(), 0);
        assert_eq!(ports[0].lock().bytes, 0);
        ports[1].publish(vec![2; 10]);
        assert_eq!(read_all(&ports[0]), vec![vec![2; 10]]);
    }

    #[test]
    fn a_dropped_port_no_longer_holds_entries() {
        let mut ports = new(2);
        ports[0].publish(vec![0; 10]);
        read_all(&ports[0]);
        let gone = ports.pop();
        drop(gone);
        assert_eq!(ports[0].lock().entries.len(), 0);
    }

    #[test]
    fn reads_in_batches_and_reports_congestion() {
        let ports = new(2);
        let big = HIGH_WATER_BYTES / (READ_BATCH * 2) + 1;
        for i in 0..READ_BATCH * 2 {
            ports[0].publish(vec![(i % 251) as u8; big]);
        }
        assert!(ports[1].congested());
        let mut out = Vec::new();
        assert!(ports[1].read(&mut out));
        assert_eq!(out.len(), READ_BATCH);
        assert!(!ports[1].read(&mut out));
        assert_eq!(out.len(), READ_BATCH * 2);
        // Port 0 has read nothing yet, so nothing could be trimmed.
        assert!(ports[0].congested());
        read_all(&ports[0]);
        assert!(!ports[0].congested());
    }

    #[test]
    fn ending_keeps_what_came_before_and_drops_what_comes_after_for_everyone() {
        let ports = new(2);
        ports[0].publish(b"before".to_vec());
        ports[1].end();
        ports[0].publish(b"after".to_vec());
        ports[1].publish(b"after too".to_vec());
        for port in &ports {
            assert_eq!(read_all(port), vec![b"before".to_vec()]);
        }
    }

    #[test]
    fn publishing_rings_the_bell() {
        let ports = new(2);
        let listener = ports[1].listen();
        ports[0].publish(b"x".to_vec());
        smol::block_on(listener);
    }
}
