//! Every rule of PROTOCOL.md, against every frontend variant.
//!
//! Each case is a `fn(Frontend)`; `frontend_tests!` at the bottom makes one
//! `#[test]` per case and variant. Cases never sleep to prove that something
//! did not happen: they synchronise on a later reply of the server.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chat_tests::{frontend_tests, Client, Frontend, Server};

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const GA: u8 = 249;
const IP: u8 = 244;
const DM: u8 = 242;
const NOP: u8 = 241;
const SE: u8 = 240;
const TM: u8 = 6;

/// Two clients, both admitted, `a` having seen `b` arrive.
fn pair(server: &Server) -> (Client, Client) {
    let mut clients = server.crowd(2);
    let b = clients.pop().expect("two").named("b");
    let a = clients.pop().expect("two").named("a");
    (a, b)
}

// ---------------------------------------------------------------- the demo

fn demo_messages_byte_for_byte(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut a = server.join().named("a");
    let mut b = server.connect().named("b");
    let connected = a.read_until(b"\n");
    let (b_id, before) = b.who_am_i();
    b.set_id(b_id);
    assert!(before.is_empty(), "the newcomer is told nothing: {before:?}");
    assert_eq!(connected, format!("Client #{b_id} is connected\n").into_bytes());
    a.send(b"hi\r\n");
    assert_eq!(a.read_exact(8), b"You: hi\n");
    let relayed = format!("Client #{}: hi\n", a.id());
    assert_eq!(b.read_exact(relayed.len()), relayed.as_bytes());
    drop(b);
    let closed = format!("Client #{b_id} is close\n");
    assert_eq!(a.read_exact(closed.len()), closed.as_bytes());
    assert!(a.quiet_sync().is_empty());
}

