//! Telnet: strips `IAC` sequences from the byte stream and decides the replies.
//!
//! The server never starts a negotiation and refuses every request, once per
//! option and direction, except `DO TIMING-MARK`, which is answered every time:
//! telnet sends it after Ctrl-C and discards all output until it is answered.

/// Interpret As Command.
pub(crate) const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const IP: u8 = 244;
const SE: u8 = 240;
/// The timing-mark option.
const TM: u8 = 6;

/// What one byte of input meant once telnet commands are taken out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Telnet {
    /// A byte of the data stream (`IAC IAC` yields a literal 0xFF).
    Data(u8),
    /// Send these three bytes back to the peer.
    Reply([u8; 3]),
    /// `IAC IP`: the user pressed Ctrl-C.
    Interrupt,
    /// The byte belonged to a command and means nothing further.
    Consumed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Data,
    Iac,
    Option(u8),
    Subnegotiation,
    SubnegotiationIac,
}

/// The per-connection telnet parser; a sequence split across reads is resumed.
#[derive(Clone, Debug)]
pub(crate) struct TelnetParser {
    state: State,
    /// Options already refused: bit `o` of `refused[0]` for `DO o`, of `refused[1]` for `WILL o`.
    refused: [[u64; 4]; 2],
}

impl TelnetParser {
    pub(crate) fn new() -> TelnetParser {
        TelnetParser { state: State::Data, refused: [[0; 4]; 2] }
    }

    /// Feeds one byte.
    pub(crate) fn feed(&mut self, byte: u8) -> Telnet {
        match self.state {
            State::Data if byte == IAC => {
                self.state = State::Iac;
                Telnet::Consumed
            }
            State::Data => Telnet::Data(byte),
            State::Iac => {
                self.state = State::Data;
                match byte {
                    IAC => Telnet::Data(IAC),
                    WILL | WONT | DO | DONT => {
                        self.state = State::Option(byte);
                        Telnet::Consumed
                    }
                    SB => {
                        self.state = State::Subnegotiation;
                        Telnet::Consumed
                    }
                    IP => Telnet::Interrupt,
                    _ => Telnet::Consumed,
                }
            }
            State::Option(verb) => {
                self.state = State::Data;
                self.answer(verb, byte)
            }
            // A subnegotiation is skipped, never stored, so an unterminated one costs nothing.
            State::Subnegotiation => {
                if byte == IAC {
                    self.state = State::SubnegotiationIac;
                }
                Telnet::Consumed
            }
            State::SubnegotiationIac => {
                self.state = if byte == SE { State::Data } else { State::Subnegotiation };
                Telnet::Consumed
            }
        }
    }

    fn answer(&mut self, verb: u8, option: u8) -> Telnet {
        let (direction, refusal) = match verb {
            DO => (0, WONT),
            WILL => (1, DONT),
            _ => return Telnet::Consumed,
        };
        if verb == DO && option == TM {
            return Telnet::Reply([IAC, WONT, TM]);
        }
        let word = &mut self.refused[direction][usize::from(option / 64)];
        let bit = 1u64 << (option % 64);
        if *word & bit != 0 {
            return Telnet::Consumed;
        }
        *word |= bit;
        Telnet::Reply([IAC, refusal, option])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
        let mut parser = TelnetParser::new();
        let (mut data, mut replies, mut interrupted) = (Vec::new(), Vec::new(), false);
        for &b in bytes {
            match parser.feed(b) {
                Telnet::Data(d) => data.push(d),
                Telnet::Reply(r) => replies.extend_from_slice(&r),
                Telnet::Interrupt => interrupted = true,
                Telnet::Consumed => {}
            }
        }
        (data, replies, interrupted)
    }

    #[test]
    fn strips_commands_and_keeps_escaped_iac() {
        let (data, replies, _) = run(&[b'a', IAC, 241, b'b', IAC, IAC, b'c']);
        assert_eq!(data, [b'a', b'b', 0xff, b'c']);
        assert!(replies.is_empty());
    }

    #[test]
    fn refuses_each_option_once_per_direction() {
        let (_, replies, _) = run(&[IAC, DO, 1, IAC, DO, 1, IAC, WILL, 1, IAC, WILL, 1, IAC, WILL, 31]);
        assert_eq!(replies, [IAC, WONT, 1, IAC, DONT, 1, IAC, DONT, 31]);
    }

    #[test]
    fn answers_every_timing_mark() {
        let (_, replies, _) = run(&[IAC, DO, TM, IAC, DO, TM]);
        assert_eq!(replies, [IAC, WONT, TM, IAC, WONT, TM]);
    }

    #[test]
    fn ignores_refusals() {
        let (data, replies, _) = run(&[IAC, WONT, 1, IAC, DONT, 3, b'x']);
        assert_eq!(data, b"x");
        assert!(replies.is_empty());
    }

    #[test]
    fn skips_subnegotiations_of_any_length() {
        let mut input = vec![IAC, SB, 24];
        input.extend(std::iter::repeat_n(b'z', 10_000));
        input.extend_from_slice(&[IAC, IAC, b'q', IAC, SE, b'k']);
        let (data, replies, _) = run(&input);
        assert_eq!(data, b"k");
        assert!(replies.is_empty());
    }

    #[test]
    fn reports_interrupt() {
        let (data, _, interrupted) = run(&[b'a', IAC, IP]);
        assert_eq!(data, b"a");
        assert!(interrupted);
    }
}
