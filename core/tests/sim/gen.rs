//! Strategies that generate conversations: lines of text and commands, noise that the
//! server must strip (telnet commands, control characters, invalid UTF-8), byte chunks
//! split at arbitrary points, and the [`Step`]s that carry them.

use std::ops::Range;

use chat_core::{Config, UtcOffset};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;

use super::Step;

/// Configurations with every limit in play, none of which the way input is split
/// (or how soon the bus delivers) can push a reading client over: at most four lines a read,
/// so a burst of replies stays far below `max_queue`; stalled clients still reach it.
pub fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![Just(0u64), 1..4u64],
        prop_oneof![Just(8192usize), 8..48usize],
        prop_oneof![Just(1usize << 20), 4096..8192usize],
        prop_oneof![3 => Just(10_000usize), 1 => 1..4usize],
        prop_oneof![3 => Just(0u32), 1 => 1..3u32],
        prop::option::of(Just("Welcome\x07 to chat".to_owned())),
    )
        .prop_map(|(tick, max_line, max_queue, max_conns, max_lines_per_second, welcome)| Config {
            tick,
            utc_offset: UtcOffset::UTC,
            welcome,
            max_line,
            max_queue,
            max_conns,
            max_lines_per_second,
        })
}

/// Nicks that are well formed.
pub const GOOD_NICKS: &[&str] = &["alice", "Alice", "bob", "carol_1", "d-2"];
/// Nicks with every kind of flaw: a digit or `_` first, reserved, blanks, empty, too long.
pub const BAD_NICKS: &[&str] =
    &["9lives", "_x", "Client", "YOU", "server", "x y", "", "é", "abcdefghijklmnopqrstuvwxyzabcdefg"];
/// Room names, the lobby and two that differ only in case among them.
pub const GOOD_ROOMS: &[&str] = &["lobby", "games", "Games", "café"];
/// Room names that are refused.
pub const BAD_ROOMS: &[&str] = &["a b", "", "rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"];
/// Commands that are refused before they reach the bus.
pub const BAD_COMMANDS: &[&str] = &[
    "/dance",
    "/HELP",
    "/",
    "/who me",
    "/rooms x",
    "/quit now",
    "/help me",
    "/nick",
    "/join",
    "/msg bob",
    "/msg",
    "/msg #99999999999999999999999 hi",
];
/// Words that make up plain lines, some of them lookalikes of server lines.
pub const WORDS: &[&str] = &[
    "hi",
    "hello  world",
    "a\tb",
    "héllo",
    "✓ ok",
    "😀",
    "x",
    "Client #1: fake",
    "* fake reply",
    "Error: fake",
    "Server Time: 2026-11-25 00:00:01",
    "you are now",
];

/// Which lines a conversation may contain.
#[derive(Clone, Debug)]
pub struct Vocab {
    /// Nicks that `/nick` and `/msg` use.
    pub nicks: &'static [&'static str],
    /// Room names that `/join` uses.
    pub rooms: &'static [&'static str],
    /// Whether `/help` appears (its reply is long).
    pub help: bool,
    /// Whether bad commands and telnet requests appear: they are answered locally, and
    /// such answers wait behind the connection's envelopes in flight.
    pub local_replies: bool,
    /// Lines longer than this appear (the configured `max_line`).
    pub too_long: Option<usize>,
    /// `/msg` names its target by id too, not only by nick.
    pub msg_ids: bool,
    /// Whether `/quit` appears.
    pub quit: bool,
}

impl Vocab {
    /// Everything.
    pub fn full(max_line: Option<usize>) -> Vocab {
        Vocab {
            nicks: GOOD_NICKS,
            rooms: GOOD_ROOMS,
            help: true,
            local_replies: true,
            too_long: max_line,
            msg_ids: true,
            quit: true,
        }
    }
}

/// A plain line of words.
pub fn text() -> BoxedStrategy<String> {
    vec(select(WORDS), 1..4).prop_map(|words| words.join(" ")).boxed()
}

