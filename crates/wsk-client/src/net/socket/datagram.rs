//! [`Datagram`]: a UDP socket (`WskSocket` with `WSK_FLAG_DATAGRAM_SOCKET`, `SOCK_DGRAM`,
//! `IPPROTO_UDP`), bound to a local address, that sends each buffer as one datagram to an address
//! ([`Datagram::send_to`], `WskSendTo`) and receives one datagram with its sender
//! ([`Datagram::receive_from`], `WskReceiveFrom`). IPv4 and IPv6; broadcast with
//! [`SocketOption::Broadcast`]. Like a connection's, each operation takes its buffer by value and
//! hands it back with the result; the address it sends to, or the room for the sender's, stays in
//! the request until the provider completed it. Like a connection, it keeps one request for its
//! sends and one for its receives (issue 20: nothing allocated per datagram), let go before its
//! socket closes.
//!
//! IRQL: making and polling at <= `DISPATCH_LEVEL` (`WskSocket`, `WskBind`, `WskSendTo`,
//! `WskReceiveFrom` allow it); closing and dropping at <= `DISPATCH_LEVEL`.

use core::ffi::CStr;
use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr;
use core::task::{Context, Poll};

use super::address::{AddressSlot, Sockaddr};
use super::control::{AddressOp, SocketOption};
use super::create::{CreateOp, WithEvents};
use super::datagram_events::Received;
use super::op::{SocketOp, abort_if_cancelled, poll_transfer};
use super::{Kind, Owned, Socket};
use crate::buffer::Buffer;
use crate::client::Client;
use crate::irp::{Kept, Op};
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::NtError;
use crate::sys::{WSK_BUF, WSK_PROVIDER_DATAGRAM_DISPATCH};

/// A UDP socket of client `C`.
///
/// # Invariants
/// `socket` is a datagram socket (made with `WSK_FLAG_DATAGRAM_SOCKET`).
pub struct Datagram<C: Client> {
    // The requests of its sends and receives, kept for reuse; declared before the socket, so
    // that they go first (freed, or left to the use in flight) and the close after them.
    sends: Kept<C, SendTo>,
    receives: Kept<C, ReceiveFrom>,
    pub(super) socket: Socket<C>,
}

/// What a send owns while in flight: the buffer, its `WSK_BUF`, the address it goes to.
struct SendTo {
    buffer: Buffer,
    wsk_buf: WSK_BUF,
    remote: Sockaddr,
}

/// What a receive owns while in flight: the buffer, its `WSK_BUF`, the room for the sender.
struct ReceiveFrom {
    buffer: Buffer,
    wsk_buf: WSK_BUF,
    remote: AddressSlot,
}

// SAFETY: the `WSK_BUF`s point at their buffer's own MDL, which moves with it; the addresses are
// plain values.
unsafe impl Send for SendTo {}
// SAFETY: as above.
unsafe impl Send for ReceiveFrom {}

impl<C: Client> Datagram<C> {
    /// Creates a UDP socket of `family` (`AF_INET`, `AF_INET6`) through `reference`'s binding;
    /// [`Datagram::bind`] gives it its local address.
    pub fn create(reference: &BindingRef<C>, family: u16) -> CreateDatagramOp<C> {
        CreateDatagramOp {
            op: CreateOp::new(reference, family, Kind::DATAGRAM, WithEvents::No),
        }
    }

    /// [`Datagram::create`], with a receive-from events block (its provider context, with the
    /// library's `WskReceiveFromEvent`): once bound, [`Datagram::enable_receive_from_events`]
    /// turns it on and [`Datagram::receive_from`] takes the datagrams the callback kept.
    pub fn create_with_events(reference: &BindingRef<C>, family: u16) -> CreateDatagramOp<C> {
        CreateDatagramOp {
            op: CreateOp::new(reference, family, Kind::DATAGRAM, WithEvents::Datagram),
        }
    }

    /// The provider's datagram dispatch, while the socket is open.
    fn dispatch(&self) -> Result<&WSK_PROVIDER_DATAGRAM_DISPATCH, NtError> {
        // SAFETY: a datagram socket (the type invariant).
        unsafe { self.socket.dispatch_as() }
    }

