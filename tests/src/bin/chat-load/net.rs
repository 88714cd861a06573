//! A swarm of client connections driven by one mio loop, read line by line.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What happened on a connection, reported by [`Swarm::turn`].
pub enum Event<'a> {
    /// The TCP handshake completed.
    Connected,
    /// One line, without its `\n`.
    Line(&'a [u8]),
    /// The server closed the connection (or it failed).
    Closed,
}

struct Conn {
    stream: TcpStream,
    connected: bool,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

/// Client connections on one poll; indices are reused after [`Swarm::close`].
pub struct Swarm {
    addr: SocketAddr,
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    scratch: Vec<u8>,
    open: usize,
}

impl Swarm {
    pub fn new(addr: SocketAddr) -> io::Result<Swarm> {
        Ok(Swarm {
            addr,
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            free: Vec::new(),
            scratch: vec![0; 256 * 1024],
            open: 0,
        })
    }

    /// Starts a connection; [`Event::Connected`] follows once it is up.
    pub fn connect(&mut self) -> io::Result<usize> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_nodelay(true)?;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        self.poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)?;
        self.conns[index] = Some(Conn { stream, connected: false, inbuf: Vec::new(), outbuf: Vec::new() });
        self.open += 1;
        Ok(index)
    }

    /// How many connections are open or opening.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Queues bytes and writes what the socket takes now.
    pub fn send(&mut self, index: usize, bytes: &[u8]) {
        if let Some(Some(conn)) = self.conns.get_mut(index) {
            conn.outbuf.extend_from_slice(bytes);
            if conn.connected {
                let _ = flush(conn);
            }
        }
    }

    /// Closes a connection now.
    pub fn close(&mut self, index: usize) {
        if let Some(slot) = self.conns.get_mut(index) {
            if let Some(mut conn) = slot.take() {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.free.push(index);
                self.open -= 1;
            }
        }
    }

    /// Waits up to `timeout` for readiness and reports what happened.
    pub fn turn(&mut self, timeout: Duration, mut on: impl FnMut(usize, Event<'_>)) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (e.token().0, e.is_readable() || e.is_read_closed(), e.is_read_closed(), e.is_writable())
            })
            .collect();
        for (index, readable, read_closed, writable) in ready {
            let mut closed = false;
            {
                let Some(Some(conn)) = self.conns.get_mut(index) else { continue };
                if writable && !conn.connected {
                    match conn.stream.peer_addr() {
                        Ok(_) => {
                            conn.connected = true;
                            on(index, Event::Connected);
                        }
                        Err(e) if e.kind() == ErrorKind::NotConnected => {}
                        Err(_) => closed = true,
                    }
                }
            }
            let Some(Some(conn)) = self.conns.get_mut(index) else { continue };
            if conn.connected && (writable || !conn.outbuf.is_empty()) && flush(conn).is_err() {
                closed = true;
            }
            if readable && conn.connected && !closed {
                loop {
                    match conn.stream.read(&mut self.scratch) {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(n) => {
                            let drained = n < self.scratch.len() && !read_closed;
                            let mut data = &self.scratch[..n];
                            while let Some(end) = data.iter().position(|&b| b == b'\n') {
                                if conn.inbuf.is_empty() {
                                    on(index, Event::Line(&data[..end]));
                                } else {
                                    conn.inbuf.extend_from_slice(&data[..end]);
                                    on(index, Event::Line(&conn.inbuf));
                                    conn.inbuf.clear();
                                }
                                data = &data[end + 1..];
                            }
                            conn.inbuf.extend_from_slice(data);
                            // A short read emptied the socket, and new bytes make
                            // edge-triggered readiness fire again: asking once
                            // more would only cost a syscall that says so (but an
                            // end of stream already reported has no edge to come).
                            if drained {
                                break;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            closed = true;
                            break;
                        }
                    }
                }
            }
            if closed {
                self.close(index);
                on(index, Event::Closed);
            }
        }
        Ok(())
    }

    /// Turns until `done` says so or `limit` passes; returns whether `done` was reached.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut on: impl FnMut(usize, Event<'_>),
        mut done: impl FnMut() -> bool,
    ) -> io::Result<bool> {
        let deadline = Instant::now() + limit;
        while !done() {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            self.turn((deadline - now).min(Duration::from_millis(50)), &mut on)?;
        }
        Ok(true)
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    let mut written = 0;
    while written < conn.outbuf.len() {
        match conn.stream.write(&conn.outbuf[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.outbuf.drain(..written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Shutdown, TcpListener};

    use super::*;

    /// How long the swarm may take to report what the test's peer did.
    const LIMIT: Duration = Duration::from_secs(10);

    /// Turns the swarm until `done` or `within`, recording what it reports.
    fn record_until(swarm: &mut Swarm, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + within;
        while !done(&seen) && Instant::now() < deadline {
            swarm
                .turn(Duration::from_millis(50), |_, e| {
                    seen.push(match e {
                        Event::Connected => "connected".to_string(),
                        Event::Line(line) => String::from_utf8_lossy(line).into_owned(),
                        Event::Closed => "closed".to_string(),
                    })
                })
                .unwrap();
        }
        seen
    }

    #[test]
    fn lines_split_across_reads_and_an_end_of_stream_after_them_are_all_reported() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let mut swarm = Swarm::new(listener.local_addr().unwrap()).unwrap();
        swarm.connect().unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(record_until(&mut swarm, LIMIT, |seen| !seen.is_empty()), ["connected"]);

        // Half a line, read short; its end and a whole line in the next read.
        server.write_all(b"first ha").unwrap();
        let seen = record_until(&mut swarm, Duration::from_millis(200), |_| false);
        assert!(seen.is_empty(), "half a line was reported: {seen:?}");
        server.write_all(b"lf\nsecond\n").unwrap();
        let seen = record_until(&mut swarm, LIMIT, |seen| seen.len() == 2);
        assert_eq!(seen, ["first half", "second"]);

        // Bytes and the end of stream together: the short read that takes the
        // bytes must not leave the end unread, since no new edge will come.
        server.write_all(b"last\n").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let seen = record_until(&mut swarm, LIMIT, |seen| seen.last().is_some_and(|e| e == "closed"));
        assert_eq!(seen, ["last", "closed"]);
        assert_eq!(swarm.open(), 0);
    }
}
