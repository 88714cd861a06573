//! The accept loop: hands new connections to the shards in turn.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use smol::channel::{self, Sender};
use smol::{Async, Timer};

use crate::shard_task::Accepted;

/// How long to wait before accepting again after a failure such as running
/// out of file descriptors, which would otherwise repeat at once, forever.
const BACKOFF: Duration = Duration::from_millis(100);

/// Most connections handed to one shard at once. In a burst of connects each
/// shard then announces many in one turn, one write per connection for all of
/// them, instead of one write per connection per connect.
const BATCH: usize = 256;

/// Accepts connections and spreads them over the shards' inboxes in turn.
///
/// Each batch is handed over only after the shard published the previous
/// batch's connects, so connects take their places in the one server-wide
/// order in the order they were accepted: a client that connects after
/// another has connected sees it as earlier, whichever shards they landed on.
///
/// Runs until every shard is gone; the server stops accepting by dropping
/// this future, which closes the listening socket.
pub async fn run(listener: Async<TcpListener>, shards: Vec<Sender<Accepted>>) {
    let mut next = 0;
    // Set while accepting keeps failing, so a long EMFILE spell logs one line.
    let mut failing = false;
    loop {
        let first = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if transient(&e) => {
                log::debug!("accept: {e}");
                continue;
            }
            Err(e) => {
                if !failing {
                    log::warn!("accept failed: {e}; retrying every {} ms", BACKOFF.as_millis());
                    failing = true;
                }
                Timer::after(BACKOFF).await;
                continue;
            }
        };
        if failing {
            log::info!("accepting connections again");
            failing = false;
        }
        let batch = more(listener.get_ref(), first);
        let Some(shard) = shards.get(next) else { return };
        next = (next + 1) % shards.len();
        // A full inbox makes this wait: the shard is busy, new clients queue in the backlog.
        let (published, done) = channel::bounded(1);
        if shard.send(Accepted { conns: batch, published }).await.is_err() {
            return;
        }
        // Nothing is sent: the shard drops its end once the connects are published.
        let _ = done.recv().await;
    }
}

/// Takes whatever else is waiting in the backlog, up to a batch, without waiting.
fn more(
    listener: &TcpListener,
    first: (Async<TcpStream>, SocketAddr),
) -> Vec<(Async<TcpStream>, SocketAddr)> {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        // The listener is nonblocking (Async made it so): WouldBlock means the backlog is empty.
        match listener.accept() {
            Ok((stream, peer)) => match Async::new(stream) {
                Ok(stream) => batch.push((stream, peer)),
                Err(e) => log::warn!("cannot register the connection from {peer}: {e}"),
            },
            Err(e) if transient(&e) => {}
            // WouldBlock, or EMFILE and the like, which the next awaited accept reports.
            Err(_) => break,
        }
    }
    for (stream, peer) in &batch {
        // Chat lines are small and interactive: don't let Nagle hold them back.
        if let Err(e) = stream.get_ref().set_nodelay(true) {
            log::debug!("TCP_NODELAY on {peer}: {e}");
        }
    }
    batch
}

/// Tells whether an accept error concerns only the one connection (it went
/// away before we took it), so the next accept may follow at once.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}