fn welcome_is_the_first_line(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--welcome", "Welcome to \x1b[1mthe chat\x07 "]);
    let mut a = server.connect().named("a");
    a.expect("Welcome to [1mthe chat");
    let (a_id, before) = a.who_am_i();
    assert!(before.is_empty(), "{before:?}");
    a.set_id(a_id);
    let mut b = server.connect().named("b");
    b.expect("Welcome to [1mthe chat");
    let (b_id, _) = b.who_am_i();
    a.expect(&format!("Client #{b_id} is connected"));
    assert!(a.quiet_sync().is_empty(), "others never see the welcome");
}

fn a_client_sees_only_what_was_said_while_connected(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut a = server.join().named("a");
    a.say("before b");
    a.expect("You: before b");
    let mut b = server.join().named("b");
    a.expect(&format!("Client #{} is connected", b.id()));
    a.say("with b");
    a.expect("You: with b");
    b.expect(&format!("Client #{}: with b", a.id()));
    b.say("/quit");
    b.expect_closed_after(&[]);
    a.expect(&format!("Client #{} is close", b.id()));
    let mut c = server.join().named("c");
    assert!(c.quiet_sync().is_empty());
    a.expect(&format!("Client #{} is connected", c.id()));
}

// ---------------------------------------------------------------- framing

fn line_ends_lf_crlf_and_cr_nul(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.send(b"one\ntwo\r\nthree\r\0four\r\n");
    a.expect_lines(&["You: one", "You: two", "You: three", "You: four"]);
    let name = a.name();
    for text in ["one", "two", "three", "four"] {
        b.expect(&format!("{name}: {text}"));
    }
    // A CR that is not at the end is a control character, and removed.
    a.send(b"a\rb\r\n");
    a.expect("You: ab");
    b.expect(&format!("{name}: ab"));
}

fn lines_are_trimmed_and_empty_lines_ignored(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.send(b"\r\n   \n\t\n\x07\n\x1b\r\n \x00 \n  hello  world \t\r\n");
    a.expect("You: hello  world");
    b.expect(&format!("{}: hello  world", a.name()));
    // Only ASCII whitespace is trimmed: a no-break space stays.
    a.send("\u{a0}x\u{a0}\n".as_bytes());
    a.expect("You: \u{a0}x\u{a0}");
    b.expect(&format!("{}: \u{a0}x\u{a0}", a.name()));
    assert!(a.quiet_sync().is_empty());
    assert!(b.quiet_sync().is_empty(), "empty lines reach nobody");
}

fn one_line_over_many_writes(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.send_split(b"hel", &[]);
    a.send_split(b"lo wor", &[]);
    a.send_split(b"ld\r", &[]);
    a.send_split(b"\nx\r", &[]);
    a.send_split(b"\0y\r", &[]);
    a.send(b"\n");
    a.expect_lines(&["You: hello world", "You: x", "You: y"]);
    let name = a.name();
    b.expect_lines(&[&format!("{name}: hello world"), &format!("{name}: x"), &format!("{name}: y")]);
}

fn many_lines_in_one_write(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let text: String = (0..300).map(|i| format!("line {i}\r\n")).collect();
    a.send(text.as_bytes());
    let name = a.name();
    for i in 0..300 {
        a.expect(&format!("You: line {i}"));
    }
    for i in 0..300 {
        b.expect(&format!("{name}: line {i}"));
    }
}

fn eof_counts_the_partial_line(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.send(b"first\npartial");
    b.shutdown_write();
    b.expect_closed_after(&["You: first", "You: partial"]);
    let name = b.name();
    a.expect_lines(&[&format!("{name}: first"), &format!("{name}: partial"), &format!("{name} is close")]);
}

fn reset_drops_the_partial_line(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.say("whole");
    b.expect("You: whole");
    b.send(b"partial");
    let name = b.name();
    b.reset();
    a.expect_lines(&[&format!("{name}: whole"), &format!("{name} is close")]);
    assert!(a.quiet_sync().is_empty());
}

// ---------------------------------------------------------------- telnet

fn telnet_requests_refused_once_per_option_and_direction(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    // What Linux telnet says first, plus repeats and answers that need none.
    b.send([
        IAC, DO, 1, IAC, WILL, 1, IAC, DO, 1, IAC, WILL, 1, IAC, WILL, 24, IAC, WILL, 31, IAC, DO, 3, IAC,
        WONT, 5, IAC, DONT, 5, IAC, DO, 3,
    ]);
    b.send(b"hello\r\n");
    let got = b.read_until(b"You: hello\n");
    let mut want = vec![IAC, WONT, 1, IAC, DONT, 1, IAC, DONT, 24, IAC, DONT, 31, IAC, WONT, 3];
    want.extend_from_slice(b"You: hello\n");
    assert_eq!(got, want, "each option and direction refused once, WONT/DONT unanswered");
    // Later requests for the same options get nothing; new ones still get one answer.
    b.send([IAC, DO, 1, IAC, WILL, 24, IAC, WILL, 3, IAC, WILL, 3]);
    b.send(b"again\n");
    let got = b.read_until(b"You: again\n");
    let mut want = vec![IAC, DONT, 3];
    want.extend_from_slice(b"You: again\n");
    assert_eq!(got, want);
    let name = b.name();
    a.expect_lines(&[&format!("{name}: hello"), &format!("{name}: again")]);
    assert!(a.quiet_sync().is_empty(), "nothing of the negotiation is relayed");
}

fn telnet_every_timing_mark_is_answered(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut b = server.join();
    b.send([IAC, DO, TM, IAC, DO, TM]);
    b.send([IAC, DO, TM]);
    b.send(b"m\n");
    let got = b.read_until(b"You: m\n");
    let mut want = [IAC, WONT, TM].repeat(3);
    want.extend_from_slice(b"You: m\n");
    assert_eq!(got, want);
}

fn telnet_iac_iac_is_a_literal_ff(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.send([b'a', IAC, IAC, b'b', b'\n']);
    // 0xFF alone is invalid UTF-8: it reaches people as U+FFFD.
    b.expect("You: a\u{fffd}b");
    a.expect(&format!("{}: a\u{fffd}b", b.name()));
}

fn telnet_commands_are_never_relayed(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.send([b'h', IAC, NOP, b'i', IAC, GA, b'!', IAC, DM, b'\n']);
    b.expect("You: hi!");
    a.expect(&format!("{}: hi!", b.name()));
    // A line of telnet commands only is empty: ignored.
    b.send([IAC, NOP, IAC, GA, b'\r', b'\n']);
    assert!(b.quiet_sync().is_empty());
    assert!(a.quiet_sync().is_empty());
}

fn telnet_subnegotiation_never_relayed_nor_answered(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let mut bytes = vec![b'x', IAC, SB, 24, 1, IAC, SE, b'y'];
    // A long one, with an escaped IAC and text-like bytes inside.
    bytes.extend_from_slice(&[IAC, SB, 31]);
    for _ in 0..50 {
        bytes.extend_from_slice(b"not a line\n");
        bytes.extend_from_slice(&[IAC, IAC]);
    }
    bytes.extend_from_slice(&[IAC, SE, b'z', b'\n']);
    b.send(&bytes);
    let got = b.read_until(b"You: xyz\n");
    assert_eq!(got, b"You: xyz\n", "no answer to a subnegotiation");
    a.expect(&format!("{}: xyz", b.name()));
    // One longer than the 64 bytes kept, split across writes.
    let mut long = vec![IAC, SB, 24];
    long.extend(std::iter::repeat_n(b'q', 500));
    long.extend_from_slice(&[IAC, SE]);
    long.extend_from_slice(b"after\n");
    b.send_split(&long, &[2, 1, 100, 300, 99, 1]);
    let got = b.read_until(b"You: after\n");
    assert_eq!(got, b"You: after\n");
    a.expect(&format!("{}: after", b.name()));
    assert!(a.quiet_sync().is_empty());
}

fn telnet_sequences_split_across_reads(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let bytes = [b'o', IAC, DO, 1, b'k', IAC, IAC, b'!', IAC, SB, 24, 0, b'x', IAC, SE, b'\r', 0];
    b.send_split(&bytes, &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    let got = b.read_until(b"\n");
    let mut want = vec![IAC, WONT, 1];
    want.extend_from_slice("You: ok\u{fffd}!\n".as_bytes());
    assert_eq!(got, want);
    a.expect(&format!("{}: ok\u{fffd}!", b.name()));
}

fn telnet_interrupt_closes_and_drops_the_partial_line(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.say("said");
    b.expect("You: said");
    // Like /quit, it flushes what is queued first: the echo of "more".
    b.send([b'm', b'o', b'r', b'e', b'\n', b'p', b'a', b'r', IAC, IP, b'x', b'\n', IAC, DO, TM]);
    b.expect_closed_after(&["You: more"]);
    let name = b.name();
    a.expect_lines(&[&format!("{name}: said"), &format!("{name}: more"), &format!("{name} is close")]);
    assert!(a.quiet_sync().is_empty(), "nothing of the interrupted line, nothing after it");
}

// ---------------------------------------------------------------- sanitising

fn invalid_utf8_becomes_replacement_characters(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let bytes: &[u8] =
        b"a\xfeb\xfe\xfec\xc3(d\xe2\x82e\xf0\x9f\x98f\xed\xa0\x80g\xc0\xafh\xf4\x90\x80\x80i \xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80";
    let expected = String::from_utf8_lossy(bytes).into_owned();
    b.send(bytes);
    b.send(b"\n");
    b.expect(&format!("You: {expected}"));
    a.expect(&format!("{}: {expected}", b.name()));
}

fn control_characters_and_escapes_removed(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.send("\x1b[31mred\x1b[0m \x1b]0;title\x07 \u{9b}2Jx\u{85}y\x7fz\x00\x08\x0b\x0c\tok\n".as_bytes());
    let clean = "[31mred[0m ]0;title 2Jxyz\tok";
    b.expect(&format!("You: {clean}"));
    a.expect(&format!("{}: {clean}", b.name()));
}

// ---------------------------------------------------------------- server time

fn server_time(line: &str) -> i64 {
    chat_tests::time::parse_server_time(line).unwrap_or_else(|| panic!("not a Server Time line: {line:?}"))
}

fn now_unix() -> i64 {
    chat_tests::time::now_unix()
}

fn check_ticks(frontend: Frontend, offset_flag: Option<&str>, offset_secs: i64) {
    let mut args = vec!["--tick", "1"];
    args.extend(offset_flag);
    let server = Server::start_with(frontend, &args);
    let mut a = server.connect();
    let mut b = server.connect();
    b.say("/join games");
    b.lines_until("* You left lobby and joined games");
    // Every connection gets them, whatever its room.
    for client in [&mut a, &mut b] {
        let mut times = Vec::new();
        for _ in 0..100 {
            let line = client.line();
            if line.starts_with("Server Time") {
                times.push(server_time(&line));
                if times.len() == 2 {
                    break;
                }
            }
        }
        assert_eq!(times.len(), 2, "two Server Time lines");
        assert!(times[1] > times[0], "ticks go forward: {times:?}");
        let shown_now = now_unix() + offset_secs;
        // Generous: only a wrong offset or format is off by more than a minute.
        assert!((times[1] - shown_now).abs() < 60, "Server Time is {}, expected about {shown_now}", times[1]);
    }
}

fn server_time_every_tick_in_utc(frontend: Frontend) {
    check_ticks(frontend, None, 0);
}

fn server_time_with_a_negative_utc_offset(frontend: Frontend) {
    check_ticks(frontend, Some("--utc-offset=-05:00"), -5 * 3600);
}

fn server_time_with_a_positive_utc_offset(frontend: Frontend) {
    check_ticks(frontend, Some("--utc-offset=+05:30"), 5 * 3600 + 30 * 60);
}

// ---------------------------------------------------------------- commands

fn help_lists_every_command(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.say("/help");
    let help = a.quiet_sync();
    assert!(help.len() >= 8, "{help:?}");
    assert!(help.iter().all(|l| l.starts_with("* ")), "one `* ` line each: {help:?}");
    for command in ["/help", "/nick", "/who", "/msg", "/join", "/rooms", "/quit", "//"] {
        assert!(help.iter().any(|l| l.contains(command)), "/help does not mention {command}: {help:?}");
    }
    a.say("  /help \t");
    assert_eq!(a.quiet_sync(), help, "a trimmed /help is /help");
    assert!(b.quiet_sync().is_empty(), "nobody else sees a reply");
}

fn nick_is_announced_and_used(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(3);
    let mut c = clients.pop().expect("3").named("c");
    let mut b = clients.pop().expect("3").named("b");
    let mut a = clients.pop().expect("3").named("a");
    c.say("/join elsewhere");
    c.expect("* You left lobby and joined elsewhere");
    a.expect(&format!("{} left lobby", c.name()));
    b.expect(&format!("{} left lobby", c.name()));
    a.say("/nick alice");
    a.expect("* You are now alice");
    b.expect(&format!("{} is now alice", a.name()));
    a.say("hello");
    a.expect("You: hello");
    b.expect("alice: hello");
    a.say("/nick Alice-2_x");
    a.expect("* You are now Alice-2_x");
    b.expect("alice is now Alice-2_x");
    b.say("/nick alice");
    b.expect("* You are now alice");
    a.expect(&format!("{} is now alice", b.name()));
    let longest = format!("a{}", "B".repeat(31));
    a.say(&format!("/nick {longest}"));
    a.expect(&format!("* You are now {longest}"));
    b.expect(&format!("Alice-2_x is now {longest}"));
    assert!(c.quiet_sync().is_empty(), "another room hears of no nick");
    a.say("/quit");
    a.expect_closed_after(&[]);
    b.expect(&format!("{longest} is close"));
}

fn nick_taken_is_refused_case_insensitively(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.say("/nick alice");
    a.expect("* You are now alice");
    b.expect(&format!("{} is now alice", a.name()));
    for taken in ["alice", "ALICE", "aLiCe"] {
        b.say(&format!("/nick {taken}"));
        let error = b.line();
        assert!(error.starts_with("Error: ") && error.contains(taken), "{error:?}");
    }
    a.say("/nick alice");
    let error = a.line();
    assert!(error.starts_with("Error: "), "already alice: {error:?}");
    assert!(a.quiet_sync().is_empty(), "nobody is told of a refusal");
    assert!(b.quiet_sync().is_empty());
    b.say("hi");
    b.expect("You: hi");
    a.expect(&format!("{}: hi", b.name()));
}

fn nick_invalid_or_reserved_is_refused(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let too_long = format!("/nick a{}", "b".repeat(32));
    let bad = [
        "/nick",
        "/nick a b",
        "/nick 9lives",
        "/nick _x",
        "/nick -x",
        "/nick a.b",
        "/nick a@b",
        "/nick caf\u{e9}",
        too_long.as_str(),
        "/nick Client",
        "/nick CLIENT",
        "/nick you",
        "/nick YOU",
        "/nick Server",
        "/nick sErVeR",
    ];
    for line in bad {
        a.say(line);
        let error = a.line();
        assert!(error.starts_with("Error: "), "{line:?} got {error:?}");
    }
    assert!(a.quiet_sync().is_empty(), "one line per refusal");
    assert!(b.quiet_sync().is_empty(), "nobody else is told");
    a.say("x");
    a.expect("You: x");
    b.expect(&format!("{}: x", a.name()));
}

fn who_lists_the_room_in_connect_order(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(4);
    let ids: Vec<u64> = clients.iter().map(Client::id).collect();
    clients[1].say("/nick bob");
    clients[1].expect("* You are now bob");
    clients[3].say("/join games");
    clients[3]
        .expect_lines(&[&format!("Client #{} is now bob", ids[1]), "* You left lobby and joined games"]);
    for (i, client) in clients.iter_mut().enumerate() {
        let lines = client.quiet_sync();
        let expected = match i {
            0 | 2 => vec![format!("Client #{} is now bob", ids[1]), format!("Client #{} left lobby", ids[3])],
            1 => vec![format!("Client #{} left lobby", ids[3])],
            _ => vec![],
        };
        assert_eq!(lines, expected);
    }
    clients[2].say("/who");
    clients[2].expect_lines(&[
        &format!("* Client #{}", ids[0]),
        &format!("* bob (#{})", ids[1]),
        &format!("* Client #{}", ids[2]),
        "* 3 in lobby",
    ]);
    clients[3].say("/who");
    clients[3].expect_lines(&[&format!("* Client #{}", ids[3]), "* 1 in games"]);
    clients[0].say("/who me");
    let error = clients[0].line();
    assert!(error.starts_with("Error: "), "{error:?}");
    for client in &mut clients {
        assert!(client.quiet_sync().is_empty());
    }
}

fn msg_by_nick_and_by_id(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(3);
    let mut c = clients.pop().expect("3").named("c");
    let mut b = clients.pop().expect("3").named("b");
    let mut a = clients.pop().expect("3").named("a");
    let (b_name, c_name) = (b.name(), c.name());
    a.say("/nick alice");
    a.expect("* You are now alice");
    b.expect(&format!("{} is now alice", a.name()));
    c.expect(&format!("{} is now alice", a.name()));
    b.say("/join elsewhere");
    b.expect("* You left lobby and joined elsewhere");
    c.expect(&format!("{b_name} left lobby"));
    a.expect(&format!("{b_name} left lobby"));
    a.say(&format!("/msg #{} psst  there ", b.id()));
    a.expect(&format!("[private to {b_name}] psst  there"));
    b.expect("[private] alice: psst  there");
    b.say("/msg ALICE hi");
    b.expect("[private to alice] hi");
    a.expect(&format!("[private] {b_name}: hi"));
    c.say("/msg alice \x1b[1mbold");
    c.expect("[private to alice] [1mbold");
    a.expect(&format!("[private] {c_name}: [1mbold"));
    for bad in ["/msg nobody hi", "/msg #99999 hi", "/msg alice", "/msg", "/msg #x hi"] {
        b.say(bad);
        let error = b.line();
        assert!(error.starts_with("Error: "), "{bad:?} got {error:?}");
    }
    for client in [&mut a, &mut b, &mut c] {
        assert!(client.quiet_sync().is_empty(), "{}", client.label());
    }
}

fn join_moves_between_rooms(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(3);
    let mut c = clients.pop().expect("3").named("c");
    let mut b = clients.pop().expect("3").named("b");
    let mut a = clients.pop().expect("3").named("a");
    c.say("/join games");
    c.expect("* You left lobby and joined games");
    a.expect(&format!("{} left lobby", c.name()));
    b.expect(&format!("{} left lobby", c.name()));
    a.say("/nick alice");
    a.expect("* You are now alice");
    b.expect(&format!("{} is now alice", a.name()));
    a.say("/join games");
    a.expect("* You left lobby and joined games");
    b.expect("alice left lobby");
    c.expect("alice joined games");
    a.say("in games");
    a.expect("You: in games");
    c.expect("alice: in games");
    assert!(b.quiet_sync().is_empty(), "another room hears nothing");
    a.say("/join games");
    let error = a.line();
    assert!(error.starts_with("Error: "), "already there: {error:?}");
    b.say("/join Games");
    b.expect("* You left lobby and joined Games");
    b.say("/join lobby");
    b.expect("* You left Games and joined lobby");
    let long = "r".repeat(32);
    b.say(&format!("/join {long}"));
    b.expect(&format!("* You left lobby and joined {long}"));
    for bad in ["/join", "/join a b".to_owned().as_str(), &format!("/join {long}x")] {
        b.say(bad);
        let error = b.line();
        assert!(error.starts_with("Error: "), "{bad:?} got {error:?}");
    }
    c.say("leaving");
    c.expect("You: leaving");
    a.expect(&format!("{}: leaving", c.name()));
    for client in [&mut a, &mut b, &mut c] {
        assert!(client.quiet_sync().is_empty(), "{}", client.label());
    }
}

fn rooms_lists_lobby_first_then_sorted(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(4);
    for (i, room) in [(1, "zoo"), (2, "art"), (3, "art")] {
        clients[i].say(&format!("/join {room}"));
        // Earlier moves may be announced first.
        clients[i].lines_until(&format!("* You left lobby and joined {room}"));
    }
    let ids: Vec<u64> = clients.iter().map(Client::id).collect();
    let a = &mut clients[0];
    let moves: Vec<String> = ids[1..].iter().map(|id| format!("Client #{id} left lobby")).collect();
    assert_eq!(a.quiet_sync(), moves);
    a.say("/rooms");
    a.expect_lines(&["* lobby: 1", "* art: 2", "* zoo: 1", "* 3 rooms"]);
    a.say("/join Zed");
    a.expect("* You left lobby and joined Zed");
    a.say("/rooms");
    a.expect_lines(&["* lobby: 0", "* Zed: 1", "* art: 2", "* zoo: 1", "* 4 rooms"]);
    clients[1].say("/quit");
    clients[1].expect_closed_after(&[]);
    let a = &mut clients[0];
    a.say("/rooms");
    a.expect_lines(&["* lobby: 0", "* Zed: 1", "* art: 2", "* 3 rooms"]);
}

fn quit_flushes_and_ignores_the_rest(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    b.send(b"bye\n/quit\nignored\n/nick ignored\n");
    b.expect_closed_after(&["You: bye"]);
    let name = b.name();
    a.expect_lines(&[&format!("{name}: bye"), &format!("{name} is close")]);
    assert!(a.quiet_sync().is_empty());
    let mut c = server.join();
    c.say("/nick ignored");
    c.expect("* You are now ignored");
}

fn unknown_commands_and_the_double_slash(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.send(b"/dance\n//dance\n/HELP\n/\n/helpme\n/dance now\n");
    a.expect_lines(&[
        "Error: unknown command /dance (try /help)",
        "You: /dance",
        "Error: unknown command /HELP (try /help)",
        "Error: unknown command / (try /help)",
        "Error: unknown command /helpme (try /help)",
        "Error: unknown command /dance (try /help)",
    ]);
    b.expect(&format!("{}: /dance", a.name()));
    assert!(b.quiet_sync().is_empty());
}

fn replies_come_in_the_order_of_the_lines(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.say("/help");
    let help = a.quiet_sync();
    a.send(b"/help\nhi\n/bogus\n/who\n/nick\n/rooms\n/msg nobody x\nthere\n/join lobby\n/nick ann\nbye\n");
    let mut expected: Vec<String> = help.clone();
    expected.push("You: hi".to_owned());
    expected.push("Error: unknown command /bogus (try /help)".to_owned());
    expected.extend([format!("* {}", a.name()), format!("* {}", b.name()), "* 2 in lobby".to_owned()]);
    expected.push("Error: /nick".to_owned());
    expected.extend(["* lobby: 2".to_owned(), "* 1 rooms".to_owned()]);
    expected.push("Error: /msg".to_owned());
    expected.push("You: there".to_owned());
    expected.push("Error: /join".to_owned());
    expected.push("* You are now ann".to_owned());
    expected.push("You: bye".to_owned());
    for want in &expected {
        let got = a.line();
        // Refusals whose wording is free are matched on their start only.
        match want.strip_prefix("Error: /") {
            Some(_) => assert!(got.starts_with("Error: "), "{want:?}: got {got:?}"),
            _ => assert_eq!(&got, want),
        }
    }
    let name = a.name();
    b.expect_lines(&[
        &format!("{name}: hi"),
        &format!("{name}: there"),
        &format!("{name} is now ann"),
        "ann: bye",
    ]);
}

fn commands_end_their_name_at_the_first_blank(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.say("/nick\talice");
    a.expect("* You are now alice");
    b.expect(&format!("{} is now alice", a.name()));
    a.say(&format!("/msg\t#{} \t hi  there", b.id()));
    a.expect(&format!("[private to {}] hi  there", b.name()));
    b.expect("[private] alice: hi  there");
    a.say("/join \t games");
    a.expect("* You left lobby and joined games");
    b.expect("alice left lobby");
    a.say("/who\t");
    a.expect_lines(&[&format!("* alice (#{})", a.id()), "* 1 in games"]);
}

fn commands_are_sanitised_first(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    a.send("/x\u{9b}y\n".as_bytes());
    a.expect("Error: unknown command /xy (try /help)");
    a.send(b"/join g\x1b[1mames\x07\n");
    a.expect("* You left lobby and joined g[1mames");
    b.expect(&format!("{} left lobby", a.name()));
    let wide = "\u{e9}".repeat(32);
    a.say(&format!("/join {wide}"));
    a.expect(&format!("* You left g[1mames and joined {wide}"));
    a.say(&format!("/join {wide}\u{e9}"));
    let error = a.line();
    assert!(error.starts_with("Error: "), "a room name is at most 32 characters: {error:?}");
    a.say("/rooms");
    a.expect_lines(&["* lobby: 1", &format!("* {wide}: 1"), "* 2 rooms"]);
}

fn misbehaving_clients_affect_only_themselves(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-queue", "256KiB"]);
    let (mut a, mut b) = pair(&server);
    let names = (a.name(), b.name());
    // A deterministic mess of bytes: telnet commands, invalid UTF-8, controls.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let byte = (seed >> 56) as u8;
                // Keep IAC IP out, or the client would just quit.
                if byte == IP {
                    b'x'
                } else {
                    byte
                }
            })
            .collect()
    };
    // a and b see the others come and go and say things, their own echoes,
    // and each other's lines.
    let noise_only = |lines: &[String]| {
        lines[..lines.len() - 1]
            .iter()
            .all(|l| l.ends_with(" is connected") || l.ends_with(" is close") || l.starts_with("Client #"))
    };
    let mut rounds = 0;
    for round in 0..6 {
        let mut bad: Vec<Client> = (0..4).map(|_| server.connect()).collect();
        for client in &mut bad {
            let _ = client.try_send(noise(3000));
        }
        let mut bad = bad.into_iter();
        let mut resetter = bad.next().expect("4");
        let _ = resetter.try_send(noise(100));
        resetter.reset();
        let mut half = bad.next().expect("4");
        let _ = half.try_send(b"half closed\n");
        half.shutdown_write();
        let _never_reads = bad.next().expect("4");
        let _quiet = bad.next().expect("4");
        a.say(&format!("round {round}"));
        assert!(noise_only(&a.lines_until(&format!("You: round {round}"))));
        assert!(noise_only(&b.lines_until(&format!("{}: round {round}", names.0))));
        b.say(&format!("reply {round}"));
        assert!(noise_only(&b.lines_until(&format!("You: reply {round}"))));
        assert!(noise_only(&a.lines_until(&format!("{}: reply {round}", names.1))));
        rounds += 1;
    }
    assert_eq!(rounds, 6);
    let mut late = server.connect();
    late.say("still fine");
    // The last round's clients may still be leaving.
    assert!(noise_only(&late.lines_until("You: still fine")));
}

