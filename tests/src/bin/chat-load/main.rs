//! chat-load: a load generator for any server that speaks the plain-line part
//! of PROTOCOL.md (chat-mio, chat-smol, tokio-chat), on loopback.
//!
//! Each scenario is bounded in time and count, prints a human-readable summary
//! and one JSON line, and exits non-zero if a line was lost, duplicated or
//! reordered (or the scenario otherwise failed).

mod churn;
mod fanout;
mod idle;
mod net;
mod procfs;
mod report;
mod swarmsync;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chat-load", about = "Load generator for the chat server (loopback only)")]
struct Cli {
    /// The server to load; loopback addresses only.
    #[arg(long, global = true, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C clients in one room, S of them sending numbered lines.
    Fanout {
        #[arg(long, default_value_t = 100)]
        clients: usize,
        #[arg(long, default_value_t = 10)]
        senders: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Lines per second per sender (default: as fast as the window allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Lines in flight per sender (sent, own echo not yet back).
        #[arg(long, default_value_t = 1)]
        window: u32,
        /// Pid of the server (the master for chat-mio), for its CPU and memory.
        #[arg(long)]
        server_pid: Option<i32>,
        /// Seconds to wait for every join notice before measuring.
        #[arg(long, default_value_t = 90.0)]
        notice_limit: f64,
    },
    /// Hold N connections; report memory per connection and CPU at rest.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long)]
        server_pid: i32,
        /// Seconds of silence over which CPU is measured.
        #[arg(long, default_value_t = 10.0)]
        quiet: f64,
        #[arg(long, default_value_t = 90.0)]
        notice_limit: f64,
    },
    /// Connect / say one line / wait for its echo / close, in parallel.
    Churn {
        #[arg(long, default_value_t = 50)]
        parallel: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// 1,000 clients, 50 senders at 5 lines/s each, for a long time: nothing
    /// lost or reordered, and the server's RSS flat within 10% after warm-up.
    Soak {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 50)]
        senders: usize,
        #[arg(long, default_value_t = 5.0)]
        rate: f64,
        /// Seconds (default 10 minutes).
        #[arg(long, default_value_t = 600.0)]
        duration: f64,
        #[arg(long)]
        server_pid: i32,
    },
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.addr.ip().is_loopback() {
        eprintln!(
            "chat-load: {} is not a loopback address; this tool only loads servers on this machine",
            cli.addr
        );
        return ExitCode::FAILURE;
    }
    raise_fd_limit();
    let result = match cli.scenario {
        Scenario::Fanout { clients, senders, duration, rate, window, server_pid, notice_limit } => {
            let spec = fanout::Fanout {
                clients,
                senders,
                duration: seconds(duration),
                rate,
                window: window.max(1),
                server_pid,
                notice_limit: seconds(notice_limit),
                rss_every: None,
            };
            fanout::run(cli.addr, &spec)
        }
        Scenario::Idle { conns, server_pid, quiet, notice_limit } => {
            idle::run(cli.addr, conns, server_pid, seconds(quiet), seconds(notice_limit))
        }
        Scenario::Churn { parallel, duration } => churn::run(cli.addr, parallel.max(1), seconds(duration)),
        Scenario::Soak { clients, senders, rate, duration, server_pid } => {
            let spec = fanout::Fanout {
                clients,
                senders,
                duration: seconds(duration),
                rate: Some(rate),
                window: 1000,
                server_pid: Some(server_pid),
                notice_limit: seconds(90.0),
                rss_every: Some(Duration::from_secs(10).min(seconds(duration / 10.0))),
            };
            fanout::run(cli.addr, &spec)
        }
    };
    match result {
        Ok(report) => {
            print!("{}", report.summary());
            println!("{}", report.json());
            if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("chat-load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Lifts the soft descriptor limit to the hard one: 10,000 clients need 10,000 sockets.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