/// The content of one line (no line end), from the vocabulary.
pub fn line(v: &Vocab) -> BoxedStrategy<Vec<u8>> {
    let mut nicks: Vec<&'static str> = v.nicks.to_vec();
    let mut rooms: Vec<&'static str> = v.rooms.to_vec();
    if v.local_replies {
        nicks.extend_from_slice(BAD_NICKS);
        rooms.extend_from_slice(BAD_ROOMS);
    }
    let ids = if v.msg_ids { 6 } else { 0 };
    let targets: Vec<String> =
        (1..=ids).map(|i| format!("#{i}")).chain(v.nicks.iter().map(|n| n.to_string())).collect();
    let mut options: Vec<(u32, BoxedStrategy<Vec<u8>>)> = vec![
        (8, text().prop_map(String::into_bytes).boxed()),
        (2, select(nicks).prop_map(|n| format!("/nick {n}").into_bytes()).boxed()),
        (2, select(rooms).prop_map(|r| format!("/join {r}").into_bytes()).boxed()),
        (2, (select(targets), text()).prop_map(|(t, x)| format!("/msg {t} {x}").into_bytes()).boxed()),
        (1, Just(b"/who".to_vec()).boxed()),
        (1, Just(b"/rooms".to_vec()).boxed()),
        (1, text().prop_map(|x| format!("//{x}").into_bytes()).boxed()),
        (1, select(vec![" ", "\t", " \t "]).prop_map(|b| b.as_bytes().to_vec()).boxed()),
    ];
    if v.quit {
        options.push((1, Just(b"/quit".to_vec()).boxed()));
    }
    if v.help {
        options.push((1, Just(b"/help".to_vec()).boxed()));
    }
    if v.local_replies {
        options.push((2, select(BAD_COMMANDS).prop_map(|c| c.as_bytes().to_vec()).boxed()));
    }
    if let Some(max) = v.too_long {
        options.push((1, (1..40usize).prop_map(move |extra| vec![b'z'; max + extra]).boxed()));
    }
    Union::new_weighted(options).boxed()
}

/// Bytes the server must strip from a line: telnet commands, control characters,
/// escape introducers. With `local_replies`, also telnet requests, which it answers,
/// and invalid UTF-8 and `IAC IAC`, which become U+FFFD.
pub fn noise(local_replies: bool) -> BoxedStrategy<Vec<u8>> {
    let controls: Vec<u8> = (1u8..0x20).filter(|b| !b"\t\n\r".contains(b)).chain([0x7f]).collect();
    let mut options: Vec<(u32, BoxedStrategy<Vec<u8>>)> = vec![
        (3, select(controls).prop_map(|b| vec![b]).boxed()),
        (2, (0x80u8..0xa0).prop_map(|b| vec![0xc2, b]).boxed()),
        (1, Just(b"\x1b".to_vec()).boxed()),
        (1, Just(b"\r".to_vec()).boxed()),
        (2, select(vec![241u8, 246, 249, 242]).prop_map(|c| vec![0xff, c]).boxed()),
        (2, (select(vec![252u8, 254]), any::<u8>()).prop_map(|(v, o)| vec![0xff, v, o]).boxed()),
        (
            2,
            (
                0u8..0xff,
                vec(any::<u8>().prop_map(|b| if b"\xff\n\r".contains(&b) { b'.' } else { b }), 0..24),
            )
                .prop_map(|(option, payload)| {
                    let mut sb = vec![0xff, 250, option];
                    sb.extend(payload);
                    sb.extend([0xff, 240]);
                    sb
                })
                .boxed(),
        ),
    ];
    if local_replies {
        options.push((
            3,
            (select(vec![251u8, 253]), prop_oneof![Just(6u8), any::<u8>()])
                .prop_map(|(v, o)| vec![0xff, v, o])
                .boxed(),
        ));
        options.push((
            1,
            select(vec![&[0x80u8][..], &[0xc3], &[0xe2, 0x82], &[0xf0, 0x9f, 0x98], &[0xed, 0xa0, 0x80]])
                .prop_map(<[u8]>::to_vec)
                .boxed(),
        ));
        options.push((1, Just(vec![0xff, 0xff]).boxed()));
    }
    Union::new_weighted(options).boxed()
}