// ---------------------------------------------------------------- limits

fn line_too_long_at_the_default_limit(frontend: Frontend) {
    let server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let longest = "x".repeat(8192);
    a.say(&longest);
    a.expect(&format!("You: {longest}"));
    b.expect(&format!("{}: {longest}", a.name()));
    // The refusal comes as soon as the limit is passed, before the line ends.
    a.send("y".repeat(8193));
    a.expect("Error: line too long (limit 8192 bytes)");
    a.send("y".repeat(20_000));
    a.send(b"\r\nok\n");
    a.expect("You: ok");
    b.expect(&format!("{}: ok", a.name()));
    assert!(b.quiet_sync().is_empty());
}

fn line_too_long_with_max_line(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-line", "10"]);
    let (mut a, mut b) = pair(&server);
    let name = a.name();
    a.send(b"0123456789\r\n");
    a.expect("You: 0123456789");
    // Telnet commands do not count, IAC IAC counts as one byte.
    a.send([b'0', b'1', b'2', b'3', b'4', IAC, NOP, b'5', b'6', b'7', b'8', IAC, IAC, b'\n']);
    a.expect("You: 012345678\u{fffd}");
    // Counted before sanitising: controls and invalid bytes count as sent.
    a.send(b"\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07a\n");
    a.expect("Error: line too long (limit 10 bytes)");
    a.send(b"\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe\xfe\n");
    a.expect(&format!("You: {}", "\u{fffd}".repeat(10)));
    a.send(b"0123456789A");
    a.expect("Error: line too long (limit 10 bytes)");
    a.send(b"more and more\r\n  short  \n");
    a.expect("You: short");
    b.expect_lines(&[
        &format!("{name}: 0123456789"),
        &format!("{name}: 012345678\u{fffd}"),
        &format!("{name}: {}", "\u{fffd}".repeat(10)),
        &format!("{name}: short"),
    ]);
    assert!(b.quiet_sync().is_empty());
    drop(server);
    let server = Server::start_with(frontend, &["--max-line", "1KiB"]);
    let mut a = server.join();
    a.say(&"k".repeat(1025));
    a.expect("Error: line too long (limit 1024 bytes)");
}

