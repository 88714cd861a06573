//! A server under test: one frontend binary started on a free loopback port.
//!
//! The server listens on `127.0.0.1:0` and the harness reads the real port from
//! what it prints. Every process it starts is stopped by pid when the [`Server`]
//! is dropped (SIGTERM, then SIGKILL after a grace period), including a chat-mio
//! master's workers, and each server gets a private directory for its pid, log
//! and socket files.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::binaries::Binary;
use crate::client::Client;
use crate::process::{self, Pid, Process};

/// The longest a server may take to start or to stop before the test fails.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Grace between SIGTERM and SIGKILL when the harness cleans up.
const GRACE: Duration = Duration::from_secs(5);

/// Which frontend, and how many workers or shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// `chat-mio start` with `--workers N`: a master and N forked workers.
    Mio {
        /// Worker processes.
        workers: u16,
    },
    /// `chat-smol` with `--shards N`: one process, N executor threads.
    Smol {
        /// Shards.
        shards: u16,
    },
}

impl Frontend {
    /// Returns how many workers or shards the server runs.
    pub fn shards(self) -> u16 {
        match self {
            Frontend::Mio { workers } => workers,
            Frontend::Smol { shards } => shards,
        }
    }

    /// Returns the binary that serves this frontend.
    pub fn binary(self) -> Binary {
        match self {
            Frontend::Mio { .. } => Binary::Mio,
            Frontend::Smol { .. } => Binary::Smol,
        }
    }
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frontend::Mio { workers } => write!(f, "chat-mio with {workers} workers"),
            Frontend::Smol { shards } => write!(f, "chat-smol with {shards} shards"),
        }
    }
}

/// A private directory under the system's temp dir, removed on drop.
///
/// Paths stay short: a Unix socket path must fit in 108 bytes.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory; panics if it cannot.
    pub fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("chat-tests-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        if let Err(e) = fs::create_dir_all(&path) {
            panic!("cannot create {}: {e}", path.display());
        }
        TempDir(path)
    }

    /// Returns the directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The result of a control command such as `chat-mio status`.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// The exit code (`None` if it died of a signal).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Launch {
    frontend: Frontend,
    args: Vec<String>,
    daemon: bool,
    default_tick: bool,
    nofile: Option<u64>,
}

