//! Wires the server together: a thread per shard, the bus between them, the
//! accept loop, and the stop sequence.
//!
//! Each shard's thread runs an executor of its own: the shard's task, and the
//! tasks of its closing connections, never move to another thread. smol's
//! shared `Executor` wakes an idle thread for every task it schedules and lets
//! any thread run any shard; measured at `fanout-100` / `churn`, the pinned
//! shards deliver more lines per second with one shard and more cycles per
//! second with two (see README, "How it scales"). The main thread has the
//! first shard, the accept loop and the signals.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::thread;
use std::time::Instant;

use chat_core::{Config, Shard, ShardId};
use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, LocalExecutor};

use crate::shard_task::{Accepted, ShardTask, INBOX_CAPACITY};
use crate::signals::StopSignals;
use crate::{accept, bus};

thread_local! {
    /// This thread's tasks: its shard's, and those of the shard's closing connections.
    static HERE: LocalExecutor<'static> = const { LocalExecutor::new() };
}

/// Runs a task on this thread, beside the shard that started it.
pub fn spawn_here(task: impl Future<Output = ()> + 'static) {
    HERE.with(|executor| executor.spawn(task).detach());
}

/// Runs `future`, and the tasks spawned on this thread, until `future` is done.
fn block_here<T>(future: impl Future<Output = T>) -> T {
    HERE.with(|executor| smol::block_on(executor.run(future)))
}

/// Runs the server with one thread per shard (this thread has the first)
/// until a stop signal and the flush that follows, or a second signal.
pub fn run(listener: TcpListener, config: Config, shards: usize, signals: StopSignals) -> io::Result<()> {
    let listener = Async::new(listener)?;
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
        tasks.push(ShardTask::new(shard, port, inbox_rx, stop_rx.clone()));
        inboxes.push(inbox);
    }
    drop(stop_rx);
    let mut tasks = tasks.into_iter();
    let Some(first) = tasks.next() else { return Ok(()) };

    // Each helper thread drops its end once its shard is done.
    let (helper_done, helpers_done) = channel::bounded::<()>(1);
    let mut helpers = Vec::new();
    for (index, task) in (1..).zip(tasks) {
        let helper_done = helper_done.clone();
        let spawned = thread::Builder::new().name(format!("chat-smol-{index}")).spawn(move || {
            block_here(task.run());
            drop(helper_done);
        });
        match spawned {
            Ok(helper) => helpers.push(helper),
            Err(e) => {
                // The shards already running stop at once: they have no connection yet.
                drop(stop);
                join(helpers);
                return Err(io::Error::new(e.kind(), format!("cannot start a shard thread: {e}")));
            }
        }
    }
    drop(helper_done);
    log::info!("{shards} shard(s) running");
    if block_here(serve(first, listener, inboxes, stop, helpers_done, signals)) {
        join(helpers);
    }
    Ok(())
}

/// Waits for the helper threads to end.
fn join(helpers: Vec<thread::JoinHandle<()>>) {
    for helper in helpers {
        // A panic on a shard's thread was already reported on stderr.
        let _ = helper.join();
    }
}

/// Runs the first shard and the accept loop, and stops every shard on a
/// signal; returns whether the shards finished (false on a second signal).
async fn serve(
    first: ShardTask,
    listener: Async<TcpListener>,
    inboxes: Vec<Sender<Accepted>>,
    stop: Sender<()>,
    helpers_done: Receiver<()>,
    mut signals: StopSignals,
) -> bool {
    let first = HERE.with(|executor| executor.spawn(first.run()));
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
        first.await;
        // Nothing is sent: it ends once every helper dropped its end.
        let _ = helpers_done.recv().await;
        true
    };
    let again = async {
        let why = signals.next().await;
        log::warn!("{why} again: exiting without waiting for the flush");
        false
    };
    let finished = shards_done.or(again).await;
    if finished {
        log::info!("stopped");
    }
    finished
}
