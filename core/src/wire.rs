//! The byte encoding shared by envelopes and snapshots: LEB128 integers and
//! length-prefixed UTF-8 strings.

use std::fmt;

/// Why bytes from the bus (an envelope or a snapshot) could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes ended in the middle of a field.
    Truncated,
    /// An integer was longer than ten bytes or overflowed.
    BadInteger,
    /// A string was not UTF-8.
    BadText,
    /// The leading tag names no known kind of envelope or snapshot.
    UnknownTag(u8),
    /// Bytes were left over after a complete value.
    TrailingBytes,
    /// The value decoded but breaks an invariant (a duplicate member, say).
    Inconsistent(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::BadInteger => f.write_str("malformed integer"),
            DecodeError::BadText => f.write_str("text is not UTF-8"),
            DecodeError::UnknownTag(tag) => write!(f, "unknown tag {tag}"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes"),
            DecodeError::Inconsistent(what) => write!(f, "inconsistent: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub(crate) fn put_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u64(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// A cursor over bytes being decoded.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.bytes.split_first().ok_or(DecodeError::Truncated)?;
        self.bytes = rest;
        Ok(first)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            let low = u64::from(byte & 0x7f);
            if shift == 63 && low > 1 {
                return Err(DecodeError::BadInteger);
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadInteger)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::try_from(self.u64()?).map_err(|_| DecodeError::Truncated)?;
        if len > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let (text, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        std::str::from_utf8(text).map_err(|_| DecodeError::BadText)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip() {
        for value in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_u64(&mut out, value);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.u64(), Ok(value));
            assert_eq!(reader.finish(), Ok(()));
        }
    }

    #[test]
    fn rejects_overlong_integers_and_short_input() {
        assert_eq!(Reader::new(&[0xff; 11]).u64(), Err(DecodeError::BadInteger));
        assert_eq!(Reader::new(&[0x80]).u64(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[5, b'a']).str(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&[1, 0xff]).str(), Err(DecodeError::BadText));
    }
}
