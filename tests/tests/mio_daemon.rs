//! chat-mio as a Workerman-style daemon: start, status, connections, a killed
//! worker, reload, stop; and clients spread over workers chatting as one.

// Tests may unwrap: a panic is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chat_tests::mio::{ConnectionRow, WorkerRow};
use chat_tests::process::{self, Pid};
use chat_tests::{Client, Frontend, Server, WAIT};

const SETTLE: Duration = Duration::from_secs(30);

fn daemon(workers: u16) -> Server {
    Server::build(Frontend::Mio { workers }).daemon().start()
}

fn foreground(workers: u16) -> Server {
    Server::start(Frontend::Mio { workers })
}

/// Returns, for each client, the row `connections` shows for it (matched by
/// the client's local port).
fn rows_of(server: &Server, clients: &[Client]) -> Vec<ConnectionRow> {
    let rows = server.connections();
    clients
        .iter()
        .map(|c| {
            let peer = format!("127.0.0.1:{}", c.local_port());
            rows.iter()
                .find(|r| r.peer == peer)
                .cloned()
                .unwrap_or_else(|| panic!("connections does not list {} ({peer}): {rows:?}", c.label()))
        })
        .collect()
}

fn worker_pids(rows: &[WorkerRow]) -> BTreeSet<Pid> {
    rows.iter().map(|r| r.pid).collect()
}

/// Waits until `status` satisfies `check`; panics with the last status.
fn status_until(server: &Server, what: &str, check: impl Fn(&[WorkerRow]) -> bool) -> Vec<WorkerRow> {
    let mut last = Vec::new();
    let found = process::eventually(SETTLE, || {
        last = server.status();
        check(&last).then(|| last.clone())
    });
    found.unwrap_or_else(|| {
        let raw = server.ctl(&["status"]);
        panic!("status never showed {what}: {last:?}\n{}\n{}", raw.stdout, server.output())
    })
}

fn finish(mut child: Child, what: &str) -> Option<i32> {
    match process::wait_child(&mut child, SETTLE) {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not return within {SETTLE:?}");
        }
    }
}

#[test]
fn start_d_returns_and_a_second_start_is_refused() {
    let server = daemon(2);
    let master = server.main_pid();
    assert!(process::alive(master), "the daemon runs after start -d returned");
    assert_eq!(server.pid_file_pid(), Some(master));
    assert_ne!(process::children(master), vec![], "the workers are up when start -d returns");
    let titles = process::ps(&[master]);
    assert!(titles.iter().any(|l| l.contains("chat-mio: master")), "process title: {titles:?}");
    for worker in process::children(master) {
        let title = process::ps(&[worker]);
        assert!(title.iter().any(|l| l.contains("chat-mio: worker")), "process title: {title:?}");
    }
    for flags in [&["start", "-d"][..], &["start"][..]] {
        let mut args = flags.to_vec();
        args.extend(["--workers", "1", "--listen", "127.0.0.1:0", "--tick", "0"]);
        let out = server.ctl(&args);
        if out.code == Some(0) {
            // It must not have started; if it did, stop what it started.
            if let Some(pid) = server.pid_file_pid().filter(|&p| p != master) {
                process::terminate(&[pid], Duration::from_secs(5));
            }
        }
        assert_eq!(out.code, Some(1), "a second {flags:?} on a locked pid file: {out:?}");
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(said.contains(&master.to_string()), "the refusal names the running pid: {said:?}");
    }
    assert_eq!(server.pid_file_pid(), Some(master), "the pid file is untouched");
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    let pid_mode = mode(&server.pid_file()).unwrap();
    assert_eq!(pid_mode & 0o002, 0, "the pid file is world-writable: {pid_mode:o}");
    let socket = server.pid_file().with_extension("sock");
    let socket_mode = mode(&socket).unwrap_or_else(|e| panic!("no control socket {}: {e}", socket.display()));
    assert_eq!(socket_mode & 0o077, 0, "the control socket is open to others: {socket_mode:o}");
    let mut a = server.join();
    a.say("still serving");
    a.expect("You: still serving");
}

