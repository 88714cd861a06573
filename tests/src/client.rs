//! A chat client as a telnet user would be: a TCP connection, bytes out, lines in.
//!
//! Every wait is bounded by [`WAIT`]; a test that waits longer fails with what
//! the client had received so far. To prove that something did *not* arrive, a
//! test synchronises on the server ([`Client::sync`], [`Client::quiet_sync`]):
//! what the server says in reply to a later line comes after everything that
//! took effect before it, so nothing is ever proved by sleeping.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The longest a client waits for one thing before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The longest a client waits for a line while other lines keep coming.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// Numbers the markers of [`Client::sync`] so that each is unique.
static MARKERS: AtomicU64 = AtomicU64::new(1);

/// What a read found.
enum Got {
    Data,
    Eof,
    Timeout,
}

/// What [`Client::next_line_within`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A line, without its `\n`.
    Line(String),
    /// The server closed the connection.
    Closed,
    /// Nothing within the time given.
    Timeout,
}

/// One TCP connection to the server under test.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// Received and not yet consumed.
    buf: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset).
    closed: bool,
    /// Everything consumed so far, for failure messages.
    seen: Vec<u8>,
    label: String,
    /// The client's id, once a test learned it.
    id: Option<u64>,
}

impl Client {
    /// Connects to `addr`; panics if the connection is refused.
    pub fn connect(addr: SocketAddr) -> Client {
        match Client::try_connect(addr) {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }

    /// Connects to `addr`.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?;
        let label = match stream.local_addr() {
            Ok(local) => format!("client from port {}", local.port()),
            Err(_) => "client".to_owned(),
        };
        Ok(Client { stream, buf: Vec::new(), closed: false, seen: Vec::new(), label, id: None })
    }

    /// Connects to `addr` with a receive buffer of `bytes` (`SO_RCVBUF`, set
    /// before the connection so that the window stays small), for a reader
    /// that falls behind.
    pub fn connect_with_receive_buffer(addr: SocketAddr, bytes: usize) -> std::io::Result<Client> {
        use std::os::fd::FromRawFd;
        let SocketAddr::V4(v4) = addr else {
            return Err(std::io::Error::new(ErrorKind::Unsupported, "IPv4 only"));
        };
        // SAFETY: socket(2) has no memory effects; the descriptor is owned by
        // the TcpStream below (or closed here on error).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket that nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: setsockopt reads `size` and connect reads `sin`, each for the
        // size given; the fd is open.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let rc = unsafe {
            libc::connect(
                fd,
                std::ptr::from_ref(&sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_nodelay(true)?;
        let label = match stream.local_addr() {
            Ok(local) => format!("slow client from port {}", local.port()),
            Err(_) => "slow client".to_owned(),
        };
        Ok(Client { stream, buf: Vec::new(), closed: false, seen: Vec::new(), label, id: None })
    }

    /// Names the client in failure messages.
    pub fn named(mut self, label: &str) -> Client {
        self.label = match self.id {
            Some(id) => format!("{label} (#{id})"),
            None => label.to_owned(),
        };
        self
    }

    /// Returns the client's id; panics if the test never learned it.
    pub fn id(&self) -> u64 {
        match self.id {
            Some(id) => id,
            None => panic!("{}: the test never learned this client's id", self.label),
        }
    }

    /// Records the client's id, as learned from the server.
    pub fn set_id(&mut self, id: u64) {
        self.id = Some(id);
        self.label = format!("{} (#{id})", self.label);
    }

    /// Returns how others see the client before it takes a nick: `Client #7`.
    pub fn name(&self) -> String {
        format!("Client #{}", self.id())
    }

    /// Asks `/who` and returns the id of the last person listed, which is this
    /// client when nobody connected after it; returns the lines that came before
    /// the reply too.
    pub fn who_am_i(&mut self) -> (u64, Vec<String>) {
        self.say("/who");
        let mut lines = self.lines_until_match(is_who_total);
        let total = lines.pop().unwrap_or_default();
        let count: usize = total[2..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        if count == 0 || count > lines.len() {
            panic!("{}: /who says {total:?} after {lines:?}", self.label);
        }
        let entries = lines.split_off(lines.len() - count);
        let last = entries.last().map(String::as_str).unwrap_or_default();
        match parse_who_entry(last) {
            Some(id) if entries.iter().all(|e| parse_who_entry(e).is_some()) => (id, lines),
            _ => panic!("{}: not /who entries: {entries:?}", self.label),
        }
    }

    /// Returns the client's name in failure messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Returns the local port, which `connections` shows as the peer address.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends `bytes` in one write; panics if the connection is broken.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        if let Err(e) = self.stream.write_all(bytes.as_ref()) {
            panic!("{}: send failed: {e}", self.label);
        }
    }

    /// Sends `bytes`, reporting a broken connection instead of panicking.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref())
    }

