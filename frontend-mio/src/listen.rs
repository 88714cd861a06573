//! The master's listening sockets: one `SO_REUSEPORT` socket per worker slot,
//! all on one address, so the kernel spreads connections over the workers and a
//! replaced worker inherits its slot's accept queue.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockProtocol, SockType, SockaddrStorage,
};

/// Accept queue length asked of the kernel (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Binds `slots` listeners on `addr` and returns them with the address they
/// really listen on (port 0 resolved once, shared by every slot).
///
/// The address is first bound by a probe socket without `SO_REUSEPORT`: another
/// program on the port (even another chat-mio of the same user, which the
/// kernel would otherwise let share it) makes this fail with "address in use".
pub fn bind(addr: SocketAddr, slots: usize) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    let probe = socket_for(addr, false)?;
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&probe), &SockaddrStorage::from(addr))
        .map_err(io::Error::from)?;
    let probe = TcpListener::from(probe);
    let local = probe.local_addr()?;
    // Listening on the probe makes an address-in-use check by another program
    // exact; it is closed again before the real sockets bind.
    socket::listen(&probe, Backlog::new(1).map_err(io::Error::from)?).map_err(io::Error::from)?;
    drop(probe);
    let mut listeners = Vec::with_capacity(slots);
    for _ in 0..slots {
        let fd = socket_for(local, true)?;
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(local))
            .map_err(io::Error::from)?;
        socket::listen(&fd, Backlog::new(BACKLOG).map_err(io::Error::from)?).map_err(io::Error::from)?;
        listeners.push(TcpListener::from(fd));
    }
    Ok((listeners, local))
}

/// Creates a nonblocking TCP socket for `addr`'s family with `SO_REUSEADDR`
/// (restarts do not wait for TIME_WAIT) and, for slot sockets, `SO_REUSEPORT`.
fn socket_for(addr: SocketAddr, reuse_port: bool) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Tcp,
    )
    .map_err(io::Error::from)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(io::Error::from)?;
    if reuse_port {
        socket::setsockopt(&fd, sockopt::ReusePort, &true).map_err(io::Error::from)?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_every_slot_on_one_port_and_refuses_a_used_one() {
        let (listeners, addr) = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        assert_ne!(addr.port(), 0);
        for listener in &listeners {
            assert_eq!(listener.local_addr().unwrap(), addr);
        }
        let err = bind(addr, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