#[test]
fn bad_flags_and_a_busy_address_exit_1() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = chat_tests::TempDir::new();
    let pid_file = dir.path().join("busy.pid");
    let binary = chat_tests::binaries::Binary::Mio.path();
    for daemonize in [false, true] {
        let mut command = std::process::Command::new(binary);
        command.arg("start");
        if daemonize {
            command.arg("-d");
        }
        command.args(["--workers", "1", "--tick", "0", "--listen", &format!("127.0.0.1:{port}")]);
        command.arg("--pid-file").arg(&pid_file);
        let out = chat_tests::server::run_bounded(command);
        assert_eq!(out.code, Some(1), "listen on a busy port (daemon: {daemonize}): {out:?}");
        assert!(!out.stderr.trim().is_empty(), "a busy port is reported on the terminal: {out:?}");
    }
    let mut command = std::process::Command::new(binary);
    command.args(["start", "--workers", "1", "--no-such-flag", "--listen", "127.0.0.1:0"]);
    command.arg("--pid-file").arg(&pid_file);
    let out = chat_tests::server::run_bounded(command);
    assert_eq!(out.code, Some(1), "a bad flag: {out:?}");
    drop(busy);
}

#[test]
fn status_shows_every_worker_with_its_connections() {
    let mut server = daemon(4);
    let mut clients = server.crowd(12);
    let status = server.status();
    assert_eq!(status.len(), 4, "{status:?}");
    assert_eq!(status.iter().map(|r| r.slot).collect::<BTreeSet<_>>(), (0..4).collect());
    let workers: BTreeSet<Pid> = server.workers().into_iter().collect();
    assert_eq!(worker_pids(&status), workers, "status shows the live worker processes");
    let rows = rows_of(&server, &clients);
    for worker in &status {
        let here = rows.iter().filter(|r| r.pid == worker.pid).count() as u64;
        assert_eq!(
            worker.connections, here,
            "worker {} holds {here} of the clients: {status:?}",
            worker.slot
        );
    }
    assert_eq!(status.iter().map(|r| r.connections).sum::<u64>(), 12);
    for client in clients.drain(..5) {
        drop(client);
    }
    status_until(&server, "7 connections", |s| s.iter().map(|r| r.connections).sum::<u64>() == 7);
    let out = server.ctl(&["stop"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    server.wait_exit();
    let out = server.ctl(&["status"]);
    assert_eq!(out.code, Some(3), "status of a stopped server: {out:?}");
}

#[test]
fn connections_lists_each_client() {
    let server = daemon(4);
    let mut clients = server.crowd(12);
    clients[0].say("/nick alice");
    clients[0].expect("* You are now alice");
    clients[1].say("/join games");
    clients[1].lines_until("* You left lobby and joined games");
    for client in &mut clients[2..] {
        client.quiet_sync();
    }
    let workers: BTreeSet<Pid> = process::children(server.main_pid()).into_iter().collect();
    let rows = rows_of(&server, &clients);
    assert_eq!(server.connections().len(), 12, "only the test's clients");
    for (client, row) in clients.iter().zip(&rows) {
        assert_eq!(row.id, Some(client.id()), "{row:?}");
        assert!(workers.contains(&row.pid), "{row:?} names a live worker of {workers:?}");
    }
    assert_eq!(rows[0].nick.as_deref(), Some("alice"));
    assert_eq!(rows[0].room, "lobby");
    assert_eq!(rows[1].nick, None);
    assert_eq!(rows[1].room, "games");
    let used: BTreeSet<u32> = rows.iter().map(|r| r.worker).collect();
    assert!(used.len() >= 2, "12 clients all landed on one worker of 4: {rows:?}");
}

#[test]
fn clients_on_different_workers_chat_as_one() {
    let server = foreground(4);
    let mut clients = server.crowd(16);
    let rows = rows_of(&server, &clients);
    let by_worker: BTreeMap<u32, Vec<usize>> =
        rows.iter().enumerate().fold(BTreeMap::new(), |mut m, (i, r)| {
            m.entry(r.worker).or_insert_with(Vec::new).push(i);
            m
        });
    assert!(by_worker.len() >= 2, "16 clients all landed on one worker: {rows:?}");
    // One client per worker used.
    let mut picks: Vec<usize> = by_worker.values().map(|v| v[0]).collect();
    // In connect order, as /who lists them.
    picks.sort();
    let others: Vec<usize> = (0..clients.len()).filter(|i| !picks.contains(i)).collect();
    for &i in &others {
        clients[i].say("/join elsewhere");
    }
    for &i in &others {
        clients[i].lines_until("* You left lobby and joined elsewhere");
    }
    for &i in &picks {
        clients[i].quiet_sync();
    }
    let names: Vec<String> = clients.iter().map(Client::name).collect();
    // Lines.
    for &i in &picks {
        clients[i].say(&format!("hello from worker {}", rows[i].worker));
        clients[i].expect(&format!("You: hello from worker {}", rows[i].worker));
        for &j in picks.iter().filter(|&&j| j != i) {
            clients[j].expect(&format!("{}: hello from worker {}", names[i], rows[i].worker));
        }
    }
    // A nick taken on one worker is refused on every other.
    let (first, rest) = picks.split_first().unwrap();
    clients[*first].say("/nick dora");
    clients[*first].expect("* You are now dora");
    for &j in rest {
        clients[j].expect(&format!("{} is now dora", names[*first]));
        clients[j].say("/nick DORA");
        let error = clients[j].line();
        assert!(error.starts_with("Error: "), "worker {}: {error:?}", rows[j].worker);
    }
    // Private messages across workers, by nick and by id.
    for &j in rest {
        clients[j].say(&format!("/msg DORA hi from worker {}", rows[j].worker));
        clients[j].expect(&format!("[private to dora] hi from worker {}", rows[j].worker));
        clients[*first].expect(&format!("[private] {}: hi from worker {}", names[j], rows[j].worker));
        let id = clients[j].id();
        clients[*first].say(&format!("/msg #{id} back"));
        clients[*first].expect(&format!("[private to {}] back", names[j]));
        clients[j].expect("[private] dora: back");
    }
    // Joins.
    for &j in rest {
        clients[j].say("/join games");
        clients[j].lines_until("* You left lobby and joined games");
    }
    clients[*first].say("/join games");
    clients[*first].lines_until("* You left lobby and joined games");
    for &j in rest {
        clients[j].lines_until("dora joined games");
    }
    // /who across workers, in connect order.
    clients[*first].say("/who");
    let who = clients[*first].lines_until(&format!("* {} in games", picks.len()));
    let expected: Vec<String> =
        picks
            .iter()
            .map(|&i| {
                if i == *first {
                    format!("* dora (#{})", clients[i].id())
                } else {
                    format!("* {}", names[i])
                }
            })
            .collect();
    assert_eq!(&who[..who.len() - 1], &expected[..]);
    // Closes.
    clients[*first].say("/quit");
    clients[*first].expect_closed();
    for &j in rest {
        clients[j].expect("dora is close");
    }
}

#[test]
fn a_killed_worker_is_replaced_and_its_clients_close() {
    let mut server = foreground(4);
    let mut clients = server.crowd(12);
    let rows = rows_of(&server, &clients);
    let before = server.status();
    let mut counts: BTreeMap<Pid, usize> = BTreeMap::new();
    for row in &rows {
        *counts.entry(row.pid).or_default() += 1;
    }
    let victim = *counts.iter().max_by_key(|(_, n)| **n).map(|(pid, _)| pid).unwrap();
    assert!(counts.len() >= 2, "all clients on one worker: {rows:?}");
    process::signal(victim, libc::SIGKILL);
    let (dead, mut alive): (Vec<usize>, Vec<usize>) = (0..rows.len()).partition(|&i| rows[i].pid == victim);
    let dead_names: BTreeSet<String> = dead.iter().map(|&i| clients[i].name()).collect();
    for &i in &dead {
        let rest = clients[i].expect_closed();
        assert!(
            String::from_utf8_lossy(&rest).lines().all(|l| l.ends_with(" is close")),
            "a killed worker's client gets nothing but, maybe, close lines: {rest:?}"
        );
    }
    for &i in &alive {
        let mut closed = BTreeSet::new();
        for _ in 0..dead.len() {
            let line = clients[i].line();
            let name = line.strip_suffix(" is close").unwrap_or_else(|| panic!("{line:?}")).to_owned();
            assert!(
                dead_names.contains(&name) && closed.insert(name),
                "{line:?}: once each of {dead_names:?}"
            );
        }
    }
    // The others keep chatting.
    let speaker = alive.remove(0);
    clients[speaker].say("still here");
    clients[speaker].expect("You: still here");
    let speaker_name = clients[speaker].name();
    for &i in &alive {
        clients[i].expect(&format!("{speaker_name}: still here"));
    }
    // A new worker takes the slot.
    let old = worker_pids(&before);
    let after = status_until(&server, "a new worker in the dead one's slot", |s| {
        s.len() == 4 && !worker_pids(s).contains(&victim) && worker_pids(s).difference(&old).count() == 1
    });
    let live: BTreeSet<Pid> = server.workers().into_iter().collect();
    assert_eq!(worker_pids(&after), live);
    // New clients are served, wherever they land, with fresh ids.
    let mut late = server.join();
    assert!(clients.iter().all(|c| c.id() != late.id()), "id {} reused", late.id());
    for &i in &alive {
        clients[i].expect(&format!("{} is connected", late.name()));
    }
    clients[speaker].expect(&format!("{} is connected", late.name()));
    late.say("/who");
    let who = late.lines_until_match(|l| l.ends_with(" in lobby"));
    assert_eq!(who.len(), alive.len() + 1 + 1 + 1, "the survivors, the newcomer, the total: {who:?}");
}

/// Connects again and again until told to stop, counting each outcome.
#[derive(Debug, Default)]
struct Knocks {
    served: usize,
    shut_down: usize,
    refused: Vec<String>,
}

fn knock_until(stop: &AtomicBool, addr: std::net::SocketAddr, knocks: &Mutex<Knocks>) {
    // Bounded in count and time.
    let deadline = Instant::now() + Duration::from_secs(120);
    for _ in 0..100_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return;
        }
        let outcome = std::panic::catch_unwind(|| {
            let mut client = match Client::try_connect(addr) {
                Ok(client) => client,
                Err(e) => return Err(format!("connect: {e}")),
            };
            if let Err(e) = client.try_send(b"/rooms\n") {
                return Err(format!("send: {e}"));
            }
            // Bounded: every line comes within the wait, and knockers come and go.
            for _ in 0..10_000 {
                match client.try_line() {
                    Some(l) if l == "* server shutting down" => return Ok(false),
                    Some(l) if l.starts_with("* lobby: ") => return Ok(true),
                    // Other knockers arriving and leaving.
                    Some(l) if l.ends_with(" is connected") || l.ends_with(" is close") => {}
                    Some(l) => return Err(format!("got {l:?}")),
                    None => return Err("closed without a word".to_owned()),
                }
            }
            Err("too many lines".to_owned())
        });
        let mut knocks = knocks.lock().unwrap();
        match outcome {
            Ok(Ok(true)) => knocks.served += 1,
            Ok(Ok(false)) => knocks.shut_down += 1,
            Ok(Err(e)) => knocks.refused.push(e),
            Err(_) => knocks.refused.push("no answer within the wait".to_owned()),
        }
    }
}