/// A line's content with noise put in at arbitrary byte positions and blanks around it.
pub fn noisy_line(v: &Vocab) -> BoxedStrategy<Vec<u8>> {
    let blanks = select(vec!["", "", " ", "\t", "  \t"]);
    (blanks.clone(), line(v), blanks, vec((any::<usize>(), noise(v.local_replies)), 0..3))
        .prop_map(|(before, content, after, noise)| {
            let mut line = before.as_bytes().to_vec();
            line.extend(content);
            line.extend_from_slice(after.as_bytes());
            for (at, bytes) in noise {
                let at = at % (line.len() + 1);
                line.splice(at..at, bytes);
            }
            line
        })
        .boxed()
}

/// The line ends a telnet or nc user sends.
pub fn ending() -> BoxedStrategy<&'static [u8]> {
    select(vec![&b"\n"[..], b"\r\n", b"\r\0"]).boxed()
}

/// What one read of a client may carry: up to `max_lines` whole lines, maybe followed
/// by the start of a line that a later read continues.
pub fn payload(v: &Vocab, max_lines: usize) -> BoxedStrategy<Vec<u8>> {
    (vec((noisy_line(v), ending()), 0..=max_lines), prop::option::weighted(0.2, noisy_line(v)))
        .prop_map(|(lines, partial)| {
            let mut bytes = Vec::new();
            for (line, end) in lines {
                bytes.extend(line);
                bytes.extend_from_slice(end);
            }
            bytes.extend(partial.unwrap_or_default());
            bytes
        })
        .boxed()
}

/// Bytes that telnet, line framing and UTF-8 decoding find interesting.
pub const INTERESTING: &[u8] = &[
    0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf0, 0xf4, 0xf1, 6, 1, 24, b'\n', b'\r', b'\r', 0, b'\t',
    b' ', b'a', b'/', 0x1b, 0x7f, 0xc2, 0x85, 0x9b, 0xe2, 0x82, 0xf0, 0x9f, 0x80, 0xc3,
];

/// Arbitrary bytes, now uniform, now made of interesting ones, now well-formed lines.
pub fn arbitrary_payload(v: &Vocab, max_lines: usize) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..96),
        3 => vec(select(INTERESTING), 0..96),
        3 => payload(v, max_lines),
    ]
    .boxed()
}

/// Splits `bytes` at the given cut points (taken modulo its length plus one).
pub fn chunk(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut chunks = Vec::new();
    let mut from = 0;
    for cut in at {
        chunks.push(bytes[from..cut].to_vec());
        from = cut;
    }
    chunks.push(bytes[from..].to_vec());
    chunks
}

/// What kind of conversation to generate.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Bus steps (handoffs and deliveries) appear.
    pub cluster: bool,
    /// Shards start late and die.
    pub lifecycle: bool,
    /// Clients stall, resume and read a little at a time.
    pub stalls: bool,
    /// Clients connect during the conversation.
    pub connects: bool,
    /// Clients close, reset or end their stream.
    pub closes: bool,
    pub max_clients: usize,
    pub steps: Range<usize>,
    pub vocab: Vocab,
    /// Whole lines in one send, at most.
    pub max_lines: usize,
    /// Sends may carry arbitrary bytes.
    pub arbitrary: bool,
}

impl Profile {
    /// A conversation with everything in it.
    pub fn everything(cluster: bool, vocab: Vocab) -> Profile {
        Profile {
            cluster,
            lifecycle: cluster,
            stalls: true,
            connects: true,
            closes: true,
            max_clients: 6,
            steps: 1..60,
            vocab,
            max_lines: 4,
            arbitrary: false,
        }
    }
}

