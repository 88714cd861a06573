//! A connection as its shard task drives it: the socket, and the waker that
//! puts the connection on the shard's ready list when async-io's reactor
//! reports it readable or writable.
//!
//! There is no task per connection and no channel between a connection and
//! its shard: the reactor wakes the connection's own waker, which lists the
//! connection and wakes the shard task (once, however many connections it
//! lists meanwhile), and the shard reads what arrived straight into the core
//! and writes the core's queue straight to the socket. A line then costs one
//! task wake-up instead of two, no copy of its bytes, and no allocation.
//!
//! async-io arms a socket for one event at a time: after reading (or writing)
//! until the socket has no more for now, the shard arms it again, and an event
//! that came meanwhile is reported at once, so nothing is missed in between.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use chat_core::ConnId;
use smol::future::{self, FutureExt};
use smol::io::AsyncRead;
use smol::{Async, Timer};

/// How long a closed connection's input is still read and discarded, so that
/// closing a socket with unread input does not reset it and destroy the
/// last lines (`* server shutting down`, an error) before the peer reads them.
const LINGER: Duration = Duration::from_secs(2);

/// The connections of one shard that the reactor reported ready, in the
/// order it did, and the shard task's waker.
#[derive(Debug, Default)]
pub struct ReadyList {
    inner: Mutex<Listed>,
}

#[derive(Debug, Default)]
struct Listed {
    conns: Vec<ConnId>,
    shard: Option<Waker>,
}

impl ReadyList {
    /// Moves the listed connections to the end of `into`.
    pub fn take(&self, into: &mut VecDeque<ConnId>) {
        let mut listed = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        into.extend(listed.conns.drain(..));
    }

    /// Waits until a connection is listed.
    pub async fn wait(&self) {
        future::poll_fn(|cx| {
            let mut listed = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if listed.conns.is_empty() {
                match &mut listed.shard {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }

    fn push(&self, conn: ConnId) {
        let shard = {
            let mut listed = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            listed.conns.push(conn);
            listed.shard.take()
        };
        // Woken outside the lock: the shard task may run on another thread at once.
        if let Some(shard) = shard {
            shard.wake();
        }
    }
}

/// A connection's waker: lists the connection on its shard's ready list,
/// once until the shard takes it up.
#[derive(Debug)]
struct Listing {
    conn: ConnId,
    list: Arc<ReadyList>,
    listed: AtomicBool,
}

impl Wake for Listing {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.listed.swap(true, Ordering::AcqRel) {
            self.list.push(self.conn);
        }
    }
}

/// One connection's socket and its waker.
#[derive(Debug)]
pub struct Conn {
    stream: Async<TcpStream>,
    listing: Arc<Listing>,
}

impl Conn {
    pub fn new(conn: ConnId, stream: Async<TcpStream>, list: &Arc<ReadyList>) -> Conn {
        let listing = Arc::new(Listing { conn, list: Arc::clone(list), listed: AtomicBool::new(false) });
        Conn { stream, listing }
    }

    /// The connection's waker; every one made here wakes the same way, so
    /// async-io keeps the one it holds (`Waker::will_wake`).
    fn waker(&self) -> Waker {
        Waker::from(Arc::clone(&self.listing))
    }

    /// The socket, for nonblocking writes and for logs.
    pub fn stream(&self) -> &TcpStream {
        self.stream.get_ref()
    }

    /// The shard takes the connection up: a readiness reported from now on
    /// lists it again.
    pub fn unlist(&self) {
        self.listing.listed.store(false, Ordering::Release);
    }

    /// Reads once, without waiting.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&mut self.stream.get_ref()).read(buf)
    }

    /// Arms the socket to report the next input; returns true instead if
    /// input was reported since it was last armed (read again, then arm).
    pub fn arm_read(&self) -> bool {
        self.stream.poll_readable(&mut Context::from_waker(&self.waker())).is_ready()
    }

    /// Arms the socket to report when it takes writes again; returns true
    /// instead if that was reported since it was last armed.
    pub fn arm_write(&self) -> bool {
        self.stream.poll_writable(&mut Context::from_waker(&self.waker())).is_ready()
    }

    /// Takes the socket to linger on after the shard shut its write side.
    pub fn into_stream(self) -> Async<TcpStream> {
        self.stream
    }
}

/// Reads and discards input until the peer closes, an error, or [`LINGER`].
pub async fn linger(stream: Async<TcpStream>) {
    let drain = async { while let Ok(1..) = future::poll_fn(|cx| poll_discard(cx, &stream)).await {} };
    let timeout = async {
        Timer::after(LINGER).await;
    };
    drain.or(timeout).await;
}

thread_local! {
    /// Where lingering connections polled on this thread read to: a closing
    /// connection keeps no buffer of its own.
    static SINK: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
}

fn poll_discard(cx: &mut Context<'_>, stream: &Async<TcpStream>) -> Poll<io::Result<usize>> {
    SINK.with_borrow_mut(|sink| Pin::new(&mut &*stream).poll_read(cx, sink))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;

    /// A connection with id `id` on a ready list of its own, and its client's end.
    fn connected(id: u64) -> (Arc<ReadyList>, Conn, TcpStream) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let list = Arc::new(ReadyList::default());
        let conn = Conn::new(ConnId::from_u64(id), Async::new(server).unwrap(), &list);
        (list, conn, client)
    }

    #[test]
    fn input_lists_the_connection_once_until_the_shard_takes_it_up() {
        smol::block_on(async {
            let (list, conn, mut client) = connected(7);
            let mut buf = [0u8; 64];
            assert_eq!(conn.read(&mut buf).map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
            assert!(!conn.arm_read(), "nothing arrived, so the socket is armed");

            client.write_all(b"hello\n").unwrap();
            wait_listed(&list).await;
            // A second report before the shard takes the connection up adds nothing.
            conn.listing.wake_by_ref();
            let mut ready = VecDeque::new();
            list.take(&mut ready);
            assert_eq!(ready, [ConnId::from_u64(7)]);

            conn.unlist();
            assert_eq!(conn.read(&mut buf).unwrap(), 6);
            // The event that listed it may be reported once more (then read
            // again, as the shard does) before the socket is armed.
            let mut reported = 0;
            while conn.arm_read() {
                reported += 1;
                assert!(reported < 3, "one event was reported {reported} times");
            }
            client.write_all(b"more\n").unwrap();
            wait_listed(&list).await;
            ready.clear();
            list.take(&mut ready);
            assert!(ready.contains(&ConnId::from_u64(7)), "new input did not list the connection again");
        });
    }

    async fn wait_listed(list: &ReadyList) {
        list.wait()
            .or(async {
                Timer::after(Duration::from_secs(10)).await;
                panic!("the input was not reported within 10 s");
            })
            .await;
    }

    #[test]
    fn input_that_came_before_arming_is_reported_at_once() {
        smol::block_on(async {
            let (list, conn, mut client) = connected(1);
            client.write_all(b"early\n").unwrap();
            // The shard read before these bytes were there, and arms only now.
            assert!(!conn.arm_read());
            wait_listed(&list).await;
        });
    }
}
