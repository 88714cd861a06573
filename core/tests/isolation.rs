//! Property 4, isolation: a connection that never drains its output is closed at the
//! limit, and every other connection's transcript is unchanged by its presence.
//!
//! One conversation runs three times: (A) without the slow client, (B) with it, never
//! reading, and (C) with it reading like everyone else. It connects after all the
//! others, so nobody's id shifts. B's slow client must hold exactly what C's has read
//! after every step until the step where that first passes `max_queue`, and be closed
//! as a slow consumer right then; everyone else must read in B what they read in A,
//! but for the lines about the slow client itself.

mod sim;

use chat_core::{CloseReason, Config, UtcOffset};
use proptest::collection::vec;
use proptest::prelude::*;
use sim::gen::{self, Profile, Vocab, GOOD_NICKS, GOOD_ROOMS};
use sim::{lines, split_telnet, State, Step, World};

struct Scenario {
    config: Config,
    /// 0 for a standalone shard.
    shards: usize,
    /// The conversation; the slow client connects at `steps[slow_step]`.
    steps: Vec<Step>,
    slow_step: usize,
    /// The slow client's number: every other client connected before it.
    slow: usize,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:?}, shards: {}, slow client {} connects at step {}",
            self.config, self.shards, self.slow, self.slow_step
        )?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "  {i:3}: {step:?}")?;
        }
        Ok(())
    }
}

/// Limits no reading client comes near: at most two short lines a read, no `/help`;
/// on a bus, nothing answered locally either, since such answers wait behind the
/// envelopes in flight and count against the limit meanwhile.
fn scenario() -> impl Strategy<Value = Scenario> {
    let config = (select_tick(), 256..=400usize, prop::option::of(Just("Welcome!".to_owned()))).prop_map(
        |(tick, max_queue, welcome)| Config {
            tick,
            utc_offset: UtcOffset::UTC,
            welcome,
            max_queue,
            ..Config::default()
        },
    );
    (config, 0..=3usize).prop_flat_map(|(config, shards)| {
        let vocab = Vocab {
            nicks: GOOD_NICKS,
            rooms: GOOD_ROOMS,
            help: false,
            local_replies: shards == 0,
            too_long: None,
            msg_ids: false,
            quit: true,
        };
        let others = Profile {
            stalls: false,
            connects: false,
            max_lines: 2,
            ..Profile::everything(shards > 0, vocab)
        };
        // The others connect and talk a little; then the slow client connects, and they
        // talk on, leaving only when their shard dies, so that it has much to read.
        let head = Profile { steps: 0..6, ..others.clone() };
        let tail = Profile {
            closes: false,
            steps: 20..80,
            vocab: Vocab { quit: false, ..others.vocab.clone() },
            ..others
        };
        (
            Just(config),
            Just(shards),
            vec(any::<usize>(), 2..=5),
            vec(gen::raw(&head), head.steps.clone()),
            vec(gen::raw(&tail), tail.steps.clone()),
            any::<usize>(),
        )
            .prop_map(move |(config, shards, connects, head_raws, tail_raws, slow_shard)| {
                let slow = connects.len();
                let mut steps: Vec<Step> =
                    connects.into_iter().map(|shard| Step::Connect { shard }).collect();
                steps.extend(gen::resolve(&head_raws, &head, slow));
                // On a bus, ids follow the bus order of connects: let every earlier connect
                // through before the slow client's.
                if shards > 0 {
                    steps.extend(
                        (0..sim::MAX_LIVE_SHARDS).map(|shard| Step::Handoff { shard, n: usize::MAX }),
                    );
                    steps.push(Step::DeliverBus { n: usize::MAX });
                }
                let slow_step = steps.len();
                steps.push(Step::Connect { shard: slow_shard });
                steps.extend(gen::resolve(&tail_raws, &tail, slow));
                // The bus moves whole outboxes and whole queues, so that the slow client's
                // envelopes never take a place another one would have had.
                for step in &mut steps {
                    match step {
                        Step::Handoff { n, .. } | Step::DeliverBus { n } => *n = usize::MAX,
                        _ => {}
                    }
                }
                Scenario { config, shards, steps, slow_step, slow }
            })
    })
}

