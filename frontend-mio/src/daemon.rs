//! Becoming a daemon and proving it runs: the locked pid file, the double fork,
//! and the startup report that `start -d` waits for.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;

use crate::sys::{self, Fork};

/// The text a master's command line holds (see `sys::set_process_title`), which
/// tells a live master from an unrelated process that reused its pid.
pub const MASTER_TITLE: &str = "chat-mio: master";

/// A pid file this process holds locked; while it is, no second master can run
/// on it.
///
/// The lock is an open-file-description lock (`F_OFD_SETLK`): it survives the
/// daemon's forks (the descriptor is inherited) and, unlike `flock`, another
/// command can ask who holds it (`F_OFD_GETLK`) without taking it even briefly,
/// so `status` can never make a starting master believe it is already running.
pub struct PidFile {
    file: File,
    path: PathBuf,
}

/// Why a pid file could not be taken.
#[derive(Debug)]
pub enum AcquireError {
    /// Another master holds it; its pid if the file names one.
    Running(Option<i32>),
    /// The file could not be created or locked.
    Io(io::Error),
}

impl PidFile {
    /// Creates (if needed) and locks the pid file; a missing directory is
    /// created private to the user.
    pub fn acquire(path: &Path) -> Result<PidFile, AcquireError> {
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(AcquireError::Io)?;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(AcquireError::Io)?;
        let lock = whole_file_lock(libc::F_WRLCK);
        match fcntl(file.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(PidFile { file, path: path.to_path_buf() }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                Err(AcquireError::Running(read_pid(path)))
            }
            Err(errno) => Err(AcquireError::Io(errno.into())),
        }
    }

    /// Writes this process's pid into the file.
    pub fn write_pid(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        let text = format!("{}\n", std::process::id());
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(text.as_bytes(), 0)?;
        self.file.sync_data()
    }

    /// Returns the path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file; the lock goes with the last descriptor at exit.
    pub fn remove(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// What a pid file says about its server.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// No master holds the file (it may be missing or stale).
    NotRunning,
    /// A master holds it and runs as this pid.
    Running(i32),
    /// The file is locked, but the pid it names is not a chat-mio master (yet):
    /// never signal it.
    Unknown(Option<i32>),
}

/// Finds out, without taking any lock, whether a master holds `path`.
pub fn probe(path: &Path) -> io::Result<Probe> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::NotRunning),
        Err(e) => return Err(e),
    };
    let mut lock = whole_file_lock(libc::F_WRLCK);
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut lock)).map_err(io::Error::from)?;
    if i32::from(lock.l_type) == libc::F_UNLCK {
        return Ok(Probe::NotRunning);
    }
    match read_pid(path) {
        Some(pid) if is_master(pid) => Ok(Probe::Running(pid)),
        other => Ok(Probe::Unknown(other)),
    }
}

/// Tells whether `pid` is a live chat-mio master, by its process title: the
/// command line, or the thread name (`comm`, 15 bytes), which holds the title
/// even when the original command line was too short to take all of it.
pub fn is_master(pid: i32) -> bool {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let short: String = MASTER_TITLE.chars().take(15).collect();
    cmdline.contains(MASTER_TITLE) || comm.trim_end() == short
}

fn read_pid(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// Builds a lock description covering the whole file, as OFD locks need
/// (`l_pid` must be 0).
fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// How the master tells the person who ran `start` that it is up, or why not.
pub enum Startup {
    /// `start` in the foreground: print directly.
    Foreground,
    /// `start -d`: the original process waits on this pipe.
    Daemon(File),
}

impl Startup {
    /// Reports success; `lines` are printed on the starting terminal's stdout.
    pub fn ready(self, lines: &str) {
        match self {
            Startup::Foreground => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(lines.as_bytes());
                let _ = out.flush();
            }
            Startup::Daemon(mut pipe) => {
                let _ = pipe.write_all(format!("ok\n{lines}").as_bytes());
            }
        }
    }

    /// Reports a failure as one line on the starting terminal.
    pub fn failed(self, message: &str) {
        match self {
            Startup::Foreground => eprintln!("chat-mio: {message}"),
            Startup::Daemon(mut pipe) => {
                let _ = pipe.write_all(format!("err\n{message}").as_bytes());
            }
        }
    }
}

/// Detaches from the terminal: double fork, `setsid`, `chdir /`, umask 027, and
/// stdin from /dev/null, stdout and stderr to `log`.
///
/// Only the daemon returns (with the pipe to report its startup on). The
/// original process waits for that report, prints it, and exits 0 on success
/// and 1 otherwise; the intermediate process exits at once.
pub fn daemonize(log: &File, log_path: &Path) -> io::Result<Startup> {
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    match sys::fork()? {
        Fork::Parent(child) => {
            drop(writer);
            // The intermediate process exits right after its own fork.
            let _ = waitpid(child, None);
            std::process::exit(wait_for_report(reader, log_path));
        }
        Fork::Child => {}
    }
    drop(reader);
    nix::unistd::setsid().map_err(io::Error::from)?;
    // The second fork makes the daemon a non-leader of its session, so it can
    // never reacquire a controlling terminal.
    match sys::fork()? {
        Fork::Parent(_) => std::process::exit(0),
        Fork::Child => {}
    }
    nix::unistd::chdir("/").map_err(io::Error::from)?;
    nix::sys::stat::umask(Mode::from_bits_truncate(0o027));
    let null = File::open("/dev/null")?;
    nix::unistd::dup2_stdin(&null).map_err(io::Error::from)?;
    nix::unistd::dup2_stdout(log).map_err(io::Error::from)?;
    nix::unistd::dup2_stderr(log).map_err(io::Error::from)?;
    Ok(Startup::Daemon(File::from(writer)))
}

/// Waits for the daemon's startup report and returns the exit code for `start -d`.
fn wait_for_report(reader: OwnedFd, log_path: &Path) -> i32 {
    let mut text = String::new();
    let _ = File::from(reader).read_to_string(&mut text);
    if let Some(lines) = text.strip_prefix("ok\n") {
        print!("{lines}");
        let _ = io::stdout().flush();
        0
    } else if let Some(message) = text.strip_prefix("err\n") {
        eprintln!("chat-mio: {message}");
        1
    } else {
        eprintln!("chat-mio: the daemon exited while starting; see {}", log_path.display());
        1
    }
}

/// Opens the log file for appending, creating it (and, for the default place,
/// its directory) readable by the owner's group only.
pub fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).mode(0o640).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_held_once() {
        let dir = std::env::temp_dir().join(format!("chat-mio-test-{}", std::process::id()));
        let path = dir.join("lock.pid");
        let mut first = PidFile::acquire(&path).unwrap();
        first.write_pid().unwrap();
        // OFD locks conflict even within one process, through another open.
        match PidFile::acquire(&path) {
            Err(AcquireError::Running(Some(pid))) => {
                assert_eq!(pid, std::process::id() as i32)
            }
            other => panic!("second acquire: {:?}", other.err()),
        }
        // The test binary is not a master, so probe must not claim one runs.
        assert_eq!(probe(&path).unwrap(), Probe::Unknown(Some(std::process::id() as i32)));
        first.remove();
        drop(first);
        assert_eq!(probe(&path).unwrap(), Probe::NotRunning);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stranger_is_no_master() {
        assert!(!is_master(std::process::id() as i32));
    }
}
