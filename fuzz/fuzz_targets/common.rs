//! What both targets share: limits drawn from the input, and the check that what a
//! client read is clean.

#![allow(dead_code)] // each target uses a part
use arbitrary::Arbitrary;
use chat_core::{Config, UtcOffset};

use crate::sim::{show, split_telnet, Client};

/// Limits as the fuzzer picks them, mapped onto small, interesting values.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub struct Limits {
    tick: u8,
    offset_minutes: i16,
    welcome: Option<u8>,
    max_line: u16,
    max_queue: u16,
    max_conns: u8,
    max_lines_per_second: u8,
}

/// The smallest queue limit [`Limits::comparable`] picks when ticks are off: room for
/// the `is close` lines of [`MAX_CLIENTS`] clients at once.
pub const MIN_SMALL_QUEUE: usize = 2048;

/// The most clients a step sequence connects.
pub const MAX_CLIENTS: usize = 64;

/// Welcome texts with the bytes a server must strip.
const WELCOMES: &[&str] =
    &["Hi\x1b[2J there", "\u{9b}31mevil\x07", "tab\there\r\n", " \t ", "\u{85}\u{7f}", "plain"];

impl Limits {
    /// Any limits at all, as the robustness property draws them.
    pub fn any(self) -> Config {
        Config {
            tick: u64::from(self.tick % 4),
            utc_offset: UtcOffset::from_minutes(i32::from(self.offset_minutes) % 1440)
                .unwrap_or(UtcOffset::UTC),
            welcome: self.welcome.map(|w| WELCOMES[usize::from(w) % WELCOMES.len()].to_owned()),
            max_line: if self.max_line & 1 == 0 { 8192 } else { 1 + usize::from(self.max_line >> 1) % 80 },
            max_queue: if self.max_queue & 1 == 0 {
                1 << 20
            } else {
                1 + usize::from(self.max_queue >> 1) % 1024
            },
            max_conns: if self.max_conns & 1 == 0 {
                10_000
            } else {
                1 + usize::from(self.max_conns >> 1) % 6
            },
            max_lines_per_second: u32::from(self.max_lines_per_second % 4),
        }
    }

    /// Limits under which N shards must match one shard exactly, as the shard property
    /// draws them: either ticks with room to spare, or no ticks and a small queue limit
    /// (ticks run on each shard's own clock, so with both a slow reader would meet its
    /// limit at different points).
    ///
    /// The small queue limit is at least [`MIN_SMALL_QUEUE`]: a shard's death closes
    /// all its clients in one envelope, whose burst of `is close` lines a reader on
    /// another shard must be able to hold, while the reference applies those closes one
    /// at a time and lets the reader read between them. Below that, a reader that keeps
    /// up is closed as a slow consumer in the system and not in the reference (the
    /// fuzzer found this with 11 clients on a dead shard and a limit of 200 bytes).
    pub fn comparable(self) -> Config {
        let (tick, max_queue) = if self.tick & 1 == 0 {
            (u64::from(1 + (self.tick >> 1) % 3), 1 << 20)
        } else {
            (0, MIN_SMALL_QUEUE + usize::from(self.max_queue) % MIN_SMALL_QUEUE)
        };
        Config {
            tick,
            utc_offset: UtcOffset::UTC,
            welcome: self.welcome.map(|_| "Welcome".to_owned()),
            max_line: if self.max_line & 1 == 0 { 8192 } else { 16 + usize::from(self.max_line >> 1) % 48 },
            max_queue,
            max_conns: if self.max_conns & 1 == 0 {
                10_000
            } else {
                2 + usize::from(self.max_conns >> 1) % 3
            },
            max_lines_per_second: u32::from(self.max_lines_per_second % 3),
        }
    }
}

/// Panics unless what `client` read is clean: whole UTF-8 lines without control
/// characters but TAB (unless it was cut off), and telnet refusals only if it asked.
pub fn check_clean(index: usize, c: &Client) {
    let (text, replies) = split_telnet(&c.transcript);
    let asked = c.sent.iter().filter(|&&b| b == 0xff).count();
    assert!(
        replies.len() <= asked,
        "client {index} got {} telnet replies to {asked} IAC bytes",
        replies.len()
    );
    for reply in &replies {
        assert!(matches!(reply[1], 252 | 254), "client {index} got telnet {reply:?}");
    }
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    assert!(c.cut || end == text.len(), "client {index} read a line without its end: {}", show(&text));
    let whole = match std::str::from_utf8(&text[..end]) {
        Ok(whole) => whole,
        Err(e) => panic!("client {index} read invalid UTF-8 ({e}): {}", show(&text)),
    };
    let bad = whole.chars().find(|&ch| ch.is_control() && ch != '\n' && ch != '\t');
    assert!(bad.is_none(), "client {index} read the control character {bad:?}: {whole:?}");
}
