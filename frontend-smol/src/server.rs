//! Wires the server together: the executor threads, the shards and their
//! bus, the accept loop, and the stop sequence.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use chat_core::{Config, Shard, ShardId};
use smol::channel;
use smol::future::FutureExt;
use smol::{Async, Executor};

use crate::shard_task::{ShardTask, INBOX_CAPACITY};
use crate::signals::StopSignals;
use crate::{accept, bus};

/// Runs the server on `threads` executor threads (this one included) with one
/// shard per thread, until a stop signal and the flush that follows.
pub fn run(listener: TcpListener, config: Config, shards: usize, signals: StopSignals) -> io::Result<()> {
    let listener = Async::new(listener)?;
    let executor = Arc::new(Executor::new());
    // Dropped once the server is done, which ends the helper threads' `run`.
    let (done, done_rx) = channel::bounded::<()>(1);
    let mut helpers = Vec::new();
    let mut spawned = Ok(());
    for index in 1..shards {
        let executor = Arc::clone(&executor);
        let done_rx = done_rx.clone();
        let helper = thread::Builder::new()
            .name(format!("chat-smol-{index}"))
            .spawn(move || smol::block_on(executor.run(done_rx.recv())));
        match helper {
            Ok(helper) => helpers.push(helper),
            Err(e) => {
                spawned = Err(e);
                break;
            }
        }
    }
    let result = match spawned {
        Ok(()) => {
            smol::block_on(executor.run(serve(Arc::clone(&executor), listener, config, shards, signals)));
            Ok(())
        }
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot start an executor thread: {e}"))),
    };
    drop(done);
    for helper in helpers {
        // A helper only runs tasks; a panic there was already reported on stderr.
        let _ = helper.join();
    }
    result
}

/// Starts the shards and the accept loop, and stops them on a signal.
async fn serve(
    executor: Arc<Executor<'static>>,
    listener: Async<TcpListener>,
    config: Config,
    shards: usize,
    mut signals: StopSignals,
) {
    let now = Instant::now();
    // Closed, never sent on, to tell every shard to stop.
    let (stop, stop_rx) = channel::bounded::<()>(1);
    let ports: Vec<_> =
        if shards > 1 { bus::new(shards).into_iter().map(Some).collect() } else { vec![None] };
    let mut inboxes = Vec::with_capacity(shards);
    let mut tasks = Vec::with_capacity(shards);
    for (index, port) in ports.into_iter().enumerate() {
        let shard = match port {
            Some(_) => Shard::new(config.clone(), ShardId(index as u64), now),
            None => Shard::standalone(config.clone(), now),
        };
        let (inbox, inbox_rx) = channel::bounded(INBOX_CAPACITY);
        let task = ShardTask::new(shard, port, inbox_rx, stop_rx.clone(), Arc::clone(&executor));
        tasks.push(executor.spawn(task.run()));
        inboxes.push(inbox);
    }
    drop(stop_rx);
    log::info!("{shards} shard(s) running");

    let accepting = async {
        accept::run(listener, inboxes).await;
        log::error!("every shard is gone; stopping");
        "no shard left"
    };
    let why = accepting.or(signals.next()).await;
    // The accept loop is dropped here: the listening socket is closed.
    log::info!("{why}: stopping; flushing and closing every connection");
    drop(stop);

    let shards_done = async {
        for task in tasks {
            task.await;
        }
        true
    };
    let again = async {
        let why = signals.next().await;
        log::warn!("{why} again: exiting without waiting for the flush");
        false
    };
    if shards_done.or(again).await {
        log::info!("stopped");
    }
}
