//! Faults and abuse (issue 6): the server keeps PROTOCOL.md's promise under real
//! faults, against the real binaries. A bad byte, a dead peer, a client that never
//! reads, a dead or stopped worker: each affects only its own connections, and the
//! others lose, repeat or reorder no line.
//!
//! Senders say sequence-numbered lines (`seq S N`) and every other client checks that
//! it reads each sender's lines as 1, 2, 3, … with no gap, repeat or swap. A test ends
//! its conversation with a stop marker said by a newcomer after every sender saw its
//! last echo: the bus is one order, so a client that reads the marker has read
//! everything before it.
//!
//! Each test is bounded in time (seconds in this short form). `CHAT_FAULTS_LONG=1`
//! runs the longer form (more peers, lines and bytes) for soak runs. The tests run
//! one at a time (they load the machine, and some measure CPU time and memory), and
//! they check with generous bounds: seconds, not milliseconds.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chat_tests::client::{is_rooms_total, is_who_total, parse_who_entry};
use chat_tests::mio::parse_connections;
use chat_tests::process::{self, Pid};
use chat_tests::{marker, Client, Frontend, Next, Server, TempDir, WAIT};

const IAC: u8 = 255;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const DONT: u8 = 254;
const SB: u8 = 250;
const SE: u8 = 240;
const TM: u8 = 6;

/// The longest any conversation of these tests may take before it fails.
const CONVERSATION: Duration = Duration::from_secs(120);

/// The longest a settling state (a new worker, closed connections) may take.
const SETTLE: Duration = Duration::from_secs(30);

const MIB: u64 = 1024 * 1024;

/// Runs the tests of this file one at a time: each loads the machine, and some
/// measure CPU time, memory and delays.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tells whether the long form runs (`CHAT_FAULTS_LONG=1`).
fn long() -> bool {
    std::env::var("CHAT_FAULTS_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` in the default form, `long` in the long one.
fn scale<T>(short: T, long_form: T) -> T {
    if long() {
        long_form
    } else {
        short
    }
}

// ------------------------------------------------------------ sequence lines

/// The text of sender `s`'s `n`-th line, padded with `pad` bytes.
fn seq_text(s: usize, n: usize, pad: usize) -> String {
    if pad == 0 {
        format!("seq {s} {n}")
    } else {
        format!("seq {s} {n} {}", "p".repeat(pad))
    }
}

/// Reads `seq S N …` back.
fn parse_seq(text: &str) -> Option<(usize, usize)> {
    let mut words = text.split(' ');
    if words.next()? != "seq" {
        return None;
    }
    let s = words.next()?.parse().ok()?;
    let n = words.next()?.parse().ok()?;
    Some((s, n))
}

/// What one client read: each sender's last line number, every fault of order,
/// the close lines per name, and the longest pause between two numbered lines.
#[derive(Debug, Default)]
struct Tally {
    label: String,
    /// Sender → the highest line number read from it.
    last: BTreeMap<usize, usize>,
    /// Gaps, repeats and swaps (at most a few).
    faults: Vec<String>,
    /// `NAME is close` lines, counted per name.
    closes: BTreeMap<String, usize>,
    /// The other lines that are not numbered (the first thousand).
    others: Vec<String>,
    /// The server closed the connection.
    closed: bool,
    /// The longest time between two numbered lines.
    max_gap: Duration,
    last_seq_at: Option<Instant>,
}

impl Tally {
    fn new(label: &str) -> Tally {
        Tally { label: label.to_owned(), ..Tally::default() }
    }

    fn record(&mut self, line: &str) {
        if let Some((_, text)) = line.split_once(": ") {
            if let Some((s, n)) = parse_seq(text) {
                let prev = self.last.get(&s).copied().unwrap_or(0);
                if n != prev + 1 && self.faults.len() < 10 {
                    self.faults.push(format!("{}: line {n} of sender {s} after line {prev}", self.label));
                }
                self.last.insert(s, n.max(prev));
                let now = Instant::now();
                if let Some(at) = self.last_seq_at {
                    self.max_gap = self.max_gap.max(now - at);
                }
                self.last_seq_at = Some(now);
                return;
            }
        }
        if let Some(name) = line.strip_suffix(" is close") {
            *self.closes.entry(name.to_owned()).or_default() += 1;
        } else if self.others.len() < 1000 {
            self.others.push(line.to_owned());
        }
    }

    /// Panics unless sender `s`'s lines `1..=n` were all read.
    fn expect_all(&self, s: usize, n: usize) {
        let got = self.last.get(&s).copied().unwrap_or(0);
        assert_eq!(got, n, "{}: read sender {s}'s lines up to {got}, not {n}", self.label);
    }
}

/// A sender's plan: `lines` numbered lines, one at a time (the next once the echo
/// of the last came back), at least `pace` apart.
#[derive(Debug, Clone, Copy)]
struct Plan {
    sender: usize,
    lines: usize,
    pace: Duration,
    pad: usize,
}

/// How a sender ended: every echo back, or its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderEnd {
    Done(usize),
    Closed(usize),
}

/// One client on its own thread: it reads every line into its [`Tally`] and, with a
/// plan, sends numbered lines; it stops at the line `stop` or when its connection
/// closes.
fn chatter(
    mut client: Client,
    plan: Option<Plan>,
    stop: Arc<String>,
    ends: mpsc::Sender<SenderEnd>,
) -> (Client, Tally) {
    let mut tally = Tally::new(client.label());
    let deadline = Instant::now() + CONVERSATION;
    let mut next = 1;
    let mut awaiting = false;
    let mut next_at = Instant::now();
    let stop_suffix = format!(": {stop}");
    let mut reported = false;
    let report = |end: SenderEnd, reported: &mut bool| {
        if !*reported {
            *reported = true;
            let _ = ends.send(end);
        }
    };
    loop {
        let now = Instant::now();
        if now > deadline {
            tally.faults.push(format!("{}: no stop marker within {CONVERSATION:?}", tally.label));
            break;
        }
        if let Some(p) = plan {
            if !awaiting && next <= p.lines && now >= next_at {
                if client.try_send(format!("{}\n", seq_text(p.sender, next, p.pad))).is_err() {
                    tally.closed = true;
                    report(SenderEnd::Closed(p.sender), &mut reported);
                    break;
                }
                awaiting = true;
                next_at = now + p.pace;
            }
        }
        let wait = match plan {
            Some(p) if !awaiting && next <= p.lines => next_at.saturating_duration_since(now),
            _ => Duration::from_millis(100),
        };
        match client.next_line_within(wait.clamp(Duration::from_millis(1), Duration::from_millis(100))) {
            Next::Line(line) => {
                if line.ends_with(&stop_suffix) {
                    break;
                }
                tally.record(&line);
                if let Some(p) = plan {
                    let text = line.strip_prefix("You: ").unwrap_or_default();
                    if awaiting && parse_seq(text) == Some((p.sender, next)) {
                        awaiting = false;
                        if next == p.lines {
                            report(SenderEnd::Done(p.sender), &mut reported);
                        }
                        next += 1;
                    }
                }
            }
            Next::Closed => {
                tally.closed = true;
                break;
            }
            Next::Timeout => {}
        }
    }
    if let Some(p) = plan {
        report(SenderEnd::Closed(p.sender), &mut reported);
    }
    (client, tally)
}

/// Clients chatting on their own threads, some of them senders.
struct Swarm {
    threads: Vec<JoinHandle<(Client, Tally)>>,
    ends: mpsc::Receiver<SenderEnd>,
    senders: usize,
    stop: Arc<String>,
}

impl Swarm {
    /// Starts a thread per client; `plans[i]` is client i's plan, if it sends.
    fn start(clients: Vec<Client>, mut plans: BTreeMap<usize, Plan>) -> Swarm {
        let stop = Arc::new(format!("stop-{}", marker()));
        let (tx, ends) = mpsc::channel();
        let senders = plans.len();
        let threads = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let (plan, stop, tx) = (plans.remove(&i), stop.clone(), tx.clone());
                thread::spawn(move || chatter(client, plan, stop, tx))
            })
            .collect();
        Swarm { threads, ends, senders, stop }
    }

    /// Waits until every sender got its last echo or lost its connection; returns how
    /// each ended.
    fn wait_senders(&self) -> Vec<SenderEnd> {
        let deadline = Instant::now() + CONVERSATION;
        let mut ends = Vec::new();
        while ends.len() < self.senders {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ends.recv_timeout(left) {
                Ok(end) => ends.push(end),
                Err(_) => panic!(
                    "only {} of {} senders finished within {CONVERSATION:?}: {ends:?}",
                    ends.len(),
                    self.senders
                ),
            }
        }
        ends
    }

    /// Has a newcomer say the stop marker, and returns every client and what it read.
    fn finish(self, server: &Server) -> Vec<(Client, Tally)> {
        let mut conductor = server.connect().named("conductor");
        conductor.say(&self.stop);
        conductor.lines_until(&format!("You: {}", self.stop));
        self.threads.into_iter().map(|t| t.join().expect("a chatter panicked")).collect()
    }
}

