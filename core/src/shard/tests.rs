//! Every command and every message text, byte for byte, on one standalone shard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;

/// An arbitrary base instant: the shard only ever sees time as an argument.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

/// A standalone shard with clients that read everything at once.
struct Chat {
    shard: Shard,
    now: Instant,
    seen: BTreeMap<ConnId, Vec<u8>>,
    closed: Vec<(ConnId, CloseReason)>,
    /// Connections that do not read: their bytes stay queued.
    stalled: Vec<ConnId>,
}

impl Chat {
    fn new(config: Config) -> Chat {
        let now = start();
        Chat {
            shard: Shard::standalone(config, now),
            now,
            seen: BTreeMap::new(),
            closed: Vec::new(),
            stalled: Vec::new(),
        }
    }

    fn default() -> Chat {
        Chat::new(Config { tick: 0, ..Config::default() })
    }

    fn connect(&mut self) -> ConnId {
        let conn = self.shard.handle_connect(self.now);
        self.drain();
        conn
    }

    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        self.shard.handle_bytes(conn, bytes, self.now);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.shard.poll_output() {
            match output {
                Output::Transmit(conn) if !self.stalled.contains(&conn) => {
                    let bytes = self.shard.transmit(conn).to_vec();
                    self.shard.handle_written(conn, bytes.len(), self.now);
                    self.seen.entry(conn).or_default().extend_from_slice(&bytes);
                }
                Output::Transmit(_) => {}
                Output::Close { conn, reason } => {
                    let bytes = self.shard.transmit(conn).to_vec();
                    self.seen.entry(conn).or_default().extend_from_slice(&bytes);
                    self.closed.push((conn, reason));
                    self.shard.handle_close(conn, self.now);
                }
                Output::Publish(_) => panic!("a standalone shard published"),
            }
        }
    }

    /// Everything `conn` received since the last call, as text.
    fn take(&mut self, conn: ConnId) -> String {
        String::from_utf8_lossy(&self.seen.remove(&conn).unwrap_or_default()).into_owned()
    }
}

#[test]
fn the_demo_messages_byte_for_byte() {
    let mut chat = Chat::default();
    let a = chat.connect();
    assert_eq!(chat.take(a), "");
    let b = chat.connect();
    assert_eq!(chat.take(a), "Client #2 is connected\n");
    assert_eq!(chat.take(b), "");
    chat.send(a, b"hi\r\n");
    assert_eq!(chat.take(a), "You: hi\n");
    assert_eq!(chat.take(b), "Client #1: hi\n");
    chat.shard.handle_close(b, chat.now);
    chat.drain();
    assert_eq!(chat.take(a), "Client #2 is close\n");
}

#[test]
fn welcome_is_the_first_line() {
    let mut chat =
        Chat::new(Config { tick: 0, welcome: Some("Hello\x1b there ".into()), ..Config::default() });
    let a = chat.connect();
    assert_eq!(chat.take(a), "Hello there\n");
}

#[test]
fn empty_lines_are_ignored_and_lines_trimmed() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(a, b"\r\n   \n\t\n\x07\n  hello  world \t\r\n");
    assert_eq!(chat.take(a), "You: hello  world\n");
    assert_eq!(chat.take(b), "Client #1: hello  world\n");
}

#[test]
fn many_lines_in_one_read_and_one_line_over_many() {
    let mut chat = Chat::default();
    let a = chat.connect();
    chat.send(a, b"one\ntwo\r\nthr");
    chat.send(a, b"ee\r");
    chat.send(a, b"\0");
    assert_eq!(chat.take(a), "You: one\nYou: two\nYou: three\n");
}

#[test]
fn server_time_every_tick() {
    let mut chat = Chat::new(Config { tick: 5, ..Config::default() });
    let a = chat.connect();
    let start = chat.now;
    assert_eq!(chat.shard.poll_timeout(), Some(start + Duration::from_secs(5)));
    chat.shard.handle_timeout(start + Duration::from_secs(4), UnixTime(0));
    chat.drain();
    assert_eq!(chat.take(a), "", "a spurious timeout does nothing");
    chat.shard.handle_timeout(start + Duration::from_secs(5), UnixTime(1_795_595_405));
    chat.drain();
    assert_eq!(chat.take(a), "Server Time: 2026-11-25 08:30:05\n");
    assert_eq!(chat.shard.poll_timeout(), Some(start + Duration::from_secs(10)));
    chat.shard.handle_timeout(start + Duration::from_secs(23), UnixTime(1_795_595_423));
    chat.drain();
    assert_eq!(chat.take(a), "Server Time: 2026-11-25 08:30:23\n", "missed ticks are not replayed");
    assert_eq!(chat.shard.poll_timeout(), Some(start + Duration::from_secs(25)));
}

