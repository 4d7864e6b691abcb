//! A socket's options and addresses: [`SocketOption`] set with `WskControlSocket`
//! (`WskSetOption`), and the local and remote addresses (`WskGetLocalAddress`,
//! `WskGetRemoteAddress`), each an operation like the others (a future; what the provider
//! borrows kept in the request until it completed it). A provider that does not implement them
//! (Wine's stubs answer `STATUS_NOT_IMPLEMENTED`) is logged; the caller decides whether to go on.
//!
//! IRQL: making and polling at <= `DISPATCH_LEVEL` (`WskControlSocket`, `WskGetLocalAddress`,
//! `WskGetRemoteAddress` allow it).

use core::ffi::CStr;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr;
use core::task::{Context, Poll};

use super::address::{AddressSlot, Sockaddr};
use super::op::{SocketOp, abort_if_cancelled, finish, not_requested};
use super::{Listener, Socket};
use crate::client::Client;
use crate::irp::{Op, Outcome};
use crate::log::log;
use crate::status::NtError;
use crate::sys::{
    IPPROTO_IPV6, IPPROTO_TCP, IPV6_V6ONLY, PFN_WSK_GET_ADDRESS, SO_BROADCAST, SO_EXCLUSIVEADDRUSE,
    SO_KEEPALIVE, SO_REUSEADDR, SOCKADDR, SOL_SOCKET, TCP_NODELAY, WSK_PROVIDER_BASIC_DISPATCH,
    WskSetOption,
};

/// What a socket's operation owns while in flight (besides a transfer's buffer).
pub(super) enum Owned {
    /// Nothing (a disconnect).
    Nothing,
    /// An address the provider reads (bind, connect).
    Address(Sockaddr),
    /// An option's value, and where the provider may write an output size.
    Control { value: u32, returned: usize },
    /// Room for an address the provider writes.
    Slot(AddressSlot),
}

// SAFETY: plain values (addresses, integers); nothing tied to a thread.
unsafe impl Send for Owned {}

impl Owned {
    /// The address for the provider to read (NULL if none).
    pub(super) fn address(&mut self) -> *mut SOCKADDR {
        match self {
            Self::Address(address) => address.as_mut_ptr(),
            Self::Slot(slot) => slot.as_mut_ptr(),
            Self::Nothing | Self::Control { .. } => ptr::null_mut(),
        }
    }
}

/// A socket option, with the value to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOption {
    /// `SO_REUSEADDR`: bind to an address in use (set before the bind).
    ReuseAddress(bool),
    /// `SO_EXCLUSIVEADDRUSE`: no other socket may bind to this socket's address (set before the
    /// bind; what Microsoft recommends for a server's listening socket).
    ExclusiveAddressUse(bool),
    /// `TCP_NODELAY`: no Nagle delay on sends.
    NoDelay(bool),
    /// `SO_KEEPALIVE`: keep-alive probes on an idle connection.
    KeepAlive(bool),
    /// `IPV6_V6ONLY`: an IPv6 socket takes no IPv4-mapped traffic (set before the bind).
    Ipv6Only(bool),
    /// `SO_BROADCAST`: a datagram socket may send to a broadcast address.
    Broadcast(bool),
}

impl SocketOption {
    /// (level, name, value) for `WskControlSocket`.
    const fn encoded(self) -> (u32, u32, bool) {
        match self {
            Self::ReuseAddress(on) => (SOL_SOCKET, SO_REUSEADDR, on),
            Self::ExclusiveAddressUse(on) => (SOL_SOCKET, SO_EXCLUSIVEADDRUSE, on),
            Self::NoDelay(on) => (IPPROTO_TCP, TCP_NODELAY, on),
            Self::KeepAlive(on) => (SOL_SOCKET, SO_KEEPALIVE, on),
            Self::Ipv6Only(on) => (IPPROTO_IPV6, IPV6_V6ONLY, on),
            Self::Broadcast(on) => (SOL_SOCKET, SO_BROADCAST, on),
        }
    }

    /// The option's C name, for a log line.
    #[must_use]
    pub const fn name(self) -> &'static CStr {
        match self {
            Self::ReuseAddress(_) => c"SO_REUSEADDR",
            Self::ExclusiveAddressUse(_) => c"SO_EXCLUSIVEADDRUSE",
            Self::NoDelay(_) => c"TCP_NODELAY",
            Self::KeepAlive(_) => c"SO_KEEPALIVE",
            Self::Ipv6Only(_) => c"IPV6_V6ONLY",
            Self::Broadcast(_) => c"SO_BROADCAST",
        }
    }
}

