//! The command-line flags every frontend shares, defined once.

use std::net::SocketAddr;

pub use crate::config::parse_size;
use crate::config::Config;

/// The flags of `PROTOCOL.md`'s "Flags": the listen address and the [`Config`].
#[derive(Clone, Debug, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port, and the real one is printed.
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:7000")]
    pub listen: SocketAddr,
    /// The chat's settings and limits.
    #[command(flatten)]
    pub config: Config,
}
