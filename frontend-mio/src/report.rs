//! The records behind `status` and `connections`: what a worker reports over the
//! bus, their byte encoding, and the tables the master prints from them.

use std::fmt::Write as _;
use std::io;

/// One worker's answer to a status request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The worker's process id.
    pub pid: u32,
    /// Connections open on the worker (admitted or waiting to be).
    pub connections: u64,
    /// Lines received from its clients.
    pub lines_in: u64,
    /// Lines sent to its clients.
    pub lines_out: u64,
    /// Bytes received from its clients.
    pub bytes_in: u64,
    /// Bytes written to its clients.
    pub bytes_out: u64,
    /// Output queued for its clients, in bytes.
    pub queued: u64,
    /// Connections accepted since the worker started.
    pub accepted: u64,
}

/// One connection, as listed by `connections`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnRow {
    /// The server-wide client number, once admitted.
    pub id: Option<u64>,
    /// The nick, if the client took one.
    pub nick: Option<String>,
    /// The room it is in.
    pub room: String,
    /// The peer address.
    pub peer: String,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Output queued for it, in bytes.
    pub queued: u64,
}

impl WorkerStatus {
    /// Encodes the record for the bus.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for value in [
            u64::from(self.pid),
            self.connections,
            self.lines_in,
            self.lines_out,
            self.bytes_in,
            self.bytes_out,
            self.queued,
            self.accepted,
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
    }

    /// Decodes a record made by [`WorkerStatus::encode`].
    pub fn decode(bytes: &[u8]) -> io::Result<WorkerStatus> {
        let mut reader = Reader(bytes);
        let status = WorkerStatus {
            pid: u32::try_from(reader.u64()?).map_err(|_| invalid())?,
            connections: reader.u64()?,
            lines_in: reader.u64()?,
            lines_out: reader.u64()?,
            bytes_in: reader.u64()?,
            bytes_out: reader.u64()?,
            queued: reader.u64()?,
            accepted: reader.u64()?,
        };
        reader.finish()?;
        Ok(status)
    }
}

/// Encodes a worker's connection list for the bus.
pub fn encode_rows(rows: &[ConnRow], out: &mut Vec<u8>) {
    out.extend_from_slice(&(rows.len() as u64).to_be_bytes());
    for row in rows {
        out.extend_from_slice(&row.id.map_or(0, |id| id.saturating_add(1)).to_be_bytes());
        put_str(out, row.nick.as_deref().unwrap_or(""));
        put_str(out, &row.room);
        put_str(out, &row.peer);
        for value in [row.bytes_in, row.bytes_out, row.queued] {
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Decodes a list made by [`encode_rows`].
pub fn decode_rows(bytes: &[u8]) -> io::Result<Vec<ConnRow>> {
    let mut reader = Reader(bytes);
    let count = reader.u64()?;
    let mut rows = Vec::new();
    for _ in 0..count {
        let id = reader.u64()?.checked_sub(1);
        let nick = reader.string()?;
        rows.push(ConnRow {
            id,
            nick: (!nick.is_empty()).then_some(nick),
            room: reader.string()?,
            peer: reader.string()?,
            bytes_in: reader.u64()?,
            bytes_out: reader.u64()?,
            queued: reader.u64()?,
        });
    }
    reader.finish()?;
    Ok(rows)
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u64).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn invalid() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed report")
}

/// Reads big-endian integers and length-prefixed strings from a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(invalid());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(bytes))
    }

    fn string(&mut self) -> io::Result<String> {
        let len = usize::try_from(self.u64()?).map_err(|_| invalid())?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid())
    }

    fn finish(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid())
        }
    }
}

/// Formats a byte count for people: `512 B`, `3.2 KiB`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Formats a duration in whole seconds as `2d 03h 04m 05s`.
pub fn human_duration(secs: u64) -> String {
    format!("{}d {:02}h {:02}m {:02}s", secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let of_day = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Lays out rows of cells as left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_status() {
        let status = WorkerStatus {
            pid: 42,
            connections: 3,
            lines_in: 10,
            lines_out: 30,
            bytes_in: 100,
            bytes_out: 300,
            queued: 7,
            accepted: 5,
        };
        let mut bytes = Vec::new();
        status.encode(&mut bytes);
        assert_eq!(WorkerStatus::decode(&bytes).unwrap(), status);
        assert!(WorkerStatus::decode(&bytes[1..]).is_err());
    }

    #[test]
    fn round_trips_rows() {
        let rows = vec![
            ConnRow {
                id: Some(0),
                nick: Some("alice".into()),
                room: "lobby".into(),
                peer: "127.0.0.1:5000".into(),
                bytes_in: 1,
                bytes_out: 2,
                queued: 3,
            },
            ConnRow { id: None, ..ConnRow::default() },
        ];
        let mut bytes = Vec::new();
        encode_rows(&rows, &mut bytes);
        assert_eq!(decode_rows(&bytes).unwrap(), rows);
        assert!(decode_rows(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_duration(93_784), "1d 02h 03m 04s");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_795_595_405), "2026-11-25 08:30:05 UTC");
        assert_eq!(
            table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]),
            "a    bb\nccc  d\n"
        );
    }
}
