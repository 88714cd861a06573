//! Framing: turns a connection's byte stream, split anyhow, into lines.

use crate::telnet::{Telnet, TelnetParser};

/// Line buffers above this capacity are released once their line has ended,
/// so one long line does not cost memory for the rest of the connection.
const KEEP_CAPACITY: usize = 1024;

/// What the byte stream said, in the order it said it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A whole line, line end removed, not yet sanitised.
    Line(&'a [u8]),
    /// The current line just passed the length limit; the rest of it will be dropped.
    TooLong,
    /// Telnet bytes to send back at once.
    Reply([u8; 3]),
    /// `IAC IP`: the connection must close; nothing after it is read.
    Interrupt,
}

/// Per-connection line assembly: telnet first, then line ends and the length limit.
#[derive(Debug)]
pub(crate) struct LineDecoder {
    telnet: TelnetParser,
    line: Vec<u8>,
    /// Bytes of the current line counted against the limit, kept or not.
    counted: usize,
    /// A CR was seen and it is not yet known whether it ends the line.
    pending_cr: bool,
}

impl LineDecoder {
    pub(crate) fn new() -> LineDecoder {
        LineDecoder { telnet: TelnetParser::new(), line: Vec::new(), counted: 0, pending_cr: false }
    }

    /// Feeds `bytes`, calling `sink` for each frame; stops after an interrupt.
    ///
    /// `sink` returns `false` to stop reading (the connection is leaving);
    /// returns how many bytes were consumed.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        max_line: usize,
        mut sink: impl FnMut(Frame<'_>) -> bool,
    ) -> usize {
        for (i, &byte) in bytes.iter().enumerate() {
            let go_on = match self.telnet.feed(byte) {
                Telnet::Data(data) => self.data(data, max_line, &mut sink),
                Telnet::Reply(reply) => sink(Frame::Reply(reply)),
                Telnet::Interrupt => {
                    self.discard_line();
                    sink(Frame::Interrupt);
                    false
                }
                Telnet::Consumed => true,
            };
            if !go_on {
                return i + 1;
            }
        }
        bytes.len()
    }

    /// Ends the stream cleanly: bytes after the last line end count as a line.
    pub(crate) fn finish(&mut self, max_line: usize, mut sink: impl FnMut(Frame<'_>) -> bool) {
        if self.pending_cr {
            self.pending_cr = false;
            if !self.push(b'\r', max_line, &mut sink) {
                return;
            }
        }
        if self.counted > 0 {
            self.end_line(&mut sink);
        }
    }

    /// Frees the line buffer if no line is in progress.
    pub(crate) fn shrink(&mut self) {
        if self.line.is_empty() {
            self.release();
        }
    }

    fn data(&mut self, byte: u8, max_line: usize, sink: &mut impl FnMut(Frame<'_>) -> bool) -> bool {
        if self.pending_cr {
            self.pending_cr = false;
            if byte == b'\n' || byte == 0 {
                return self.end_line(sink);
            }
            if !self.push(b'\r', max_line, sink) {
                return false;
            }
        }
        match byte {
            b'\n' => self.end_line(sink),
            b'\r' => {
                self.pending_cr = true;
                true
            }
            _ => self.push(byte, max_line, sink),
        }
    }

    fn push(&mut self, byte: u8, max_line: usize, sink: &mut impl FnMut(Frame<'_>) -> bool) -> bool {
        self.counted = self.counted.saturating_add(1);
        if self.counted <= max_line {
            self.line.push(byte);
            true
        } else if self.counted == max_line + 1 {
            self.release();
            sink(Frame::TooLong)
        } else {
            true
        }
    }

    fn end_line(&mut self, sink: &mut impl FnMut(Frame<'_>) -> bool) -> bool {
        let too_long = self.counted > self.line.len();
        let go_on = too_long || sink(Frame::Line(&self.line));
        self.discard_line();
        go_on
    }

    fn discard_line(&mut self) {
        self.counted = 0;
        self.pending_cr = false;
        if self.line.capacity() > KEEP_CAPACITY {
            self.release();
        } else {
            self.line.clear();
        }
    }

    fn release(&mut self) {
        self.line = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Line(Vec<u8>),
        TooLong,
        Reply([u8; 3]),
        Interrupt,
    }

    fn frames(chunks: &[&[u8]], max_line: usize, eof: bool) -> Vec<Owned> {
        let mut decoder = LineDecoder::new();
        let mut out = Vec::new();
        let mut sink = |frame: Frame<'_>| {
            out.push(match frame {
                Frame::Line(l) => Owned::Line(l.to_vec()),
                Frame::TooLong => Owned::TooLong,
                Frame::Reply(r) => Owned::Reply(r),
                Frame::Interrupt => Owned::Interrupt,
            });
            true
        };
        for chunk in chunks {
            decoder.feed(chunk, max_line, &mut sink);
        }
        if eof {
            decoder.finish(max_line, &mut sink);
        }
        out
    }

    fn line(s: &str) -> Owned {
        Owned::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_on_every_line_end() {
        assert_eq!(frames(&[b"a\nb\r\nc\r\0d\n"], 100, false), [line("a"), line("b"), line("c"), line("d")]);
    }

    #[test]
    fn keeps_a_lone_cr_as_data() {
        assert_eq!(frames(&[b"a\rb\n"], 100, false), [line("a\rb")]);
        assert_eq!(frames(&[b"a\r\r\n"], 100, false), [line("a\r")]);
    }

    #[test]
    fn joins_lines_split_across_reads() {
        assert_eq!(
            frames(&[b"he", b"llo\r", b"\nwor", b"ld\r", b"\0"], 100, false),
            [line("hello"), line("world")]
        );
    }

    #[test]
    fn counts_a_trailing_partial_line_at_eof() {
        assert_eq!(frames(&[b"a\nbc"], 100, true), [line("a"), line("bc")]);
        assert_eq!(frames(&[b"a\nbc"], 100, false), [line("a")]);
        assert_eq!(frames(&[b"a\n"], 100, true), [line("a")]);
    }

    #[test]
    fn enforces_the_limit_without_the_line_end() {
        assert_eq!(frames(&[b"abcd\r\n"], 4, false), [line("abcd")]);
        assert_eq!(frames(&[b"abcde\r\nok\n"], 4, false), [Owned::TooLong, line("ok")]);
        assert_eq!(frames(&[b"abcdefghij", b"klmn", b"\nok\n"], 4, false), [Owned::TooLong, line("ok")]);
    }

    #[test]
    fn counts_escaped_iac_as_one_byte_and_commands_as_none() {
        assert_eq!(
            frames(&[&[b'a', 255, 255, b'b', 255, 241, b'\n']], 3, false),
            [Owned::Line(vec![b'a', 255, b'b'])]
        );
        assert_eq!(frames(&[&[b'a', 255, 255, b'b', 255, 241, b'c', b'\n']], 3, false), [Owned::TooLong]);
    }

    #[test]
    fn interrupt_drops_the_partial_line_and_stops() {
        assert_eq!(
            frames(&[b"one\ntw", &[255, 244], b"three\n"], 100, false)[..2],
            [line("one"), Owned::Interrupt]
        );
    }

    #[test]
    fn replies_come_in_stream_order() {
        assert_eq!(
            frames(&[&[b'x', b'\n', 255, 253, 1, b'y', b'\n']], 100, false),
            [line("x"), Owned::Reply([255, 252, 1]), line("y")]
        );
    }
}
