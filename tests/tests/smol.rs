//! chat-smol as a foreground process: SIGTERM and SIGINT stop it cleanly, and
//! a second one stops it at once.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chat_tests::{process, Client, Frontend, Server, WAIT};

fn stops_cleanly_on(signal: i32) {
    let mut server = Server::start(Frontend::Smol { shards: 4 });
    let mut clients = server.crowd(6);
    let names: Vec<String> = clients.iter().map(|c| c.name()).collect();
    let text: String = (0..300).map(|i| format!("last {i}\n")).collect();
    clients[0].send(text.as_bytes());
    for i in 0..300 {
        clients[0].expect(&format!("You: last {i}"));
    }
    // The others have read none of it: it is queued in the server or in flight.
    server.signal(signal);
    let status = server.wait_exit().expect("chat-smol is our child");
    assert!(status.success(), "chat-smol exited with {status}");
    clients[0].expect_closed_after(&["* server shutting down"]);
    let mut expected: Vec<String> = (0..300).map(|i| format!("{}: last {i}", names[0])).collect();
    expected.push("* server shutting down".to_owned());
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    for client in &mut clients[1..] {
        client.expect_closed_after(&expected);
    }
    assert_eq!(process::ps(&[server.main_pid()]), Vec::<String>::new());
}

#[test]
fn sigterm_flushes_the_last_lines_and_exits_0() {
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_flushes_the_last_lines_and_exits_0() {
    stops_cleanly_on(libc::SIGINT);
}

/// A client that reads nothing holds the stop's flush for its whole timeout:
/// a second signal meanwhile ends the process without waiting for it.
#[test]
fn a_second_signal_exits_without_waiting_for_the_flush() {
    let mut server = Server::start_with(Frontend::Smol { shards: 2 }, &["--max-queue", "16MiB"]);
    let mut stalled = Client::connect_with_receive_buffer(server.addr(), 4096).expect("connect");
    stalled.say("/join stalled");
    stalled.lines_until("* You left lobby and joined stalled");
    let mut speaker = server.join();
    speaker.say("/join stalled");
    speaker.lines_until("* You left lobby and joined stalled");
    // More than the kernel holds for one connection (a 4 MiB send buffer at most).
    let pad = "x".repeat(4000);
    for i in 0..2500 {
        speaker.say(&format!("{i} {pad}"));
        speaker.lines_until(&format!("You: {i} {pad}"));
    }
    server.signal(libc::SIGINT);
    let stopping = process::eventually(WAIT, || server.output().contains("SIGINT: stopping").then_some(()));
    assert!(stopping.is_some(), "no stop logged:\n{}", server.output());
    server.signal(libc::SIGINT);
    let status = server.wait_exit().expect("chat-smol is our child");
    assert!(status.success(), "chat-smol exited with {status}");
    assert!(
        server.output().contains("SIGINT again: exiting without waiting for the flush"),
        "the second signal is not logged:\n{}",
        server.output()
    );
    drop(stalled);
}

#[test]
fn server_time_comes_every_5_seconds_by_default() {
    chat_tests::time::check_default_tick(Frontend::Smol { shards: 2 });
}
