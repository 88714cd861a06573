//! The listening socket.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Connections the kernel completes and holds for us before we accept them,
/// as chat-mio has it: std's 128 overflows when hundreds of clients arrive at
/// once while the shards announce each connect, and the overflow costs a
/// client a one-second SYN retry.
const BACKLOG: i32 = 1024;

/// Binds and listens on `address`, reusing the address as std does (so a
/// restart is not refused while old connections linger in TIME_WAIT).
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
