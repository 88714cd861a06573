//! `chat-mio`: the chat server as a Workerman-style daemon.
//!
//! `start` prepares everything that can fail where the user can see it (pid
//! file lock, listeners, control socket), then becomes the master, which forks
//! the workers. The other commands find the master through the pid file and
//! talk to it with signals (`stop`) or the control socket (`status`,
//! `connections`, `reload`).

mod bus;
mod cli;
mod control;
mod daemon;
mod listen;
mod master;
mod privileges;
mod report;
mod rounds;
mod signals;
mod sys;
mod worker;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cli::{Cli, Command, Paths, StartArgs};
use crate::control::Request;
use crate::daemon::{AcquireError, PidFile, Probe, Startup};

/// LSB exit status: the program is not running (`status`).
const NOT_RUNNING: u8 = 3;
/// LSB exit status: the status is unknown (`status` could not ask the master).
const STATUS_UNKNOWN: u8 = 4;
/// LSB exit status: the program is not running (`reload` and other actions).
const ACTION_NOT_RUNNING: u8 = 7;

/// How long an immediate `stop` waits for the master to exit.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How long `status` and `connections` wait for the master's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `reload` waits for every worker to be replaced.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// A failed command: the line to print and the exit status.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn new(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), code: 1 }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let paths = match Paths::new(cli.pid_file.as_deref()) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("chat-mio: cannot resolve the pid file path: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Start(args) => start(&paths, args),
        Command::Stop(args) => stop(&paths, args.graceful),
        Command::Restart(args) => stop(&paths, args.graceful).and_then(|_| start(&paths, args.start)),
        Command::Reload(args) => reload(&paths, args.graceful),
        Command::Status(args) => status(&paths, args.live),
        Command::Connections => connections(&paths),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("chat-mio: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// Reports a command-line error as one line and exit status 1 (help and
/// version requests print in full and succeed).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(1);
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    eprintln!("chat-mio: {} (try --help)", first.trim_start_matches("error: "));
    ExitCode::from(1)
}

