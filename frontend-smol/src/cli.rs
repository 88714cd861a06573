//! The command line: the flags every frontend shares (flattened from the
//! core, so they have one definition) and the shard count.

use std::num::NonZeroUsize;

use chat_core::cli::ServerArgs;
use clap::Parser;

/// A telnet chat server on the smol runtime: one process in the foreground,
/// its connections spread over shards that together are one chat.
///
/// SIGINT or SIGTERM stops it: it stops accepting, sends every client what is
/// queued for it and `* server shutting down`, closes every connection and exits.
#[derive(Debug, Parser)]
#[command(name = "chat-smol", version)]
pub struct Cli {
    /// The chat server's address and limits.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Shards, each a chat core driven by its own executor thread [default: one per CPU core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub shards: Option<u16>,
}

impl Cli {
    /// Returns the shard count: as given, else one per core.
    pub fn shards(&self) -> usize {
        match self.shards {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn takes_the_shared_flags_and_shards() {
        let cli = Cli::try_parse_from([
            "chat-smol",
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "3",
            "--max-queue",
            "64KiB",
            "--utc-offset=-05:00",
        ])
        .unwrap();
        assert_eq!(cli.shards(), 3);
        assert_eq!(cli.server.listen.port(), 0);
        assert_eq!(cli.server.config.max_queue, 64 << 10);
        assert_eq!(cli.server.config.utc_offset.minutes(), -300);
        assert!(Cli::try_parse_from(["chat-smol"]).unwrap().shards() >= 1);
    }

    #[test]
    fn refuses_bad_flags() {
        for args in [
            &["chat-smol", "--shards", "0"][..],
            &["chat-smol", "--listen", "nowhere"],
            &["chat-smol", "--max-line", "lots"],
            &["chat-smol", "--bogus"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
