//! `chat-smol`: the chat server of `PROTOCOL.md` on the smol runtime, in the
//! foreground, as one process.
//!
//! Each shard is a `chat_core::Shard` owned by one task; connections are spread
//! over the shards round-robin, and the shards are joined by an in-process
//! total-order bus, so the chat is one chat whatever `--shards` says.

mod accept;
mod bus;
mod cli;
mod conn;
mod listen;
mod logging;
mod server;
mod shard_task;
mod signals;
mod sys;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::Cli;
use crate::signals::StopSignals;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refuse_flags(&e),
    };
    logging::init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, without the logger's prefix: this is what a person at the prompt reads.
            eprintln!("chat-smol: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, announces the address, and serves until stopped.
fn run(cli: Cli) -> Result<(), String> {
    let shards = cli.shards();
    let address = cli.server.listen;
    let listener = listen::bind(address).map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| format!("cannot read the listening address: {e}"))?;
    // Caught before the address is announced: whoever reads it may stop us at once.
    let signals = StopSignals::new().map_err(|e| format!("cannot catch SIGINT and SIGTERM: {e}"))?;

    // The one line on stdout, which scripts and the test harness read for the real port.
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "chat-smol listening on {local}").and_then(|()| stdout.flush()) {
        log::warn!("cannot print the listening address: {e}");
    }
    drop(stdout);
    log::info!("listening on {local} with {shards} shard(s)");

    server::run(listener, cli.server.config, shards, signals).map_err(|e| e.to_string())
}

/// Prints help or version to stdout and exits 0, or prints the first line of
/// a flag error to stderr and exits 1.
fn refuse_flags(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Nothing useful is left to do if stdout is gone.
            let _ = error.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = error.render().to_string();
            let line = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let line = line.strip_prefix("error: ").unwrap_or(line);
            eprintln!("chat-smol: {line} (see chat-smol --help)");
            ExitCode::FAILURE
        }
    }
}
