//! Sanitising: what the server sends can never drive a client's terminal.

/// Returns `bytes` as text that is safe to show on anyone's terminal.
///
/// Invalid UTF-8 becomes U+FFFD (one per maximal invalid sequence, as
/// `String::from_utf8_lossy` does) and every control character except TAB
/// (C0, DEL, C1) is removed; then leading and trailing ASCII whitespace is
/// trimmed, as the demo's `trim()` did.
pub fn sanitize(bytes: &[u8]) -> String {
    let text = if bytes.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        // The common case: printable ASCII needs no filtering.
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        String::from_utf8_lossy(bytes).chars().filter(|&c| c == '\t' || !c.is_control()).collect()
    };
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.len() == text.len() {
        text
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn keeps_plain_text_and_tabs() {
        assert_eq!(sanitize(b"hello\tworld"), "hello\tworld");
        assert_eq!(sanitize("héllo ✓".as_bytes()), "héllo ✓");
    }

    #[test]
    fn trims_ascii_whitespace() {
        assert_eq!(sanitize(b"  \t hi there \t "), "hi there");
        assert_eq!(sanitize(b" \t "), "");
    }

    #[test]
    fn removes_controls_and_escape_introducers() {
        assert_eq!(sanitize(b"a\x07b\x7fc\x00d"), "abcd");
        assert_eq!(sanitize(b"\x1b[31mred\x1b[0m"), "[31mred[0m");
        assert_eq!(sanitize("x\u{9b}31my".as_bytes()), "x31my");
        assert_eq!(sanitize(b"a\rb"), "ab");
    }

    #[test]
    fn replaces_invalid_utf8_like_from_utf8_lossy() {
        assert_eq!(sanitize(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(sanitize(b"\xe2\x82"), "\u{fffd}");
        assert_eq!(sanitize(b"\xf0\x9f\x98"), "\u{fffd}");
        assert_eq!(sanitize(b"\xc3\x28"), "\u{fffd}(");
    }

    #[test]
    fn controls_next_to_whitespace_still_trim() {
        assert_eq!(sanitize(b"\x01 hi \x02"), "hi");
    }
}
