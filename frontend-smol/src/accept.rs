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
        // A burst of connects (a program opening a hundred at once) is spread
        // over the shards too, not given to whichever shard's turn it is.
        for share in split_evenly(batch, shards.len()) {
            let Some(shard) = shards.get(next) else { return };
            next = (next + 1) % shards.len();
            if hand_over(shard, share).await.is_err() {
                return;
            }
        }
    }
}

/// Gives a shard connections and waits until it published their connects;
/// fails if the shard is gone.
async fn hand_over(shard: &Sender<Accepted>, conns: Vec<(Async<TcpStream>, SocketAddr)>) -> Result<(), ()> {
    // A full inbox makes this wait: the shard is busy, new clients queue in the backlog.
    let (published, done) = channel::bounded(1);
    shard.send(Accepted { conns, published }).await.map_err(drop)?;
    // Nothing is sent: the shard drops its end once the connects are published.
    let _ = done.recv().await;
    Ok(())
}

/// Cuts `batch` into at most `parts` runs of consecutive items whose sizes
/// differ by at most one (the first ones are the longer), in order.
fn split_evenly<T>(mut batch: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    if batch.is_empty() {
        return Vec::new();
    }
    let parts = parts.clamp(1, batch.len());
    let (size, longer) = (batch.len() / parts, batch.len() % parts);
    let mut runs = Vec::with_capacity(parts);
    for part in (0..parts).rev() {
        let len = size + usize::from(part < longer);
        runs.push(batch.split_off(batch.len() - len));
    }
    runs.reverse();
    runs
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

#[cfg(test)]
mod tests {
    use super::split_evenly;

    #[test]
    fn splits_into_runs_in_order_that_differ_by_at_most_one() {
        let runs = split_evenly((0..7).collect(), 3);
        assert_eq!(runs, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
        let runs = split_evenly((0..100).collect::<Vec<_>>(), 2);
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50]);
        assert_eq!(runs.concat(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn never_makes_an_empty_run() {
        assert_eq!(split_evenly(vec![1], 4), vec![vec![1]]);
        assert_eq!(split_evenly(vec![1, 2], 1), vec![vec![1, 2]]);
        assert_eq!(split_evenly(Vec::<u8>::new(), 2), Vec::<Vec<u8>>::new());
        assert_eq!(split_evenly(vec![1, 2], 0), vec![vec![1, 2]]);
    }
}
