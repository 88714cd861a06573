//! One connection's task: reads the socket into its shard's inbox and waits
//! for writability when the shard asks.
//!
//! The task holds no output: the shard writes the core's queue straight to the
//! socket and only asks this task to wait when a write would block. Reads go to
//! the shard one chunk at a time over the shard's bounded inbox, so a client
//! that sends fast waits for its shard instead of filling a queue.

use std::io;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chat_core::ConnId;
use smol::channel::{Receiver, Sender};
use smol::future::{self, FutureExt};
use smol::io::{AsyncRead, AsyncReadExt};
use smol::stream::Stream;
use smol::{Async, Timer};

use crate::shard_task::Inbox;

/// Most bytes read in one go; also the most one message in a shard's inbox holds.
const READ_CHUNK: usize = 16 * 1024;

/// How long a closed connection's input is still read and discarded, so that
/// closing a socket with unread input does not reset it and destroy the
/// last lines (`* server shutting down`, an error) before the peer reads them.
const LINGER: Duration = Duration::from_secs(2);

/// What woke the task.
enum Wake {
    Read(io::Result<usize>),
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
    let mut buf = vec![0; READ_CHUNK];
    let mut reading = true;
    let mut writing = false;
    loop {
        let wake = future::poll_fn(|cx| {
            poll_wake(cx, &stream, want_write.as_mut(), &mut buf, reading, &mut writing)
        })
        .await;
        let message = match wake {
            Wake::Closed => break,
            Wake::Read(Ok(0)) => {
                reading = false;
                Inbox::Eof(conn)
            }
            Wake::Read(Ok(n)) => Inbox::Input(conn, buf[..n].to_vec()),
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
    buf: &mut [u8],
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
        if let Poll::Ready(result) = Pin::new(&mut &*stream).poll_read(cx, buf) {
            return Poll::Ready(Wake::Read(result));
        }
    }
    Poll::Pending
}

/// Reads and discards input until the peer closes, an error, or [`LINGER`].
async fn linger(stream: &Async<TcpStream>) {
    let drain = async {
        let mut buf = [0; 4096];
        let mut reader = stream;
        while let Ok(1..) = reader.read(&mut buf).await {}
    };
    let timeout = async {
        Timer::after(LINGER).await;
    };
    drain.or(timeout).await;
}