#[test]
fn server_time_with_an_offset_and_off() {
    let mut chat =
        Chat::new(Config { tick: 1, utc_offset: "-05:00".parse().expect("valid"), ..Config::default() });
    let a = chat.connect();
    chat.shard.handle_timeout(chat.now + Duration::from_secs(1), UnixTime(1_795_595_405));
    chat.drain();
    assert_eq!(chat.take(a), "Server Time: 2026-11-25 03:30:05\n");
    let off = Chat::default();
    assert_eq!(off.shard.poll_timeout(), None);
}

#[test]
fn help_lists_commands() {
    let mut chat = Chat::default();
    let a = chat.connect();
    chat.send(a, b"/help\n");
    let help = chat.take(a);
    assert_eq!(help, HELP);
    assert_eq!(help.lines().count(), 8);
}

#[test]
fn nick_is_announced_and_used() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(a, b"/nick alice\n");
    assert_eq!(chat.take(a), "* You are now alice\n");
    assert_eq!(chat.take(b), "Client #1 is now alice\n");
    chat.send(a, b"hello\n");
    assert_eq!(chat.take(a), "You: hello\n");
    assert_eq!(chat.take(b), "alice: hello\n");
    chat.send(b, b"/nick ALICE\n");
    assert_eq!(chat.take(b), "Error: the nick ALICE is taken\n");
    assert_eq!(chat.take(a), "", "nobody else hears of a refusal");
    chat.send(a, b"/nick alice\n");
    assert_eq!(chat.take(a), "Error: you are already alice\n");
    chat.send(a, b"/nick Alice2\n");
    assert_eq!(chat.take(b), "alice is now Alice2\n");
    chat.send(b, b"/nick alice\n");
    assert_eq!(chat.take(b), "* You are now alice\n", "a released nick is free again");
    chat.send(b, b"/nick you\n/nick 1x\n/nick\n");
    let errors = chat.take(b);
    assert!(errors.lines().all(|l| l.starts_with("Error: ")), "{errors}");
    assert_eq!(errors.lines().count(), 3);
    chat.shard.handle_close(a, chat.now);
    chat.drain();
    assert_eq!(chat.take(b), "Alice2 is close\n");
}

#[test]
fn who_lists_the_room_in_connect_order() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    let c = chat.connect();
    chat.send(b, b"/nick bob\n");
    chat.send(c, b"/join games\n");
    chat.take(a);
    chat.take(c);
    chat.send(a, b"/who\n");
    assert_eq!(chat.take(a), "* Client #1\n* bob (#2)\n* 2 in lobby\n");
    chat.send(c, b"/who\n");
    assert_eq!(chat.take(c), "* Client #3\n* 1 in games\n");
}

#[test]
fn join_moves_between_rooms() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    let c = chat.connect();
    chat.send(a, b"/nick alice\n");
    chat.send(c, b"/join games\n");
    for conn in [a, b, c] {
        chat.take(conn);
    }
    chat.send(a, b"/join games\n");
    assert_eq!(chat.take(a), "* You left lobby and joined games\n");
    assert_eq!(chat.take(b), "alice left lobby\n");
    assert_eq!(chat.take(c), "alice joined games\n");
    chat.send(a, b"in games\n");
    assert_eq!(chat.take(a), "You: in games\n");
    assert_eq!(chat.take(c), "alice: in games\n");
    assert_eq!(chat.take(b), "", "other rooms do not hear it");
    chat.send(a, b"/join games\n");
    assert_eq!(chat.take(a), "Error: you are already in games\n");
    chat.send(b, b"/join Games\n");
    assert_eq!(chat.take(b), "* You left lobby and joined Games\n", "rooms compare exactly");
}