impl<C: Client> Socket<C> {
    /// The provider's basic dispatch (every socket's table starts with it), while open.
    pub(super) fn basic(&self) -> Result<&WSK_PROVIDER_BASIC_DISPATCH, NtError> {
        // SAFETY: every kind of socket's dispatch starts with WSK_PROVIDER_BASIC_DISPATCH.
        unsafe { self.dispatch_as() }
    }

    /// `WskControlSocket` (`WskSetOption`) of `option`.
    pub fn set_option(&self, option: SocketOption) -> SocketOp<'_, C> {
        let (level, name, on) = option.encoded();
        let owned = Owned::Control {
            value: u32::from(on),
            returned: 0,
        };
        let op = match self
            .basic()
            .and_then(|d| d.WskControlSocket.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(control) => self.start(owned, |socket, owned, irp| {
                let Owned::Control { value, returned } = owned else {
                    return NtError::UNSUCCESSFUL.bits().cast_signed();
                };
                // SAFETY: the open socket's WskControlSocket: a ULONG input the request keeps
                // until the provider completed its IRP, no output, an output size it may write.
                unsafe {
                    control(
                        socket,
                        WskSetOption,
                        name,
                        level,
                        size_of::<u32>(),
                        ptr::from_mut(value).cast(),
                        0,
                        ptr::null_mut(),
                        returned,
                        irp,
                    )
                }
            }),
            Err(status) => Op::failed(status, owned),
        };
        SocketOp::new(op, option.name(), self)
    }

    /// `WskGetLocalAddress` or `WskGetRemoteAddress` (`get`, of a dispatch of the socket's kind).
    pub(super) fn address_op(
        &self,
        what: &'static CStr,
        get: Result<PFN_WSK_GET_ADDRESS, NtError>,
    ) -> AddressOp<'_, C> {
        let owned = Owned::Slot(AddressSlot::new());
        let op = match get.and_then(|get| get.ok_or(NtError::NOT_SUPPORTED)) {
            Ok(get) => self.start(owned, |socket, owned, irp| {
                // SAFETY: the open socket's function, with an address slot the request keeps
                // until the provider completed its IRP.
                unsafe { get(socket, owned.address(), irp) }
            }),
            Err(status) => Op::failed(status, owned),
        };
        AddressOp {
            op,
            what,
            socket: self,
        }
    }

    /// The connection's local address (`WskGetLocalAddress`).
    pub fn local_address(&self) -> AddressOp<'_, C> {
        self.address_op(
            c"WskGetLocalAddress",
            self.dispatch().map(|d| d.WskGetLocalAddress),
        )
    }

    /// The connection's remote address (`WskGetRemoteAddress`).
    pub fn remote_address(&self) -> AddressOp<'_, C> {
        self.address_op(
            c"WskGetRemoteAddress",
            self.dispatch().map(|d| d.WskGetRemoteAddress),
        )
    }
}

impl<C: Client> Listener<C> {
    /// `WskControlSocket` (`WskSetOption`) of `option` on the listening socket (an address
    /// option before [`Listener::bind`]).
    pub fn set_option(&self, option: SocketOption) -> SocketOp<'_, C> {
        self.socket.set_option(option)
    }

    /// The listening socket's local address (`WskGetLocalAddress`): the port a bind to port 0
    /// got.
    pub fn local_address(&self) -> AddressOp<'_, C> {
        self.socket.address_op(
            c"WskGetLocalAddress",
            self.dispatch().map(|d| d.WskGetLocalAddress),
        )
    }
}

/// An address query in flight: see [`Socket::local_address`], [`Socket::remote_address`].
#[must_use = "a future does nothing unless awaited"]
pub struct AddressOp<'s, C: Client> {
    op: Op<C, Owned>,
    what: &'static CStr,
    socket: &'s Socket<C>,
}

impl<C: Client> Future for AddressOp<'_, C> {
    type Output = Result<SocketAddr, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match Pin::new(&mut this.op).poll(cx) {
            Poll::Pending => {
                abort_if_cancelled(this.socket, cx);
                return Poll::Pending;
            }
            Poll::Ready(Ok(Outcome {
                status,
                information,
                owned,
            })) => finish::<C>(this.what, status, information).and_then(|_| {
                let address = match &owned {
                    Owned::Slot(slot) => slot.decode(),
                    _ => None,
                };
                address.ok_or_else(|| {
                    log!(
                        C,
                        DPFLTR_ERROR_LEVEL,
                        "socket: %s gave no address it could read",
                        this.what
                    );
                    NtError::UNSUCCESSFUL
                })
            }),
            Poll::Ready(Err((status, _))) => Err(not_requested::<C>(this.what, status)),
        })
    }
}
