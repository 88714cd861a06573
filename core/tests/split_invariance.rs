//! Property 1, split invariance: what every client reads never depends on how the
//! byte streams were split into reads. The same conversation runs three times: with
//! its generated chunks, with each send in one chunk, and with each send split again
//! at other points (or byte by byte); every transcript, every close and the whole bus
//! order must be identical.

mod sim;

use chat_core::Config;
use proptest::collection::vec;
use proptest::prelude::*;
use sim::gen::{self, Profile, Vocab};
use sim::{show, Step, World};

/// A world (standalone, or 1 to 3 shards on a bus) and a conversation for it.
fn scenario() -> impl Strategy<Value = (Config, usize, Vec<Step>)> {
    (gen::config(), 0..=3usize).prop_flat_map(|(config, shards)| {
        let too_long = (config.max_line < 100).then_some(config.max_line);
        let profile = Profile::everything(shards > 0, Vocab::full(too_long));
        (Just(config), Just(shards), gen::steps(profile))
    })
}

fn run(config: &Config, shards: usize, steps: &[Step]) -> World {
    let mut world =
        if shards == 0 { World::standalone(config.clone()) } else { World::cluster(config.clone(), shards) };
    world.run(steps);
    world.settle();
    world
}

/// The same conversation with every send's bytes split anew by `split`.
fn resplit(steps: &[Step], mut split: impl FnMut(usize, &[u8]) -> Vec<Vec<u8>>) -> Vec<Step> {
    let mut sends = 0;
    steps
        .iter()
        .map(|step| match step {
            Step::Send { client, chunks } => {
                sends += 1;
                Step::Send { client: *client, chunks: split(sends - 1, &chunks.concat()) }
            }
            other => other.clone(),
        })
        .collect()
}

fn same(expected: &World, got: &World, what: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.clients.len(), got.clients.len());
    for (i, (a, b)) in expected.clients.iter().zip(&got.clients).enumerate() {
        prop_assert!(
            a.transcript == b.transcript,
            "client {} read differently {}:\n  one chunk a send: {}\n  {}: {}",
            i,
            what,
            show(&a.transcript),
            what,
            show(&b.transcript)
        );
        prop_assert_eq!((a.state, a.reason, a.closed_at), (b.state, b.reason, b.closed_at), "client {}", i);
    }
    prop_assert!(expected.log == got.log, "the bus order differs {}", what);
    Ok(())
}

proptest! {
    #![proptest_config(sim::proptest_config(512))]

    #[test]
    fn outputs_never_depend_on_how_the_input_was_split(
        (config, shards, steps) in scenario(),
        cuts in vec(vec(any::<usize>(), 0..8), 1..16),
        bytewise in any::<bool>(),
    ) {
        let whole = run(&config, shards, &resplit(&steps, |_, bytes| vec![bytes.to_vec()]));
        let generated = run(&config, shards, &steps);
        same(&whole, &generated, "as generated")?;
        let again = resplit(&steps, |i, bytes| {
            if bytewise {
                bytes.iter().map(|&b| vec![b]).collect()
            } else {
                gen::chunk(bytes, &cuts[i % cuts.len()])
            }
        });
        same(&whole, &run(&config, shards, &again), "split again")?;
    }
}
