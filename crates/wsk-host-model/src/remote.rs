//! The test's side of a driver's listening socket: [`connect_client`] connects a remote client to
//! the socket the driver bound last (its accept completes with a connection socket whose peer is
//! the [`RemoteClient`]); the client sends, reads what the driver sent it, and closes.

use std::time::Duration;

use wsk_sys::WSK_SOCKET;

use crate::socket::{Remote, deliver, match_accepts};
use crate::state;

/// A remote client of one of the driver's listening sockets.
#[derive(Debug)]
pub struct RemoteClient {
    id: usize,
}

/// Connects a new remote client (from `127.0.0.1`, its own port) to the driver's bound listening
/// socket, waiting up to `limit` for one to be bound; `None` when none is.
#[must_use]
pub fn connect_client(limit: Duration) -> Option<RemoteClient> {
    let mut placed = None;
    state::wait_for(limit, |s| {
        let Some((&listener, _)) = s
            .peers
            .iter()
            .find(|(_, p)| p.listen.as_ref().is_some_and(|l| l.bound))
        else {
            return false;
        };
        s.next_remote += 1;
        let id = s.next_remote;
        #[allow(clippy::cast_possible_truncation)] // a test's few clients
        let port = 50_000 + (id % 10_000) as u16;
        s.remotes.insert(
            id,
            Remote {
                port,
                ..Remote::default()
            },
        );
        if let Some(listen) = s.peers.get_mut(&listener).and_then(|p| p.listen.as_mut()) {
            listen.backlog.push_back(id);
        }
        placed = Some((listener, id));
        true
    });
    let (listener, id) = placed?;
    match_accepts(listener);
    Some(RemoteClient { id })
}

impl RemoteClient {
    /// Its port (the driver sees it connect from `127.0.0.1:port`).
    #[must_use]
    pub fn port(&self) -> u16 {
        state::with(|s| s.remotes.get(&self.id).map_or(0, |r| r.port))
    }

    /// Sends `bytes` to the driver.
    pub fn send(&self, bytes: &[u8]) {
        let socket = state::with(|s| {
            let remote = s.remotes.get_mut(&self.id)?;
            remote.to_server.extend(bytes);
            remote.socket
        });
        if let Some(socket) = socket {
            deliver(socket as *mut WSK_SOCKET);
        }
    }

    /// Closes its side: the driver's receive gets 0 bytes once it has what was sent.
    pub fn close(&self) {
        let socket = state::with(|s| {
            let remote = s.remotes.get_mut(&self.id)?;
            remote.closed = true;
            remote.socket
        });
        if let Some(socket) = socket {
            deliver(socket as *mut WSK_SOCKET);
        }
    }

    /// Waits up to `limit` until the driver sent it at least `length` bytes; what it sent.
    #[must_use]
    pub fn receive(&self, length: usize, limit: Duration) -> Vec<u8> {
        let mut received = Vec::new();
        state::wait_for(limit, |s| {
            let Some(remote) = s.remotes.get(&self.id) else {
                return true;
            };
            received.clone_from(&remote.from_server);
            received.len() >= length
        });
        received
    }

    /// Waits up to `limit` until the driver closed its socket; whether it did.
    #[must_use]
    pub fn wait_closed(&self, limit: Duration) -> bool {
        state::wait_for(limit, |s| {
            s.remotes.get(&self.id).is_some_and(|r| r.server_closed)
        })
    }

    /// Whether the driver accepted it.
    #[must_use]
    pub fn accepted(&self) -> bool {
        state::with(|s| s.remotes.get(&self.id).is_some_and(|r| r.socket.is_some()))
    }
}

/// A datagram peer of the test at `127.0.0.1:port`: it sends datagrams to the driver's bound
/// datagram socket, and what the driver sends to its address lands in its inbox.
#[derive(Debug)]
pub struct DatagramPeer {
    address: Vec<u8>,
}

/// Registers a datagram peer at `127.0.0.1:port`.
#[must_use]
pub fn datagram_peer(port: u16) -> DatagramPeer {
    let address = wsk_sys::SOCKADDR_IN {
        sin_family: wsk_sys::AF_INET,
        sin_port: port.to_be(),
        sin_addr: [127, 0, 0, 1],
        sin_zero: [0; 8],
    };
    // SAFETY: a plain 16-byte C struct, read as its bytes.
    let address = unsafe {
        std::slice::from_raw_parts(
            (&raw const address).cast::<u8>(),
            size_of::<wsk_sys::SOCKADDR_IN>(),
        )
    }
    .to_vec();
    state::with(|s| s.datagram_peers.insert(address.clone(), Vec::new()));
    DatagramPeer { address }
}

impl DatagramPeer {
    /// Sends `bytes` as one datagram to the driver's bound datagram socket, waiting up to `limit`
    /// for one; whether there was one.
    #[must_use]
    pub fn send(&self, bytes: &[u8], limit: Duration) -> bool {
        let mut target = None;
        state::wait_for(limit, |s| {
            let Some((&socket, peer)) = s
                .peers
                .iter_mut()
                .find(|(_, p)| p.datagrams.is_some() && p.local.is_some())
            else {
                return false;
            };
            if let Some(queue) = peer.datagrams.as_mut() {
                queue.push_back((self.address.clone(), bytes.to_vec()));
            }
            target = Some(socket);
            true
        });
        let Some(socket) = target else {
            return false;
        };
        deliver(socket as *mut WSK_SOCKET);
        true
    }

    /// Waits up to `limit` until the driver sent it at least `count` datagrams; what it sent.
    #[must_use]
    pub fn receive(&self, count: usize, limit: Duration) -> Vec<Vec<u8>> {
        let mut received = Vec::new();
        state::wait_for(limit, |s| {
            received = s
                .datagram_peers
                .get(&self.address)
                .cloned()
                .unwrap_or_default();
            received.len() >= count
        });
        received
    }
}