fn slow_reader_is_closed_and_others_get_every_line(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-queue", "256KiB"]);
    let mut clients = server.crowd(3);
    let mut slow = clients.pop().expect("3").named("slow");
    let mut observer = clients.pop().expect("3").named("observer");
    let mut writer = clients.pop().expect("3").named("writer");
    let slow_closed = format!("{} is close", slow.name());
    let writer_name = writer.name();
    let filler = "f".repeat(1000);
    let mut sent = 0usize;
    let mut closed_seen = (false, false);
    // Batches of 32 KB keep the writer's own echoes far below the limit. Bounded:
    // 800 batches are far more than the slow reader's socket buffers hold.
    for _ in 0..800 {
        let batch: String = (sent..sent + 32).map(|i| format!("{i} {filler}\n")).collect();
        writer.send(batch.as_bytes());
        for i in sent..sent + 32 {
            for (who, seen) in [(&mut writer, &mut closed_seen.0), (&mut observer, &mut closed_seen.1)] {
                let mut line = who.line();
                if line == slow_closed {
                    assert!(!*seen, "{} saw the close twice", who.label());
                    *seen = true;
                    line = who.line();
                }
                let expected =
                    if who.label().starts_with("writer") { "You: " } else { &format!("{writer_name}: ") };
                let want = format!("{expected}{i} {filler}");
                assert!(line == want, "{}: line {i} missing or out of order: got {:.60}", who.label(), line);
            }
        }
        sent += 32;
        if closed_seen.0 && closed_seen.1 {
            break;
        }
    }
    assert!(closed_seen.0 && closed_seen.1, "the slow reader was never closed after {sent} lines");
    assert!(slow.closed_within(chat_tests::WAIT), "the slow reader's connection stays open");
    writer.say("/who");
    writer.expect_lines(&[
        &format!("* Client #{}", writer.id()),
        &format!("* Client #{}", observer.id()),
        "* 2 in lobby",
    ]);
    assert!(observer.quiet_sync().is_empty());
}