#[test]
fn rooms_lists_lobby_first_then_sorted() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    let c = chat.connect();
    chat.send(b, b"/join zoo\n");
    chat.send(c, b"/join art\n");
    chat.take(a);
    chat.send(a, b"/rooms\n");
    assert_eq!(chat.take(a), "* lobby: 1\n* art: 1\n* zoo: 1\n* 3 rooms\n");
    chat.send(a, b"/join art\n");
    chat.take(a);
    chat.send(a, b"/rooms\n");
    assert_eq!(chat.take(a), "* lobby: 0\n* art: 2\n* zoo: 1\n* 3 rooms\n");
}

#[test]
fn private_messages_by_nick_and_id() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    let c = chat.connect();
    chat.send(a, b"/nick alice\n");
    chat.send(b, b"/join elsewhere\n");
    for conn in [a, b, c] {
        chat.take(conn);
    }
    chat.send(a, b"/msg #2 psst  there\n");
    assert_eq!(chat.take(b), "[private] alice: psst  there\n");
    assert_eq!(chat.take(a), "[private to Client #2] psst  there\n");
    assert_eq!(chat.take(c), "");
    chat.send(b, b"/msg ALICE hi\n");
    assert_eq!(chat.take(a), "[private] Client #2: hi\n");
    assert_eq!(chat.take(b), "[private to alice] hi\n");
    chat.send(b, b"/msg nobody hi\n/msg #99 hi\n/msg alice\n");
    assert_eq!(
        chat.take(b),
        "Error: no such user: nobody\nError: no such user: #99\nError: usage: /msg TARGET TEXT\n"
    );
}

#[test]
fn quit_closes_after_flushing() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(b, b"bye\n/quit\nignored\n");
    assert_eq!(chat.take(b), "You: bye\n");
    assert_eq!(chat.closed, [(b, CloseReason::Quit)]);
    assert_eq!(chat.take(a), "Client #2: bye\nClient #2 is close\n");
}

#[test]
fn telnet_interrupt_closes_and_drops_the_partial_line() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(b, &[b'p', b'a', b'r', 255, 244, 255, 253, 6, b'x', b'\n']);
    assert_eq!(chat.take(b), "");
    assert_eq!(chat.take(a), "Client #2 is close\n");
    assert_eq!(chat.closed, [(b, CloseReason::Quit)]);
}

#[test]
fn telnet_negotiation_is_refused_and_never_relayed() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(
        b,
        &[
            255, 251, 31, 255, 253, 1, b'h', 255, 255, b'i', 255, 250, 24, 1, 255, 240, b'\n', 255, 253, 6,
            255, 253, 1,
        ],
    );
    let reply = chat.seen.remove(&b).unwrap_or_default();
    let mut expected = vec![255, 254, 31, 255, 252, 1];
    expected.extend_from_slice("You: h\u{fffd}i\n".as_bytes());
    expected.extend_from_slice(&[255, 252, 6]);
    assert_eq!(reply, expected);
    assert_eq!(chat.take(a), "Client #2: h\u{fffd}i\n");
}

#[test]
fn unknown_commands_and_the_escape() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(a, b"/dance\n//dance\n");
    assert_eq!(chat.take(a), "Error: unknown command /dance (try /help)\nYou: /dance\n");
    assert_eq!(chat.take(b), "Client #1: /dance\n");
}

#[test]
fn line_too_long_is_refused_once_and_the_connection_stays() {
    let mut chat = Chat::new(Config { tick: 0, max_line: 10, ..Config::default() });
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(a, b"0123456789\r\n");
    chat.send(a, b"0123456789A");
    assert_eq!(chat.take(a), "You: 0123456789\nError: line too long (limit 10 bytes)\n");
    chat.send(a, &[b'x'; 100]);
    chat.send(a, b"\nok\n");
    assert_eq!(chat.take(a), "You: ok\n");
    assert_eq!(chat.take(b), "Client #1: 0123456789\nClient #1: ok\n");
}

#[test]
fn server_full_gets_no_id() {
    let mut chat = Chat::new(Config { tick: 0, max_conns: 2, ..Config::default() });
    let a = chat.connect();
    let _b = chat.connect();
    chat.take(a);
    let c = chat.connect();
    assert_eq!(chat.take(c), "Error: server full\n");
    assert_eq!(chat.closed, [(c, CloseReason::ServerFull)]);
    assert_eq!(chat.take(a), "", "nobody is told of a refused connection");
    let d = chat.connect();
    assert_eq!(chat.take(d), "Error: server full\n");
    chat.shard.handle_close(a, chat.now);
    chat.drain();
    let _e = chat.connect();
    chat.send(_b, b"/who\n");
    assert_eq!(
        chat.take(_b),
        "Client #1 is close\nClient #3 is connected\n* Client #2\n* Client #3\n* 2 in lobby\n"
    );
}

