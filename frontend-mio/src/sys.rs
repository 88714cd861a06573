//! The few operating-system calls that Rust cannot check: forking, signal
//! dispositions, closing inherited descriptors and rewriting the process title.
//!
//! Every `unsafe` block of the crate lives here, each with the reason it is sound.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::RawFd;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{ForkResult, Pid};

/// Which side of a `fork` the caller is on.
pub enum Fork {
    /// The original process; the child has this pid.
    Parent(Pid),
    /// The new process.
    Child,
}

/// Forks the process.
///
/// The caller must be single-threaded; this crate never starts a thread, which is
/// what makes this safe to call at any time.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the only hazard of fork(2) is a child that inherits locks or state
    // held by other threads at the instant of the fork. This program never starts
    // a thread (no runtime, no logger thread, no helper), so the child is an exact
    // copy of a single-threaded process and may run any code, allocation included.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => Ok(Fork::Parent(child)),
        Ok(ForkResult::Child) => Ok(Fork::Child),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Sets each signal of `signals` to be ignored.
pub fn ignore_signals(signals: &[Signal]) -> io::Result<()> {
    for &sig in signals {
        // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety
        // question arises; sigaction(2) itself is safe to call at any time.
        unsafe { signal::signal(sig, SigHandler::SigIgn) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Restores the default disposition of each signal of `signals`.
pub fn default_signals(signals: &[Signal]) -> io::Result<()> {
    for &sig in signals {
        // SAFETY: SIG_DFL installs no handler code; see `ignore_signals`.
        unsafe { signal::signal(sig, SigHandler::SigDfl) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Unblocks every signal of the calling process (a forked child inherits the
/// master's mask, which blocks everything the master reads through its signalfd).
pub fn unblock_all_signals() -> io::Result<()> {
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Closes every open descriptor except those in `keep`.
///
/// Called in a freshly forked child before it starts its own work, so that the
/// child holds no copy of the master's sockets, pid-file lock or other workers'
/// bus ends (otherwise the master would never see a dead worker's EOF).
pub fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut open = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let name = entry?.file_name();
        if let Some(fd) = name.to_str().and_then(|s| s.parse::<RawFd>().ok()) {
            open.push(fd);
        }
    }
    // The directory handle used for the listing is closed by now; closing its
    // stale number again just fails with EBADF, which is ignored below.
    for fd in open {
        if !keep.contains(&fd) {
            // SAFETY: the caller is a just-forked child that will never return to
            // the frames that own these descriptors (it runs its own loop and then
            // exits without unwinding), so no Rust object will use or close them
            // again; closing them cannot invalidate anything still in use.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Sets the process title shown by `ps`: the thread name (`comm`, at most 15
/// bytes) and, where the original argument strings leave room, the command line.
pub fn set_process_title(title: &str) {
    let short: String = title.chars().take(15).collect();
    if let Ok(name) = CString::new(short) {
        // Best effort: a title is cosmetic and must never stop the server.
        let _ = nix::sys::prctl::set_name(&name);
    }
    let _ = overwrite_argv(title);
}

/// Overwrites the argument strings the kernel placed at process start, which is
/// what `/proc/PID/cmdline` and `ps` read.
fn overwrite_argv(title: &str) -> io::Result<()> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/stat");
    // Fields after the command name, which may itself hold spaces and parentheses.
    let rest = stat.rsplit_once(')').ok_or_else(invalid)?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 48 and 49 of proc(5) (arg_start, arg_end); `fields[0]` is field 3.
    let start: usize = fields.get(45).and_then(|f| f.parse().ok()).ok_or_else(invalid)?;
    let end: usize = fields.get(46).and_then(|f| f.parse().ok()).ok_or_else(invalid)?;
    if end <= start + 1 {
        return Ok(());
    }
    let len = end - start;
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: [arg_start, arg_end) is the block of this process's own argument
    // strings on its initial stack, writable and alive for the whole process.
    // No Rust reference points into it: std keeps only raw pointers there, read
    // again solely by `std::env::args`, which this program calls once at start,
    // before any title is set. The block stays NUL-terminated, so later readers
    // see valid C strings.
    unsafe {
        let base = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base, n);
        std::ptr::write_bytes(base.add(n), 0, len - n);
    }
    Ok(())
}

/// Hands memory freed after a burst back to the operating system.
///
/// glibc keeps freed heap pages for reuse, so a worker that buffered a join
/// storm would otherwise stay at its peak size for good.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists;
    // it takes the allocator's locks itself and touches no caller memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
