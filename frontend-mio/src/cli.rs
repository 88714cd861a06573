//! The command line: Workerman's subcommands, the daemon's own flags, and the
//! chat flags every frontend shares (flattened from the core).

use std::path::{Path, PathBuf};

use chat_core::cli::ServerArgs;
use clap::{Args, Parser, Subcommand};

/// Help text appended to `--help`: where files go by default.
const FILES_HELP: &str = "\
Files:
  The pid file defaults to $XDG_RUNTIME_DIR/chat-mio/chat-mio.pid when XDG_RUNTIME_DIR
  is set, else /tmp/chat-mio-$UID/chat-mio.pid. The log file (daemon mode) defaults to
  the pid file with the extension .log, and the control socket (mode 0600) is always
  the pid file with the extension .sock. Give every server its own --pid-file to run
  several side by side.

Signals to the master:
  SIGINT, SIGTERM, SIGHUP  stop          SIGQUIT  graceful stop
  SIGUSR1                  reload        SIGUSR2  graceful reload
  SIGPIPE                  ignored";

/// A telnet chat server run as a Workerman-style daemon: one master process and
/// forked worker processes that together are one chat.
#[derive(Debug, Parser)]
#[command(name = "chat-mio", version, after_help = FILES_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The master's pid file; it names the server the command talks to.
    #[arg(long, global = true, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// Workerman's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Starts the server (in the foreground unless -d).
    Start(StartArgs),
    /// Stops the server: at once, or with -g once every client has left.
    Stop(StopArgs),
    /// Stops the server, then starts it with the flags given here.
    Restart(RestartArgs),
    /// Replaces the workers one at a time; with -g each old worker first finishes its clients.
    Reload(ReloadArgs),
    /// Shows the master and every worker; exits 3 when the server is not running.
    Status(StatusArgs),
    /// Lists every connection of every worker.
    Connections,
}

/// Flags of `start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Runs as a daemon: detaches, logs to the log file, returns once the server accepts.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Worker processes [default: one per CPU core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// The log file used in daemon mode [default: the pid file with extension .log].
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// User the workers run as when started as root.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Group the workers run as when started as root [default: the user's group].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Bus output the master holds for one worker before it kills the worker as stuck.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = chat_core::cli::parse_size)]
    pub max_bus_queue: usize,
    /// The chat server's address and limits.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Flags of `stop`.
#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// Stops accepting, waits until every client has left, then stops.
    #[arg(short = 'g', long)]
    pub graceful: bool,
}

/// Flags of `restart`.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Stops gracefully (waits for clients to leave) before starting again.
    #[arg(short = 'g', long)]
    pub graceful: bool,
    /// How to start again.
    #[command(flatten)]
    pub start: StartArgs,
}

/// Flags of `reload`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Lets each old worker finish its clients instead of closing them.
    #[arg(short = 'g', long)]
    pub graceful: bool,
}

/// Flags of `status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Refreshes every second until interrupted.
    #[arg(short = 'd', long)]
    pub live: bool,
}

/// The files that name one server: its pid file, log file and control socket.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The pid file, absolute.
    pub pid_file: PathBuf,
    /// The control socket beside it.
    pub control: PathBuf,
}

impl Paths {
    /// Resolves the pid file (default or given) to an absolute path, since the
    /// daemon changes its directory to `/`.
    pub fn new(pid_file: Option<&Path>) -> std::io::Result<Paths> {
        let pid_file = match pid_file {
            Some(path) => absolute(path)?,
            None => default_dir().join("chat-mio.pid"),
        };
        Ok(Paths { control: pid_file.with_extension("sock"), pid_file })
    }

    /// Returns the log file for `start`, given or beside the pid file.
    pub fn log_file(&self, given: Option<&Path>) -> std::io::Result<PathBuf> {
        match given {
            Some(path) => absolute(path),
            None => Ok(self.pid_file.with_extension("log")),
        }
    }
}

/// Returns the default directory for the pid, log and socket files.
fn default_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() && Path::new(&dir).is_absolute() => Path::new(&dir).join("chat-mio"),
        _ => PathBuf::from(format!("/tmp/chat-mio-{}", nix::unistd::geteuid())),
    }
}

/// Makes `path` absolute against the current directory (without resolving links).
fn absolute(path: &Path) -> std::io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
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
    fn parses_workerman_commands() {
        let cli = Cli::try_parse_from([
            "chat-mio",
            "start",
            "-d",
            "--workers",
            "4",
            "--listen",
            "127.0.0.1:0",
            "--max-bus-queue",
            "1MiB",
            "--pid-file",
            "/tmp/x.pid",
        ])
        .unwrap();
        let Command::Start(start) = cli.command else {
            panic!("not start");
        };
        assert!(start.daemon);
        assert_eq!(start.workers, Some(4));
        assert_eq!(start.max_bus_queue, 1 << 20);
        assert_eq!(cli.pid_file.as_deref(), Some(Path::new("/tmp/x.pid")));
        assert!(Cli::try_parse_from(["chat-mio", "stop", "-g"]).is_ok());
        assert!(Cli::try_parse_from(["chat-mio", "reload", "-g"]).is_ok());
        assert!(Cli::try_parse_from(["chat-mio", "status", "-d"]).is_ok());
        assert!(Cli::try_parse_from(["chat-mio", "restart", "-d", "-g", "--tick", "0"]).is_ok());
        assert!(Cli::try_parse_from(["chat-mio", "start", "--workers", "0"]).is_err());
    }

    #[test]
    fn files_sit_beside_the_pid_file() {
        let paths = Paths::new(Some(Path::new("/run/x/chat.pid"))).unwrap();
        assert_eq!(paths.control, Path::new("/run/x/chat.sock"));
        assert_eq!(paths.log_file(None).unwrap(), Path::new("/run/x/chat.log"));
    }
}
