//! The signals that stop the server, read as an async stream: no work ever
//! runs in a signal handler.

use std::io;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;

/// SIGINT (Ctrl-C) and SIGTERM, caught from the moment this is created.
pub struct StopSignals {
    signals: Signals,
}

impl StopSignals {
    /// Starts catching SIGINT and SIGTERM; create it before announcing the
    /// listening address, so that a stop sent right after is never lost.
    pub fn new() -> io::Result<StopSignals> {
        Ok(StopSignals { signals: Signals::new([Signal::Int, Signal::Term])? })
    }

    /// Waits for the next stop signal and returns its name.
    pub async fn next(&mut self) -> &'static str {
        loop {
            match self.signals.next().await {
                Some(Ok(Signal::Int)) => return "SIGINT",
                Some(Ok(Signal::Term)) => return "SIGTERM",
                Some(Ok(_)) => {}
                Some(Err(e)) => log::warn!("reading signals: {e}"),
                // The stream never ends; should it, don't spin on it.
                None => smol::future::pending().await,
            }
        }
    }
}