/// Sets up logging: time, pid and level on every line, to stderr (which is
/// the log file once daemonized). `CHAT_MIO_LOG` overrides the level.
fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("CHAT_MIO_LOG", "info"))
        .format(|buf, record| {
            writeln!(
                buf,
                "{} [{}] {:<5} {}",
                buf.timestamp_millis(),
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .init();
}

fn start(paths: &Paths, args: StartArgs) -> Result<u8, Failure> {
    let credentials = privileges::Credentials::resolve(args.user.as_deref(), args.group.as_deref())
        .map_err(Failure::new)?;
    let log_path = paths
        .log_file(args.log_file.as_deref())
        .map_err(|e| Failure::new(format!("cannot resolve the log file path: {e}")))?;
    let pid_file = match PidFile::acquire(&paths.pid_file) {
        Ok(pid_file) => pid_file,
        Err(AcquireError::Running(pid)) => {
            let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            return Err(Failure::new(format!("already running (pid {pid})")));
        }
        Err(AcquireError::Io(e)) => {
            return Err(Failure::new(format!("cannot open pid file {}: {e}", paths.pid_file.display())))
        }
    };
    raise_fd_limit();
    let workers =
        args.workers.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from);
    let listen = args.server.listen;
    let (listeners, addr) =
        listen::bind(listen, workers).map_err(|e| Failure::new(format!("cannot listen on {listen}: {e}")))?;
    let control = control::ControlListener::bind(&paths.control).map_err(|e| {
        Failure::new(format!("cannot create control socket {}: {e}", paths.control.display()))
    })?;
    init_logging();
    let (startup, log_note) = if args.daemon {
        let log = daemon::open_log(&log_path)
            .map_err(|e| Failure::new(format!("cannot open log file {}: {e}", log_path.display())))?;
        let startup =
            daemon::daemonize(&log, &log_path).map_err(|e| Failure::new(format!("cannot daemonize: {e}")))?;
        (startup, format!(", log file {}", log_path.display()))
    } else {
        (Startup::Foreground, String::new())
    };
    let mut pid_file = pid_file;
    if let Err(e) = pid_file.write_pid() {
        let message = format!("cannot write pid file {}: {e}", paths.pid_file.display());
        startup.failed(&message);
        return Ok(1);
    }
    sys::set_process_title(daemon::MASTER_TITLE);
    let code = master::run(master::Setup {
        config: args.server.config,
        addr,
        listeners,
        pid_file,
        control,
        max_bus_queue: args.max_bus_queue,
        credentials,
        startup,
        log_note,
    });
    Ok(u8::try_from(code).unwrap_or(1))
}

/// Raises the soft limit on open descriptors to the hard limit: every client
/// is a descriptor, and 1024 (a common soft default) is far below
/// `--max-conns`. Workers inherit the limit across fork.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            // Best effort: with the old limit the server still runs, and a
            // worker out of descriptors pauses accepting rather than failing.
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Finds the running master, or explains why there is none to talk to.
fn running_master(paths: &Paths) -> Result<Option<i32>, Failure> {
    match daemon::probe(&paths.pid_file) {
        Ok(Probe::NotRunning) => Ok(None),
        Ok(Probe::Running(pid)) => Ok(Some(pid)),
        Ok(Probe::Unknown(pid)) => Err(Failure {
            message: format!(
                "pid file {} is locked but names no chat-mio master (pid {}); not touching it",
                paths.pid_file.display(),
                pid.map_or_else(|| "unknown".to_string(), |p| p.to_string())
            ),
            code: STATUS_UNKNOWN,
        }),
        Err(e) => Err(Failure {
            message: format!("cannot read pid file {}: {e}", paths.pid_file.display()),
            code: STATUS_UNKNOWN,
        }),
    }
}

fn stop(paths: &Paths, graceful: bool) -> Result<u8, Failure> {
    let Some(pid) = running_master(paths)? else {
        println!("chat-mio is not running");
        return Ok(0);
    };
    let signal = if graceful { Signal::SIGQUIT } else { Signal::SIGTERM };
    kill(Pid::from_raw(pid), signal)
        .map_err(|e| Failure::new(format!("cannot signal the master (pid {pid}): {e}")))?;
    if graceful {
        println!("chat-mio (pid {pid}) is stopping gracefully; waiting for clients to leave");
    } else {
        println!("chat-mio (pid {pid}) is stopping");
    }
    let _ = std::io::stdout().flush();
    let started = Instant::now();
    loop {
        // The lock goes with the master's last descriptor, that is at its exit.
        match daemon::probe(&paths.pid_file) {
            Ok(Probe::Running(p)) if p == pid => {}
            _ => break,
        }
        if !graceful && started.elapsed() > STOP_WAIT {
            return Err(Failure::new(format!(
                "chat-mio (pid {pid}) did not stop within {} seconds",
                STOP_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("chat-mio stopped");
    Ok(0)
}

fn reload(paths: &Paths, graceful: bool) -> Result<u8, Failure> {
    if running_master(paths)?.is_none() {
        println!("chat-mio is not running");
        return Ok(ACTION_NOT_RUNNING);
    }
    let answer = control::ask(&paths.control, Request::Reload(graceful), RELOAD_TIMEOUT)
        .map_err(|e| Failure::new(format!("cannot reach the master: {e}")))?;
    print!("{answer}");
    Ok(0)
}

fn status(paths: &Paths, live: bool) -> Result<u8, Failure> {
    loop {
        if running_master(paths)?.is_none() {
            println!("chat-mio is not running");
            return Ok(NOT_RUNNING);
        }
        let answer = control::ask(&paths.control, Request::Status, ASK_TIMEOUT).map_err(|e| Failure {
            message: format!("cannot reach the master: {e}"),
            code: STATUS_UNKNOWN,
        })?;
        let mut out = std::io::stdout().lock();
        if live && out.is_terminal() {
            let _ = out.write_all(b"\x1b[H\x1b[2J");
        }
        let _ = out.write_all(answer.as_bytes());
        let _ = out.flush();
        drop(out);
        if !live {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_secs(1));
        println!();
    }
}

fn connections(paths: &Paths) -> Result<u8, Failure> {
    if running_master(paths)?.is_none() {
        println!("chat-mio is not running");
        return Ok(NOT_RUNNING);
    }
    let answer = control::ask(&paths.control, Request::Connections, ASK_TIMEOUT)
        .map_err(|e| Failure { message: format!("cannot reach the master: {e}"), code: STATUS_UNKNOWN })?;
    print!("{answer}");
    Ok(0)
}