impl Launch {
    /// Adds flags, e.g. `["--max-line", "10"]`.
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Launch {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Leaves `--tick` at the frontend's default instead of passing `--tick 0`.
    pub fn default_tick(mut self) -> Launch {
        self.default_tick = true;
        self
    }

    /// Starts the server with `RLIMIT_NOFILE` set to `n`, soft and hard, so that
    /// it cannot raise it: every process it forks inherits the limit.
    pub fn max_open_files(mut self, n: u64) -> Launch {
        self.nofile = Some(n);
        self
    }

    /// Starts chat-mio with `start -d` (a daemon) instead of in the foreground.
    pub fn daemon(mut self) -> Launch {
        assert!(matches!(self.frontend, Frontend::Mio { .. }), "only chat-mio daemonizes");
        self.daemon = true;
        self
    }

    /// Starts the server and waits until it listens; panics with its output if it cannot.
    pub fn start(self) -> Server {
        Server::launch(self, TempDir::new())
    }

    /// Starts the server with its files in `dir` (so a test can start a second
    /// server on the same pid file).
    pub fn start_in(self, dir: TempDir) -> Server {
        Server::launch(self, dir)
    }
}

/// Lines a process printed, collected by reader threads.
#[derive(Debug, Clone, Default)]
struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    fn text(&self) -> String {
        self.0.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// A running server; dropping it stops every process it started.
#[derive(Debug)]
pub struct Server {
    frontend: Frontend,
    addr: SocketAddr,
    /// The process we spawned and must reap (absent for a daemon, which detached).
    child: Option<Child>,
    /// The process that owns the server: chat-smol, or chat-mio's master.
    main: Pid,
    /// Every process seen under `main`, so that cleanup can reach orphans.
    known: Vec<Process>,
    output: Transcript,
    dir: TempDir,
}

impl Server {
    /// Prepares to start `frontend` with `--tick 0` unless the test passes `--tick`.
    pub fn build(frontend: Frontend) -> Launch {
        Launch { frontend, args: Vec::new(), daemon: false, default_tick: false, nofile: None }
    }

    /// Starts `frontend` with the default flags (and `--tick 0`).
    pub fn start(frontend: Frontend) -> Server {
        Server::build(frontend).start()
    }

    /// Starts `frontend` with extra flags (and `--tick 0` unless given).
    pub fn start_with(frontend: Frontend, args: &[&str]) -> Server {
        Server::build(frontend).args(args).start()
    }

    fn launch(launch: Launch, dir: TempDir) -> Server {
        let binary = launch.frontend.binary().path();
        let mut command = Command::new(binary);
        match launch.frontend {
            Frontend::Mio { workers } => {
                command.arg("start");
                if launch.daemon {
                    command.arg("-d");
                }
                command
                    .arg("--workers")
                    .arg(workers.to_string())
                    .arg("--pid-file")
                    .arg(dir.path().join("chat-mio.pid"))
                    .arg("--log-file")
                    .arg(dir.path().join("chat-mio.log"));
            }
            Frontend::Smol { shards } => {
                command.arg("--shards").arg(shards.to_string());
            }
        }
        command.arg("--listen").arg("127.0.0.1:0");
        if !launch.default_tick && !launch.args.iter().any(|a| a == "--tick" || a.starts_with("--tick=")) {
            command.arg("--tick").arg("0");
        }
        command.args(&launch.args);
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        stop_with_parent(&mut command);
        if let Some(n) = launch.nofile {
            limit_open_files(&mut command, n);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot start {}: {e}", binary.display()),
        };
        let output = Transcript::default();
        let (lines_tx, lines_rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            pump(stdout, output.clone(), lines_tx.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            pump(stderr, output.clone(), lines_tx);
        }
        let pid = Pid(child.id() as i32);
        let mut server = Server {
            frontend: launch.frontend,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: Some(child),
            main: pid,
            known: Process::of(pid).into_iter().collect(),
            output,
            dir,
        };
        let deadline = Instant::now() + STARTUP;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(addr) = listening_addr(&line) {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) if launch.daemon => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{} exited before it listened:\n{}", launch.frontend, server.output.text())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} printed no listening address within {STARTUP:?}:\n{}",
                    launch.frontend,
                    server.output.text()
                );
            }
        };
        server.addr = addr;
        if launch.daemon {
            // `start -d` returns once the daemon is up; the master's pid is in the pid file.
            let status = server.child.as_mut().and_then(|c| process::wait_child(c, STARTUP));
            server.child = None;
            assert!(
                status.is_some_and(|s| s.success()),
                "chat-mio start -d did not exit 0 within {STARTUP:?}: {status:?}\n{}",
                server.output.text()
            );
            let master = match server.pid_file_pid() {
                Some(pid) => pid,
                None => panic!("chat-mio start -d returned but wrote no pid file"),
            };
            server.main = master;
            server.known = Process::of(master).into_iter().collect();
        }
        server.note_processes();
        server
    }

    /// Returns the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the frontend.
    pub fn frontend(&self) -> Frontend {
        self.frontend
    }

    /// Connects a new client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Connects a client and waits until it is admitted; learns its id from
    /// `/who` (so no other client may connect meanwhile). Clients connected
    /// earlier receive `Client #N is connected`: see [`Server::crowd`].
    pub fn join(&self) -> Client {
        let mut client = self.connect();
        let (id, before) = client.who_am_i();
        assert!(before.is_empty(), "{}: unexpected lines before /who: {before:?}", client.label());
        client.set_id(id);
        client
    }

    /// Joins `n` clients one after the other and consumes the `is connected`
    /// lines that each one's arrival sends to those before it.
    pub fn crowd(&self, n: usize) -> Vec<Client> {
        let mut clients: Vec<Client> = Vec::with_capacity(n);
        for i in 0..n {
            let client = self.join().named(&format!("client {i}"));
            clients.push(client);
        }
        let ids: Vec<u64> = clients.iter().map(Client::id).collect();
        for (i, client) in clients.iter_mut().enumerate() {
            for id in &ids[i + 1..] {
                client.expect(&format!("Client #{id} is connected"));
            }
        }
        clients
    }