fn server_full_gets_no_id(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-conns", "3"]);
    let mut clients = server.crowd(3);
    let ids: Vec<u64> = clients.iter().map(Client::id).collect();
    for _ in 0..3 {
        let mut refused = server.connect();
        refused.expect_closed_after(&["Error: server full"]);
    }
    for client in &mut clients {
        assert!(client.quiet_sync().is_empty(), "nobody is told of a refused connection");
    }
    let mut gone = clients.pop().expect("3");
    gone.say("/quit");
    gone.expect_closed_after(&[]);
    for client in &mut clients {
        client.expect(&format!("{} is close", gone.name()));
    }
    let mut late = server.join();
    assert!(!ids.contains(&late.id()), "ids are never reused");
    for client in &mut clients {
        client.expect(&format!("{} is connected", late.name()));
    }
    late.say("/who");
    late.expect_lines(&[
        &format!("* Client #{}", ids[0]),
        &format!("* Client #{}", ids[1]),
        &format!("* Client #{}", late.id()),
        "* 3 in lobby",
    ]);
    let mut refused = server.connect();
    refused.expect_closed_after(&["Error: server full"]);
    drop(server);
    let server = Server::start_with(frontend, &["--max-conns", "1", "--welcome", "hello"]);
    let mut first = server.connect();
    first.expect("hello");
    let mut refused = server.connect();
    refused.expect_closed_after(&["Error: server full"]);
    assert!(first.quiet_sync().is_empty());
}