fn reload_while_knocking(graceful: bool) {
    let server = foreground(4);
    let old = worker_pids(&server.status());
    let stop = Arc::new(AtomicBool::new(false));
    let knocks = Arc::new(Mutex::new(Knocks::default()));
    let knocker = {
        let (stop, knocks, addr) = (stop.clone(), knocks.clone(), server.addr());
        thread::spawn(move || knock_until(&stop, addr, &knocks))
    };
    let served_before =
        |n: usize| process::eventually(SETTLE, || (knocks.lock().unwrap().served >= n).then_some(()));
    served_before(3).expect("the knocker is served before the reload");
    let args: &[&str] = if graceful { &["reload", "-g"] } else { &["reload"] };
    let out = server.ctl(args);
    assert_eq!(out.code, Some(0), "{out:?}");
    status_until(&server, "four new workers", |s| s.len() == 4 && worker_pids(s).is_disjoint(&old));
    let served = knocks.lock().unwrap().served;
    served_before(served + 3).expect("the knocker is served after the reload");
    stop.store(true, Ordering::Relaxed);
    knocker.join().unwrap();
    let knocks = knocks.lock().unwrap();
    assert!(knocks.refused.is_empty(), "refused while reloading: {knocks:?}");
    if graceful {
        assert_eq!(knocks.shut_down, 0, "a graceful reload lets clients finish: {knocks:?}");
    }
    for pid in old {
        assert!(process::wait_gone(pid, SETTLE), "old worker {pid} still runs");
    }
}