    /// `WskBind` to `local` (the wildcard address and port 0 for a socket that only sends).
    pub fn bind(&self, local: SocketAddr) -> SocketOp<'_, C> {
        let op = match self
            .dispatch()
            .and_then(|d| d.WskBind.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(bind) => self.socket.start(
                Owned::Address(Sockaddr::new(local)),
                |socket, address, irp| {
                    // SAFETY: the open socket's WskBind, with an address the request keeps until
                    // the provider completed its IRP.
                    unsafe { bind(socket, address.address(), 0, irp) }
                },
            ),
            Err(status) => Op::failed(status, Owned::Nothing),
        };
        SocketOp::new(op, c"WskBind", &self.socket)
    }

    /// `WskControlSocket` (`WskSetOption`) of `option` ([`SocketOption::Broadcast`] to send to a
    /// broadcast address).
    pub fn set_option(&self, option: SocketOption) -> SocketOp<'_, C> {
        self.socket.set_option(option)
    }

    /// The socket's local address (`WskGetLocalAddress`): the port a bind to port 0 got.
    pub fn local_address(&self) -> AddressOp<'_, C> {
        self.socket.address_op(
            c"WskGetLocalAddress",
            self.dispatch().map(|d| d.WskGetLocalAddress),
        )
    }

    /// `WskSendTo` of the first `length` bytes of `buffer` (at most its capacity) as one datagram
    /// to `remote`: the bytes sent, and the buffer back.
    pub fn send_to(&self, buffer: Buffer, length: usize, remote: SocketAddr) -> SendToOp<'_, C> {
        let length = length.min(buffer.capacity());
        let wsk_buf = buffer.wsk_buf(length);
        let owned = SendTo {
            buffer,
            wsk_buf,
            remote: Sockaddr::new(remote),
        };
        let op = match self
            .dispatch()
            .and_then(|d| d.WskSendTo.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(send_to) => self
                .socket
                .start_kept(&self.sends, owned, |socket, owned, irp| {
                    // SAFETY: the open socket's WskSendTo, with a WSK_BUF within the buffer's MDL and
                    // an address, all kept by the request until the provider completed its IRP; no
                    // control information.
                    unsafe {
                        send_to(
                            socket,
                            &raw mut owned.wsk_buf,
                            0,
                            owned.remote.as_mut_ptr(),
                            0,
                            ptr::null_mut(),
                            irp,
                        )
                    }
                }),
            Err(status) => Op::failed(status, owned),
        };
        SendToOp {
            op,
            most: length,
            socket: &self.socket,
        }
    }

    /// `WskReceiveFrom` into `buffer` (up to its capacity): one datagram's bytes and its sender,
    /// and the buffer back; with receive-from events on, the next datagram the callback kept.
    pub fn receive_from(&self, buffer: Buffer) -> ReceiveFromOp<'_, C> {
        if let Some(events) = self.socket.events_if_on().filter(|e| e.datagrams.is_some()) {
            return ReceiveFromOp {
                state: ReceiveFromState::Slots { events, buffer },
                socket: &self.socket,
            };
        }
        let length = buffer.capacity();
        let wsk_buf = buffer.wsk_buf(length);
        let owned = ReceiveFrom {
            buffer,
            wsk_buf,
            remote: AddressSlot::new(),
        };
        let op = match self
            .dispatch()
            .and_then(|d| d.WskReceiveFrom.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(receive_from) => {
                self.socket
                    .start_kept(&self.receives, owned, |socket, owned, irp| {
                        // SAFETY: the open socket's WskReceiveFrom, with a WSK_BUF within the buffer's
                        // MDL and the room for the sender's address, kept by the request until the
                        // provider completed its IRP; no control information.
                        unsafe {
                            receive_from(
                                socket,
                                &raw mut owned.wsk_buf,
                                0,
                                owned.remote.as_mut_ptr(),
                                ptr::null_mut(),
                                ptr::null_mut(),
                                ptr::null_mut(),
                                irp,
                            )
                        }
                    })
            }
            Err(status) => Op::failed(status, owned),
        };
        ReceiveFromOp {
            state: ReceiveFromState::Irp { op, most: length },
            socket: &self.socket,
        }
    }

    /// Closes the socket (`WskCloseSocket`); pending operations complete. IRQL <=
    /// `DISPATCH_LEVEL`; never blocks.
    pub fn close(self) {
        let Self {
            sends,
            receives,
            socket,
        } = self;
        // Its kept requests first, as the drop does.
        drop((sends, receives));
        socket.close();
    }
}

