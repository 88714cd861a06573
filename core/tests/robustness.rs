//! Property 5, robustness: arbitrary bytes (telnet sequences, invalid UTF-8, control
//! characters, line ends anywhere) under arbitrary limits never panic a shard, never
//! reach anyone as control characters, and never make a queue exceed `max_queue`.
//!
//! The world checks the queues after every step; this file checks what everyone read:
//! UTF-8 lines that end with `\n` and hold no control character but TAB, plus, for a
//! client that sent telnet requests, its own `IAC WONT x` / `IAC DONT x` refusals.

mod sim;

use chat_core::{Config, UtcOffset};
use proptest::prelude::*;
use proptest::sample::select;
use sim::gen::{self, Profile, Vocab};
use sim::{show, split_telnet, Step, World};

fn config() -> impl Strategy<Value = Config> {
    let welcome = prop::option::of(select(vec![
        "Hi\x1b[2J there",
        "\u{9b}31mevil\x07",
        "tab\there\r\n",
        " \t ",
        "\u{85}\u{7f}",
        "plain welcome",
    ]));
    (
        (prop_oneof![Just(0u64), 1..3u64], -1439..1440i32, welcome),
        prop_oneof![Just(8192usize), 1..80usize],
        prop_oneof![Just(1usize << 20), 1..1024usize],
        prop_oneof![Just(10_000usize), 1..6usize],
        prop_oneof![Just(0u32), 1..4u32],
    )
        .prop_map(|((tick, offset, welcome), max_line, max_queue, max_conns, max_lines_per_second)| {
            Config {
                tick,
                utc_offset: UtcOffset::from_minutes(offset).unwrap_or(UtcOffset::UTC),
                welcome: welcome.map(str::to_owned),
                max_line,
                max_queue,
                max_conns,
                max_lines_per_second,
            }
        })
}

fn scenario() -> impl Strategy<Value = (Config, usize, Vec<Step>)> {
    (config(), 0..=3usize).prop_flat_map(|(config, shards)| {
        let too_long = (config.max_line < 100).then_some(config.max_line);
        let profile = Profile {
            arbitrary: true,
            max_lines: 6,
            steps: 1..80,
            ..Profile::everything(shards > 0, Vocab::full(too_long))
        };
        (Just(config), Just(shards), gen::steps(profile))
    })
}

/// What a client read is clean: whole UTF-8 lines without control characters, and
/// telnet refusals only if it asked for them.
fn clean(client: usize, c: &sim::Client) -> Result<(), TestCaseError> {
    // 0xFF never occurs in UTF-8, so it starts a telnet reply; a client cut off
    // may have read only the first bytes of its last one.
    let mut transcript = c.transcript.as_slice();
    if let Some(last) = transcript.iter().rposition(|&b| b == 0xff) {
        if c.cut && last + 3 > transcript.len() {
            transcript = &transcript[..last];
        }
    }
    let (text, replies) = split_telnet(transcript);
    let asked = c.sent.iter().filter(|&&b| b == 0xff).count();
    prop_assert!(
        replies.len() <= asked,
        "client {} got {} telnet replies to {} IAC bytes",
        client,
        replies.len(),
        asked
    );
    for reply in &replies {
        prop_assert!(matches!(reply[1], 252 | 254), "client {} got telnet {:?}", client, reply);
    }
    // A client cut off may stop anywhere; every other one read whole lines.
    let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    prop_assert!(
        c.cut || end == text.len(),
        "client {} read a line without its end: {}",
        client,
        show(&text)
    );
    let whole = match std::str::from_utf8(&text[..end]) {
        Ok(whole) => whole,
        Err(e) => {
            return Err(TestCaseError::fail(format!(
                "client {client} read invalid UTF-8 ({e}): {}",
                show(&text)
            )))
        }
    };
    let bad = whole.chars().find(|&ch| ch.is_control() && ch != '\n' && ch != '\t');
    prop_assert!(bad.is_none(), "client {} read the control character {:?}: {:?}", client, bad, whole);
    Ok(())
}

proptest! {
    #![proptest_config(sim::proptest_config(1024))]

    #[test]
    fn arbitrary_bytes_never_panic_leak_controls_or_overflow_a_queue((config, shards, steps) in scenario()) {
        let mut world = if shards == 0 {
            World::standalone(config)
        } else {
            World::cluster(config, shards)
        };
        world.run(&steps);
        world.settle();
        for (i, client) in world.clients.iter().enumerate() {
            clean(i, client)?;
        }
    }
}