#[test]
fn reload_replaces_every_worker_and_keeps_accepting() {
    reload_while_knocking(false);
}

#[test]
fn graceful_reload_replaces_every_worker_and_keeps_accepting() {
    reload_while_knocking(true);
}

#[test]
fn graceful_reload_lets_old_workers_finish_their_clients() {
    let server = foreground(2);
    let old = worker_pids(&server.status());
    let mut clients = server.crowd(2);
    let busy: BTreeSet<Pid> = rows_of(&server, &clients).iter().map(|r| r.pid).collect();
    let mut b = clients.pop().unwrap();
    let mut a = clients.pop().unwrap();
    let reload = server.ctl_spawn(&["reload", "-g"]);
    // New workers come up while the old ones still serve a and b.
    let _ = finish(reload, "reload -g");
    status_until(&server, &format!("new workers beside the old {old:?}"), |s| {
        worker_pids(s).difference(&old).count() == 2
    });
    for pid in &busy {
        assert!(process::alive(*pid), "old worker {pid} stopped while its client was connected");
    }
    a.say("after reload");
    a.expect("You: after reload");
    b.expect(&format!("{}: after reload", a.name()));
    let mut c = server.join();
    a.expect(&format!("{} is connected", c.name()));
    c.say("hi");
    b.expect_lines(&[&format!("{} is connected", c.name()), &format!("{}: hi", c.name())]);
    a.expect(&format!("{}: hi", c.name()));
    a.say("/quit");
    b.say("/quit");
    for pid in &old {
        assert!(process::wait_gone(*pid, SETTLE), "old worker {pid} outlives its last client");
    }
    status_until(&server, "only the new workers", |s| s.len() == 2 && worker_pids(s).is_disjoint(&old));
}

