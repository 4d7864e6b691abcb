//! [`Listener`]: a listening TCP socket (`WskSocket` with `WSK_FLAG_LISTEN_SOCKET`) — bound, it
//! listens (a WSK listening socket has no separate `listen`) — and its accepts (`WskAccept`), each
//! a future whose socket is a [`Socket`] like a connected one, with a reference and a close of its
//! own made before the accept (an accept dropped before the provider answered closes the socket
//! the provider made for it, as a dropped creation does).
//!
//! The listener is the same socket underneath as a connection (its close, its abort in a
//! cancelled task): an accept pending in a cancelled task closes the listening socket, which
//! completes the accept (every provider completes a socket's IRPs when it closes).
//!
//! IRQL: making and polling at <= `DISPATCH_LEVEL` (`WskSocket`, `WskBind`, `WskAccept` allow it);
//! closing and dropping at <= `DISPATCH_LEVEL`.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr;
use core::task::{Context, Poll};

use super::accept_events::Queued;
use super::address::{AddressSlot, Sockaddr};
use super::create::{CreateOp, Creating, WithEvents};
use super::op::{SocketOp, abort_if_cancelled, not_requested};
use super::{Kind, Owned, Socket};
use crate::client::Client;
use crate::irp::{Op, Outcome};
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::WSK_PROVIDER_LISTEN_DISPATCH;

/// A listening TCP socket of client `C`.
///
/// # Invariants
/// `socket` is a listening socket (made with `WSK_FLAG_LISTEN_SOCKET`).
pub struct Listener<C: Client> {
    pub(super) socket: Socket<C>,
}

impl<C: Client> Listener<C> {
    /// Creates a listening socket of `family` (`AF_INET`, `AF_INET6`) through `reference`'s
    /// binding (`WskSocket` with `WSK_FLAG_LISTEN_SOCKET`); [`Listener::bind`] makes it listen.
    pub fn create(reference: &BindingRef<C>, family: u16) -> CreateListenerOp<C> {
        CreateListenerOp {
            op: CreateOp::new(reference, family, Kind::LISTEN, WithEvents::No),
        }
    }

    /// [`Listener::create`], with an accept events block (its provider context, with the
    /// library's `WskAcceptEvent`): once bound, [`Listener::enable_accept_events`] turns them on
    /// and [`Listener::accept`] takes the connections the callback queued (each with a receive
    /// events block: [`Socket::enable_receive_events`]).
    pub fn create_with_events(reference: &BindingRef<C>, family: u16) -> CreateListenerOp<C> {
        CreateListenerOp {
            op: CreateOp::new(reference, family, Kind::LISTEN, WithEvents::Accept),
        }
    }

    /// The provider's listen dispatch, while the socket is open.
    pub(super) fn dispatch(&self) -> Result<&WSK_PROVIDER_LISTEN_DISPATCH, NtError> {
        // SAFETY: a listening socket (the type invariant).
        unsafe { self.socket.dispatch_as() }
    }

    /// `WskBind` to `local`: from then on the socket listens (`0.0.0.0:port` or `[::]:port` for
    /// every address of the family).
    pub fn bind(&self, local: SocketAddr) -> SocketOp<'_, C> {
        let op = match self
            .dispatch()
            .and_then(|d| d.WskBind.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(bind) => self.socket.start(
                Owned::Address(Sockaddr::new(local)),
                |socket, address, irp| {
                    let address = address.address();
                    // SAFETY: the open listening socket's WskBind, with an address the request
                    // keeps until the provider completed its IRP.
                    unsafe { bind(socket, address, 0, irp) }
                },
            ),
            Err(status) => Op::failed(status, Owned::Nothing),
        };
        SocketOp::new(op, c"WskBind", &self.socket)
    }

    /// `WskAccept`: the next connection, a [`Socket`], and its peer's address. No event callbacks
    /// on the accepted socket (its requests are IRPs).
    pub fn accept(&self) -> AcceptOp<'_, C> {
        if let Some(events) = self.accept_events() {
            return AcceptOp {
                state: AcceptState::Queue(events),
                listener: self,
            };
        }
        AcceptOp {
            state: AcceptState::Irp(self.accept_op(WithEvents::No)),
            listener: self,
        }
    }

    /// [`Listener::accept`], the accepted socket with a receive events block (its provider
    /// context, with the library's `WskReceiveEvent` and `WskDisconnectEvent`): turn them on with
    /// [`Socket::enable_receive_events`], then [`Socket::read`] takes what the provider indicates.
    pub fn accept_with_events(&self) -> AcceptOp<'_, C> {
        if let Some(events) = self.accept_events() {
            return AcceptOp {
                state: AcceptState::Queue(events),
                listener: self,
            };
        }
        AcceptOp {
            state: AcceptState::Irp(self.accept_op(WithEvents::Receive)),
            listener: self,
        }
    }

    /// The accept's request, with what the accepted socket needs before it exists (and its
    /// events block, with `events`).
    fn accept_op(&self, events: WithEvents) -> Op<C, Accepting<C>> {
        let Some(reference) = self.socket.open_reference() else {
            return Op::failed(NtError::CONNECTION_ABORTED, Accepting::new(None));
        };
        let accept = match self
            .dispatch()
            .and_then(|d| d.WskAccept.ok_or(NtError::NOT_SUPPORTED))
        {
            Ok(accept) => accept,
            Err(status) => return Op::failed(status, Accepting::new(None)),
        };
        let creating = match Creating::prepare_with(reference, events) {
            Ok(creating) => creating,
            Err((status, creating)) => return Op::failed(status, Accepting::new(Some(creating))),
        };
        self.socket.start_or_orphan(
            Accepting::new(Some(creating)),
            |socket, accepting, irp| {
                let (context, dispatch) = accepting
                    .creating
                    .as_ref()
                    .map_or((ptr::null_mut(), ptr::null()), Creating::events_context);
                // SAFETY: the open listening socket's WskAccept, with the new socket's events
                // context (alive until its close completes) and 'static dispatch, or none, and a
                // remote address slot the request keeps until the provider completed its IRP.
                unsafe {
                    accept(
                        socket,
                        0,
                        context,
                        dispatch,
                        ptr::null_mut(),
                        accepting.remote.as_mut_ptr(),
                        irp,
                    )
                }
            },
            Accepting::orphaned,
        )
    }

    /// Closes the listening socket (`WskCloseSocket`; connections its accept events queued and
    /// nobody took are closed first); a pending accept completes. IRQL <= `DISPATCH_LEVEL`;
    /// never blocks.
    pub fn close(self) {
        drop(self);
    }
}