#[test]
fn rate_limit_drops_with_one_warning_per_second() {
    let mut chat = Chat::new(Config { tick: 0, max_lines_per_second: 2, ..Config::default() });
    let a = chat.connect();
    chat.send(a, b"1\n\n \n2\n3\n4\n");
    assert_eq!(chat.take(a), "You: 1\nYou: 2\nError: slow down\n");
    chat.now += Duration::from_millis(999);
    chat.send(a, b"5\n");
    assert_eq!(chat.take(a), "");
    chat.now += Duration::from_millis(1);
    chat.send(a, b"6\n7\n8\n");
    assert_eq!(chat.take(a), "You: 6\nYou: 7\nError: slow down\n");
}

#[test]
fn slow_consumer_is_closed_and_others_go_on() {
    let mut chat = Chat::new(Config { tick: 0, max_queue: 100, ..Config::default() });
    let a = chat.connect();
    let slow = chat.connect();
    chat.stalled.push(slow);
    chat.take(a);
    for i in 0..20 {
        chat.send(a, format!("line {i}\n").as_bytes());
    }
    assert_eq!(chat.closed, [(slow, CloseReason::SlowConsumer)]);
    let seen = chat.take(a);
    assert!(seen.contains("Client #2 is close\n"));
    assert_eq!(seen.lines().filter(|l| l.starts_with("You: line")).count(), 20);
    assert_eq!(chat.shard.stats().slow_consumers, 1);
}

#[test]
fn eof_counts_the_last_partial_line_then_closes() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(b, b"partial");
    chat.shard.handle_eof(b, chat.now);
    chat.drain();
    assert_eq!(chat.take(b), "You: partial\n");
    assert_eq!(chat.take(a), "Client #2: partial\nClient #2 is close\n");
    assert_eq!(chat.closed, [(b, CloseReason::Quit)]);
}

#[test]
fn a_reset_drops_the_partial_line() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(b, b"partial");
    chat.shard.handle_close(b, chat.now);
    chat.drain();
    assert_eq!(chat.take(a), "Client #2 is close\n");
}

#[test]
fn shutdown_flushes_then_says_goodbye_without_close_lines() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.stalled.push(a);
    chat.send(b, b"last words\n");
    chat.shard.handle_shutdown(chat.now);
    chat.drain();
    assert_eq!(chat.take(a), "Client #2: last words\n* server shutting down\n");
    assert_eq!(chat.take(b), "You: last words\n* server shutting down\n");
    assert_eq!(chat.closed.len(), 2);
}

#[test]
fn stale_handles_are_ignored() {
    let mut chat = Chat::default();
    let a = chat.connect();
    chat.shard.handle_close(a, chat.now);
    chat.drain();
    let b = chat.connect();
    assert_ne!(a, b, "handles are not reused");
    chat.shard.handle_bytes(a, b"ghost\n", chat.now);
    chat.shard.handle_written(a, 100, chat.now);
    chat.shard.handle_eof(a, chat.now);
    chat.shard.handle_close(a, chat.now);
    chat.drain();
    assert_eq!(chat.take(b), "");
    assert_eq!(chat.shard.transmit(a), b"");
    assert_eq!(chat.shard.connection_count(), 1);
}

#[test]
fn control_characters_never_reach_others() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.take(a);
    chat.send(a, "\x1b[2Jclear\u{9b}me\x7f\x00\tok\n".as_bytes());
    assert_eq!(chat.take(b), "Client #1: [2Jclearme\tok\n");
}

