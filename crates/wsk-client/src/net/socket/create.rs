//! A socket's creation (`WskSocket`) and what an accept shares with it (`WskAccept` makes a
//! socket too): [`Creating`] holds what a new socket needs before the provider makes it — its
//! own binding reference and its close's request, so that a socket that exists can always be
//! closed, and a work item that closes a socket made for nobody (the future was dropped before
//! the provider answered: no WSK call in a completion routine).
//!
//! IRQL: making and polling at <= `DISPATCH_LEVEL`.

use core::future::Future;
use core::net::SocketAddr;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::task::{Context, Poll};

use super::op::not_requested;
use super::{Closed, EventsRef, Kind, Sockaddr, Socket, close_raw};
use crate::client::Client;
use crate::irp::{self, Op, Outcome, Prepared};
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::WSK_SOCKET;
use crate::work::{self, Work};

/// Which events block a new socket gets (its provider context).
#[derive(Clone, Copy)]
pub(super) enum WithEvents {
    /// None: no callbacks.
    No,
    /// A connection's: receive and disconnect events into a ring.
    Receive,
    /// A listening socket's: accept events into a queue.
    Accept,
    /// A datagram socket's: receive-from events into slots.
    Datagram,
}

/// What a socket's creation owns until the provider answered.
pub(super) struct Creating<C: Client> {
    own: Option<BindingRef<C>>,
    close: Option<Prepared<C, Closed<C>>>,
    /// The close of a socket made for nobody (the future was dropped).
    orphan: Option<work::Prepared<C, CloseOrphan<C>>>,
    /// The new socket's receive events block (its provider context), when asked for.
    events: Option<EventsRef<C>>,
}

impl<C: Client> Creating<C> {
    /// The socket's own reference (cloned from `reference`: refused once a detach or the unload
    /// began), its close's request and the orphan's work item; on failure, what was made so far
    /// with the status.
    pub(super) fn prepare(reference: &BindingRef<C>) -> Result<Self, (NtError, Self)> {
        Self::prepare_with(reference, WithEvents::No)
    }

    /// [`Creating::prepare`], with an events block for the new socket as `events` says.
    pub(super) fn prepare_with(
        reference: &BindingRef<C>,
        events: WithEvents,
    ) -> Result<Self, (NtError, Self)> {
        let mut creating = Self {
            own: None,
            close: None,
            orphan: None,
            events: None,
        };
        // The socket's own reference, taken first: once the socket exists, it must be closable.
        match reference.try_clone() {
            Ok(own) => creating.own = Some(own),
            Err(error) => return Err((NtError::from(error), creating)),
        }
        // Its close's request, and the work item that closes a socket made for nobody.
        match Prepared::<C, Closed<C>>::new() {
            Ok(close) => creating.close = Some(close),
            Err(status) => return Err((status, creating)),
        }
        let orphan = CloseOrphan {
            socket: ptr::null_mut(),
            reference: None,
            close: None,
            events: None,
        };
        match work::Prepared::<C, _>::new(orphan) {
            Ok(orphan) => creating.orphan = Some(orphan),
            Err(status) => return Err((status, creating)),
        }
        let block = match events {
            WithEvents::No => return Ok(creating),
            WithEvents::Receive => EventsRef::new(),
            WithEvents::Datagram => EventsRef::for_datagrams(),
            WithEvents::Accept => match reference.try_clone() {
                Ok(listener) => EventsRef::for_listener(listener),
                Err(error) => Err(NtError::from(error)),
            },
        };
        match block {
            Ok(block) => creating.events = Some(block),
            Err(status) => return Err((status, creating)),
        }
        Ok(creating)
    }

    /// The new socket's provider context and client dispatch (its receive events), or NULLs.
    pub(super) fn events_context(&self) -> (crate::sys::PVOID, *const core::ffi::c_void) {
        match &self.events {
            Some(events) if events.get().accepts.is_some() => {
                super::accept_events::listen_context(events)
            }
            Some(events) if events.get().datagrams.is_some() => {
                super::datagram_events::datagram_context(events)
            }
            Some(events) => (
                events.context(),
                ptr::from_ref(super::Events::<C>::dispatch()).cast(),
            ),
            None => (ptr::null_mut(), ptr::null()),
        }
    }

