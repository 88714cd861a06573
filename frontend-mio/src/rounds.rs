//! When a worker writes to its clients: in rounds spaced apart under load, so
//! the lines that arrive between two rounds share one write per connection.
//!
//! A send on loopback costs about 5 us of CPU whatever it carries, so lines per
//! write decide the CPU per delivered line. Writing at the end of every loop
//! turn already merges what one turn produced; spacing the rounds merges the
//! lines of several turns. The first line after a pause goes out at once; a
//! round may start no sooner than `gap` after the last one started, where
//! `gap` is three times what the last round took, within `MIN_GAP` and
//! `MAX_GAP`: writing takes at most about a third of the worker's time while
//! lines keep coming, and coalescing adds at most `MAX_GAP` to a line's
//! latency. A round interrupted by its write budget goes on at the next turn
//! without waiting.
//!
//! The wait is a timerfd, not the poll timeout: epoll's timeout counts whole
//! milliseconds, which would stretch a 0.5 ms gap to 1-2 ms.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// The shortest gap between the starts of two rounds.
const MIN_GAP: Duration = Duration::from_micros(500);
/// The longest gap between the starts of two rounds.
const MAX_GAP: Duration = Duration::from_millis(1);

/// The pacing of one worker's write rounds.
pub struct WriteRounds {
    timer: TimerFd,
    /// When the last round started.
    started: Instant,
    gap: Duration,
    /// A round is under way (its budget ran out with connections left).
    open: bool,
    /// When the timer is set to fire.
    armed: Option<Instant>,
}

impl WriteRounds {
    pub fn new(now: Instant) -> io::Result<WriteRounds> {
        let timer =
            TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)?;
        Ok(WriteRounds { timer, started: now, gap: Duration::ZERO, open: false, armed: None })
    }

    /// The timer's descriptor, to register with the poll (readable when it fires).
    pub fn fd(&self) -> RawFd {
        self.timer.as_fd().as_raw_fd()
    }

    /// Tells whether writes may go out now: a round is under way, or the gap
    /// since the last one passed (or `urgent`, when stopping); in that case a
    /// round is under way from now. Otherwise sets the timer for when they may.
    pub fn may_write(&mut self, now: Instant, urgent: bool) -> io::Result<bool> {
        if self.open {
            return Ok(true);
        }
        let due = self.started + self.gap;
        if now < due && !urgent {
            if self.armed != Some(due) {
                let wait = TimeSpec::from_duration(due - now);
                self.timer.set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())?;
                self.armed = Some(due);
            }
            return Ok(false);
        }
        self.open = true;
        self.started = now;
        Ok(true)
    }

    /// Records that the round's writes stopped, finished (`done`) or cut by
    /// the turn's budget.
    pub fn wrote(&mut self, done: bool) {
        if done && self.open {
            self.open = false;
            self.gap = (self.started.elapsed() * 3).clamp(MIN_GAP, MAX_GAP);
        }
    }

    /// When the timer is set to fire; the poll's own timeout backs it up, so
    /// a lost wake-up could delay a round by a millisecond, never stall it.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// Tells whether a round is under way and must go on without waiting.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The timer fired: takes its expiry count so it can fire again.
    pub fn on_timer(&mut self) {
        self.armed = None;
        let mut count = [0u8; 8];
        let _ = nix::unistd::read(self.timer.as_fd(), &mut count);
    }
}
