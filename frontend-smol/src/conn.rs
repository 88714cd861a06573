//! One connection's task: reads the socket into its shard's inbox and waits
//! for writability when the shard asks.
//!
//! The task holds no output: the shard writes the core's queue straight to the
//! socket and only asks this task to wait when a write would block. Reads go to
//! the shard one chunk at a time over the shard's bounded inbox, so a client
//! that sends fast waits for its shard instead of filling a queue.
//!
//! An idle connection costs little: the task keeps no read buffer of its own.
//! It reads into its thread's scratch buffer, within one poll, and sends on an
//! owned copy of just the bytes that arrived. The shard and the task share one
//! small [`Link`] (the socket, two flags and the task's waker) instead of a
//! channel, whose cache-padded allocation alone took 768 bytes.

use std::cell::RefCell;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use chat_core::ConnId;
use smol::channel::Sender;
use smol::future::{self, FutureExt};
use smol::io::AsyncRead;
use smol::{Async, Timer};

use crate::shard_task::Inbox;

/// Most bytes read in one go; also the most one message in a shard's inbox holds.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closed connection's input is still read and discarded, so that
/// closing a socket with unread input does not reset it and destroy the
/// last lines (`* server shutting down`, an error) before the peer reads them.
const LINGER: Duration = Duration::from_secs(2);

/// [`Link`] flag: the shard wants to know when the socket takes writes again.
const WANT_WRITE: u8 = 1;
/// [`Link`] flag: the shard is done with the connection.
const CLOSED: u8 = 2;

thread_local! {
    /// The read buffer every connection task polled on this thread shares.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// What a shard and one connection's task share: the socket, the shard's
/// requests, and the task's waker so a request wakes it.
#[derive(Debug)]
pub struct Link {
    stream: Async<TcpStream>,
    flags: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Link {
    pub fn new(stream: Async<TcpStream>) -> Link {
        Link { stream, flags: AtomicU8::new(0), waker: Mutex::new(None) }
    }

    /// The socket, for the shard's nonblocking writes.
    pub fn stream(&self) -> &TcpStream {
        self.stream.get_ref()
    }

    /// Asks the task to wait for writability and report it with
    /// [`Inbox::Writable`]; a request already outstanding is not repeated.
    pub fn want_write(&self) {
        self.raise(WANT_WRITE);
    }

    /// Tells the task that the shard is done with the connection: it lingers
    /// on the input (see [`LINGER`]) and ends.
    pub fn close(&self) {
        self.raise(CLOSED);
    }

    fn raise(&self, flag: u8) {
        if self.flags.fetch_or(flag, Ordering::AcqRel) & flag == 0 {
            let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Remembers the task's waker; done before the flags are read, so a
    /// request raised in between still wakes the task.
    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut *slot {
            Some(old) if old.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }
}

/// What woke the task.
enum Wake {
    /// Bytes read; empty at the end of the stream.
    Read(io::Result<Vec<u8>>),
    Writable(io::Result<()>),
    /// The shard is done with the connection.
    Closed,
}

/// Runs one connection until its shard closes it or the shard is gone.
///
/// The shard raises [`Link::want_write`] when a write would block, and
/// [`Link::close`] once it has closed the connection (after shutting down the
/// write side, or when the shard itself ends); the task then lingers and ends.
pub async fn run(conn: ConnId, link: Arc<Link>, inbox: Sender<Inbox>) {
    let mut reading = true;
    loop {
        let message = match future::poll_fn(|cx| poll_wake(cx, &link, reading)).await {
            Wake::Closed => break,
            Wake::Read(Ok(bytes)) if bytes.is_empty() => {
                reading = false;
                Inbox::Eof(conn)
            }
            Wake::Read(Ok(bytes)) => Inbox::Input(conn, bytes),
            Wake::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Wake::Read(Err(e)) | Wake::Writable(Err(e)) => {
                reading = false;
                Inbox::Failed(conn, e)
            }
            Wake::Writable(Ok(())) => Inbox::Writable(conn),
        };
        if inbox.send(message).await.is_err() {
            // The shard is gone; the server is stopping.
            return;
        }
    }
    linger(&link.stream).await;
}

/// Polls the shard's requests first (a close ends everything), then
/// writability if the shard asked for it, then input.
fn poll_wake(cx: &mut Context<'_>, link: &Link, reading: bool) -> Poll<Wake> {
    link.register(cx.waker());
    let flags = link.flags.load(Ordering::Acquire);
    if flags & CLOSED != 0 {
        return Poll::Ready(Wake::Closed);
    }
    if flags & WANT_WRITE != 0 {
        if let Poll::Ready(result) = link.stream.poll_writable(cx) {
            link.flags.fetch_and(!WANT_WRITE, Ordering::AcqRel);
            return Poll::Ready(Wake::Writable(result));
        }
    }
    if reading {
        if let Poll::Ready(result) = poll_read_with(cx, &link.stream, <[u8]>::to_vec) {
            return Poll::Ready(Wake::Read(result));
        }
    }
    Poll::Pending
}

/// Reads once into this thread's scratch buffer and hands what arrived to
/// `take` (an empty slice at the end of the stream).
fn poll_read_with<T>(
    cx: &mut Context<'_>,
    stream: &Async<TcpStream>,
    take: impl FnOnce(&[u8]) -> T,
) -> Poll<io::Result<T>> {
    SCRATCH.with_borrow_mut(|buf| {
        Pin::new(&mut &*stream).poll_read(cx, buf).map(|result| result.map(|n| take(&buf[..n])))
    })
}

/// Reads and discards input until the peer closes, an error, or [`LINGER`].
async fn linger(stream: &Async<TcpStream>) {
    let drain =
        async { while let Ok(1..) = future::poll_fn(|cx| poll_read_with(cx, stream, <[u8]>::len)).await {} };
    let timeout = async {
        Timer::after(LINGER).await;
    };
    drain.or(timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connection_task_is_small() {
        let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let stream = TcpStream::connect(listener.get_ref().local_addr().unwrap()).unwrap();
        let link = Arc::new(Link::new(Async::new(stream).unwrap()));
        let (inbox, _inbox_rx) = smol::channel::bounded(1);
        let task = run(ConnId::from_u64(1), Arc::clone(&link), inbox);
        let size = std::mem::size_of_val(&task);
        eprintln!("a connection task's future takes {size} bytes, its link {}", size_of::<Link>());
        assert!(size < 1024, "a connection task's future takes {size} bytes");
    }
}