#[test]
fn replies_wait_behind_envelopes_in_flight() {
    let now = start();
    let mut shard = Shard::new(Config { tick: 0, ..Config::default() }, ShardId(1), now);
    let a = shard.handle_connect(now);
    shard.handle_bytes(a, b"hi\n/help\n", now);
    let mut envelopes = Vec::new();
    while let Some(output) = shard.poll_output() {
        match output {
            Output::Publish(bytes) => envelopes.push(bytes),
            other => panic!("nothing may be sent before the echo: {other:?}"),
        }
    }
    assert_eq!(envelopes.len(), 2, "connect and line");
    for envelope in &envelopes {
        shard.handle_envelope(envelope, now).expect("own envelope decodes");
    }
    let mut got = Vec::new();
    while let Some(output) = shard.poll_output() {
        if let Output::Transmit(conn) = output {
            got.extend_from_slice(shard.transmit(conn));
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), format!("You: hi\n{HELP}"));
}

/// Drains a bus shard's outputs: what it published, and what it queued for
/// its connections (taken as written).
fn drain_bus_shard(shard: &mut Shard, now: Instant) -> (Vec<Vec<u8>>, String) {
    let (mut published, mut sent) = (Vec::new(), Vec::new());
    while let Some(output) = shard.poll_output() {
        match output {
            Output::Publish(bytes) => published.push(bytes),
            Output::Transmit(conn) => {
                let bytes = shard.transmit(conn).to_vec();
                shard.handle_written(conn, bytes.len(), now);
                sent.extend_from_slice(&bytes);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (published, String::from_utf8_lossy(&sent).into_owned())
}

#[test]
fn a_shard_goes_solo_only_once_its_envelopes_came_back_and_then_applies_them_at_once() {
    let now = start();
    let mut shard = Shard::new(Config { tick: 0, ..Config::default() }, ShardId(1), now);
    let a = shard.handle_connect(now);
    let (connect, _) = drain_bus_shard(&mut shard, now);
    assert_eq!((connect.len(), shard.in_flight()), (1, 1));
    assert!(!shard.go_solo(), "went solo with its connect still on the bus");
    shard.handle_envelope(&connect[0], now).expect("own envelope decodes");
    assert_eq!(shard.in_flight(), 0);
    let _ = drain_bus_shard(&mut shard, now);
    assert!(shard.go_solo());

    // Solo: applied at once, and still published for the bus's copy.
    shard.handle_bytes(a, b"hi\n", now);
    let (published, sent) = drain_bus_shard(&mut shard, now);
    assert_eq!((published.len(), sent.as_str(), shard.in_flight()), (1, "You: hi\n", 0));

    // Solo no more: the line waits for the bus again.
    shard.end_solo();
    shard.handle_bytes(a, b"again\n", now);
    let (published, sent) = drain_bus_shard(&mut shard, now);
    assert_eq!((published.len(), sent.as_str(), shard.in_flight()), (1, "", 1));
    shard.handle_envelope(&published[0], now).expect("own envelope decodes");
    assert_eq!(drain_bus_shard(&mut shard, now).1, "You: again\n");
}

#[test]
fn a_standalone_shard_never_goes_solo() {
    let mut chat = Chat::default();
    assert!(!chat.shard.go_solo());
    let a = chat.connect();
    chat.send(a, b"hi\n");
    assert!(chat.take(a).ends_with("You: hi\n"));
}

#[test]
fn connections_and_stats_describe_the_shard() {
    let mut chat = Chat::default();
    let a = chat.connect();
    chat.send(a, b"/nick alice\nhello\n");
    let info: Vec<ConnInfo> = chat.shard.connections().collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].client, Some(ClientId(1)));
    assert_eq!(info[0].nick.as_deref(), Some("alice"));
    assert_eq!(info[0].room.as_deref(), Some("lobby"));
    assert_eq!(info[0].bytes_in, 18);
    assert_eq!(info[0].bytes_out, "* You are now alice\nYou: hello\n".len() as u64);
    let stats = chat.shard.stats();
    assert_eq!((stats.connections, stats.lines_in, stats.lines_out), (1, 2, 2));
    assert_eq!(chat.shard.lines_in(), 2);
}

#[test]
fn shrinking_keeps_what_is_queued() {
    let mut chat = Chat::default();
    let a = chat.connect();
    let b = chat.connect();
    chat.stalled.push(b);
    chat.send(a, b"hi\nhalf a li");
    chat.shard.shrink_buffers();
    chat.send(a, b"ne\n");
    assert_eq!(chat.take(a), "Client #2 is connected\nYou: hi\nYou: half a line\n");
    assert_eq!(chat.shard.transmit(b), b"Client #1: hi\nClient #1: half a line\n");
}