    /// The provider answered `what` with `status` and, on success, the new socket in
    /// `information`: the socket, open (a success without one is the provider's error).
    pub(super) fn finish(
        self,
        what: &core::ffi::CStr,
        status: NtStatus,
        information: usize,
    ) -> Result<Socket<C>, NtError> {
        // Answered: the orphan's work item is not needed (dropped: freed unqueued).
        let Self {
            own,
            close,
            orphan,
            events,
        } = self;
        drop(orphan);
        let information = super::op::finish::<C>(what, status, information)?;
        let (Some(socket), Some(own), Some(close)) =
            (NonNull::new(information as *mut WSK_SOCKET), own, close)
        else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: %s succeeded without a socket",
                what
            );
            return Err(NtError::UNSUCCESSFUL);
        };
        // INVARIANT: the provider's new socket, open.
        Ok(Socket::open(socket, own, close, events))
    }

    /// The creation's fate when its future was dropped: a socket the provider made is closed from
    /// the work item allocated for that (queueing it cannot fail); otherwise everything is
    /// dropped. Runs where the request is freed (its completion routine: <= `DISPATCH_LEVEL`).
    pub(super) fn orphaned(self, status: NtStatus, information: usize) {
        let Self {
            own,
            close,
            orphan,
            events,
        } = self;
        if status.is_success()
            && information != 0
            && let Some(orphan) = orphan
        {
            orphan.queue_with(|work| {
                work.socket = information as *mut WSK_SOCKET;
                work.reference = own;
                work.close = close;
                work.events = events;
            });
        }
    }
}

/// Closes a socket the provider made for a dropped future.
struct CloseOrphan<C: Client> {
    socket: *mut WSK_SOCKET,
    reference: Option<BindingRef<C>>,
    close: Option<Prepared<C, Closed<C>>>,
    events: Option<EventsRef<C>>,
}

// SAFETY: the socket pointer is the provider's, usable from any thread; the rest is Send.
unsafe impl<C: Client> Send for CloseOrphan<C> {}

impl<C: Client> Work for CloseOrphan<C> {
    fn run(self) {
        if let (Some(socket), Some(reference), Some(close)) =
            (NonNull::new(self.socket), self.reference, self.close)
        {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "socket: made for a creation nobody waits for; closing it"
            );
            close_raw::<C>(socket, reference, close, self.events);
        }
    }
}

/// `WskSocket` for a socket of `family` and `kind`.
pub(super) fn create_op<C: Client>(
    reference: &BindingRef<C>,
    family: u16,
    kind: Kind,
    events: WithEvents,
) -> Op<C, Creating<C>> {
    let creating = match Creating::prepare_with(reference, events) {
        Ok(creating) => creating,
        Err((status, creating)) => return Op::failed(status, creating),
    };
    if let Err(error) = reference.ensure_open() {
        return Op::failed(NtError::from(error), creating);
    }
    let Some(socket_fn) = reference.socket() else {
        return Op::failed(NtError::NOT_SUPPORTED, creating);
    };
    irp::start_or_orphan(
        reference,
        creating,
        |reference, creating, irp| {
            let (context, dispatch) = creating.events_context();
            // SAFETY: the binding's WskSocket, with the socket's events context (alive until
            // its close completes) and 'static client dispatch, or none, and the request's IRP;
            // IRQL <= DISPATCH_LEVEL.
            unsafe {
                super::request_socket(
                    Some(socket_fn),
                    reference,
                    family,
                    kind,
                    (context, dispatch),
                    irp,
                )
            }
        },
        Creating::orphaned,
    )
}

/// A socket's creation in flight: see [`Socket::create`].
#[must_use = "a future does nothing unless awaited"]
pub struct CreateOp<C: Client> {
    op: Op<C, Creating<C>>,
}

impl<C: Client> CreateOp<C> {
    pub(super) fn new(
        reference: &BindingRef<C>,
        family: u16,
        kind: Kind,
        events: WithEvents,
    ) -> Self {
        Self {
            op: create_op(reference, family, kind, events),
        }
    }
}

impl<C: Client> Future for CreateOp<C> {
    type Output = Result<Socket<C>, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match Pin::new(&mut this.op).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Outcome {
                status,
                information,
                owned,
            })) => owned.finish(c"WskSocket", status, information),
            Poll::Ready(Err((status, _))) => Err(not_requested::<C>(c"WskSocket", status)),
        })
    }
}

impl<C: Client> Socket<C> {
    /// Creates a connection-oriented (TCP) socket of `family` (`AF_INET`, `AF_INET6`) through
    /// `reference`'s binding (`WskSocket`). The socket holds a reference of its own, and its
    /// close's request, both made before `WskSocket`. A `CreateOp` dropped before the provider
    /// answered closes the socket the provider made for it (from a work item allocated with
    /// the request: no WSK call in a completion routine).
    pub fn create(reference: &BindingRef<C>, family: u16) -> CreateOp<C> {
        CreateOp::new(reference, family, Kind::CONNECTION, WithEvents::No)
    }
}

