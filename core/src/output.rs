//! Outputs: what the shard asks its frontend to do, and each connection's queue.

use crate::id::ConnId;

/// Something the frontend must do; drain with [`crate::Shard::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Bytes are queued for this connection: write [`crate::Shard::transmit`],
    /// then report how many went out with [`crate::Shard::handle_written`].
    Transmit(ConnId),
    /// Close this connection once what [`crate::Shard::transmit`] still holds
    /// is written (or a short flush timeout passes), then call
    /// [`crate::Shard::handle_close`].
    Close {
        /// The connection to close.
        conn: ConnId,
        /// Why, for the frontend's log.
        reason: CloseReason,
    },
    /// Publish this envelope on the bus; every shard, this one included, must
    /// get it back through [`crate::Shard::handle_envelope`] in one total order
    /// that keeps each shard's publishing order.
    Publish(Vec<u8>),
}

/// Why the shard closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer sent `/quit`, `IAC IP`, or a clean end of stream.
    Quit,
    /// Its queued output passed the limit: it reads too slowly.
    SlowConsumer,
    /// It arrived when the server was full.
    ServerFull,
    /// The server is shutting down.
    Shutdown,
    /// The bus declared this shard gone.
    ShardGone,
}

/// Bytes waiting to be written to one connection, in order.
///
/// Appends go to the back and writes consume the front, so many lines go out
/// in one write; the buffer shrinks back once drained after a burst.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    bytes: Vec<u8>,
    head: usize,
}

/// Drained buffers above this capacity are freed at once, so a burst costs
/// memory only while it lasts; smaller ones are kept for the next lines and
/// freed by [`OutQueue::shrink`] when the frontend reports a quiet moment.
const KEEP_CAPACITY: usize = 4096;

impl OutQueue {
    pub(crate) fn len(&self) -> usize {
        self.bytes.len() - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn pending(&self) -> &[u8] {
        &self.bytes[self.head..]
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        if self.head > 0 && self.bytes.len() + data.len() > self.bytes.capacity() {
            self.bytes.drain(..self.head);
            self.head = 0;
        }
        self.bytes.extend_from_slice(data);
    }

    /// Consumes `written` bytes from the front; returns how many it really took.
    pub(crate) fn consume(&mut self, written: usize) -> usize {
        let taken = written.min(self.len());
        self.head += taken;
        if self.head == self.bytes.len() {
            self.clear();
        }
        taken
    }

    /// Frees the buffer if nothing is queued.
    pub(crate) fn shrink(&mut self) {
        if self.is_empty() {
            self.bytes = Vec::new();
            self.head = 0;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumes_partial_writes_in_order() {
        let mut queue = OutQueue::default();
        queue.push(b"hello ");
        queue.push(b"world\n");
        assert_eq!(queue.pending(), b"hello world\n");
        assert_eq!(queue.consume(3), 3);
        assert_eq!(queue.pending(), b"lo world\n");
        queue.push(b"more\n");
        assert_eq!(queue.pending(), b"lo world\nmore\n");
        assert_eq!(queue.consume(100), 14);
        assert!(queue.is_empty());
    }

    #[test]
    fn shrinks_after_a_burst() {
        let mut queue = OutQueue::default();
        queue.push(&vec![b'x'; 1 << 20]);
        queue.consume(1 << 20);
        assert_eq!(queue.bytes.capacity(), 0);
    }
}
