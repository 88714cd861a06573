//! A few end-to-end checks of the `chat-smol` binary itself: the startup line,
//! a chat across shards, the stop on SIGTERM, and refusals at startup. The
//! protocol suite proper lives in the workspace's black-box harness.

// A failed setup step should fail the test loudly, helpers included.
#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chat-smol");

/// A running server, killed if a test fails before it stops.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--tick", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat-smol");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("startup line");
        let port = line
            .strip_prefix("chat-smol listening on 127.0.0.1:")
            .and_then(|rest| rest.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        Server { child, port }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        stream
    }

    fn terminate(&mut self) -> ExitStatus {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "chat-smol did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until `want` has arrived (or fails after the read timeout).
fn expect(stream: &mut TcpStream, want: &str) -> String {
    expect_times(stream, want, 1)
}

/// Reads until `want` has arrived `times` times.
fn expect_times(stream: &mut TcpStream, want: &str, times: usize) -> String {
    let mut seen = Vec::new();
    let mut buf = [0; 64 * 1024];
    while String::from_utf8_lossy(&seen).matches(want).count() < times {
        let tail = || String::from_utf8_lossy(&seen[seen.len().saturating_sub(200)..]).into_owned();
        match stream.read(&mut buf) {
            Ok(0) => panic!("EOF before {want:?} x{times}; got ...{:?}", tail()),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{e} before {want:?} x{times}; got ...{:?}", tail()),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Reads everything up to EOF.
fn rest(stream: &mut TcpStream) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read to EOF");
    text
}

#[test]
fn chats_across_shards_and_stops_on_sigterm() {
    let mut server = Server::start(&["--shards", "2"]);
    let mut alice = server.connect();
    let mut bob = server.connect();
    expect(&mut alice, "is connected\n");
    bob.write_all(b"/nick bob\r\n").expect("write");
    expect(&mut bob, "* You are now bob\n");
    expect(&mut alice, " is now bob\n");
    alice.write_all(b"hi bob\n/who\n").expect("write");
    let said = expect(&mut alice, " in lobby\n");
    assert!(said.contains("You: hi bob\n"), "{said:?}");
    assert!(said.contains("* bob (#"), "{said:?}");
    expect(&mut bob, ": hi bob\n");

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(rest(&mut alice).ends_with("* server shutting down\n"));
    assert!(rest(&mut bob).ends_with("* server shutting down\n"));
}

#[test]
fn flushes_queued_output_before_closing() {
    let mut server = Server::start(&["--shards", "1", "--max-queue", "16MiB"]);
    let mut talker = server.connect();
    let mut reader = server.connect();
    expect(&mut talker, "is connected\n");
    let line = format!("{}\n", "x".repeat(1000));
    for _ in 0..2000 {
        talker.write_all(line.as_bytes()).expect("write");
    }
    expect_times(&mut talker, "You: ", 2000);
    // The reader has not read a byte yet: most of its 2 MB is still queued
    // when the stop comes, and must all arrive before the goodbye.
    let reading = std::thread::spawn(move || rest(&mut reader));
    assert!(server.terminate().success());
    let text = reading.join().expect("reader");
    assert_eq!(text.matches("x\n").count(), 2000);
    assert!(text.ends_with("* server shutting down\n"));
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run chat-smol")
}

#[test]
fn refuses_bad_flags_with_one_line() {
    for args in [&["--shards", "0"][..], &["--max-queue", "1MB"], &["--bogus"]] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn refuses_an_address_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = run(&["--listen", &address]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen on") && stderr.contains(&address), "{stderr:?}");
    assert!(output.stdout.is_empty());
}