fn server_full_is_decided_server_wide(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-conns", "5"]);
    // All at once, so that with many shards they race for the last places.
    let mut clients: Vec<Client> = (0..12).map(|_| server.connect()).collect();
    for client in &mut clients {
        let _ = client.try_send(b"/rooms\n");
    }
    let mut admitted = 0;
    for client in &mut clients {
        let first = client.line();
        if first == "Error: server full" {
            client.expect_closed_after(&[]);
        } else {
            // Those admitted later are announced to it first.
            let mut line = first;
            for _ in 0..12 {
                if !line.ends_with(" is connected") {
                    break;
                }
                line = client.line();
            }
            assert!(line.starts_with("* lobby: "), "{line:?}");
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "exactly --max-conns clients are admitted");
}

fn lines_per_second_limit(frontend: Frontend) {
    let server = Server::start_with(frontend, &["--max-lines-per-second", "2"]);
    let mut b = server.join().named("b");
    // `a` sends nothing before the burst: its first second starts with it.
    let mut a = server.connect().named("a");
    let connected = b.line();
    let a_name =
        connected.strip_suffix(" is connected").unwrap_or_else(|| panic!("{connected:?}")).to_owned();
    a.send(b"1\n2\n3\n/who\n4\n");
    a.expect_lines(&["You: 1", "You: 2", "Error: slow down"]);
    // Pace markers so that at most two fall in any one second: the first one
    // accepted must be the next line anyone sees, with no second warning.
    let mut sent = Vec::new();
    let mut accepted = None;
    for k in 0..20 {
        let marker = format!("m{k}");
        a.say(&marker);
        sent.push(format!("You: {marker}"));
        if let Some(line) = a.try_line_within(std::time::Duration::from_millis(600)) {
            assert!(sent.contains(&line), "one warning per second, nothing else: got {line:?}");
            accepted = Some(line["You: ".len()..].to_owned());
            break;
        }
    }
    let accepted = accepted.expect("a line was accepted again within seconds");
    b.expect_lines(&[&format!("{a_name}: 1"), &format!("{a_name}: 2"), &format!("{a_name}: {accepted}")]);
}

// ---------------------------------------------------------------- stopping

fn stop_flushes_then_says_shutting_down(frontend: Frontend) {
    let mut server = Server::start(frontend);
    let (mut a, mut b) = pair(&server);
    let text: String = (0..200).map(|i| format!("last words {i}\n")).collect();
    a.send(text.as_bytes());
    for i in 0..200 {
        a.expect(&format!("You: last words {i}"));
    }
    // b has read nothing yet: its lines are queued in the server or in flight.
    let status = server.stop();
    if let Some(status) = status {
        assert!(status.success(), "{} exited with {status} on stop", server.frontend());
    }
    a.expect_closed_after(&["* server shutting down"]);
    let name = a.name();
    let mut expected: Vec<String> = (0..200).map(|i| format!("{name}: last words {i}")).collect();
    expected.push("* server shutting down".to_owned());
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    b.expect_closed_after(&expected);
    assert_eq!(server.live_processes(), vec![], "processes left after stop");
}

fn stop_delivers_every_line_already_said(frontend: Frontend) {
    // A line is said once its sender has the echo; a stop right after it must
    // still deliver it to everyone, on every shard. Several rounds, since the
    // race it guards against is short.
    for round in 0..5 {
        let mut server = Server::start(frontend);
        let mut clients = server.crowd(6);
        let name = clients[0].name();
        let text: String = (0..300).map(|i| format!("r{round} l{i}\n")).collect();
        clients[0].send(text.as_bytes());
        clients[0].lines_until(&format!("You: r{round} l299"));
        server.stop();
        let mut expected: Vec<String> = (0..300).map(|i| format!("{name}: r{round} l{i}")).collect();
        expected.push("* server shutting down".to_owned());
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        for client in &mut clients[1..] {
            client.expect_closed_after(&expected);
        }
    }
}

fn stop_does_not_wait_for_a_stalled_reader(frontend: Frontend) {
    let mut server = Server::start_with(frontend, &["--max-queue", "64MiB"]);
    let mut clients = server.crowd(3);
    let mut stalled = clients.pop().expect("3").named("stalled");
    let mut writer = clients.pop().expect("3").named("writer");
    let filler = "s".repeat(1000);
    // 8 MB, far more than the stalled reader's socket buffers hold, so some of
    // it is still queued in the server when it stops.
    for batch in 0..256 {
        let text: String = (0..32).map(|i| format!("{batch} {i} {filler}\n")).collect();
        writer.send(text.as_bytes());
        for i in 0..32 {
            writer.expect(&format!("You: {batch} {i} {filler}"));
        }
    }
    if let Frontend::Mio { .. } = frontend {
        let rows = server.connections();
        let port = format!("127.0.0.1:{}", stalled.local_port());
        let row = rows.iter().find(|r| r.peer == port).expect("the stalled reader is listed");
        assert!(row.queued > 0, "nothing queued for the stalled reader: {row:?}");
    }
    let started = std::time::Instant::now();
    server.stop();
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(20), "stopping took {took:?}");
    writer.expect_closed_after(&["* server shutting down"]);
    assert!(stalled.closed_within(chat_tests::WAIT), "the stalled reader is closed too");
}