/// Plans for senders `0..senders` (client index = sender number).
fn plans(senders: usize, lines: usize, pace: Duration, pad: usize) -> BTreeMap<usize, Plan> {
    (0..senders).map(|s| (s, Plan { sender: s, lines, pace, pad })).collect()
}

// ------------------------------------------------------------ the server seen from outside

/// Connects `n` clients, named `client i`.
fn connect_all(server: &Server, n: usize) -> Vec<Client> {
    (0..n).map(|i| server.connect().named(&format!("client {i}"))).collect()
}

/// Waits until chat-mio's `connections` lists every client with an id, and returns,
/// per client, its id and worker pid; records each client's id.
fn placement(server: &Server, clients: &mut [Client]) -> Vec<(u64, Pid)> {
    let mut last = String::new();
    let found = process::eventually(SETTLE, || {
        let out = server.ctl(&["connections"]);
        last = out.stdout.clone();
        let rows = parse_connections(&out.stdout)?;
        clients
            .iter()
            .map(|c| {
                let peer = format!("127.0.0.1:{}", c.local_port());
                let row = rows.iter().find(|r| r.peer == peer)?;
                Some((row.id?, row.pid))
            })
            .collect::<Option<Vec<_>>>()
    });
    let Some(found) = found else {
        panic!("connections never listed all {} clients:\n{last}", clients.len())
    };
    for (client, (id, _)) in clients.iter_mut().zip(&found) {
        client.set_id(*id);
    }
    found
}

/// The server's processes: chat-smol, or chat-mio's master and workers.
fn server_pids(server: &mut Server) -> Vec<Pid> {
    let mut pids = vec![server.main_pid()];
    pids.extend(server.workers());
    pids
}

/// The processes that hold connections: chat-mio's workers, or chat-smol itself.
fn shard_pids(server: &mut Server) -> Vec<Pid> {
    match server.frontend() {
        Frontend::Mio { .. } => server.workers(),
        Frontend::Smol { .. } => vec![server.main_pid()],
    }
}

fn cpu_of(pids: &[Pid]) -> Duration {
    pids.iter().filter_map(|&p| process::cpu_time(p)).sum()
}

fn rss_of(pids: &[Pid]) -> u64 {
    pids.iter().filter_map(|&p| process::rss(p)).sum()
}