/// A graceful reload of a one-worker server. The lone worker applied its own
/// lines at once; it must share the bus again before the new worker starts.
/// Then a client on each sends a burst at the same time, and both read the two
/// bursts in one and the same interleaving.
#[test]
fn a_lone_worker_shares_the_bus_before_a_reload_brings_another() {
    let server = foreground(1);
    let logged = |text: &str| process::eventually(SETTLE, || server.output().contains(text).then_some(()));
    let solo = "worker 0 is the only one: it applies its own lines at once";
    assert!(logged(solo).is_some(), "the lone worker never went solo\n{}", server.output());
    let old = worker_pids(&server.status());
    let mut a = server.join();
    let _ = finish(server.ctl_spawn(&["reload", "-g"]), "reload -g");
    assert!(logged("shares the bus again").is_some(), "the reload did not end the solo\n{}", server.output());
    status_until(&server, "a new worker beside the old one", |s| {
        worker_pids(s).difference(&old).count() == 1
    });
    // The old worker no longer accepts: b is the new worker's.
    let b = server.join();
    a.expect(&format!("{} is connected", b.name()));
    let pair = [a, b];
    let rows = rows_of(&server, &pair);
    assert_ne!(rows[0].pid, rows[1].pid, "both clients on one worker");
    let [mut a, mut b] = pair;
    const LINES: usize = 200;
    let burst = |tag: &str| (0..LINES).map(|i| format!("{tag} {i}\n")).collect::<String>();
    a.send(burst("a"));
    b.send(burst("b"));
    let order = |client: &mut Client, other: &str| {
        let mut seen = 0;
        let lines = client.lines_until_match(|line| {
            seen += usize::from(line.starts_with("You: ") || line.starts_with(other));
            seen == 2 * LINES
        });
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("You: ").or_else(|| l.strip_prefix(other)))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a_name, b_name) = (format!("{}: ", a.name()), format!("{}: ", b.name()));
    let seen_by_a = order(&mut a, &b_name);
    let seen_by_b = order(&mut b, &a_name);
    assert_eq!(seen_by_a.len(), 2 * LINES);
    assert!(seen_by_a == seen_by_b, "a and b read the bursts in different orders");
    // Once the old worker is gone, the new one is alone and goes solo in turn.
    a.say("/quit");
    for pid in &old {
        assert!(process::wait_gone(*pid, SETTLE), "old worker {pid} outlives its last client");
    }
    let again = process::eventually(SETTLE, || (server.output().matches(solo).count() == 2).then_some(()));
    assert!(again.is_some(), "the new worker did not go solo once alone\n{}", server.output());
    b.say("after the solo began");
    b.expect_lines(&[&format!("{} is close", a.name()), "You: after the solo began"]);
}

