//! The control socket: a Unix socket beside the pid file, mode 0600, over which
//! `status`, `connections` and `reload` ask the master for live data.
//!
//! A client writes one request line and reads the master's text answer up to
//! EOF. Requests: `status`, `connections`, `reload`, `reload -g`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use nix::sys::stat::Mode;

/// Longest request line a client may send; anything longer is not a client.
const MAX_REQUEST: usize = 256;

/// A control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// The master and every worker.
    Status,
    /// Every connection of every worker.
    Connections,
    /// Replace every worker; `true` lets old workers finish their clients.
    Reload(bool),
}

impl Request {
    /// Parses a request line.
    pub fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "status" => Some(Request::Status),
            "connections" => Some(Request::Connections),
            "reload" => Some(Request::Reload(false)),
            "reload -g" => Some(Request::Reload(true)),
            _ => None,
        }
    }

    /// Returns the request line.
    pub fn line(self) -> &'static str {
        match self {
            Request::Status => "status\n",
            Request::Connections => "connections\n",
            Request::Reload(false) => "reload\n",
            Request::Reload(true) => "reload -g\n",
        }
    }
}

/// The master's listening control socket.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlListener {
    /// Binds the socket at `path` (replacing a stale one: the caller holds the pid
    /// file lock, so no live master owns it) with mode 0600.
    pub fn bind(path: &Path) -> io::Result<ControlListener> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The umask makes the socket private from its creation on, not only
        // after the chmod below.
        let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        Ok(ControlListener { listener, path: path.to_path_buf() })
    }

    /// Returns the listener, to register with a `Poll` and accept from.
    pub fn listener_mut(&mut self) -> &mut UnixListener {
        &mut self.listener
    }

    /// Removes the socket file.
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// One control client being served by the master.
pub struct ControlConn {
    /// The client's socket.
    pub stream: UnixStream,
    inbound: Vec<u8>,
    outbound: Vec<u8>,
    written: usize,
    /// Whether a request was read (further input is ignored).
    pub answered: bool,
    /// When the client connected; one that sends no request soon is dropped.
    pub since: std::time::Instant,
}

/// What reading a control client produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlInput {
    /// Nothing complete yet.
    Pending,
    /// A request line.
    Request(Option<Request>),
    /// The client went away or misbehaved: drop it.
    Gone,
}

impl ControlConn {
    /// Wraps an accepted client.
    pub fn new(stream: UnixStream) -> ControlConn {
        ControlConn {
            stream,
            inbound: Vec::new(),
            outbound: Vec::new(),
            written: 0,
            answered: false,
            since: std::time::Instant::now(),
        }
    }

    /// Reads the request line if it is complete.
    pub fn read(&mut self) -> ControlInput {
        let mut chunk = [0u8; 256];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.inbound.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ControlInput::Gone,
            }
        }
        if self.answered {
            return ControlInput::Pending;
        }
        if let Some(end) = self.inbound.iter().position(|&b| b == b'\n') {
            self.answered = true;
            let line = String::from_utf8_lossy(&self.inbound[..end]).into_owned();
            return ControlInput::Request(Request::parse(&line));
        }
        if self.inbound.len() > MAX_REQUEST {
            return ControlInput::Gone;
        }
        ControlInput::Pending
    }

    /// Queues the answer and writes what the socket takes.
    pub fn answer(&mut self, text: &str) -> io::Result<()> {
        self.outbound.extend_from_slice(text.as_bytes());
        self.flush()
    }

    /// Writes queued answer bytes; returns `Ok` with bytes possibly left.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.written < self.outbound.len() {
            match self.stream.write(&self.outbound[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Tells whether an answer was queued and fully written.
    pub fn done(&self) -> bool {
        !self.outbound.is_empty() && self.written == self.outbound.len()
    }
}

/// Sends `request` to the master behind `path` and returns its answer.
pub fn ask(path: &Path, request: Request, timeout: Duration) -> io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request.line().as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the master closed the control socket without an answer",
        ));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        for request in [Request::Status, Request::Connections, Request::Reload(false), Request::Reload(true)]
        {
            assert_eq!(Request::parse(request.line()), Some(request));
        }
        assert_eq!(Request::parse("stop"), None);
    }

    #[test]
    fn the_socket_is_private() {
        let dir = std::env::temp_dir().join(format!("chat-mio-ctl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.sock");
        let control = ControlListener::bind(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        control.remove();
        let _ = fs::remove_dir_all(&dir);
    }
}