/// Samples the resident memory of `pids` every 50 ms until dropped; keeps the peak.
struct MemoryPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MemoryPeak {
    fn watch(pids: Vec<Pid>) -> MemoryPeak {
        let peak = Arc::new(AtomicU64::new(rss_of(&pids)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_of(&pids), Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        MemoryPeak { peak, stop, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryPeak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// Reads the reply to `/who` (sent by the caller) and returns the ids it lists.
fn who_ids(client: &mut Client) -> BTreeSet<u64> {
    let lines = client.lines_until_match(is_who_total);
    lines.iter().filter_map(|l| parse_who_entry(l)).collect()
}

// ------------------------------------------------------------ 1. a worker killed under load

/// 4 workers, 200 clients, 20 senders; `kill -9` one worker in the middle. The
/// others' clients lose no line, each client of the dead worker is announced closed
/// exactly once, a new worker accepts within 5 s, and its first client's `/who`
/// lists everyone.
#[test]
fn worker_killed_under_load() {
    let _serial = one_at_a_time();
    let mut server = Server::start(Frontend::Mio { workers: 4 });
    let (n_clients, n_senders, lines) = (200, 20, scale(30, 300));
    let pace = Duration::from_millis(40);
    let mut clients = connect_all(&server, n_clients);
    let placed = placement(&server, &mut clients);
    let mut per_worker: BTreeMap<Pid, usize> = BTreeMap::new();
    for (_, pid) in &placed {
        *per_worker.entry(*pid).or_default() += 1;
    }
    assert!(per_worker.len() >= 2, "every client on one worker: {per_worker:?}");
    // The worker with the most clients dies, so that most is lost if anything is.
    let victim = per_worker.iter().max_by_key(|(_, n)| **n).map(|(pid, _)| *pid).unwrap();
    let old: BTreeSet<Pid> = server.workers().into_iter().collect();
    let dead: BTreeSet<usize> = (0..n_clients).filter(|&i| placed[i].1 == victim).collect();
    let dead_names: BTreeSet<String> = dead.iter().map(|&i| format!("Client #{}", placed[i].0)).collect();
    let ids: Vec<u64> = placed.iter().map(|(id, _)| *id).collect();

    let swarm = Swarm::start(clients, plans(n_senders, lines, pace, 0));
    thread::sleep(pace * (lines as u32) / 2);
    process::signal(victim, libc::SIGKILL);
    let killed = Instant::now();

    // A new worker takes the slot and accepts: connect until one client lands on it.
    let new_worker = process::eventually(SETTLE, || {
        let now: BTreeSet<Pid> = server.workers().into_iter().collect();
        (now.len() == 4 && !now.contains(&victim)).then(|| now.difference(&old).copied().next()).flatten()
    })
    .unwrap_or_else(|| panic!("no new worker replaced {victim} within {SETTLE:?}\n{}", server.output()));
    let mut probes: Vec<Client> = Vec::new();
    let mut first = None;
    for k in 0..64 {
        let mut probe = server.connect().named(&format!("probe {k}"));
        probe.say("/rooms");
        probe.lines_until_match(is_rooms_total);
        probes.push(probe);
        let rows = parse_connections(&server.ctl(&["connections"]).stdout).unwrap_or_default();
        let peer = format!("127.0.0.1:{}", probes[k].local_port());
        if rows.iter().any(|r| r.peer == peer && r.pid == new_worker) {
            first = Some((k, killed.elapsed()));
            break;
        }
    }
    let Some((k, accepted_after)) = first else {
        panic!("64 newcomers and none on the new worker {new_worker}")
    };
    eprintln!("worker_killed_under_load: {} clients on the dead worker; new worker {new_worker} served a client {accepted_after:?} after the kill", dead.len());
    assert!(
        accepted_after < Duration::from_secs(5),
        "the new worker accepted {accepted_after:?} after the kill"
    );
    let probe_ids: Vec<u64> = {
        let rows = parse_connections(&server.ctl(&["connections"]).stdout).unwrap_or_default();
        probes
            .iter()
            .map(|p| {
                let peer = format!("127.0.0.1:{}", p.local_port());
                rows.iter().find(|r| r.peer == peer).and_then(|r| r.id).expect("a probe without an id")
            })
            .collect()
    };
    probes[k].say("/who");
    let listed = who_ids(&mut probes[k]);
    let expected: BTreeSet<u64> = (0..n_clients)
        .filter(|i| !dead.contains(i))
        .map(|i| ids[i])
        .chain(probe_ids.iter().copied())
        .collect();
    assert_eq!(listed, expected, "the new worker's first client sees another roster");

    let ends = swarm.wait_senders();
    let results = swarm.finish(&server);
    let mut lost = Vec::new();
    for (i, (_, tally)) in results.iter().enumerate() {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        if dead.contains(&i) {
            assert!(tally.closed, "{}: on the dead worker, yet not closed", tally.label);
            continue;
        }
        assert!(!tally.closed, "{}: closed, though its worker lives", tally.label);
        for s in 0..n_senders {
            if !dead.contains(&s) {
                tally.expect_all(s, lines);
            }
        }
        for name in &dead_names {
            let n = tally.closes.get(name).copied().unwrap_or(0);
            if n != 1 {
                lost.push(format!("{}: {name} is close ×{n}", tally.label));
            }
        }
        let strangers: Vec<&String> = tally.closes.keys().filter(|n| !dead_names.contains(*n)).collect();
        assert!(strangers.is_empty(), "{}: closes of live clients {strangers:?}", tally.label);
    }
    assert!(
        lost.is_empty(),
        "each dead client is announced once to everyone: {:?}",
        &lost[..lost.len().min(10)]
    );
    for end in ends {
        if let SenderEnd::Closed(s) = end {
            assert!(dead.contains(&s), "sender {s} lost its connection, yet its worker lives");
        }
    }
}

// ------------------------------------------------------------ 2. a worker stopped

/// A worker stopped with SIGSTOP while the others chat: their lines keep coming (no
/// pause of 2 s), the master holds no more than `--max-bus-queue` for it (plus a
/// margin), the stopped worker is killed and replaced once that limit is reached,
/// and nobody reads a line twice.
#[test]
fn stopped_worker_is_replaced_and_others_keep_chatting() {
    let _serial = one_at_a_time();
    let max_bus_queue = scale(MIB, 8 * MIB);
    let mut server =
        Server::start_with(Frontend::Mio { workers: 3 }, &["--max-bus-queue", &max_bus_queue.to_string()]);
    let master = server.main_pid();
    let mut clients = connect_all(&server, 30);
    let placed = placement(&server, &mut clients);
    let victim = placed[0].1;
    let old: BTreeSet<Pid> = server.workers().into_iter().collect();
    let stopped: BTreeSet<usize> = (0..clients.len()).filter(|&i| placed[i].1 == victim).collect();
    let stopped_names: BTreeSet<String> =
        stopped.iter().map(|&i| format!("Client #{}", placed[i].0)).collect();
    // Six senders, none on the worker that stops; the rest only read.
    let mut order: Vec<usize> = (0..clients.len()).filter(|i| !stopped.contains(i)).collect();
    order.extend(stopped.iter().copied());
    let mut by_index: BTreeMap<usize, Client> = clients.into_iter().enumerate().collect();
    let clients: Vec<Client> = order.iter().map(|i| by_index.remove(i).unwrap()).collect();
    let n_senders = 6;
    // Enough bytes that the stopped worker's bus backlog passes the limit twice over.
    let pad = 1000;
    let lines = (max_bus_queue as usize * 2 / pad / n_senders).max(100) + 100;
    let base = process::rss(master).unwrap_or(0);
    let memory = MemoryPeak::watch(vec![master]);
    let swarm = Swarm::start(clients, plans(n_senders, lines, Duration::from_millis(2), pad));
    thread::sleep(Duration::from_millis(300));
    process::signal(victim, libc::SIGSTOP);
    let replaced = process::eventually(SETTLE, || {
        let now: BTreeSet<Pid> = server.workers().into_iter().collect();
        (!process::alive(victim) && now.len() == 3 && now.difference(&old).count() == 1).then_some(())
    });
    assert!(
        replaced.is_some(),
        "the stopped worker {victim} was not replaced within {SETTLE:?}\n{}",
        server.output()
    );
    let ends = swarm.wait_senders();
    let results = swarm.finish(&server);
    let peak = memory.peak();
    drop(memory);
    let stopped_from = order.len() - stopped.len();
    let mut max_gap = Duration::ZERO;
    for (k, (_, tally)) in results.iter().enumerate() {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        if k >= stopped_from {
            assert!(tally.closed, "{}: its worker was stopped, yet it is open", tally.label);
            continue;
        }
        assert!(!tally.closed, "{}: closed, though its worker runs", tally.label);
        for s in 0..n_senders {
            tally.expect_all(s, lines);
        }
        for name in &stopped_names {
            assert_eq!(tally.closes.get(name), Some(&1), "{}: {name} is announced closed once", tally.label);
        }
        max_gap = max_gap.max(tally.max_gap);
    }
    assert!(ends.iter().all(|e| matches!(e, SenderEnd::Done(_))), "{ends:?}");
    eprintln!(
        "stopped_worker: {} clients on the stopped worker; longest pause {max_gap:?}; master RSS {} → peak {} (limit {})",
        stopped.len(),
        mib(base),
        mib(peak),
        mib(max_bus_queue)
    );
    assert!(max_gap < Duration::from_secs(2), "a pause of {max_gap:?} between two lines");
    let margin = 16 * MIB;
    assert!(
        peak < base + max_bus_queue + margin,
        "the master grew from {} to {} with --max-bus-queue {}",
        mib(base),
        mib(peak),
        mib(max_bus_queue)
    );
    assert!(
        server.output().contains("does not read its bus"),
        "the kill is not logged:\n{}",
        server.output()
    );
}

// ------------------------------------------------------------ 3. out of descriptors

/// Started with `RLIMIT_NOFILE` 64 (soft and hard), 100 clients arrive: the excess
/// wait (or are told `Error: server full`), the server does not spin (under 0.5 s of
/// CPU over 2 s), and when 40 clients leave the waiting ones are taken within 5 s,
/// with no new arrival to wake the server.
fn out_of_descriptors(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::build(frontend).max_open_files(64).start();
    let mut clients: Vec<Client> = Vec::new();
    for i in 0..100 {
        let mut client = server.connect().named(&format!("client {i}"));
        client.say("/rooms");
        clients.push(client);
    }
    // Who is served: the reply to /rooms comes, or `server full`; the rest wait.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Fate {
        Waiting,
        Served,
        Full,
    }
    let mut fates = vec![Fate::Waiting; clients.len()];
    let classify = |clients: &mut [Client], fates: &mut [Fate], within: Duration| {
        let deadline = Instant::now() + within;
        for (client, fate) in clients.iter_mut().zip(fates.iter_mut()) {
            while *fate == Fate::Waiting {
                let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                match client.next_line_within(left) {
                    Next::Line(l) if is_rooms_total(&l) => *fate = Fate::Served,
                    Next::Line(l) if l == "Error: server full" => *fate = Fate::Full,
                    Next::Line(_) => {}
                    Next::Closed | Next::Timeout => break,
                }
            }
        }
    };
    classify(&mut clients, &mut fates, Duration::from_secs(3));
    let served = fates.iter().filter(|f| **f == Fate::Served).count();
    let full = fates.iter().filter(|f| **f == Fate::Full).count();
    let waiting: Vec<usize> = (0..fates.len()).filter(|&i| fates[i] == Fate::Waiting).collect();
    assert!(served >= 10, "only {served} of 100 clients served with 64 descriptors: {fates:?}");
    assert!(!waiting.is_empty() || full > 0, "100 clients all served with 64 descriptors: is the limit set?");
    let pids = server_pids(&mut server);
    let before = cpu_of(&pids);
    thread::sleep(Duration::from_secs(2));
    let spent = cpu_of(&pids) - before;
    eprintln!(
        "{frontend}: {served} served, {full} told full, {} waiting; {spent:?} CPU over 2 s",
        waiting.len()
    );
    assert!(
        spent < Duration::from_millis(500),
        "{frontend} spent {spent:?} of CPU in 2 s while out of descriptors"
    );
    // 40 served clients leave; nobody new arrives.
    let mut left = 0;
    for i in 0..clients.len() {
        if left < 40 && fates[i] == Fate::Served {
            clients[i].say("/quit");
            left += 1;
        }
    }
    let freed = left.min(waiting.len());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut taken = 0;
    for &i in &waiting {
        let mut fate = [Fate::Waiting];
        classify(
            std::slice::from_mut(&mut clients[i]),
            &mut fate,
            deadline.saturating_duration_since(Instant::now()),
        );
        if fate[0] != Fate::Waiting {
            taken += 1;
        }
    }
    eprintln!("{frontend}: {taken} of {} waiting clients taken after {left} left", waiting.len());
    assert!(
        taken >= freed,
        "{frontend}: only {taken} of {} waiting clients were taken within 5 s after {left} left",
        waiting.len()
    );
}

#[test]
fn mio_out_of_descriptors() {
    out_of_descriptors(Frontend::Mio { workers: 1 });
}

#[test]
fn smol_out_of_descriptors() {
    out_of_descriptors(Frontend::Smol { shards: 2 });
}

// ------------------------------------------------------------ 4. abrupt peers

#[derive(Clone, Copy, Debug)]
enum Abrupt {
    /// A reset (SO_LINGER 0).
    Reset,
    /// A half-close: the server sees EOF and the peer still reads.
    HalfClose,
    /// A reset in the middle of a line.
    MidLine,
    /// A close in the middle of a telnet sequence.
    MidTelnet,
}

fn abrupt_peer(addr: SocketAddr, kind: Abrupt, k: usize) {
    let mut peer = Client::connect(addr).named(&format!("{kind:?} peer {k}"));
    // Admitted first, so that it is announced.
    peer.say("/rooms");
    peer.lines_until_match(is_rooms_total);
    match kind {
        Abrupt::Reset => peer.reset(),
        Abrupt::HalfClose => {
            peer.shutdown_write();
            peer.expect_closed();
        }
        Abrupt::MidLine => {
            peer.send("half a li");
            peer.reset();
        }
        Abrupt::MidTelnet => {
            let cut: &[u8] = if k.is_multiple_of(2) { &[IAC, SB, 24, 0, b'x'] } else { &[IAC] };
            peer.send(cut);
        }
    }
}

/// 1,000 peers of each kind (200 in the short form) vanish: reset, half-close, gone
/// in the middle of a line, gone in the middle of a telnet sequence. Each is announced
/// connected and closed exactly once, and each shard's process is back to the
/// descriptors it had before.
fn abrupt_peers(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::start(frontend);
    let mut observer = server.join().named("observer");
    let shards = shard_pids(&mut server);
    let fds_before: Vec<usize> = shards.iter().map(|&p| process::open_fds(p).unwrap_or(0)).collect();
    let per_kind = scale(200, 1000);
    let kinds = [Abrupt::Reset, Abrupt::HalfClose, Abrupt::MidLine, Abrupt::MidTelnet];
    let started = Instant::now();
    let threads: Vec<JoinHandle<()>> = (0..8)
        .map(|t| {
            let addr = server.addr();
            thread::spawn(move || {
                for k in (t..per_kind * kinds.len()).step_by(8) {
                    abrupt_peer(addr, kinds[k % kinds.len()], k);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a peer thread panicked");
    }
    let total = per_kind * kinds.len();
    let mut connected: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while closed.len() < total && Instant::now() < deadline {
        match observer.next_line_within(Duration::from_secs(1)) {
            Next::Line(line) => {
                if let Some(name) = line.strip_suffix(" is connected") {
                    assert!(connected.insert(name.to_owned()), "{name} announced connected twice");
                } else if let Some(name) = line.strip_suffix(" is close") {
                    *closed.entry(name.to_owned()).or_default() += 1;
                }
            }
            Next::Closed => panic!("the observer was closed"),
            Next::Timeout => {}
        }
    }
    // Anything announced twice comes before the reply to a later command.
    for line in observer.quiet_sync() {
        if let Some(name) = line.strip_suffix(" is close") {
            *closed.entry(name.to_owned()).or_default() += 1;
        } else if let Some(name) = line.strip_suffix(" is connected") {
            assert!(connected.insert(name.to_owned()), "{name} announced connected twice");
        }
    }
    assert_eq!(connected.len(), total, "{frontend}: peers announced connected");
    let twice: Vec<_> = closed.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "{frontend}: announced closed more than once: {twice:?}");
    let unclosed: Vec<_> = connected.iter().filter(|n| !closed.contains_key(*n)).take(10).collect();
    assert!(
        unclosed.is_empty(),
        "{frontend}: {} peers never announced closed, e.g. {unclosed:?}",
        total - closed.len()
    );
    let fds = process::eventually(Duration::from_secs(10), || {
        let now: Vec<usize> = shards.iter().map(|&p| process::open_fds(p).unwrap_or(0)).collect();
        (now == fds_before).then_some(now)
    });
    let now: Vec<usize> = shards.iter().map(|&p| process::open_fds(p).unwrap_or(0)).collect();
    eprintln!(
        "{frontend}: {total} abrupt peers in {:?}; descriptors {fds_before:?} → {now:?}",
        started.elapsed()
    );
    assert!(fds.is_some(), "{frontend}: descriptors per process {fds_before:?} before, {now:?} after");
}

#[test]
fn mio_abrupt_peers() {
    abrupt_peers(Frontend::Mio { workers: 2 });
}

#[test]
fn smol_abrupt_peers() {
    abrupt_peers(Frontend::Smol { shards: 2 });
}

// ------------------------------------------------------------ 5. floods

/// The telnet replies PROTOCOL.md asks for, in order, to `bytes` of negotiations:
/// each `DO x` / `WILL x` refused once per option and direction, every `DO TM` its own.
fn expected_refusals(bytes: &[u8]) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for request in bytes.chunks(3) {
        let (verb, option) = (request[1], request[2]);
        let answer = if verb == DO { WONT } else { DONT };
        if (verb == DO && option == TM) || seen.insert((verb, option)) {
            out.extend_from_slice(&[IAC, answer, option]);
        }
    }
    out
}

/// Floods from one client: 64 MiB without a line end, `IAC SB` and 1 MiB with no
/// `IAC SE`, 100,000 telnet negotiations, 10,000 lines in one write. The flooder's
/// shard grows by no more than the limits allow, the flooder gets its error (and
/// stays connected, as PROTOCOL.md says), and two others chatting meanwhile lose
/// nothing and read nothing of the floods but the 10,000 lines.
fn floods(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::start(frontend);
    let mut flooder = server.join().named("flooder");
    let flooder_name = flooder.name();
    // In a room of its own, the flooder reads only its own replies, byte for byte.
    flooder.say("/join flood");
    flooder.expect("* You left lobby and joined flood");
    let mut talker = server.connect().named("talker");
    let mut listener = server.connect().named("listener");
    // Both admitted before the first line: a client reads only what is said after it connects.
    talker.quiet_sync();
    listener.quiet_sync();
    let shard_pids = shard_pids(&mut server);
    let talk_lines = 100_000;
    let swarm = Swarm::start(vec![talker, listener], plans(1, talk_lines, Duration::from_millis(20), 0));
    let base = rss_of(&shard_pids);
    let memory = MemoryPeak::watch(shard_pids.clone());

    // 64 MiB without a line end.
    let flood = scale(64, 256) * MIB as usize;
    let chunk = vec![b'x'; MIB as usize];
    let started = Instant::now();
    for _ in 0..flood / chunk.len() {
        flooder.send(&chunk);
    }
    flooder.send("\nafter-a\n");
    flooder.expect("Error: line too long (limit 8192 bytes)");
    flooder.expect("You: after-a");
    eprintln!("{frontend}: {} without a line end in {:?}", mib(flood as u64), started.elapsed());

    // IAC SB and no IAC SE for more than the memory margin below (PROTOCOL.md keeps
    // 64 bytes of it), so a server that kept it all would fail: neither relayed
    // nor answered.
    flooder.send([IAC, SB, 24]);
    for _ in 0..scale(32, 64) {
        flooder.send(&chunk[..]);
    }
    flooder.send([IAC, SE]);
    flooder.send("after-b\n");
    assert_eq!(flooder.read_until(b"\n"), b"You: after-b\n", "the subnegotiation was answered or relayed");

    // 100,000 negotiations.
    let mut negotiations = Vec::with_capacity(300_000);
    for i in 0..100_000usize {
        let verb = if i.is_multiple_of(2) { DO } else { WILL };
        negotiations.extend_from_slice(&[IAC, verb, (i % 256) as u8]);
    }
    let refusals = expected_refusals(&negotiations);
    flooder.send(&negotiations);
    flooder.send("after-c\n");
    assert!(
        flooder.read_exact(refusals.len()) == refusals,
        "{frontend}: the refusals differ from PROTOCOL.md's"
    );
    flooder.expect("You: after-c");

    // 10,000 lines in one write, to the lobby where the others chat.
    flooder.say("/join lobby");
    flooder.expect("* You left flood and joined lobby");
    let many = 10_000;
    let burst: String = (1..=many).map(|n| format!("{}\n", seq_text(99, n, 0))).collect();
    flooder.send(burst.as_bytes());
    let mut echoed = 0;
    while echoed < many {
        let line = flooder.line();
        if let Some(text) = line.strip_prefix("You: ") {
            echoed += 1;
            assert_eq!(text, seq_text(99, echoed, 0), "the flooder's echoes");
        } else {
            let talk = line.split_once(": ").and_then(|(_, t)| parse_seq(t)).is_some_and(|(s, _)| s == 0);
            assert!(talk || line.ends_with(" is connected"), "the flooder read {line:?}");
        }
    }
    let peak = memory.peak();
    drop(memory);

    // The talker stops early: every line it said so far must have arrived.
    drop(swarm.ends);
    let results = {
        let mut conductor = server.connect().named("conductor");
        conductor.say(&swarm.stop);
        conductor.lines_until(&format!("You: {}", swarm.stop));
        swarm.threads.into_iter().map(|t| t.join().expect("a chatter panicked")).collect::<Vec<_>>()
    };
    let (_, talker) = &results[0];
    let (_, listener) = &results[1];
    for tally in [talker, listener] {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        assert!(!tally.closed, "{} was closed", tally.label);
    }
    let said = talker.last.get(&0).copied().unwrap_or(0);
    assert!(said > 0, "the talker said nothing during the floods");
    listener.expect_all(0, said);
    listener.expect_all(99, many);
    talker.expect_all(99, many);
    let from_flooder: Vec<&String> =
        listener.others.iter().filter(|l| l.starts_with(&format!("{flooder_name}: "))).collect();
    assert!(from_flooder.is_empty(), "others read of the flooder: {from_flooder:?}");
    let joined = format!("{flooder_name} joined lobby");
    assert!(
        listener.others.contains(&joined),
        "the flooder's return is not announced: {:?}",
        listener.others
    );
    eprintln!(
        "{frontend}: floods: shard memory {} → peak {}; the talker said {said} lines meanwhile",
        mib(base),
        mib(peak)
    );
    // Limits: 8 KiB of line, 64 bytes of subnegotiation, 1 MiB of queue per
    // connection; the margin is for allocator slack and the 10,000 lines in flight.
    assert!(
        peak < base + 24 * MIB,
        "{frontend}: memory grew from {} to {} during the floods",
        mib(base),
        mib(peak)
    );
}

#[test]
fn mio_floods() {
    floods(Frontend::Mio { workers: 2 });
}

#[test]
fn smol_floods() {
    floods(Frontend::Smol { shards: 2 });
}

// ------------------------------------------------------------ 6. slow readers

/// 50 clients with a 4 KiB receive buffer never read while 10 senders send as fast
/// as their echoes come back: each slow reader is closed once its queue passes the
/// limit, everyone else reads every line, and the server's memory stays under
/// connections × queue limit.
fn slow_readers(frontend: Frontend) {
    let _serial = one_at_a_time();
    // The default limit: a reader that keeps up must never meet it, even when the
    // machine is busy and ten senders go flat out.
    let max_queue = MIB as usize;
    let mut server = Server::start_with(frontend, &["--max-queue", &max_queue.to_string()]);
    let (n_slow, n_senders, n_observers, pad) = (50, 10, 10, 4000);
    let mut slow: Vec<Client> = (0..n_slow)
        .map(|i| {
            Client::connect_with_receive_buffer(server.addr(), 4096)
                .unwrap_or_else(|e| panic!("slow reader {i}: {e}"))
                .named(&format!("slow reader {i}"))
        })
        .collect();
    let mut readers = connect_all(&server, n_senders + n_observers);
    // Everyone is admitted before the first line, so every line is owed to everyone.
    for reader in &mut readers {
        reader.quiet_sync();
    }
    let pids = server_pids(&mut server);
    let base = rss_of(&pids);
    let memory = MemoryPeak::watch(pids);
    // Enough lines to fill each slow reader's queue twice, on top of what the
    // kernel takes: on loopback the server's send buffer grows to tcp_wmem's
    // maximum (4 MiB) whatever the reader's window.
    let kernel = 4 * MIB as usize;
    let lines = (kernel + 2 * max_queue) / pad / n_senders + 20;
    let swarm = Swarm::start(readers, plans(n_senders, lines, Duration::ZERO, pad));
    let ends = swarm.wait_senders();
    let closed_logs: Vec<String> =
        server.output().lines().filter(|l| l.contains("slow")).map(str::to_owned).collect();
    assert!(
        ends.iter().all(|e| matches!(e, SenderEnd::Done(_))),
        "{frontend}: senders lost their connection: {ends:?}\n{} slow-consumer lines: {closed_logs:#?}",
        closed_logs.len()
    );
    let peak = memory.peak();
    drop(memory);
    let results = swarm.finish(&server);
    for (_, tally) in &results {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        assert!(!tally.closed, "{} was closed", tally.label);
        for s in 0..n_senders {
            tally.expect_all(s, lines);
        }
    }
    let mut open: Vec<String> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    for client in &mut slow {
        if !client.closed_within(deadline.saturating_duration_since(Instant::now())) {
            open.push(client.label().to_owned());
        }
    }
    assert!(
        open.is_empty(),
        "{frontend}: slow readers still open after {} lines: {open:?}",
        lines * n_senders
    );
    let connections = (n_slow + n_senders + n_observers + 1) as u64;
    eprintln!(
        "{frontend}: slow readers: {} lines of {pad} bytes; memory {} → peak {} (bound {} more)",
        lines * n_senders,
        mib(base),
        mib(peak),
        mib(connections * max_queue as u64)
    );
    assert!(
        peak < base + connections * max_queue as u64,
        "{frontend}: memory grew from {} to {}",
        mib(base),
        mib(peak)
    );
    if let Frontend::Mio { .. } = frontend {
        let logged = server.output().matches("closing slow consumer").count();
        assert_eq!(logged, n_slow, "chat-mio logs each slow consumer it closes");
    }
}

#[test]
fn mio_slow_readers() {
    slow_readers(Frontend::Mio { workers: 2 });
}

#[test]
fn smol_slow_readers() {
    slow_readers(Frontend::Smol { shards: 2 });
}

/// A worker paused for a moment (SIGSTOP, then SIGCONT: a busy or swapped-out
/// worker) catches up with its bus without closing readers that keep up: only a
/// connection that does not read may pass `--max-queue`.
#[test]
fn mio_catching_up_worker_keeps_its_readers() {
    let _serial = one_at_a_time();
    let server = Server::start_with(Frontend::Mio { workers: 2 }, &["--max-queue", "256KiB"]);
    let mut clients = connect_all(&server, 12);
    let placed = placement(&server, &mut clients);
    let paused = placed[0].1;
    // Senders on the other worker, readers on the paused one.
    let (mut senders, mut readers): (Vec<Client>, Vec<Client>) = (Vec::new(), Vec::new());
    for (client, (_, pid)) in clients.into_iter().zip(&placed) {
        if *pid == paused {
            readers.push(client);
        } else {
            senders.push(client);
        }
    }
    assert!(!senders.is_empty() && !readers.is_empty(), "all clients on one worker");
    let n_senders = senders.len().min(3);
    let n_readers = readers.len();
    senders.truncate(n_senders);
    senders.extend(readers);
    let lines = 600;
    let swarm = Swarm::start(senders, plans(n_senders, lines, Duration::from_millis(1), 1000));
    thread::sleep(Duration::from_millis(100));
    process::signal(paused, libc::SIGSTOP);
    thread::sleep(Duration::from_secs(1));
    process::signal(paused, libc::SIGCONT);
    let ends = swarm.wait_senders();
    let results = swarm.finish(&server);
    assert!(ends.iter().all(|e| matches!(e, SenderEnd::Done(_))), "{ends:?}");
    for (_, tally) in &results[n_senders..] {
        assert!(
            !tally.closed,
            "{} reads as fast as it can, yet was closed when its worker caught up ({} readers there)\n{}",
            tally.label,
            n_readers,
            server.output().lines().filter(|l| l.contains("slow consumer")).collect::<Vec<_>>().join("\n")
        );
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        for s in 0..n_senders {
            tally.expect_all(s, lines);
        }
    }
}

// ------------------------------------------------------------ 7. reload under load

/// What the knocker saw.
#[derive(Debug, Default)]
struct Knocks {
    served: usize,
    /// Told `* server shutting down` before the answer.
    shut_down: usize,
    refused: Vec<String>,
}

/// A newcomer every 10 ms: connects, asks `/rooms`, waits for the answer, leaves.
fn knock(stop: &AtomicBool, addr: SocketAddr, knocks: &Mutex<Knocks>) {
    let deadline = Instant::now() + CONVERSATION;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let next = Instant::now() + Duration::from_millis(10);
        let outcome = match Client::try_connect(addr) {
            Err(e) => Err(format!("connect: {e}")),
            Ok(mut client) => match client.try_send(b"/rooms\n") {
                Err(e) => Err(format!("send: {e}")),
                Ok(()) => loop {
                    match client.next_line_within(WAIT) {
                        Next::Line(l) if is_rooms_total(&l) => break Ok(true),
                        // A plain reload closes the old workers' clients, as a stop does.
                        Next::Line(l) if l == "* server shutting down" => break Ok(false),
                        Next::Line(_) => {}
                        Next::Closed => break Err("closed without an answer".to_owned()),
                        Next::Timeout => break Err(format!("no answer within {WAIT:?}")),
                    }
                },
            },
        };
        let mut knocks = knocks.lock().unwrap();
        match outcome {
            Ok(true) => knocks.served += 1,
            Ok(false) => knocks.shut_down += 1,
            Err(e) => knocks.refused.push(e),
        }
        drop(knocks);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// `reload` (or `reload -g`) while 200 clients chat and a newcomer arrives every
/// 10 ms: no newcomer is refused; with `-g`, the old workers' clients lose no line
/// until they leave, and then the old workers exit. With one worker, the reload
/// also ends that worker's solo (it applied its own lines at once) while its
/// clients chat on.
fn reload_under_load(graceful: bool, workers: u16) {
    let _serial = one_at_a_time();
    let mut server = Server::start(Frontend::Mio { workers });
    let old: BTreeSet<Pid> = server.workers().into_iter().collect();
    let (n_clients, n_senders, lines) = (200, 20, scale(30, 300));
    let mut clients = connect_all(&server, n_clients);
    placement(&server, &mut clients);
    let swarm = Swarm::start(clients, plans(n_senders, lines, Duration::from_millis(60), 0));
    let stop = Arc::new(AtomicBool::new(false));
    let knocks = Arc::new(Mutex::new(Knocks::default()));
    let knocker = {
        let (stop, knocks, addr) = (stop.clone(), knocks.clone(), server.addr());
        thread::spawn(move || knock(&stop, addr, &knocks))
    };
    thread::sleep(Duration::from_millis(500));
    let args: &[&str] = if graceful { &["reload", "-g"] } else { &["reload"] };
    let out = server.ctl(args);
    assert_eq!(out.code, Some(0), "{out:?}");
    let renewed = process::eventually(SETTLE, || {
        let now: BTreeSet<Pid> = server.workers().into_iter().filter(|p| !old.contains(p)).collect();
        (now.len() == usize::from(workers)).then_some(())
    });
    assert!(
        renewed.is_some(),
        "{workers} new workers did not come up within {SETTLE:?}\n{}",
        server.output()
    );
    let served = knocks.lock().unwrap().served;
    let more = process::eventually(SETTLE, || (knocks.lock().unwrap().served >= served + 20).then_some(()));
    assert!(more.is_some(), "the knocker is not served after the reload: {:?}", knocks.lock().unwrap());
    stop.store(true, Ordering::Relaxed);
    knocker.join().expect("the knocker panicked");
    let ends = swarm.wait_senders();
    let results = swarm.finish(&server);
    let knocks = knocks.lock().unwrap();
    eprintln!(
        "reload (graceful: {graceful}) under load: {} newcomers served, {} shut down, {} refused",
        knocks.served,
        knocks.shut_down,
        knocks.refused.len()
    );
    assert!(knocks.refused.is_empty(), "newcomers refused during the reload: {:?}", &knocks.refused);
    for (_, tally) in &results {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
    }
    if graceful {
        assert_eq!(knocks.shut_down, 0, "a graceful reload shut newcomers down: {knocks:?}");
        assert!(ends.iter().all(|e| matches!(e, SenderEnd::Done(_))), "{ends:?}");
        for (_, tally) in &results {
            assert!(!tally.closed, "{} was closed by a graceful reload", tally.label);
            for s in 0..n_senders {
                tally.expect_all(s, lines);
            }
        }
        drop(results);
        for pid in &old {
            assert!(process::wait_gone(*pid, SETTLE), "old worker {pid} outlives its last client");
        }
    } else {
        for (_, tally) in &results {
            assert!(tally.closed, "{} is still open on an old worker after a reload", tally.label);
        }
    }
}

#[test]
fn reload_under_load_refuses_nobody() {
    reload_under_load(false, 4);
}

#[test]
fn graceful_reload_under_load_loses_no_line() {
    reload_under_load(true, 4);
}

#[test]
fn reload_of_a_lone_worker_under_load_refuses_nobody() {
    reload_under_load(false, 1);
}

#[test]
fn graceful_reload_of_a_lone_worker_under_load_loses_no_line() {
    reload_under_load(true, 1);
}

// ------------------------------------------------------------ 8. stop with 200 clients

/// A stop with 200 clients connected: each reads what was queued for it, then
/// `* server shutting down`, then its connection closes, and nobody is told of the
/// others' closes; the server exits 0 within 5 s, chat-mio removes its pid file, and
/// no process is left.
fn stop_with_clients(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::start(frontend);
    let mut clients = connect_all(&server, 200);
    for client in &mut clients {
        client.quiet_sync();
    }
    let speaker = clients.len() - 1;
    clients[speaker].say("last words");
    clients[speaker].lines_until("You: last words");
    let pids = server.live_processes();
    let started = Instant::now();
    let status = server.stop();
    let took = started.elapsed();
    eprintln!("{frontend}: stopped with 200 clients in {took:?}: {status:?}");
    assert!(took < Duration::from_secs(5), "{frontend} took {took:?} to stop");
    assert!(status.is_some_and(|s| s.success()), "{frontend} exited {status:?}");
    for (i, client) in clients.iter_mut().enumerate() {
        let rest = String::from_utf8(client.expect_closed()).expect("UTF-8");
        let lines: Vec<&str> = rest.lines().collect();
        let said = if i == speaker { "You: last words".to_owned() } else { "Client #".to_owned() };
        let n = lines.len();
        assert!(
            n >= 1 && lines[n - 1] == "* server shutting down" && (i == speaker || n >= 2),
            "{}: the end of the stream is {lines:?}",
            client.label()
        );
        if i != speaker {
            assert!(
                lines[n - 2].starts_with(&said) && lines[n - 2].ends_with(": last words"),
                "{}: the last line before the shutdown is {:?}",
                client.label(),
                lines[n - 2]
            );
        }
        assert!(
            !lines.iter().any(|l| l.ends_with(" is close")),
            "{}: told of a close: {lines:?}",
            client.label()
        );
    }
    if let Frontend::Mio { .. } = frontend {
        assert!(!server.pid_file().exists(), "the pid file outlives the master");
    }
    let left: Vec<Pid> = pids.into_iter().filter(|&p| process::alive(p)).collect();
    assert!(left.is_empty(), "{frontend}: processes left behind: {:?}", process::ps(&left));
}

#[test]
fn mio_stop_with_200_clients() {
    stop_with_clients(Frontend::Mio { workers: 4 });
}

#[test]
fn smol_stop_with_200_clients() {
    stop_with_clients(Frontend::Smol { shards: 4 });
}

/// A stop while 20 senders talk flat out: the stop is one point of the server's
/// order, so every line a sender saw echoed reaches every other client before its
/// `* server shutting down`.
fn stop_mid_conversation(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::start(frontend);
    let senders = 20;
    let mut clients = connect_all(&server, 200);
    for client in &mut clients {
        client.quiet_sync();
    }
    let swarm = Swarm::start(clients, plans(senders, usize::MAX, Duration::ZERO, 0));
    // Not a synchronisation: wherever the stop lands, the promise is the same.
    thread::sleep(Duration::from_millis(500));
    let status = server.stop();
    assert!(status.is_some_and(|s| s.success()), "{frontend} exited {status:?}");
    let tallies: Vec<Tally> =
        swarm.threads.into_iter().map(|t| t.join().expect("a chatter panicked").1).collect();
    let echoed: Vec<usize> = (0..senders).map(|s| tallies[s].last.get(&s).copied().unwrap_or(0)).collect();
    eprintln!("{frontend}: {} lines echoed before the stop", echoed.iter().sum::<usize>());
    let mut missed = Vec::new();
    for tally in &tallies {
        assert!(tally.faults.is_empty(), "{:?}", tally.faults);
        assert!(tally.closed, "{}: still open after the stop", tally.label);
        for (s, &n) in echoed.iter().enumerate() {
            let got = tally.last.get(&s).copied().unwrap_or(0);
            if got < n {
                missed.push(format!(
                    "{}: sender {s}'s lines up to {got}, though it saw {n} echoed",
                    tally.label
                ));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "{} lost lines at the stop, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
}

#[test]
fn mio_stop_mid_conversation() {
    stop_mid_conversation(Frontend::Mio { workers: 4 });
}

#[test]
fn smol_stop_mid_conversation() {
    stop_mid_conversation(Frontend::Smol { shards: 4 });
}

/// A stop while one client's queue holds more than its socket takes: the stop
/// waits for it to read all of it, then says goodbye.
fn stop_flushes_a_backlog(frontend: Frontend) {
    let _serial = one_at_a_time();
    let mut server = Server::start_with(frontend, &["--max-queue", &(16 * MIB).to_string()]);
    let mut backlog =
        Client::connect_with_receive_buffer(server.addr(), 4096).expect("connect").named("backlogged");
    backlog.say("/join backlog");
    backlog.lines_until("* You left lobby and joined backlog");
    let mut speaker = server.join().named("speaker");
    speaker.say("/join backlog");
    speaker.lines_until("* You left lobby and joined backlog");
    // More than the kernel holds for one connection (a 4 MiB send buffer at most).
    let (n, pad) = (2500, 4000);
    for i in 1..=n {
        let text = seq_text(0, i, pad);
        speaker.say(&text);
        speaker.lines_until(&format!("You: {text}"));
    }
    server.signal(libc::SIGTERM);
    // Not a synchronisation: it only lets the stop begin while the backlog waits.
    thread::sleep(Duration::from_millis(200));
    let rest = String::from_utf8(backlog.expect_closed()).expect("UTF-8");
    let status = server.wait_exit();
    let mut tally = Tally::new("backlogged");
    for line in rest.lines() {
        tally.record(line);
    }
    assert!(tally.faults.is_empty(), "{:?}", tally.faults);
    tally.expect_all(0, n);
    assert_eq!(rest.lines().last(), Some("* server shutting down"), "the end of the backlog");
    assert!(status.is_some_and(|s| s.success()), "{frontend} exited {status:?}");
}

#[test]
fn mio_stop_flushes_a_backlog() {
    stop_flushes_a_backlog(Frontend::Mio { workers: 4 });
}

#[test]
fn smol_stop_flushes_a_backlog() {
    stop_flushes_a_backlog(Frontend::Smol { shards: 4 });
}

// ------------------------------------------------------------ 9. a stale pid file

/// A pid file left behind that names a live, unrelated process: `stop` does not
/// signal it, and `start` starts (and takes the file over).
#[test]
fn stale_pid_file_naming_a_stranger() {
    let _serial = one_at_a_time();
    let dir = TempDir::new();
    let mut stranger = std::process::Command::new("sleep").arg("60").spawn().expect("cannot run sleep");
    let stranger_pid = Pid(stranger.id() as i32);
    let pid_file = dir.path().join("chat-mio.pid");
    let mut file = std::fs::File::create(&pid_file).unwrap();
    writeln!(file, "{stranger_pid}").unwrap();
    drop(file);
    let mut command = std::process::Command::new(chat_tests::binaries::Binary::Mio.path());
    command.arg("stop").arg("--pid-file").arg(&pid_file);
    let out = chat_tests::server::run_bounded(command);
    thread::sleep(Duration::from_millis(200));
    let alive = process::alive(stranger_pid) && stranger.try_wait().ok().flatten().is_none();
    if !alive {
        panic!("chat-mio stop signalled the stranger {stranger_pid} named by a stale pid file: {out:?}");
    }
    assert_eq!(out.code, Some(0), "stop with a stale pid file: {out:?}");
    let mut server = Server::build(Frontend::Mio { workers: 1 }).start_in(dir);
    assert_eq!(server.pid_file_pid(), Some(server.main_pid()), "start did not take the stale pid file over");
    let mut client = server.join();
    client.say("hello");
    client.expect("You: hello");
    server.stop();
    assert!(stranger.try_wait().ok().flatten().is_none(), "the stranger died along with the server");
    let _ = stranger.kill();
    let _ = stranger.wait();
}