#[test]
fn graceful_stop_waits_for_clients() {
    let mut server = daemon(2);
    let (mut a, mut b) = {
        let mut c = server.crowd(2);
        let b = c.pop().unwrap();
        (c.pop().unwrap(), b)
    };
    let pids = server.live_processes();
    let mut stop = server.ctl_spawn(&["stop", "-g"]);
    // Clients still chat while the stop waits for them.
    for i in 0..3 {
        a.say(&format!("waiting {i}"));
        a.expect(&format!("You: waiting {i}"));
        b.expect(&format!("{}: waiting {i}", a.name()));
    }
    assert!(matches!(stop.try_wait(), Ok(None)), "stop -g returned while clients are connected");
    // It stops accepting: once the stop has reached the workers, a newcomer is
    // refused, closed or left unanswered, never admitted. (`stop -g` runs on
    // its own, so the first newcomers may still come before it: they leave.)
    let mut admitted = 0;
    let turned_away = process::eventually(SETTLE, || {
        let Ok(mut late) = Client::try_connect(server.addr()) else { return Some(()) };
        if late.try_send(b"/rooms\n").is_err() {
            return Some(());
        }
        match late.try_line_within(WAIT) {
            Some(line) if line.starts_with("* lobby: ") => {
                admitted += 1;
                late.say("/quit");
                None
            }
            Some(line) if line == "* server shutting down" => Some(()),
            Some(line) => panic!("a newcomer during stop -g got {line:?}"),
            None => Some(()),
        }
    });
    assert!(turned_away.is_some(), "newcomers were still admitted {admitted} times during stop -g");
    for _ in 0..admitted {
        a.lines_until_match(|l| l.ends_with(" is close"));
        b.lines_until_match(|l| l.ends_with(" is close"));
    }
    a.say("/quit");
    a.expect_closed();
    b.expect(&format!("{} is close", a.name()));
    assert!(matches!(stop.try_wait(), Ok(None)), "stop -g returned while a client is connected");
    b.say("/quit");
    b.expect_closed();
    assert_eq!(finish(stop, "stop -g"), Some(0));
    server.wait_exit();
    assert!(!server.pid_file().exists(), "the pid file is removed");
    assert_eq!(process::ps(&pids), Vec::<String>::new(), "processes left after stop -g");
}