    /// Sends `text` and a `\n`.
    pub fn say(&mut self, text: &str) {
        self.send(format!("{text}\n"));
    }

    /// Sends `bytes` in several writes with a pause between them, so that the
    /// server very likely reads them apart (correctness never depends on it).
    pub fn send_split(&mut self, bytes: &[u8], pieces: &[usize]) {
        let mut at = 0;
        for &len in pieces {
            let end = (at + len).min(bytes.len());
            self.send(&bytes[at..end]);
            at = end;
            std::thread::sleep(Duration::from_millis(15));
        }
        if at < bytes.len() {
            self.send(&bytes[at..]);
        }
    }

    /// Half-closes the connection: the server sees EOF, and we can still read.
    pub fn shutdown_write(&mut self) {
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            panic!("{}: shutdown failed: {e}", self.label);
        }
    }

    /// Closes the connection with a reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt reads `linger` for the given size; the fd is open.
        let rc = unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}: SO_LINGER failed: {}", self.label, std::io::Error::last_os_error());
        drop(self);
    }

    /// Reads once into the buffer, waiting until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Got {
        if self.closed {
            return Got::Eof;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Got::Timeout;
        }
        if let Err(e) = self.stream.set_read_timeout(Some(left)) {
            panic!("{}: set_read_timeout: {e}", self.label);
        }
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.closed = true;
                Got::Eof
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Got::Data
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Got::Timeout,
            Err(e) if e.kind() == ErrorKind::Interrupted => Got::Data,
            Err(_) => {
                // A reset ends the stream as an EOF would for what the test can see.
                self.closed = true;
                Got::Eof
            }
        }
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let taken: Vec<u8> = self.buf.drain(..n).collect();
        self.seen.extend_from_slice(&taken);
        taken
    }

    fn context(&self) -> String {
        format!("{}: consumed so far {:?}; pending {:?}", self.label, tail(&self.seen), head(&self.buf))
    }

    /// Reads raw bytes up to and including `needle`; panics after [`WAIT`] or at EOF.
    pub fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        let mut from = 0;
        loop {
            if let Some(at) = find(&self.buf[from..], needle) {
                return self.consume(from + at + needle.len());
            }
            from = self.buf.len().saturating_sub(needle.len().saturating_sub(1));
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof => panic!(
                    "{}: connection closed while waiting for {:?}; {}",
                    self.label,
                    String::from_utf8_lossy(needle),
                    self.context()
                ),
                Got::Timeout => panic!(
                    "{}: nothing like {:?} within {WAIT:?}; {}",
                    self.label,
                    String::from_utf8_lossy(needle),
                    self.context()
                ),
            }
        }
    }

    /// Reads exactly `n` raw bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < n {
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof | Got::Timeout => {
                    panic!("{}: wanted {n} bytes; {}", self.label, self.context())
                }
            }
        }
        self.consume(n)
    }

    /// Returns the next line without its `\n`, as bytes; `None` at EOF.
    pub fn try_line_bytes(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line = self.consume(at + 1);
                line.pop();
                return Some(line);
            }
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof => {
                    assert!(
                        self.buf.is_empty(),
                        "{}: the stream ended inside a line: every line ends with \\n; {}",
                        self.label,
                        self.context()
                    );
                    return None;
                }
                Got::Timeout => panic!("{}: no line within {WAIT:?}; {}", self.label, self.context()),
            }
        }
    }

    /// Returns the next line without its `\n`; `None` at EOF. Panics if the
    /// server sent invalid UTF-8 (it must sanitise everything it sends).
    pub fn try_line(&mut self) -> Option<String> {
        let bytes = self.try_line_bytes()?;
        match String::from_utf8(bytes) {
            Ok(line) => Some(line),
            Err(e) => panic!("{}: the server sent invalid UTF-8 {:?}", self.label, e.as_bytes()),
        }
    }

    /// Returns the next line if one comes within `within`; `None` at EOF or
    /// after `within`. Only for pacing: a test never proves an absence with it.
    pub fn try_line_within(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if self.buf.contains(&b'\n') {
                return self.try_line();
            }
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof | Got::Timeout => return None,
            }
        }
    }

    /// Returns the next line without its `\n`; panics at EOF.
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Some(line) => line,
            None => panic!("{}: connection closed while waiting for a line; {}", self.label, self.context()),
        }
    }

    /// Asserts that the next line is `expected`.
    pub fn expect(&mut self, expected: &str) {
        let line = self.line();
        assert_eq!(line, expected, "{}: unexpected line; {}", self.label, self.context());
    }

    /// Asserts that the next lines are `expected`, in order.
    pub fn expect_lines(&mut self, expected: &[&str]) {
        for line in expected {
            self.expect(line);
        }
    }

    /// Returns the lines up to and including `last`.
    pub fn lines_until(&mut self, last: &str) -> Vec<String> {
        self.lines_until_match(|line| line == last)
    }

    /// Returns the lines up to and including the first one that `last` accepts.
    ///
    /// Bounded: each line must come within [`WAIT`], and a server that keeps
    /// talking without ever sending it fails after [`LONG_WAIT`] or a million lines.
    pub fn lines_until_match(&mut self, mut last: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + LONG_WAIT;
        let mut lines = Vec::new();
        for _ in 0..1_000_000 {
            let line = self.line();
            let done = last(&line);
            lines.push(line);
            if done {
                return lines;
            }
            if Instant::now() > deadline {
                break;
            }
        }
        panic!(
            "{}: {} lines in {LONG_WAIT:?} without the one awaited; {}",
            self.label,
            lines.len(),
            self.context()
        );
    }

    /// Sends a unique plain line and returns everything received before its
    /// `You:` echo. Others in the room see the marker as `… : sync-N`.
    pub fn sync(&mut self) -> Vec<String> {
        let marker = marker();
        self.say(&marker);
        let mut lines = self.lines_until(&format!("You: {marker}"));
        lines.pop();
        lines
    }

    /// Like [`Client::sync`] with a marker that nobody else sees: sends
    /// `/rooms` and returns everything received before its reply.
    pub fn quiet_sync(&mut self) -> Vec<String> {
        self.say("/rooms");
        let mut lines = self.lines_until_match(is_rooms_total);
        // The reply is `* lobby: N`, the other rooms, then `* N rooms`.
        match lines.iter().rposition(|l| l.starts_with("* lobby: ")) {
            Some(at) => lines.truncate(at),
            None => panic!("{}: /rooms did not list the lobby: {lines:?}", self.label),
        }
        lines
    }

    /// Asserts that nothing arrived before a [`Client::quiet_sync`].
    pub fn expect_nothing(&mut self) {
        let lines = self.quiet_sync();
        assert!(lines.is_empty(), "{}: expected nothing, got {lines:?}", self.label);
    }

    /// Reads to the end of the stream and returns the rest; panics if it stays
    /// open for [`WAIT`].
    pub fn expect_closed(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.fill(deadline) {
                Got::Data => {}
                Got::Eof => {
                    let n = self.buf.len();
                    return self.consume(n);
                }
                Got::Timeout => {
                    panic!("{}: still open after {WAIT:?}; {}", self.label, self.context())
                }
            }
        }
    }

    /// Reads to the end of the stream and asserts that the rest is `lines`.
    pub fn expect_closed_after(&mut self, lines: &[&str]) {
        let rest = self.expect_closed();
        let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            expected,
            "{}: the last bytes before the close; {}",
            self.label,
            self.context()
        );
    }

    /// Returns the next line if one comes within `within`, telling a timeout
    /// from the end of the stream. Only for pacing, as [`Client::try_line_within`].
    pub fn next_line_within(&mut self, within: Duration) -> Next {
        match self.try_line_within(within) {
            Some(line) => Next::Line(line),
            None if self.closed => Next::Closed,
            None => Next::Timeout,
        }
    }

    /// Tells whether the server has closed the connection, waiting up to `within`
    /// while discarding whatever arrives.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline) {
                Got::Data => {
                    let n = self.buf.len();
                    self.consume(n);
                }
                Got::Eof => return true,
                Got::Timeout => return false,
            }
        }
    }
}

/// Returns a fresh marker text.
pub fn marker() -> String {
    format!("sync-{}", MARKERS.fetch_add(1, Ordering::Relaxed))
}

/// Tells whether `line` is the last line of a `/rooms` reply, `* N rooms`.
pub fn is_rooms_total(line: &str) -> bool {
    line.strip_prefix("* ")
        .and_then(|l| l.strip_suffix(" rooms"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Tells whether `line` is the last line of a `/who` reply, `* N in ROOM`.
pub fn is_who_total(line: &str) -> bool {
    line.strip_prefix("* ").and_then(|l| l.split_once(" in ")).is_some_and(|(n, room)| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !room.is_empty() && !room.contains(' ')
    })
}

/// Parses a `/who` entry, `* Client #7` or `* alice (#7)`, into the id.
pub fn parse_who_entry(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("* ")?;
    if let Some(id) = rest.strip_prefix("Client #") {
        return id.parse().ok();
    }
    let (_, id) = rest.rsplit_once(" (#")?;
    id.strip_suffix(')')?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn head(bytes: &[u8]) -> String {
    let end = bytes.len().min(2000);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(2000);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