fn select_tick() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1..3u64]
}

fn world(s: &Scenario) -> World {
    if s.shards == 0 {
        World::standalone(s.config.clone())
    } else {
        World::cluster(s.config.clone(), s.shards)
    }
}

/// A transcript's lines with those about client `id` taken out and head counts of the
/// lobby (where it sits) blanked, plus its telnet replies.
fn normalized(transcript: &[u8], id: Option<u64>) -> (Vec<String>, Vec<u8>, Vec<[u8; 3]>) {
    let (mut lines, rest) = lines(transcript);
    if let Some(id) = id {
        let about = [
            format!("Client #{id} is connected"),
            format!("Client #{id} is close"),
            format!("* Client #{id}"),
        ];
        lines.retain(|l| !about.contains(l));
    }
    for line in &mut lines {
        if line.starts_with("* ") && line.ends_with(" in lobby") {
            *line = "* N in lobby".into();
        } else if line.starts_with("* lobby: ") {
            *line = "* lobby: N".into();
        }
    }
    (lines, rest, split_telnet(transcript).1)
}

/// Checks B's slow client against C's after one step.
fn check_slow(
    b: &World,
    c: &World,
    slow: usize,
    kicked: &mut bool,
    max_queue: usize,
) -> Result<(), TestCaseError> {
    let Some(held) = b.clients.get(slow) else { return Ok(()) };
    let sent = c.transcript(slow).len();
    prop_assert_ne!(
        c.clients[slow].reason,
        Some(CloseReason::SlowConsumer),
        "a reading client was closed as slow"
    );
    if *kicked || held.state == State::Dead {
        return Ok(());
    }
    if held.reason == Some(CloseReason::SlowConsumer) {
        *kicked = true;
        prop_assert_eq!(held.closed_at, Some(b.step - 1));
        prop_assert!(
            sent > max_queue,
            "closed as slow at step {} with {} bytes sent it, within max_queue {}",
            b.step - 1,
            sent,
            max_queue
        );
    } else if held.state != State::Gone {
        prop_assert_eq!(
            b.queued(slow),
            sent,
            "at step {}, the slow client's queue is not what it was sent",
            b.step - 1
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(sim::proptest_config(512))]

    #[test]
    fn a_slow_reader_is_closed_at_its_limit_and_nobody_else_notices(s in scenario()) {
        let mut without = world(&s);
        let mut steps = s.steps.clone();
        steps.remove(s.slow_step);
        without.run(&steps);
        without.settle();

        let (mut b, mut c) = (world(&s), world(&s));
        b.hold(s.slow);
        let mut kicked = false;
        let mut apply = |b: &mut World, c: &mut World, step: &Step| -> Result<(), TestCaseError> {
            b.apply(step);
            c.apply(step);
            check_slow(b, c, s.slow, &mut kicked, s.config.max_queue)
        };
        for step in &s.steps {
            apply(&mut b, &mut c, step)?;
        }
        loop {
            let mut round = b.settle_round();
            round.extend(c.settle_round());
            if round.is_empty() {
                break;
            }
            for step in &round {
                apply(&mut b, &mut c, step)?;
            }
        }

        prop_assert!(b.transcript(s.slow).is_empty());
        let id = c.client_id(s.slow);
        // Once closed, the slow client is gone from the roster everywhere.
        let stays = usize::from(!kicked && b.clients[s.slow].state != State::Dead && id.is_some());
        prop_assert_eq!(b.server_connections(), without.server_connections() + stays, "kicked: {}", kicked);
        for i in 0..s.slow {
            let (a, with) = (&without.clients[i], &b.clients[i]);
            prop_assert_eq!(
                normalized(&a.transcript, None),
                normalized(&with.transcript, id),
                "client {} read differently beside the slow client #{:?}",
                i,
                id
            );
            prop_assert_eq!((a.state, a.reason), (with.state, with.reason), "client {}", i);
        }
    }
}