/// A step before its client number is known; numbers are resolved in order.
#[derive(Clone, Debug)]
pub enum Raw {
    Connect(usize),
    Send(usize, Vec<u8>, Vec<usize>),
    Eof(usize),
    Close(usize),
    Advance(u64),
    Stall(usize),
    Resume(usize),
    Read(usize, usize),
    Handoff(usize, usize),
    Deliver(usize),
    Start,
    Kill(usize),
}

/// One raw step of a conversation of this profile.
pub fn raw(p: &Profile) -> BoxedStrategy<Raw> {
    let bytes =
        if p.arbitrary { arbitrary_payload(&p.vocab, p.max_lines) } else { payload(&p.vocab, p.max_lines) };
    let mut options: Vec<(u32, BoxedStrategy<Raw>)> = vec![
        (
            12,
            (any::<usize>(), bytes, vec(any::<usize>(), 0..6))
                .prop_map(|(c, b, cuts)| Raw::Send(c, b, cuts))
                .boxed(),
        ),
        (2, (1u64..6000).prop_map(Raw::Advance).boxed()),
    ];
    if p.connects {
        options.push((4, any::<usize>().prop_map(Raw::Connect).boxed()));
    }
    if p.closes {
        options.push((1, any::<usize>().prop_map(Raw::Eof).boxed()));
        options.push((1, any::<usize>().prop_map(Raw::Close).boxed()));
    }
    if p.stalls {
        options.push((2, any::<usize>().prop_map(Raw::Stall).boxed()));
        options.push((1, any::<usize>().prop_map(Raw::Resume).boxed()));
        options.push((1, (any::<usize>(), 1usize..64).prop_map(|(c, n)| Raw::Read(c, n)).boxed()));
    }
    if p.cluster {
        options.push((5, (any::<usize>(), 1usize..5).prop_map(|(s, n)| Raw::Handoff(s, n)).boxed()));
        options.push((5, (1usize..8).prop_map(Raw::Deliver).boxed()));
    }
    if p.lifecycle {
        options.push((1, Just(Raw::Start).boxed()));
        options.push((1, any::<usize>().prop_map(Raw::Kill).boxed()));
    }
    Union::new_weighted(options).boxed()
}

/// Turns raw steps into steps: a client number becomes one of the `clients` already
/// connected (steps for a client before the first connect are dropped), and connects
/// past `max_clients` are dropped.
pub fn resolve(raws: &[Raw], p: &Profile, mut clients: usize) -> Vec<Step> {
    let mut steps = Vec::with_capacity(raws.len());
    for raw in raws {
        let pick = |c: usize| (clients > 0).then(|| c % clients);
        let step = match *raw {
            Raw::Connect(shard) if clients < p.max_clients => {
                clients += 1;
                Some(Step::Connect { shard })
            }
            Raw::Connect(_) => None,
            Raw::Send(c, ref bytes, ref cuts) => {
                pick(c).map(|client| Step::Send { client, chunks: chunk(bytes, cuts) })
            }
            Raw::Eof(c) => pick(c).map(|client| Step::Eof { client }),
            Raw::Close(c) => pick(c).map(|client| Step::Close { client }),
            Raw::Advance(millis) => Some(Step::Advance { millis }),
            Raw::Stall(c) => pick(c).map(|client| Step::Stall { client }),
            Raw::Resume(c) => pick(c).map(|client| Step::Resume { client }),
            Raw::Read(c, max) => pick(c).map(|client| Step::Read { client, max }),
            Raw::Handoff(shard, n) => Some(Step::Handoff { shard, n }),
            Raw::Deliver(n) => Some(Step::DeliverBus { n }),
            Raw::Start => Some(Step::StartShard),
            Raw::Kill(shard) => Some(Step::KillShard { shard }),
        };
        steps.extend(step);
    }
    steps
}

/// A conversation of this profile that starts with no client.
pub fn steps(p: Profile) -> BoxedStrategy<Vec<Step>> {
    vec(raw(&p), p.steps.clone()).prop_map(move |raws| resolve(&raws, &p, 0)).boxed()
}
