//! chat-mio's control commands, `status` and `connections`, read as tables.
//!
//! Both print a header row and rows aligned under it (values may hold blanks,
//! as `3.7 MiB` does), so a column is cut at the offsets of the header's names.

use crate::process::Pid;
use crate::server::{CtlOutput, Server};

/// One worker row of `chat-mio status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// The worker slot.
    pub slot: u32,
    /// The worker's pid.
    pub pid: Pid,
    /// Its open connections.
    pub connections: u64,
}

/// One row of `chat-mio connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    /// The client id, once admitted.
    pub id: Option<u64>,
    /// The nick, if any.
    pub nick: Option<String>,
    /// The room.
    pub room: String,
    /// The worker slot that holds the connection.
    pub worker: u32,
    /// The pid of that worker.
    pub pid: Pid,
    /// The client's address as the server sees it.
    pub peer: String,
    /// Output queued for it in the server, in bytes.
    pub queued: u64,
}

/// A table printed by a control command: the header's column names and the
/// rows below it, split into cells.
struct Table<'a> {
    columns: Vec<&'a str>,
    rows: Vec<Vec<String>>,
}

impl<'a> Table<'a> {
    /// Finds the header row (the first line that starts with the words of `first`) and
    /// the rows below it: the lines with a cell for every column. A size such
    /// as `3.7 MiB` is one cell.
    fn parse(text: &'a str, first: &str) -> Option<Table<'a>> {
        let first: Vec<&str> = first.split_whitespace().collect();
        let mut lines =
            text.lines().skip_while(|l| !l.split_whitespace().take(first.len()).eq(first.iter().copied()));
        let columns: Vec<&str> = lines.next()?.split_whitespace().collect();
        let rows = lines.map(cells).take_while(|row| row.len() == columns.len()).collect();
        Some(Table { columns, rows })
    }

    /// Returns the cell of `row` under `column`.
    fn cell<'r>(&self, row: &'r [String], column: &str) -> Option<&'r str> {
        let index = self.columns.iter().position(|name| *name == column)?;
        row.get(index).map(String::as_str)
    }
}

/// Splits a row into cells, keeping a unit with its number.
fn cells(line: &str) -> Vec<String> {
    let mut cells: Vec<String> = Vec::new();
    for word in line.split_whitespace() {
        match cells.last_mut() {
            Some(last) if ["B", "KiB", "MiB", "GiB", "TiB"].contains(&word) => {
                last.push(' ');
                last.push_str(word);
            }
            _ => cells.push(word.to_owned()),
        }
    }
    cells
}

fn number<T: std::str::FromStr>(cell: Option<&str>) -> Option<T> {
    cell?.parse().ok()
}

/// Parses a byte count, plain or as `3.7 MiB`, into bytes (rounded).
fn size(cell: &str) -> Option<u64> {
    let (number, unit) = cell.split_once(' ').unwrap_or((cell, "B"));
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    Some((value * scale).round() as u64)
}

/// Parses the worker rows of `chat-mio status`.
pub fn parse_status(text: &str) -> Option<Vec<WorkerRow>> {
    let table = Table::parse(text, "worker pid")?;
    table
        .rows
        .iter()
        .map(|row| {
            Some(WorkerRow {
                slot: number(table.cell(row, "worker"))?,
                pid: Pid(number(table.cell(row, "pid"))?),
                connections: number(table.cell(row, "connections"))?,
            })
        })
        .collect()
}

/// Parses the rows of `chat-mio connections`.
pub fn parse_connections(text: &str) -> Option<Vec<ConnectionRow>> {
    let table = Table::parse(text, "id nick")?;
    let optional = |cell: Option<&str>| cell.filter(|c| !c.is_empty() && *c != "-").map(str::to_owned);
    table
        .rows
        .iter()
        .map(|row| {
            Some(ConnectionRow {
                id: optional(table.cell(row, "id")).and_then(|id| id.parse().ok()),
                nick: optional(table.cell(row, "nick")),
                room: table.cell(row, "room")?.to_owned(),
                worker: number(table.cell(row, "worker"))?,
                pid: Pid(number(table.cell(row, "pid"))?),
                peer: table.cell(row, "peer")?.to_owned(),
                queued: size(table.cell(row, "queued")?)?,
            })
        })
        .collect()
}

impl Server {
    /// Runs `chat-mio status` and returns its worker rows; panics unless it
    /// exits 0 with a table.
    pub fn status(&self) -> Vec<WorkerRow> {
        let out = self.ctl(&["status"]);
        expect_table(&out, "status", parse_status(&out.stdout))
    }

    /// Runs `chat-mio connections` and returns its rows; panics unless it exits
    /// 0 with a table.
    pub fn connections(&self) -> Vec<ConnectionRow> {
        let out = self.ctl(&["connections"]);
        expect_table(&out, "connections", parse_connections(&out.stdout))
    }
}

fn expect_table<T>(out: &CtlOutput, command: &str, parsed: Option<T>) -> T {
    if out.code != Some(0) {
        panic!("chat-mio {command} exited {:?}: {out:?}", out.code);
    }
    match parsed {
        Some(rows) => rows,
        None => panic!("chat-mio {command} printed no table I can read: {out:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
chat-mio is running
master pid 27363, started 2026-11-25 14:41:59 UTC, uptime 0d 00h 00m 01s
worker exits: none
worker  pid    shard  state    memory   connections  lines-in  lines-out  bytes-in  bytes-out  queued  accepted
0       27364  1      running  3.7 MiB  1            0         6          0         138        0       1
1       27365  2      running  13.8 MiB 4            1         7          12        158        0       4
6 connections on 4 workers
";

    const CONNECTIONS: &str = "\
id  nick   room   worker  pid    peer             bytes-in  bytes-out  queued
1   -      lobby  0       27364  127.0.0.1:35446  0         138        0
3   alice  games  1       27365  127.0.0.1:35436  12        89         1.5 MiB
-   -      lobby  1       27365  127.0.0.1:35480  0         0          0
";

    #[test]
    fn reads_the_status_table() {
        let rows = parse_status(STATUS).unwrap();
        assert_eq!(
            rows,
            [
                WorkerRow { slot: 0, pid: Pid(27364), connections: 1 },
                WorkerRow { slot: 1, pid: Pid(27365), connections: 4 }
            ]
        );
    }

    #[test]
    fn reads_the_connections_table() {
        let rows = parse_connections(CONNECTIONS).unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[2].id, None);
        assert_eq!(rows[1].nick.as_deref(), Some("alice"));
        assert_eq!(rows[1].room, "games");
        assert_eq!(rows[1].worker, 1);
        assert_eq!(rows[1].peer, "127.0.0.1:35436");
        assert_eq!(rows[0].nick, None);
        assert_eq!(rows[1].queued, 3 << 19);
    }
}