// ---------------------------------------------------------------- identity

fn ids_are_unique_and_never_reused(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut observer = server.join().named("observer");
    let mut seen = vec![observer.id()];
    let connected = |observer: &mut Client, n: usize| -> Vec<u64> {
        (0..n)
            .map(|_| {
                let line = observer.line();
                let id = line
                    .strip_prefix("Client #")
                    .and_then(|l| l.strip_suffix(" is connected"))
                    .and_then(|id| id.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("not a connect line: {line:?}"));
                assert!(id > 0, "ids are positive");
                id
            })
            .collect()
    };
    let mut wave: Vec<Client> = (0..12).map(|_| server.connect()).collect();
    for id in connected(&mut observer, 12) {
        assert!(!seen.contains(&id), "id {id} given twice");
        seen.push(id);
    }
    for client in wave.drain(..6) {
        drop(client);
    }
    let closes: Vec<String> = (0..6).map(|_| observer.line()).collect();
    assert!(closes.iter().all(|l| l.ends_with(" is close")), "{closes:?}");
    let _more: Vec<Client> = (0..8).map(|_| server.connect()).collect();
    for id in connected(&mut observer, 8) {
        assert!(!seen.contains(&id), "id {id} reused");
        seen.push(id);
    }
}

// ---------------------------------------------------------------- many shards

fn clients_on_every_shard_see_each_other(frontend: Frontend) {
    let server = Server::start(frontend);
    let n = 10;
    let mut clients = server.crowd(n);
    let names: Vec<String> = clients.iter().map(Client::name).collect();
    for i in 0..n {
        clients[i].say(&format!("from {i}"));
        clients[i].expect(&format!("You: from {i}"));
        for (j, other) in clients.iter_mut().enumerate() {
            if j != i {
                other.expect(&format!("{}: from {i}", names[i]));
            }
        }
    }
    clients[3].say("/nick carol");
    clients[3].expect("* You are now carol");
    for (j, other) in clients.iter_mut().enumerate() {
        if j != 3 {
            other.expect(&format!("{} is now carol", names[3]));
        }
    }
    clients[4].say("/join side");
    clients[4].expect("* You left lobby and joined side");
    for (j, other) in clients.iter_mut().enumerate() {
        if j != 4 {
            other.expect(&format!("{} left lobby", names[4]));
        }
    }
    clients[7].say("/quit");
    clients[7].expect_closed_after(&[]);
    for (j, other) in clients.iter_mut().enumerate() {
        if j != 7 && j != 4 {
            other.expect(&format!("{} is close", names[7]));
        }
    }
    clients[0].say("/who");
    let who = clients[0].lines_until(&format!("* {} in lobby", n - 2));
    let expected: Vec<String> = (0..n)
        .filter(|&i| i != 4 && i != 7)
        .map(|i| if i == 3 { format!("* carol (#{})", clients[3].id()) } else { format!("* {}", names[i]) })
        .collect();
    assert_eq!(&who[..who.len() - 1], &expected[..]);
    for client in &mut clients {
        if !client.label().starts_with("client 7") {
            assert!(client.quiet_sync().is_empty(), "{}", client.label());
        }
    }
}