    /// Returns the server's private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns chat-mio's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("chat-mio.pid")
    }

    /// Returns chat-mio's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("chat-mio.log")
    }

    /// Returns the pid written in the pid file, if any.
    pub fn pid_file_pid(&self) -> Option<Pid> {
        let text = fs::read_to_string(self.pid_file()).ok()?;
        text.trim().parse().ok().map(Pid)
    }

    /// Returns the main process: chat-smol, or chat-mio's master.
    pub fn main_pid(&self) -> Pid {
        self.main
    }

    /// Returns the live processes under the main one (chat-mio's workers).
    pub fn workers(&mut self) -> Vec<Pid> {
        self.note_processes();
        process::children(self.main)
    }

    /// Returns every process of the server seen so far that still runs.
    pub fn live_processes(&mut self) -> Vec<Pid> {
        self.note_processes();
        self.known.iter().filter(|p| p.alive()).map(|p| p.pid).collect()
    }

    /// Remembers the current descendants, so cleanup reaches them even as orphans.
    fn note_processes(&mut self) {
        for pid in process::descendants(self.main) {
            if let Some(found) = Process::of(pid).filter(|p| !self.known.contains(p)) {
                self.known.push(found);
            }
        }
    }

    /// Returns what the server printed so far (foreground only) and its log file.
    pub fn output(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        format!("{}\n{log}", self.output.text())
    }

    /// Runs `chat-mio ARGS --pid-file P` and returns its result; panics if it
    /// runs for longer than [`STARTUP`].
    pub fn ctl(&self, args: &[&str]) -> CtlOutput {
        let mut command = Command::new(Binary::Mio.path());
        command.args(args).arg("--pid-file").arg(self.pid_file());
        run_bounded(command)
    }

    /// Starts `chat-mio ARGS --pid-file P` without waiting for it, for commands
    /// that wait (`stop -g`); the caller waits with [`crate::process::wait_child`].
    pub fn ctl_spawn(&self, args: &[&str]) -> Child {
        let mut command = Command::new(Binary::Mio.path());
        command.args(args).arg("--pid-file").arg(self.pid_file());
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot run {command:?}: {e}"),
        }
    }

    /// Follows a `chat-mio restart -d`: takes the new master from the pid file
    /// and the new address from the restart's output, so cleanup reaches the
    /// new processes. Panics if either is missing.
    pub fn adopt_restarted(&mut self, restart: &CtlOutput) {
        self.note_processes();
        let Some(master) = self.pid_file_pid() else { panic!("no pid file after restart: {restart:?}") };
        // Restarted by the control command, not spawned by us; adopted first,
        // so that cleanup reaches it even if the checks below fail.
        self.main = master;
        self.child = None;
        self.known.extend(Process::of(master));
        self.note_processes();
        let addr = restart.stdout.lines().chain(restart.stderr.lines()).find_map(listening_addr);
        let Some(addr) = addr else { panic!("restart printed no address: {restart:?}") };
        self.addr = addr;
    }

    /// Sends `signal` to the main process.
    pub fn signal(&self, signal: i32) {
        process::signal(self.main, signal);
    }

    /// Stops the server as an operator would (chat-smol: SIGTERM; chat-mio:
    /// `chat-mio stop`), waits for the main process to exit, and returns its
    /// exit status when it was our child.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.note_processes();
        match self.frontend {
            Frontend::Smol { .. } => self.signal(libc::SIGTERM),
            Frontend::Mio { .. } => {
                let out = self.ctl(&["stop"]);
                assert_eq!(out.code, Some(0), "chat-mio stop failed: {out:?}\n{}", self.output());
            }
        }
        self.wait_exit()
    }

    /// Waits up to [`STARTUP`] for the main process to exit; returns its exit
    /// status when it was our child. Panics if it does not exit.
    pub fn wait_exit(&mut self) -> Option<ExitStatus> {
        match self.child.as_mut() {
            Some(child) => {
                let status = process::wait_child(child, STARTUP);
                assert!(status.is_some(), "{} did not exit within {STARTUP:?}", self.frontend);
                status
            }
            None => {
                assert!(
                    process::wait_gone(self.main, STARTUP),
                    "{} (pid {}) did not exit within {STARTUP:?}",
                    self.frontend,
                    self.main
                );
                None
            }
        }
    }

    /// Kills every process of the server now, master last, and reaps it.
    fn cleanup(&mut self) {
        self.note_processes();
        let main = self.known.iter().copied().find(|p| p.pid == self.main);
        let mut forced = Vec::new();
        if main.is_some_and(Process::alive) {
            // The master stops its workers itself; give it the chance first.
            forced = process::terminate(&[self.main], GRACE);
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Only the very processes seen, never a stranger that reused a pid.
        let workers: Vec<Pid> =
            self.known.iter().filter(|p| p.pid != self.main && p.alive()).map(|p| p.pid).collect();
        let stragglers = process::kill_stragglers(&workers, GRACE);
        let problem = match (forced.is_empty(), stragglers.is_empty()) {
            (true, true) => return,
            (false, _) => format!("{} ignored SIGTERM for {GRACE:?} and was killed", self.main),
            (true, false) => {
                format!("workers {stragglers:?} outlived their master by {GRACE:?} and were killed")
            }
        };
        // A failing test is already unwinding: say it, but do not panic twice.
        if std::thread::panicking() {
            eprintln!("{}: {problem}", self.frontend);
        } else {
            panic!("{}: {problem}\n{}", self.frontend, self.output());
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Asks the kernel to send SIGTERM to the server if the test process dies
/// (killed by a timeout, say) before it could clean up.
///
/// The signal comes when the thread that started the server exits; a test
/// drops its servers before its thread ends, so it only fires when the test
/// process is gone. A daemon escapes it by design: it leaves the process group.
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe, touching no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets `RLIMIT_NOFILE` to `n`, soft and hard, in the child before it execs.
fn limit_open_files(command: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setrlimit(2), which is async-signal-safe, on a value on its own stack.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: n as libc::rlim_t, rlim_max: n as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `command` to completion within [`STARTUP`], capturing its output.
pub fn run_bounded(mut command: Command) -> CtlOutput {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => panic!("cannot run {command:?}: {e}"),
    };
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = process::wait_child(&mut child, STARTUP);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not finish within {STARTUP:?}");
    }
    let join = |h: Option<thread::JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    CtlOutput { code: status.and_then(|s| s.code()), stdout: join(stdout), stderr: join(stderr) }
}

/// Reads a pipe to its end on a thread.
///
/// A daemon might keep the pipe open; the thread then outlives the wait, which
/// costs nothing but the thread.
fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Copies a pipe's lines into `transcript` and `lines` until it closes, so the
/// server never blocks on a full pipe.
fn pump(pipe: impl Read + Send + 'static, transcript: Transcript, lines: mpsc::Sender<String>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            transcript.push(line.clone());
            let _ = lines.send(line);
        }
    });
}

/// Finds `listening on 127.0.0.1:PORT` with a non-zero port in a line the
/// server printed. Only that phrase counts: chat-mio's master logs its address
/// when it starts its workers, before they are ready to serve.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    const HOST: &str = "listening on 127.0.0.1:";
    let mut rest = line;
    while let Some(at) = rest.find(HOST) {
        let after = &rest[at + HOST.len()..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(port) = digits.parse::<u16>() {
            if port != 0 {
                return Some(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_real_port() {
        assert_eq!(listening_addr("chat-smol listening on 127.0.0.1:0"), None);
        assert_eq!(
            listening_addr("chat-smol listening on 127.0.0.1:4567"),
            Some("127.0.0.1:4567".parse().unwrap())
        );
        assert_eq!(
            listening_addr("asked 127.0.0.1:0, listening on 127.0.0.1:80."),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(listening_addr("nothing here"), None);
        assert_eq!(listening_addr("master pid 7 starting 2 workers on 127.0.0.1:4567"), None);
    }
}
