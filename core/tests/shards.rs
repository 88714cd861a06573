//! Property 3, shards: N shards joined by a total-order bus, with shards that start
//! late from a snapshot and shards that die, give every client the same transcript as
//! one shard fed the same events in the bus's delivery order (`Server Time` lines
//! aside), and contested nick claims end with exactly one winner.
//!
//! The system is a clustered [`World`]; the reference is a world of one clustered
//! shard with its own bus, fed every input step on the corresponding connection.
//! Whenever the system's bus delivers the j-th envelope of client c, the reference's
//! bus delivers the j-th envelope of the reference's client c (the two must be equal
//! but for the connection they name). When the system delivers a dead shard's "shard
//! gone", the reference closes that shard's clients there and then, in client-id order;
//! a dead shard's clients are compared up to their death.

mod sim;

use chat_core::{Config, UtcOffset};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sim::gen::{self, Profile, Vocab};
use sim::pair::Pair;
use sim::{Delivery, Step, World};

/// Either ticks with room to spare, or no ticks and a small queue limit: ticks run on
/// each shard's own clock, so with both a slow reader would meet its limit at
/// different points. The small limit still fits a dead shard's burst of `is close`
/// lines, which the system shows in one envelope and the reference one close at a
/// time (fuzzing found a reader kicked by that burst in the system alone).
fn config() -> impl Strategy<Value = Config> {
    let limits = prop_oneof![
        (1..4u64).prop_map(|tick| (tick, 1usize << 20)),
        (2048..4096usize).prop_map(|max_queue| (0, max_queue)),
    ];
    (
        limits,
        prop_oneof![3 => Just(10_000usize), 1 => 2..5usize],
        prop_oneof![3 => Just(0u32), 1 => 1..3u32],
        prop::option::of(Just("Welcome".to_owned())),
        prop_oneof![Just(8192usize), 16..64usize],
    )
        .prop_map(|((tick, max_queue), max_conns, max_lines_per_second, welcome, max_line)| Config {
            tick,
            utc_offset: UtcOffset::UTC,
            welcome,
            max_line,
            max_queue,
            max_conns,
            max_lines_per_second,
        })
}

/// A small pool of nicks, so that claims collide.
const NICKS: &[&str] = &["alice", "Alice", "bob"];

fn scenario() -> impl Strategy<Value = (Config, usize, Vec<Step>)> {
    (config(), 1..=3usize).prop_flat_map(|(config, shards)| {
        let too_long = (config.max_line < 100).then_some(config.max_line);
        let vocab = Vocab { nicks: NICKS, ..Vocab::full(too_long) };
        let profile = Profile { steps: 1..90, ..Profile::everything(true, vocab) };
        (Just(config), Just(shards), gen::steps(profile))
    })
}

proptest! {
    #![proptest_config(sim::proptest_config(512))]

    #[test]
    fn n_shards_on_a_bus_behave_as_one_shard((config, shards, steps) in scenario()) {
        let mut pair = Pair::new(&config, shards);
        for step in &steps {
            pair.apply(step);
        }
        pair.settle();
        pair.check().map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(sim::proptest_config(256))]

    #[test]
    fn concurrent_nick_claims_have_exactly_one_winner(
        shards in 2..=3usize,
        claims in vec((any::<usize>(), select(vec!["carol", "Carol", "CAROL"])), 2..7),
        handoffs in vec((any::<usize>(), 1..3usize), 0..12),
        late in any::<bool>(),
    ) {
        let mut pair = Pair::new(&Config { tick: 0, ..Config::default() }, shards);
        if late {
            pair.apply(&Step::StartShard);
        }
        for (shard, _) in &claims {
            pair.apply(&Step::Connect { shard: *shard });
        }
        pair.settle();
        // Every claim is sent before any reaches the bus, and handed over in a scrambled order.
        for (client, (_, nick)) in claims.iter().enumerate() {
            let chunks = vec![format!("/nick {nick}\r\n").into_bytes()];
            pair.apply(&Step::Send { client, chunks });
        }
        for (shard, n) in &handoffs {
            pair.apply(&Step::Handoff { shard: *shard, n: *n });
        }
        pair.settle();
        // A shard that starts now learns the outcome from the replica's snapshot.
        pair.apply(&Step::StartShard);
        let newest = pair.system.live_nodes().len() - 1;
        pair.apply(&Step::Connect { shard: newest });
        pair.settle();
        let everyone = claims.len() + 1;
        for client in 0..everyone {
            pair.apply(&Step::Send { client, chunks: vec![b"/who\n".to_vec()] });
        }
        pair.settle();
        pair.check().map_err(TestCaseError::fail)?;

        let mut winners = Vec::new();
        let mut whos = Vec::new();
        for client in 0..everyone {
            let (lines, _) = sim::lines(pair.system.transcript(client));
            if let Some((_, nick)) = claims.get(client) {
                let won = lines.contains(&format!("* You are now {nick}"));
                let lost = lines.iter().any(|l| l.starts_with("Error: ") && l.contains("taken"));
                prop_assert!(won != lost, "client {} neither won nor lost, or both: {:?}", client, lines);
                if won {
                    winners.push(client);
                }
            }
            let who: Vec<String> =
                lines.into_iter().skip_while(|l| !l.starts_with("* ") || l.starts_with("* You")).collect();
            whos.push(who);
        }
        prop_assert_eq!(winners.len(), 1, "winners: {:?}", winners);
        let winner = winners[0];
        let entry = format!("* {} (#{})", claims[winner].1, pair.system.client_id(winner).unwrap_or(0));
        for (client, who) in whos.iter().enumerate() {
            let shard = pair.system.clients[client].node;
            prop_assert_eq!(who, &whos[0], "client {} on shard #{} sees another /who", client, shard);
            prop_assert!(who.contains(&entry), "/who lacks {:?}: {:?}", entry, who);
            prop_assert_eq!(who.iter().filter(|l| l.contains("(#")).count(), 1, "{:?}", who);
        }
        // The first claim in bus order won.
        let first = pair.system.log.iter().find_map(|d| match d {
            Delivery::From { client, envelope } if sim::header(envelope).kind == nick_kind() => Some(*client),
            _ => None,
        });
        prop_assert_eq!(first, Some(winner));
    }
}

/// The kind byte of a `/nick` envelope, learnt from a shard.
fn nick_kind() -> u8 {
    let mut world = World::cluster(Config { tick: 0, ..Config::default() }, 1);
    world.run(&[Step::Connect { shard: 0 }, Step::Send { client: 0, chunks: vec![b"/nick zed\n".to_vec()] }]);
    let Some(envelope) = world.nodes[0].outbox.back() else { panic!("/nick published nothing") };
    envelope[0]
}
