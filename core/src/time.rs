//! Wall-clock time as the core sees it: passed in, formatted, never read.

use std::fmt;
use std::str::FromStr;

/// Seconds since the Unix epoch, as read by the frontend's wall clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Converts a `SystemTime` the caller read; times before 1970 count negative.
    pub fn from_system_time(time: std::time::SystemTime) -> UnixTime {
        match time.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => UnixTime(i64::try_from(since.as_secs()).unwrap_or(i64::MAX)),
            Err(before) => UnixTime(-i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

/// A fixed offset from UTC, between -23:59 and +23:59, for `Server Time` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UtcOffset {
    minutes: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { minutes: 0 };

    /// Builds an offset from signed minutes; `None` past ±23:59.
    pub fn from_minutes(minutes: i32) -> Option<UtcOffset> {
        (minutes.abs() < 24 * 60).then_some(UtcOffset { minutes })
    }

    /// Returns the offset in signed minutes.
    pub fn minutes(self) -> i32 {
        self.minutes
    }
}

/// Why a `--utc-offset` value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOffsetError(String);

impl fmt::Display for ParseOffsetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid UTC offset {:?}: expected ±HH:MM, for example +02:00 or -05:30", self.0)
    }
}

impl std::error::Error for ParseOffsetError {}

impl FromStr for UtcOffset {
    type Err = ParseOffsetError;

    fn from_str(s: &str) -> Result<UtcOffset, ParseOffsetError> {
        let err = || ParseOffsetError(s.to_owned());
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(err()),
        };
        let (hours, minutes) = rest.split_once(':').ok_or_else(err)?;
        let two_digits = |t: &str| -> Result<i32, ParseOffsetError> {
            if t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse().map_err(|_| err())
            } else {
                Err(err())
            }
        };
        let (hours, minutes) = (two_digits(hours)?, two_digits(minutes)?);
        if hours > 23 || minutes > 59 {
            return Err(err());
        }
        UtcOffset::from_minutes(sign * (hours * 60 + minutes)).ok_or_else(err)
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minutes < 0 { '-' } else { '+' };
        let m = self.minutes.abs();
        write!(f, "{sign}{:02}:{:02}", m / 60, m % 60)
    }
}

/// Formats `time` shifted by `offset` as `YYYY-MM-DD HH:MM:SS`.
pub(crate) fn format_civil(time: UnixTime, offset: UtcOffset) -> String {
    let secs = time.0.saturating_add(i64::from(offset.minutes) * 60);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", of_day / 3600, of_day / 60 % 60, of_day % 60)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_civil(UnixTime(0), UtcOffset::UTC), "1970-01-01 00:00:00");
        assert_eq!(format_civil(UnixTime(1_795_595_405), UtcOffset::UTC), "2026-11-25 08:30:05");
        assert_eq!(format_civil(UnixTime(951_782_400), UtcOffset::UTC), "2000-02-29 00:00:00");
        assert_eq!(format_civil(UnixTime(-1), UtcOffset::UTC), "1969-12-31 23:59:59");
    }

    #[test]
    fn applies_offsets() {
        let minus_five: UtcOffset = "-05:00".parse().expect("valid");
        assert_eq!(format_civil(UnixTime(0), minus_five), "1969-12-31 19:00:00");
        let plus: UtcOffset = "+05:30".parse().expect("valid");
        assert_eq!(format_civil(UnixTime(0), plus), "1970-01-01 05:30:00");
        assert_eq!(plus.to_string(), "+05:30");
        assert_eq!(minus_five.to_string(), "-05:00");
    }

    #[test]
    fn refuses_bad_offsets() {
        for bad in ["", "05:00", "+5:00", "+24:00", "+10:60", "+aa:00", "+01:00:00", "+0100"] {
            assert!(bad.parse::<UtcOffset>().is_err(), "{bad}");
        }
        assert_eq!("+23:59".parse::<UtcOffset>().map(UtcOffset::minutes), Ok(1439));
    }
}
