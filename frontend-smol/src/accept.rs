//! The accept loop: hands new connections to the shards in turn.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use smol::channel::Sender;
use smol::{Async, Timer};

use crate::shard_task::Inbox;

/// How long to wait before accepting again after a failure such as running
/// out of file descriptors, which would otherwise repeat at once, forever.
const BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections and spreads them round-robin over the shards' inboxes.
///
/// Runs until every shard is gone; the server stops accepting by dropping
/// this future, which closes the listening socket.
pub async fn run(listener: Async<TcpListener>, shards: Vec<Sender<Inbox>>) {
    let mut next = 0;
    // Set while accepting keeps failing, so a long EMFILE spell logs one line.
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if failing {
                    log::info!("accepting connections again");
                    failing = false;
                }
                // Chat lines are small and interactive: don't let Nagle hold them back.
                if let Err(e) = stream.get_ref().set_nodelay(true) {
                    log::debug!("TCP_NODELAY on {peer}: {e}");
                }
                let Some(shard) = shards.get(next) else { return };
                next = (next + 1) % shards.len();
                // A full inbox makes this wait: the shard is busy, new clients queue in the backlog.
                if shard.send(Inbox::Accepted(stream, peer)).await.is_err() {
                    return;
                }
            }
            Err(e) if transient(&e) => log::debug!("accept: {e}"),
            Err(e) => {
                if !failing {
                    log::warn!("accept failed: {e}; retrying every {} ms", BACKOFF.as_millis());
                    failing = true;
                }
                Timer::after(BACKOFF).await;
            }
        }
    }
}

/// Tells whether an accept error concerns only the one connection (it went
/// away before we took it), so the next accept may follow at once.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}