fn contested_nick_is_won_once(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(8);
    for client in &mut clients {
        client.send(b"/nick bob\n");
    }
    let mut winner = None;
    for (i, client) in clients.iter_mut().enumerate() {
        let reply = client.lines_until_match(|l| l == "* You are now bob" || l.starts_with("Error: "));
        if reply.last().is_some_and(|l| l == "* You are now bob") {
            assert!(winner.is_none(), "two clients got the nick bob");
            winner = Some(i);
        }
    }
    let winner = winner.expect("somebody gets the nick");
    let announce = format!("{} is now bob", clients[winner].name());
    for (i, client) in clients.iter_mut().enumerate() {
        let mut rest = client.quiet_sync();
        if i != winner {
            // The announcement may have come before this client's own refusal.
            rest.retain(|l| l != &announce);
            let before = client.label().to_owned();
            assert!(rest.is_empty(), "{before}: {rest:?}");
        } else {
            assert!(rest.is_empty(), "{rest:?}");
        }
    }
}

fn each_senders_lines_arrive_in_order_everywhere(frontend: Frontend) {
    let server = Server::start(frontend);
    let n = 6;
    let senders = 4;
    let per_sender = 150;
    let mut clients = server.crowd(n);
    let names: Vec<String> = clients.iter().map(Client::name).collect();
    for (s, client) in clients.iter_mut().enumerate().take(senders) {
        let text: String = (0..per_sender).map(|k| format!("s{s} n{k}\n")).collect();
        let (first, second) = text.as_bytes().split_at(text.len() / 3);
        client.send(first);
        client.send(second);
    }
    for (j, client) in clients.iter_mut().enumerate() {
        let mut next = vec![0usize; senders];
        let expected_lines = per_sender * senders;
        for _ in 0..expected_lines {
            let line = client.line();
            let (who, text) = line.split_once(": ").unwrap_or_else(|| panic!("{line:?}"));
            let s = text[1..].split(' ').next().and_then(|s| s.parse::<usize>().ok()).expect("sender");
            let expected_who = if s == j { "You" } else { names[s].as_str() };
            assert_eq!(who, expected_who, "{line:?}");
            assert_eq!(text, format!("s{s} n{}", next[s]), "client {j}: out of order or lost");
            next[s] += 1;
        }
    }
    for client in &mut clients {
        assert!(client.quiet_sync().is_empty(), "{}: a line came twice", client.label());
    }
}

/// A room bigger than what a worker writes in one loop turn (256 connections):
/// each line reaches everyone, in order, however the fan-out is cut.
fn every_client_of_a_big_room_gets_every_line(frontend: Frontend) {
    let server = Server::start(frontend);
    let mut clients = server.crowd(600);
    let speaker = clients[0].name();
    clients[0].send(b"one\ntwo\nthree\n");
    for (j, client) in clients.iter_mut().enumerate() {
        let who = if j == 0 { "You".to_owned() } else { speaker.clone() };
        client.expect_lines(&[&format!("{who}: one"), &format!("{who}: two"), &format!("{who}: three")]);
    }
}

frontend_tests!(
    demo_messages_byte_for_byte,
    welcome_is_the_first_line,
    a_client_sees_only_what_was_said_while_connected,
    line_ends_lf_crlf_and_cr_nul,
    lines_are_trimmed_and_empty_lines_ignored,
    one_line_over_many_writes,
    many_lines_in_one_write,
    eof_counts_the_partial_line,
    reset_drops_the_partial_line,
    telnet_requests_refused_once_per_option_and_direction,
    telnet_every_timing_mark_is_answered,
    telnet_iac_iac_is_a_literal_ff,
    telnet_commands_are_never_relayed,
    telnet_subnegotiation_never_relayed_nor_answered,
    telnet_sequences_split_across_reads,
    telnet_interrupt_closes_and_drops_the_partial_line,
    invalid_utf8_becomes_replacement_characters,
    control_characters_and_escapes_removed,
    server_time_every_tick_in_utc,
    server_time_with_a_negative_utc_offset,
    server_time_with_a_positive_utc_offset,
    help_lists_every_command,
    nick_is_announced_and_used,
    nick_taken_is_refused_case_insensitively,
    nick_invalid_or_reserved_is_refused,
    who_lists_the_room_in_connect_order,
    msg_by_nick_and_by_id,
    join_moves_between_rooms,
    rooms_lists_lobby_first_then_sorted,
    quit_flushes_and_ignores_the_rest,
    unknown_commands_and_the_double_slash,
    replies_come_in_the_order_of_the_lines,
    commands_end_their_name_at_the_first_blank,
    commands_are_sanitised_first,
    misbehaving_clients_affect_only_themselves,
    line_too_long_at_the_default_limit,
    line_too_long_with_max_line,
    slow_reader_is_closed_and_others_get_every_line,
    server_full_gets_no_id,
    server_full_is_decided_server_wide,
    lines_per_second_limit,
    stop_flushes_then_says_shutting_down,
    stop_delivers_every_line_already_said,
    stop_does_not_wait_for_a_stalled_reader,
    ids_are_unique_and_never_reused,
    clients_on_every_shard_see_each_other,
    contested_nick_is_won_once,
    each_senders_lines_arrive_in_order_everywhere,
    every_client_of_a_big_room_gets_every_line,
);