impl<C: Client> Drop for Listener<C> {
    /// Closes the listening socket like [`Listener::close`]. IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        // Before the close: no socket is then left for the close's completion to drop.
        self.drain();
    }
}

/// What an accept owns until the provider answered: the accepted socket's needs, and the slot
/// for its peer's address.
struct Accepting<C: Client> {
    creating: Option<Creating<C>>,
    remote: AddressSlot,
}

// SAFETY: the address slot is plain bytes; the rest is Send.
unsafe impl<C: Client> Send for Accepting<C> {}

impl<C: Client> Accepting<C> {
    fn new(creating: Option<Creating<C>>) -> Self {
        Self {
            creating,
            remote: AddressSlot::new(),
        }
    }

    /// A socket accepted for a dropped `AcceptOp` is closed, as a dropped creation's.
    fn orphaned(self, status: NtStatus, information: usize) {
        if let Some(creating) = self.creating {
            creating.orphaned(status, information);
        }
    }
}

/// A listening socket's creation in flight: see [`Listener::create`].
#[must_use = "a future does nothing unless awaited"]
pub struct CreateListenerOp<C: Client> {
    op: CreateOp<C>,
}

impl<C: Client> Future for CreateListenerOp<C> {
    type Output = Result<Listener<C>, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().op)
            .poll(cx)
            // INVARIANT: made with WSK_FLAG_LISTEN_SOCKET.
            .map(|made| made.map(|socket| Listener { socket }))
    }
}

/// An accept in flight: see [`Listener::accept`].
#[must_use = "a future does nothing unless awaited"]
pub struct AcceptOp<'l, C: Client> {
    state: AcceptState<'l, C>,
    listener: &'l Listener<C>,
}

enum AcceptState<'l, C: Client> {
    /// A `WskAccept`.
    Irp(Op<C, Accepting<C>>),
    /// The accept events' queue.
    Queue(&'l super::Events<C>),
}

impl<C: Client> Future for AcceptOp<'_, C> {
    /// The accepted connection and its peer's address.
    type Output = Result<(Socket<C>, SocketAddr), NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let listener = this.listener;
        match &mut this.state {
            AcceptState::Irp(op) => Poll::Ready(match Pin::new(op).poll(cx) {
                Poll::Pending => {
                    abort_if_cancelled(&listener.socket, cx);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(Outcome {
                    status,
                    information,
                    owned,
                })) => accepted(owned, status, information),
                Poll::Ready(Err((status, _))) => Err(not_requested::<C>(c"WskAccept", status)),
            }),
            AcceptState::Queue(events) => {
                // Registered first: a callback after the look below wakes this poll.
                events.waker.register(cx.waker());
                match events.take_accepted() {
                    Queued::Connection(socket, remote) => Poll::Ready(Ok((socket, remote))),
                    Queued::Dead => Poll::Ready(Err(NtError::CONNECTION_ABORTED)),
                    Queued::Wait if crate::task::is_cancelled(cx) => {
                        // The stop: queued connections closed, then the listening socket.
                        listener.drain();
                        abort_if_cancelled(&listener.socket, cx);
                        Poll::Ready(Err(NtError::CANCELLED))
                    }
                    Queued::Wait => Poll::Pending,
                }
            }
        }
    }
}

/// The accept's answer: the socket, with its peer's address (an accepted socket whose address
/// the provider did not give, or gave in a family the library does not know, is closed: the
/// provider's error, answered cleanly).
fn accepted<C: Client>(
    accepting: Accepting<C>,
    status: NtStatus,
    information: usize,
) -> Result<(Socket<C>, SocketAddr), NtError> {
    let Accepting { creating, remote } = accepting;
    let Some(creating) = creating else {
        return Err(NtError::UNSUCCESSFUL);
    };
    let socket = creating.finish(c"WskAccept", status, information)?;
    let Some(remote) = remote.decode() else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: WskAccept gave no peer address it could read; closing the connection"
        );
        socket.close();
        return Err(NtError::UNSUCCESSFUL);
    };
    Ok((socket, remote))
}
