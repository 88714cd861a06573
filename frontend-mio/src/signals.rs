//! The master's signals, read through a signalfd so that no code ever runs in a
//! signal handler: Workerman's map of signals to commands.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::sys;

/// What a signal asks the master to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// SIGINT, SIGTERM, SIGHUP: stop now.
    Stop,
    /// SIGQUIT: stop accepting, let clients leave, then stop.
    GracefulStop,
    /// SIGUSR1: replace the workers one at a time.
    Reload,
    /// SIGUSR2: replace the workers, letting each old one finish its clients.
    GracefulReload,
    /// SIGCHLD: a worker changed state; reap it.
    Child,
}

/// Signals the master handles; all blocked and read from the signalfd.
const HANDLED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

/// Signals a worker ignores: the terminal sends INT/QUIT to the whole foreground
/// process group, and only the master decides when workers stop.
const WORKER_IGNORED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
];

/// Maps a signal to the master's request, after Workerman.
pub fn request_for(signal: Signal) -> Option<Request> {
    match signal {
        Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP => Some(Request::Stop),
        Signal::SIGQUIT => Some(Request::GracefulStop),
        Signal::SIGUSR1 => Some(Request::Reload),
        Signal::SIGUSR2 => Some(Request::GracefulReload),
        Signal::SIGCHLD => Some(Request::Child),
        _ => None,
    }
}

/// The master's signal source: a nonblocking signalfd over the handled signals.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the handled signals (so they queue for the signalfd rather than
    /// killing the process) and ignores SIGPIPE, then opens the signalfd.
    ///
    /// Because the signals stay blocked for the master's whole life, they are
    /// blocked around every fork too: a child can never run a master's action.
    pub fn new() -> io::Result<Signals> {
        sys::ignore_signals(&[Signal::SIGPIPE])?;
        let mut mask = SigSet::empty();
        for sig in HANDLED {
            mask.add(sig);
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None).map_err(io::Error::from)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    /// Returns the descriptor to register with the event loop.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending signal and returns the requests, in arrival order.
    pub fn drain(&mut self) -> io::Result<Vec<Request>> {
        let mut requests = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    let request = i32::try_from(info.ssi_signo)
                        .ok()
                        .and_then(|n| Signal::try_from(n).ok())
                        .and_then(request_for);
                    if let Some(request) = request {
                        requests.push(request);
                    }
                }
                Ok(None) => return Ok(requests),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(errno) => return Err(io::Error::from(errno)),
            }
        }
    }
}

/// Sets a freshly forked worker's signals: the terminal's and the operator's
/// signals are ignored (the master tells workers what to do over the bus),
/// SIGCHLD is back to default and nothing stays blocked.
pub fn setup_worker() -> io::Result<()> {
    sys::ignore_signals(&WORKER_IGNORED)?;
    sys::default_signals(&[Signal::SIGCHLD])?;
    sys::unblock_all_signals()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_workerman_map() {
        assert_eq!(request_for(Signal::SIGINT), Some(Request::Stop));
        assert_eq!(request_for(Signal::SIGTERM), Some(Request::Stop));
        assert_eq!(request_for(Signal::SIGHUP), Some(Request::Stop));
        assert_eq!(request_for(Signal::SIGQUIT), Some(Request::GracefulStop));
        assert_eq!(request_for(Signal::SIGUSR1), Some(Request::Reload));
        assert_eq!(request_for(Signal::SIGUSR2), Some(Request::GracefulReload));
        assert_eq!(request_for(Signal::SIGPIPE), None);
    }
}
