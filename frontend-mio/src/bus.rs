//! The bus between the master and one worker: length-prefixed frames over a
//! nonblocking Unix socket pair.
//!
//! A frame is a 4-byte big-endian length, then a type byte, then the payload;
//! the length counts the type byte and the payload. The type byte lets core
//! envelopes and the master's control traffic share one ordered channel.

use std::io::{self, Read, Write};

use mio::net::UnixStream;

/// Frames longer than this are a broken peer, not data: the connection is dropped.
const MAX_FRAME: usize = 256 << 20;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 << 10;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Worker → master: a core envelope to relay to every shard.
    Publish = 1,
    /// Worker → master: the worker has its shard and listener and accepts.
    Ready = 2,
    /// Worker → master: answer to a status request (a `report::WorkerStatus`).
    StatusReply = 3,
    /// Worker → master: answer to a connections request (`report::ConnRow`s).
    ConnectionsReply = 4,
    /// Worker → master, answering `Solo`: the envelopes published after this
    /// frame are applied already; relay them to the others, not back.
    SoloBegins = 5,
    /// Worker → master, answering `Shared`: relay the envelopes published
    /// after this frame back to the worker again.
    SoloEnds = 6,
    /// Master → worker: a core envelope, in the bus's total order.
    Envelope = 16,
    /// Master → worker: report status; payload is the request id.
    StatusRequest = 17,
    /// Master → worker: list connections; payload is the request id.
    ConnectionsRequest = 18,
    /// Master → worker: stop now, flushing queued output for a short while.
    Stop = 19,
    /// Master → worker: stop accepting and exit once every client has left.
    GracefulStop = 20,
    /// Master → worker: no other worker publishes until `Shared`; apply your
    /// own envelopes as you publish them, and say from where (`SoloBegins`).
    Solo = 21,
    /// Master → worker: another worker is coming; say from where your
    /// envelopes must come back again (`SoloEnds`).
    Shared = 22,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Publish,
            2 => Kind::Ready,
            3 => Kind::StatusReply,
            4 => Kind::ConnectionsReply,
            5 => Kind::SoloBegins,
            6 => Kind::SoloEnds,
            16 => Kind::Envelope,
            17 => Kind::StatusRequest,
            18 => Kind::ConnectionsRequest,
            19 => Kind::Stop,
            20 => Kind::GracefulStop,
            21 => Kind::Solo,
            22 => Kind::Shared,
            _ => return None,
        })
    }
}

/// One received frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the payload is.
    pub kind: Kind,
    /// The payload, without length or type byte.
    pub payload: Vec<u8>,
}

/// Appends one encoded frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) {
    let len = u32::try_from(payload.len() + 1).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// Removes every whole frame from the front of `buf` and appends it to `frames`.
///
/// A partial frame stays in `buf` for the next read. A frame with an impossible
/// length or an unknown type is an error: the peer is broken.
pub fn decode(buf: &mut Vec<u8>, frames: &mut Vec<Frame>) -> io::Result<()> {
    let mut pos = 0;
    while let Some(header) = buf.get(pos..pos + 4) {
        let mut len_bytes = [0u8; 4];
        len_bytes.copy_from_slice(header);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad bus frame length"));
        }
        let Some(body) = buf.get(pos + 4..pos + 4 + len) else {
            break;
        };
        let kind = Kind::from_byte(body[0])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unknown bus frame type"))?;
        frames.push(Frame { kind, payload: body[1..].to_vec() });
        pos += 4 + len;
    }
    buf.drain(..pos);
    Ok(())
}

/// One end of a bus socket pair, with its inbound and outbound buffers.
pub struct BusConn {
    stream: UnixStream,
    inbound: Vec<u8>,
    outbound: Vec<u8>,
    /// Bytes of `outbound` already written.
    written: usize,
    /// Where a read lands before its bytes join `inbound`: kept, so that a
    /// read does not clear 64 KiB of stack first.
    chunk: Box<[u8]>,
}

/// What a read of the bus found besides frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The socket has no more bytes for now.
    WouldBlock,
    /// The peer closed its end (or died); every whole frame has been returned.
    Closed,
    /// The byte limit was reached; more may be waiting on the socket.
    Limit,
}

