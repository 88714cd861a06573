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
//! owned copy of just the bytes that arrived.

use std::cell::RefCell;
use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chat_core::ConnId;
use smol::channel::{Receiver, Sender};
use smol::future::{self, FutureExt};
use smol::io::AsyncRead;
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::shard_task::Inbox;

/// Most bytes read in one go; also the most one message in a shard's inbox holds.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closed connection's input is still read and discarded, so that
/// closing a socket with unread input does not reset it and destroy the
/// last lines (`* server shutting down`, an error) before the peer reads them.
const LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// The read buffer every connection task polled on this thread shares.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// What woke the task.
enum Wake {
    /// Bytes read; empty at the end of the stream.
    Read(io::Result<Vec<u8>>),
    Writable(io::Result<()>),
    /// The shard dropped its end: the connection is closed.
    Closed,
}

/// Runs one connection until its shard closes it or the shard is gone.
///
/// `want_write` carries the shard's requests to wait for writability; the
/// shard drops its sender once it has closed the connection (after shutting
/// down the write side), and the task then lingers and ends.
pub async fn run(
    conn: ConnId,
    stream: Arc<Async<TcpStream>>,
    inbox: Sender<Inbox>,
    want_write: Receiver<()>,
) {
    // A receiver is not Unpin (it may hold a listener), so poll it pinned.
    let mut want_write = std::pin::pin!(want_write);
    let mut reading = true;
    let mut writing = false;
    loop {
        let wake =
            future::poll_fn(|cx| poll_wake(cx, &stream, want_write.as_mut(), reading, &mut writing)).await;
        let message = match wake {
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
    linger(&stream).await;
}

/// Polls the shard's requests first (a closed channel ends everything), then
/// writability if the shard asked for it, then input.
fn poll_wake(
    cx: &mut Context<'_>,
    stream: &Async<TcpStream>,
    mut want_write: Pin<&mut Receiver<()>>,
    reading: bool,
    writing: &mut bool,
) -> Poll<Wake> {
    loop {
        match want_write.as_mut().poll_next(cx) {
            Poll::Ready(Some(())) => *writing = true,
            Poll::Ready(None) => return Poll::Ready(Wake::Closed),
            Poll::Pending => break,
        }
    }
    if *writing {
        if let Poll::Ready(result) = stream.poll_writable(cx) {
            *writing = false;
            return Poll::Ready(Wake::Writable(result));
        }
    }
    if reading {
        if let Poll::Ready(result) = poll_read_with(cx, stream, <[u8]>::to_vec) {
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
        let stream = Arc::new(Async::new(stream).unwrap());
        let (inbox, _inbox_rx) = smol::channel::bounded(1);
        let (_want_write, requests) = smol::channel::bounded(1);
        let task = run(ConnId::from_u64(1), stream, inbox, requests);
        let size = std::mem::size_of_val(&task);
        assert!(size < 1024, "a connection task's future takes {size} bytes");
    }
}