/// A datagram socket's creation in flight: see [`Datagram::create`].
#[must_use = "a future does nothing unless awaited"]
pub struct CreateDatagramOp<C: Client> {
    op: CreateOp<C>,
}

impl<C: Client> Future for CreateDatagramOp<C> {
    type Output = Result<Datagram<C>, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().op)
            .poll(cx)
            // INVARIANT: made with WSK_FLAG_DATAGRAM_SOCKET.
            .map(|made| {
                made.map(|socket| Datagram {
                    sends: Kept::new(),
                    receives: Kept::new(),
                    socket,
                })
            })
    }
}

const SEND_TO: &CStr = c"WskSendTo";
const RECEIVE_FROM: &CStr = c"WskReceiveFrom";

/// A datagram's send in flight: see [`Datagram::send_to`].
#[must_use = "a future does nothing unless awaited"]
pub struct SendToOp<'s, C: Client> {
    op: Op<C, SendTo>,
    most: usize,
    socket: &'s Socket<C>,
}

impl<C: Client> Future for SendToOp<'_, C> {
    /// The bytes sent, and the buffer back.
    type Output = (Result<usize, NtError>, Buffer);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        poll_transfer(&mut this.op, cx, this.socket, SEND_TO, this.most)
            .map(|(result, owned)| (result, owned.buffer))
    }
}

/// A datagram's receive in flight: see [`Datagram::receive_from`].
#[must_use = "a future does nothing unless awaited"]
pub struct ReceiveFromOp<'s, C: Client> {
    state: ReceiveFromState<'s, C>,
    socket: &'s Socket<C>,
}

enum ReceiveFromState<'s, C: Client> {
    /// A `WskReceiveFrom`.
    Irp { op: Op<C, ReceiveFrom>, most: usize },
    /// The receive-from events' slots.
    Slots {
        events: &'s super::Events<C>,
        buffer: Buffer,
    },
    /// Polled to its end.
    Done,
}

impl<C: Client> Future for ReceiveFromOp<'_, C> {
    /// The datagram's bytes (at most the buffer's capacity) and its sender, and the buffer back.
    type Output = (Result<(usize, SocketAddr), NtError>, Buffer);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match core::mem::replace(&mut this.state, ReceiveFromState::Done) {
            ReceiveFromState::Done => Poll::Pending,
            ReceiveFromState::Irp { mut op, most } => {
                match poll_transfer(&mut op, cx, this.socket, RECEIVE_FROM, most) {
                    Poll::Pending => {
                        this.state = ReceiveFromState::Irp { op, most };
                        Poll::Pending
                    }
                    Poll::Ready((result, owned)) => {
                        let result = result.and_then(|n| {
                            let sender = owned.remote.decode().ok_or_else(|| {
                                log!(
                                    C,
                                    DPFLTR_ERROR_LEVEL,
                                    "socket: WskReceiveFrom gave no sender address it could read"
                                );
                                NtError::UNSUCCESSFUL
                            })?;
                            Ok((n, sender))
                        });
                        Poll::Ready((result, owned.buffer))
                    }
                }
            }
            ReceiveFromState::Slots { events, mut buffer } => {
                // Registered first: a callback after the look below wakes this poll.
                events.waker.register(cx.waker());
                match events.take_datagram(buffer.as_mut_slice()) {
                    Received::Datagram(n, sender) => Poll::Ready((Ok((n, sender)), buffer)),
                    Received::Dead => Poll::Ready((Err(NtError::CONNECTION_ABORTED), buffer)),
                    Received::Wait if crate::task::is_cancelled(cx) => {
                        abort_if_cancelled(this.socket, cx);
                        Poll::Ready((Err(NtError::CANCELLED), buffer))
                    }
                    Received::Wait => {
                        this.state = ReceiveFromState::Slots { events, buffer };
                        Poll::Pending
                    }
                }
            }
        }
    }
}
