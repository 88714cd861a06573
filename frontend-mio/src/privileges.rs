//! Dropping root: the user and group workers run as when the master was started
//! as root with `--user`/`--group`.

use std::ffi::CString;
use std::io;

use nix::unistd::{Gid, Group, Uid, User};

/// The identity workers switch to, resolved before the master daemonizes so a
/// bad name is reported on the terminal.
#[derive(Clone, Debug)]
pub struct Credentials {
    name: CString,
    uid: Uid,
    gid: Gid,
}

impl Credentials {
    /// Resolves `--user` and `--group`; `None` when neither was given.
    ///
    /// Switching identity needs root, so a non-root master refuses the flags
    /// unless they name the identity it already has.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>, String> {
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let current = User::from_uid(Uid::current())
            .map_err(|e| format!("cannot look up the current user: {e}"))?
            .ok_or("the current user has no passwd entry")?;
        let user = match user {
            Some(name) => User::from_name(name)
                .map_err(|e| format!("cannot look up user {name}: {e}"))?
                .ok_or_else(|| format!("no such user: {name}"))?,
            None => current.clone(),
        };
        let gid = match group {
            Some(name) => {
                Group::from_name(name)
                    .map_err(|e| format!("cannot look up group {name}: {e}"))?
                    .ok_or_else(|| format!("no such group: {name}"))?
                    .gid
            }
            None => user.gid,
        };
        if !Uid::effective().is_root() && (user.uid != current.uid || gid != Gid::effective()) {
            return Err("--user and --group need the server to be started as root".into());
        }
        let name = CString::new(user.name.as_bytes()).map_err(|_| "bad user name".to_string())?;
        Ok(Some(Credentials { name, uid: user.uid, gid }))
    }

    /// Switches this process to the identity: supplementary groups, group, user,
    /// in that order (after setuid the others are no longer allowed).
    pub fn apply(&self) -> io::Result<()> {
        if !Uid::effective().is_root() {
            return Ok(());
        }
        nix::unistd::initgroups(&self.name, self.gid).map_err(io::Error::from)?;
        nix::unistd::setgid(self.gid).map_err(io::Error::from)?;
        nix::unistd::setuid(self.uid).map_err(io::Error::from)?;
        Ok(())
    }
}