impl BusConn {
    /// Wraps a nonblocking Unix stream.
    pub fn new(stream: UnixStream) -> BusConn {
        BusConn {
            stream,
            inbound: Vec::new(),
            outbound: Vec::new(),
            written: 0,
            chunk: vec![0; READ_CHUNK].into(),
        }
    }

    /// Returns the stream, to register with a `Poll`.
    pub fn stream_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }

    /// Queues a frame; call [`BusConn::flush`] to write it.
    pub fn queue(&mut self, kind: Kind, payload: &[u8]) {
        encode(&mut self.outbound, kind, payload);
    }

    /// Queues bytes that are already one or more encoded frames.
    pub fn queue_encoded(&mut self, frames: &[u8]) {
        self.outbound.extend_from_slice(frames);
    }

    /// Drops what waits to be written: the peer will never read it.
    pub fn discard_outbound(&mut self) {
        self.outbound = Vec::new();
        self.written = 0;
    }

    /// Returns how many bytes wait to be written.
    pub fn queued(&self) -> usize {
        self.outbound.len() - self.written
    }

    /// Writes queued bytes until done or the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.outbound.len() {
            match self.stream.write(&self.outbound[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.outbound.len() {
            self.outbound.clear();
            self.written = 0;
        } else if self.written > self.outbound.len() / 2 {
            // Compact now and then so a long-lived backlog does not grow forever.
            self.outbound.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }

    /// Reads what the socket holds and appends the whole frames to `frames`.
    pub fn read_frames(&mut self, frames: &mut Vec<Frame>) -> io::Result<ReadEnd> {
        self.read_frames_upto(frames, usize::MAX)
    }

    /// Reads like [`BusConn::read_frames`], but stops once `limit` bytes were
    /// read, so a reader that fell behind can act on a part before the rest.
    pub fn read_frames_upto(&mut self, frames: &mut Vec<Frame>, limit: usize) -> io::Result<ReadEnd> {
        let mut read = 0usize;
        loop {
            if read >= limit {
                return Ok(ReadEnd::Limit);
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => {
                    decode(&mut self.inbound, frames)?;
                    // A partial frame left behind by a dead peer is dropped.
                    self.inbound.clear();
                    return Ok(ReadEnd::Closed);
                }
                Ok(n) => {
                    read += n;
                    self.inbound.extend_from_slice(&self.chunk[..n]);
                    decode(&mut self.inbound, frames)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadEnd::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.inbound.clear();
                    return Ok(ReadEnd::Closed);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_frames_split_anywhere() {
        let mut wire = Vec::new();
        encode(&mut wire, Kind::Publish, b"hello");
        encode(&mut wire, Kind::Ready, b"");
        encode(&mut wire, Kind::Envelope, &[0xff; 300]);
        for split in 0..wire.len() {
            let mut buf = wire[..split].to_vec();
            let mut frames = Vec::new();
            decode(&mut buf, &mut frames).unwrap();
            buf.extend_from_slice(&wire[split..]);
            decode(&mut buf, &mut frames).unwrap();
            assert!(buf.is_empty());
            assert_eq!(frames.len(), 3);
            assert_eq!(frames[0].kind, Kind::Publish);
            assert_eq!(frames[0].payload, b"hello");
            assert_eq!(frames[1].kind, Kind::Ready);
            assert_eq!(frames[2].payload.len(), 300);
        }
    }

    #[test]
    fn refuses_broken_frames() {
        let mut frames = Vec::new();
        let mut zero = vec![0, 0, 0, 0];
        assert!(decode(&mut zero, &mut frames).is_err());
        let mut unknown = vec![0, 0, 0, 1, 99];
        assert!(decode(&mut unknown, &mut frames).is_err());
        let mut huge = vec![0xff, 0xff, 0xff, 0xff];
        assert!(decode(&mut huge, &mut frames).is_err());
    }

    #[test]
    fn carries_frames_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (BusConn::new(a), BusConn::new(b));
        a.queue(Kind::Publish, b"x");
        a.queue(Kind::Stop, b"");
        a.flush().unwrap();
        assert_eq!(a.queued(), 0);
        let mut frames = Vec::new();
        assert_eq!(b.read_frames(&mut frames).unwrap(), ReadEnd::WouldBlock);
        assert_eq!(frames.len(), 2);
        drop(a);
        assert_eq!(b.read_frames(&mut frames).unwrap(), ReadEnd::Closed);
    }
}
