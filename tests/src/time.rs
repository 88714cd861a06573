//! `Server Time: YYYY-MM-DD HH:MM:SS` lines, read back into seconds.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::server::{Frontend, Server};

/// Parses `Server Time: YYYY-MM-DD HH:MM:SS` into seconds since the epoch (of
/// the time as printed, offset included); `None` unless the shape is exact.
pub fn parse_server_time(line: &str) -> Option<i64> {
    let stamp = line.strip_prefix("Server Time: ")?;
    let b = stamp.as_bytes();
    let shaped = b.len() == 19
        && [4, 7].iter().all(|&i| b[i] == b'-')
        && b[10] == b' '
        && [13, 16].iter().all(|&i| b[i] == b':')
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit());
    if !shaped {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Returns the wall-clock time in whole seconds since the epoch.
pub fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Checks that a server started without `--tick` sends `Server Time` every 5
/// seconds, in UTC. Takes about 10 seconds.
pub fn check_default_tick(frontend: Frontend) {
    let server = Server::build(frontend).default_tick().start();
    let mut client = server.connect();
    let first = client.line();
    let second = client.line();
    let parse = |line: &str| match parse_server_time(line) {
        Some(time) => time,
        None => panic!("not a Server Time line: {line:?}"),
    };
    let (first, second) = (parse(&first), parse(&second));
    // The printed seconds of two ticks 5 s apart differ by 5, give or take the
    // rounding of each print.
    assert!((4..=6).contains(&(second - first)), "ticks {first} and {second} are not 5 s apart");
    assert!((second - now_unix()).abs() < 60, "Server Time {second} is not UTC now");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_time() {
        assert_eq!(parse_server_time("Server Time: 2026-11-25 08:30:05"), Some(1_795_595_405));
        assert_eq!(parse_server_time("Server Time: 1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_server_time("Server Time: 2024-02-29 00:00:00"), Some(1_709_164_800));
        for bad in [
            "Server Time: 2026-11-25 8:30:05",
            "Server Time: 2026-13-25 08:30:05",
            "Server Time: 2026-11-25T08:30:05",
            "Server time: 2026-11-25 08:30:05",
            "Server Time: 2026-11-25 08:30:05 ",
        ] {
            assert_eq!(parse_server_time(bad), None, "{bad}");
        }
    }
}