/// What a `WskSocketConnect` owns until the provider answered: the new socket's needs and the two
/// addresses the provider reads.
struct Connecting<C: Client> {
    creating: Option<Creating<C>>,
    local: Sockaddr,
    remote: Sockaddr,
}

impl<C: Client> Connecting<C> {
    fn orphaned(self, status: NtStatus, information: usize) {
        if let Some(creating) = self.creating {
            creating.orphaned(status, information);
        }
    }
}

/// A `WskSocketConnect` in flight: see [`Socket::socket_connect`].
#[must_use = "a future does nothing unless awaited"]
pub struct SocketConnectOp<C: Client> {
    op: Op<C, Connecting<C>>,
}

impl<C: Client> Future for SocketConnectOp<C> {
    type Output = Result<Socket<C>, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Poll::Ready(match Pin::new(&mut this.op).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Outcome {
                status,
                information,
                owned,
            })) => match owned.creating {
                Some(creating) => creating.finish(c"WskSocketConnect", status, information),
                None => Err(NtError::UNSUCCESSFUL),
            },
            Poll::Ready(Err((status, _))) => Err(not_requested::<C>(c"WskSocketConnect", status)),
        })
    }
}

impl<C: Client> Socket<C> {
    /// `WskSocketConnect`: a TCP socket bound to `local` and connected to `remote` in one request
    /// (WSK 1.0 has it; a provider may not implement it — Wine's answers
    /// `STATUS_NOT_IMPLEMENTED`: [`Socket::connect_to`] then goes the long way). The socket's own
    /// reference and close are made before, as for [`Socket::create`].
    pub fn socket_connect(
        reference: &BindingRef<C>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> SocketConnectOp<C> {
        let mut connecting = Connecting {
            creating: None,
            local: Sockaddr::new(local),
            remote: Sockaddr::new(remote),
        };
        let op = match Creating::prepare(reference) {
            Err((status, creating)) => {
                connecting.creating = Some(creating);
                Op::failed(status, connecting)
            }
            Ok(creating) => {
                connecting.creating = Some(creating);
                match reference.socket_connect() {
                    None => Op::failed(NtError::NOT_SUPPORTED, connecting),
                    Some(socket_connect) => irp::start_or_orphan(
                        reference,
                        connecting,
                        |reference, connecting, irp| {
                            // SAFETY: the binding's WskSocketConnect with its WSK_CLIENT, a TCP
                            // socket without context or callbacks, and addresses the request
                            // keeps until the provider completed its IRP; IRQL <=
                            // DISPATCH_LEVEL.
                            unsafe {
                                socket_connect(
                                    reference.client(),
                                    crate::sys::SOCK_STREAM,
                                    crate::sys::IPPROTO_TCP,
                                    connecting.local.as_mut_ptr(),
                                    connecting.remote.as_mut_ptr(),
                                    0,
                                    ptr::null_mut(),
                                    ptr::null(),
                                    ptr::null_mut(),
                                    ptr::null_mut(),
                                    ptr::null_mut(),
                                    irp,
                                )
                            }
                        },
                        Connecting::orphaned,
                    ),
                }
            }
        };
        SocketConnectOp { op }
    }

    /// A TCP connection to `remote` from the wildcard address of its family: one
    /// `WskSocketConnect` where the provider implements it, else (`STATUS_NOT_IMPLEMENTED` or
    /// `STATUS_NOT_SUPPORTED`: Wine's stub) `WskSocket`, `WskBind` and `WskConnect`.
    ///
    /// # Errors
    /// The status of the step that failed (each logged by the library).
    pub async fn connect_to(
        reference: &BindingRef<C>,
        remote: SocketAddr,
    ) -> Result<Self, NtError> {
        let (family, wildcard) = match remote {
            SocketAddr::V4(_) => (
                crate::sys::AF_INET,
                SocketAddr::new(core::net::Ipv4Addr::UNSPECIFIED.into(), 0),
            ),
            SocketAddr::V6(_) => (
                crate::sys::AF_INET6,
                SocketAddr::new(core::net::Ipv6Addr::UNSPECIFIED.into(), 0),
            ),
        };
        match Self::socket_connect(reference, wildcard, remote).await {
            Err(error) if error == NtError::NOT_IMPLEMENTED || error == NtError::NOT_SUPPORTED => {
                log!(
                    C,
                    DPFLTR_INFO_LEVEL,
                    "socket: no WskSocketConnect (0x%08X): WskSocket, WskBind, WskConnect",
                    error.bits()
                );
                let socket = Self::create(reference, family).await?;
                socket.bind(wildcard).await?;
                socket.connect(remote).await?;
                Ok(socket)
            }
            other => other,
        }
    }
}
