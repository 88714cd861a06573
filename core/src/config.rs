//! The settings and limits every frontend takes, with PROTOCOL.md's defaults.

use std::fmt;

use crate::time::UtcOffset;

/// Settings and limits of one chat server; every shard of a server must share them.
///
/// With the `cli` feature this derives `clap::Args`, so both frontends flatten
/// one definition of the flags, their defaults and their help text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Config {
    /// Seconds between `Server Time` lines to every connection; 0 turns them off.
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECONDS", default_value_t = 5))]
    pub tick: u64,
    /// Offset from UTC for `Server Time` lines, as ±HH:MM (write `--utc-offset=-05:00` for a negative one).
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "±HH:MM", default_value = "+00:00", allow_hyphen_values = true)
    )]
    pub utc_offset: UtcOffset,
    /// A line sent to each connection as soon as it is admitted.
    #[cfg_attr(feature = "cli", arg(long, value_name = "TEXT"))]
    pub welcome: Option<String>,
    /// Longest accepted line in bytes (telnet commands removed, line end excluded), e.g. 8192 or 8KiB.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "SIZE", default_value = "8192", value_parser = parse_size)
    )]
    pub max_line: usize,
    /// Output queued for one connection before it is closed as too slow, e.g. 1MiB.
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)
    )]
    pub max_queue: usize,
    /// Connections admitted server-wide; the next one is told `Error: server full`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = 10_000))]
    pub max_conns: usize,
    /// Lines (commands included) one connection may send per second; 0 = no limit.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = 0))]
    pub max_lines_per_second: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tick: 5,
            utc_offset: UtcOffset::UTC,
            welcome: None,
            max_line: 8192,
            max_queue: 1024 * 1024,
            max_conns: 10_000,
            max_lines_per_second: 0,
        }
    }
}

/// Why a size such as `--max-queue 1MiB` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSizeError(String);

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size {:?}: expected plain bytes or a number with KiB or MiB, e.g. 8192 or 64MiB",
            self.0
        )
    }
}

impl std::error::Error for ParseSizeError {}

/// Parses a size given as plain bytes or with a `KiB`/`MiB`/`GiB` suffix.
pub fn parse_size(text: &str) -> Result<usize, ParseSizeError> {
    let err = || ParseSizeError(text.to_owned());
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let number: usize = number.parse().map_err(|_| err())?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(err()),
    };
    number.checked_mul(scale).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("8192"), Ok(8192));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in ["", "MiB", "1MB", "-1", "1.5MiB", "99999999999999999999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_the_protocol() {
        let config = Config::default();
        assert_eq!(config.tick, 5);
        assert_eq!(config.max_line, 8192);
        assert_eq!(config.max_queue, 1 << 20);
        assert_eq!(config.max_conns, 10_000);
        assert_eq!(config.max_lines_per_second, 0);
        assert_eq!(config.utc_offset, UtcOffset::UTC);
        assert_eq!(config.welcome, None);
    }
}
