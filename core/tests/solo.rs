//! Property 6, solo: a shard on a bus that goes solo (the only publisher, it
//! applies its own envelopes as it publishes them and the bus delivers them
//! only to its replica) gives every client exactly what a standalone shard
//! gives it, and the replica agrees with it on who is connected. Ending the
//! solo and going solo again anywhere in the conversation changes nothing a
//! client reads: a lone chat-mio worker does this when a reload brings a
//! second one.

mod sim;

use std::collections::BTreeSet;

use chat_core::Config;
use proptest::collection::vec;
use proptest::prelude::*;
use sim::gen::{self, Profile, Vocab};
use sim::{show, Mode, Step, World};

/// A conversation without bus steps: the solo world's bus is driven by the test.
fn scenario() -> impl Strategy<Value = (Config, Vec<Step>)> {
    gen::config().prop_flat_map(|config| {
        let too_long = (config.max_line < 100).then_some(config.max_line);
        let profile = Profile::everything(false, Vocab::full(too_long));
        (Just(config), gen::steps(profile))
    })
}

proptest! {
    #![proptest_config(sim::proptest_config(512))]

    #[test]
    fn a_solo_shard_serves_clients_as_a_standalone_one(
        (config, steps) in scenario(),
        switches in vec(any::<usize>(), 0..4),
    ) {
        let mut reference = World::standalone(config.clone());
        reference.run(&steps);
        reference.settle();

        let switch_at: BTreeSet<usize> = switches.iter().map(|s| s % (steps.len() + 1)).collect();
        let mut solo = World::solo(config);
        for (i, step) in steps.iter().enumerate() {
            if switch_at.contains(&i) {
                if solo.mode == Mode::Solo {
                    solo.end_solo();
                } else {
                    prop_assert!(solo.go_solo(), "the shard did not go solo again");
                }
            }
            solo.apply(step);
            if solo.mode != Mode::Solo {
                // Between solos the bus delivers at once, as a solo shard applies.
                solo.flush_bus();
            }
        }
        solo.settle();

        prop_assert_eq!(reference.clients.len(), solo.clients.len());
        for (i, (a, b)) in reference.clients.iter().zip(&solo.clients).enumerate() {
            prop_assert!(
                a.transcript == b.transcript,
                "client {} read differently:\n  standalone: {}\n  solo:       {}",
                i,
                show(&a.transcript),
                show(&b.transcript)
            );
            prop_assert_eq!((a.state, a.reason), (b.state, b.reason), "client {}", i);
        }
        prop_assert_eq!(solo.replica_connections(), solo.server_connections());
    }
}
