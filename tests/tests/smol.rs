//! chat-smol as a foreground process: SIGTERM and SIGINT stop it cleanly.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chat_tests::{process, Frontend, Server};

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

#[test]
fn server_time_comes_every_5_seconds_by_default() {
    chat_tests::time::check_default_tick(Frontend::Smol { shards: 2 });
}