#[test]
fn stop_removes_the_pid_file_and_every_process() {
    let mut server = daemon(4);
    let mut clients = server.crowd(6);
    let pids = server.live_processes();
    assert_eq!(pids.len(), 5, "a master and 4 workers: {pids:?}");
    let out = server.ctl(&["stop"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    for client in &mut clients {
        client.expect_closed_after(&["* server shutting down"]);
    }
    server.wait_exit();
    assert!(!server.pid_file().exists(), "the pid file is removed");
    assert!(
        process::eventually(WAIT, || process::ps(&pids).is_empty().then_some(())).is_some(),
        "processes left after stop: {:?}",
        process::ps(&pids)
    );
    let out = server.ctl(&["status"]);
    assert_eq!(out.code, Some(3), "{out:?}");
    let out = server.ctl(&["stop"]);
    assert_eq!(out.code, Some(0), "stop when nothing runs: {out:?}");
}

#[test]
fn a_killed_master_takes_its_workers_down() {
    let mut server = foreground(4);
    let mut clients = server.crowd(4);
    let workers = server.workers();
    assert_eq!(workers.len(), 4);
    process::signal(server.main_pid(), libc::SIGKILL);
    for worker in &workers {
        assert!(process::wait_gone(*worker, WAIT), "worker {worker} outlives its killed master");
    }
    for client in &mut clients {
        client.expect_closed();
    }
    assert_eq!(process::ps(&workers), Vec::<String>::new());
}

#[test]
fn dropping_a_server_leaves_no_process() {
    for mut server in [foreground(4), daemon(2)] {
        server.crowd(3);
        let pids = server.live_processes();
        assert!(pids.len() >= 3, "{pids:?}");
        drop(server);
        assert_eq!(process::ps(&pids), Vec::<String>::new(), "left behind");
    }
}

#[test]
fn server_time_comes_every_5_seconds_by_default() {
    chat_tests::time::check_default_tick(Frontend::Mio { workers: 2 });
}

#[test]
fn signals_keep_workermans_map() {
    let mut server = daemon(2);
    let old = worker_pids(&server.status());
    // SIGUSR1 reloads.
    server.signal(libc::SIGUSR1);
    status_until(&server, "new workers after SIGUSR1", |s| s.len() == 2 && worker_pids(s).is_disjoint(&old));
    let mut a = server.join();
    a.say("after SIGUSR1");
    a.expect("You: after SIGUSR1");
    // SIGHUP stops.
    let pids = server.live_processes();
    server.signal(libc::SIGHUP);
    a.expect_closed_after(&["* server shutting down"]);
    server.wait_exit();
    assert!(
        process::eventually(WAIT, || process::ps(&pids).is_empty().then_some(())).is_some(),
        "processes left after SIGHUP: {:?}",
        process::ps(&pids)
    );
    assert!(!server.pid_file().exists(), "the pid file is removed");
}

#[test]
fn restart_stops_then_starts_with_the_new_flags() {
    let mut server = daemon(2);
    let old_master = server.main_pid();
    let old = server.live_processes();
    let mut a = server.join();
    let out = server.ctl(&["restart", "-d", "--workers", "3", "--listen", "127.0.0.1:0", "--tick", "0"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    server.adopt_restarted(&out);
    a.expect_closed_after(&["* server shutting down"]);
    assert_ne!(server.main_pid(), old_master);
    assert_eq!(process::ps(&old), Vec::<String>::new(), "the old processes are gone");
    assert_eq!(server.status().len(), 3, "the new flags apply");
    let mut b = server.join();
    b.say("restarted");
    b.expect("You: restarted");
}
