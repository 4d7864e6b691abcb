//! Sockets: what a driver attaches to WSK for. A [`Socket`] holds a binding reference for its whole
//! life, so a detach (and the unload) waits until it is closed, and [`crate::Client::on_detach`] is
//! where the driver closes it.
//!
//! A TCP connection, in its asynchronous form (`op.rs`, to await in a task: [`crate::task`]):
//! [`Socket::create`] (`WskSocket`), [`Socket::bind`] (`WskBind`, the wildcard address for a
//! client), [`Socket::connect`] (`WskConnect`), [`Socket::send`] and [`Socket::receive`], which
//! take a [`Buffer`] by value and hand it back with the result (`WskSend`/`WskReceive`, never past
//! the buffer's MDL), [`Socket::disconnect`] (`WskDisconnect`; a provider without it — Wine's —
//! is logged and the socket simply closed), and the close — explicitly with [`Socket::close`], or
//! by dropping it. A close queues `WskCloseSocket` with a request whose completion drops the
//! socket's binding reference (`crate::irp`), so it never blocks and may run at
//! `DISPATCH_LEVEL`. That request is prepared with the socket (`crate::irp::Prepared`), before
//! `WskSocket`: a socket that exists can always be closed, whatever memory is left by then.
//!
//! A socket keeps the requests of its steady state (issue 20): one for its sends, one for its
//! receives (`crate::irp::Kept`) and one for its waited operations (`crate::irp::KeptWaited`),
//! each made at its first use and reused — `IoReuseIrp`, the routine set again — for every later
//! one, so that once connected a socket allocates nothing of its own per operation (`cargo bench
//! --bench socket_ops` counts it). A second operation of a kind while one is in flight gets a
//! one-time request. The kept requests go before the close: freed at once, or by the end of the
//! use in flight, which holds a binding reference of its own.
//!
//! A server's side ([`Listener`], `listener.rs`): a listening socket, bound (it then listens),
//! whose accepts give a [`Socket`] like a connect does. Options ([`SocketOption`]) and the local
//! and remote addresses: `control.rs`. Creating a socket (and what an accept shares with it):
//! `create.rs`; addresses in the provider's form: `address.rs`.
//!
//! The waited forms (`*_blocking`) are for a caller that owns a `PASSIVE_LEVEL` thread: each
//! waits for its request, with a timeout; a request the cancel does not complete closes the
//! socket (which completes it) and is waited for to the end, so the address and buffer it
//! borrows outlive it. After that every operation fails with `STATUS_CONNECTION_ABORTED`.
//!
//! IRQL: the waited forms at `PASSIVE_LEVEL`; the asynchronous forms made and polled at <=
//! `DISPATCH_LEVEL`; closing and dropping at <= `DISPATCH_LEVEL`.

use core::net::SocketAddr;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

mod accept_events;
mod address;
mod control;
mod create;
mod datagram;
mod datagram_events;
mod events;
pub mod indication;
mod listener;
mod op;

pub use accept_events::BACKLOG;
use address::Sockaddr;
use control::Owned;
pub use control::{AddressOp, SocketOption};
pub use create::{CreateOp, SocketConnectOp};
pub use datagram::{CreateDatagramOp, Datagram, ReceiveFromOp, SendToOp};
pub use datagram_events::{SLOT as DATAGRAM_SLOT, SLOTS as DATAGRAM_SLOTS};
use events::EventsRef;
pub use events::{Events, RING, ReadOp};
pub use listener::{AcceptOp, CreateListenerOp, Listener};
pub use op::{SocketOp, TransferOp};

use crate::buffer::Buffer;
use crate::client::Client;
use crate::gate::{Close, Closer, Gate, Leave};
use crate::irp::{self, Completion, Kept, KeptWaited, Prepared};
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    IPPROTO_TCP, IPPROTO_UDP, IRP, NTSTATUS, SOCK_DGRAM, SOCK_STREAM, WSK_BUF,
    WSK_FLAG_CONNECTION_SOCKET, WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_LISTEN_SOCKET,
    WSK_PROVIDER_BASIC_DISPATCH, WSK_PROVIDER_CONNECTION_DISPATCH, WSK_SOCKET,
};
use crate::time::Timeout;

/// An open WSK socket of client `C`: a TCP connection (connected by [`Socket::connect`], or
/// accepted by a [`Listener`]).
///
/// # Invariants
/// `socket` is a socket the provider created for this binding, open until `closed` is set or
/// `reference` is taken by the close; a connection socket, unless this value is a
/// [`Listener`]'s or a [`Datagram`]'s own.
#[allow(clippy::struct_field_names)] // `socket`: the provider's WSK_SOCKET
pub struct Socket<C: Client> {
    socket: NonNull<WSK_SOCKET>,
    // The binding reference the socket holds until its close completes (moved into the close's
    // request by `close_now`).
    reference: Option<BindingRef<C>>,
    // The close's request, prepared with the socket (`Prepared::into_raw`; NULL once taken): taken
    // by whichever close comes first.
    close: AtomicPtr<()>,
    // The last resort of a stuck operation, or an abort, closed the socket already.
    closed: AtomicBool,
    // The provider's socket functions being called now (not their pending IRPs): an abort closes
    // the socket only once none is, since WskCloseSocket must not overlap another call of the
    // socket's functions (the last call to return closes it then).
    calls: Gate,
    // The socket's receive events block (its provider context), when made with one: this owner
    // goes with the socket, the close's request holds another until the close completed.
    events: Option<EventsRef<C>>,
    // Receive events were turned on (`enable_receive_events`).
    events_on: AtomicBool,
    // The requests of its sends and of its receives, made at the first of each and reused (issue
    // 20: a connected socket's steady state allocates nothing); let go before the close.
    sends: Kept<C, op::Transfer>,
    receives: Kept<C, op::Transfer>,
    // The request of its waited operations (`*_blocking`), likewise.
    blocking: KeptWaited<C>,
}

// SAFETY: a WSK socket may be used and closed from any thread; the reference is Send.
unsafe impl<C: Client> Send for Socket<C> {}

// SAFETY: shared, a socket is used through `&self` only: its state is atomic, and the provider's
// socket functions may be called from several threads at once (its close takes the `Socket` by
// value, so no call through it is in progress then).
unsafe impl<C: Client> Sync for Socket<C> {}

impl<C: Client> Socket<C> {
    /// Creates a connection-oriented (TCP) socket of `family` (`AF_INET`, `AF_INET6`) through
    /// `reference`'s binding, waiting up to `timeout`.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status (`WskSocket`), `STATUS_NOT_SUPPORTED` when its dispatch has no
    /// `WskSocket`, or a request that could not be made.
    pub fn connection_blocking(
        reference: &BindingRef<C>,
        family: u16,
        timeout: Timeout,
    ) -> Result<Self, NtError> {
        // The socket's own reference, taken first: once the socket exists, it must be closable.
        // (A new socket needs a new reference: none is made once a detach or the unload began.)
        let own = reference.try_clone().map_err(NtError::from)?;
        reference.ensure_open().map_err(NtError::from)?;
        let socket_fn = reference.socket().ok_or(NtError::NOT_SUPPORTED)?;
        // And its close's request: once the socket exists, closing it must not need memory.
        let close = Prepared::<C, Closed<C>>::new().inspect_err(|status| {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: no request for its close: 0x%08X",
                status.bits()
            );
        })?;
        let requested = irp::call(reference, timeout, |reference, irp| {
            // SAFETY: the binding's WskSocket, with the request's IRP; PASSIVE_LEVEL.
            unsafe {
                request_socket(
                    Some(socket_fn),
                    reference,
                    family,
                    Kind::CONNECTION,
                    (ptr::null_mut(), ptr::null()),
                    irp,
                )
            }
        });
        let (status, information) = requested.inspect_err(|status| {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskSocket not requested: 0x%08X",
                status.bits()
            );
        })?;
        if let Err(status) = status.into_result() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskSocket failed: 0x%08X",
                status.bits()
            );
            return Err(status);
        }
        let Some(socket) = NonNull::new(information as *mut WSK_SOCKET) else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskSocket succeeded without a socket"
            );
            return Err(NtError::UNSUCCESSFUL);
        };
        // INVARIANT: the provider's new socket, open.
        Ok(Self::open(socket, own, close, None))
    }

    /// The socket's value, open.
    fn open(
        socket: NonNull<WSK_SOCKET>,
        reference: BindingRef<C>,
        close: Prepared<C, Closed<C>>,
        events: Option<EventsRef<C>>,
    ) -> Self {
        let calls = Gate::new();
        if let Some(generation) = calls.reserve() {
            let _ = calls.open(generation);
        }
        // INVARIANT: the provider's new socket, open.
        Self {
            socket,
            reference: Some(reference),
            close: AtomicPtr::new(close.into_raw().as_ptr()),
            closed: AtomicBool::new(false),
            calls,
            events,
            events_on: AtomicBool::new(false),
            sends: Kept::new(),
            receives: Kept::new(),
            blocking: KeptWaited::new(),
        }
    }

    /// Counts a call of one of the provider's socket functions as in progress; `false` (nothing
    /// counted) once the socket was aborted. Every `true` is matched by one `leave_call`.
    fn enter_call(&self) -> bool {
        match self.calls.enter() {
            Ok(()) => true,
            Err((_, leave)) => {
                self.left(leave);
                false
            }
        }
    }

    /// The call counted by `enter_call` returned.
    fn leave_call(&self) {
        let leave = self.calls.leave();
        self.left(leave);
    }

    /// Acts on a leave of the calls' gate: the last call to return after an abort closes.
    fn left(&self, leave: Leave) {
        if let Leave::LastOfClosing { owner: true, .. } = leave {
            self.close_aborted();
        }
    }

    /// Closes the socket from `&self`, at once or as soon as no call of its functions is in
    /// progress: a cancelled task's operation, whose IRP a provider may not complete on cancel
    /// (Wine's ignores `IoCancelIrp`; every provider completes a socket's IRPs when it closes).
    /// Every operation fails from now on; dropping the socket then only drops its reference.
    /// Once. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn abort(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        log!(
            C,
            DPFLTR_INFO_LEVEL,
            "socket: closing it: the task is cancelled"
        );
        if self.calls.close(Closer::Owner) == Close::Idle {
            self.close_aborted();
        }
    }

    /// The abort's close: `WskCloseSocket` with the prepared request and a reference made from
    /// the socket's own (which may not be cloned the usual way once a detach or the unload began).
    fn close_aborted(&self) {
        if let (Some(reference), Some(close)) = (self.reference.as_ref(), self.take_close()) {
            let events = self.events.as_ref().map(EventsRef::share);
            close_raw::<C>(self.socket, reference.clone_held(), close, events);
        }
    }

    /// The socket's binding reference, while it is open (for a new request).
    fn open_reference(&self) -> Option<&BindingRef<C>> {
        self.reference
            .as_ref()
            .filter(|_| !self.closed.load(Ordering::Acquire))
    }

    /// The provider's dispatch table of this socket, while it is open.
    ///
    /// # Safety
    /// `D` is the dispatch table of the socket's kind (`WSK_PROVIDER_CONNECTION_DISPATCH` for a
    /// connection socket, `WSK_PROVIDER_LISTEN_DISPATCH` for a listening one).
    unsafe fn dispatch_as<D>(&self) -> Result<&D, NtError> {
        if self.closed.load(Ordering::Acquire) || self.reference.is_none() {
            return Err(NtError::CONNECTION_ABORTED);
        }
        // SAFETY: by the type invariant an open socket the provider made.
        let dispatch = unsafe { (*self.socket.as_ptr()).Dispatch };
        // SAFETY: per the contract the provider's table of this socket's kind, valid while the
        // socket is open.
        unsafe { dispatch.cast::<D>().as_ref() }.ok_or(NtError::NOT_SUPPORTED)
    }

    /// The provider's connection dispatch of this socket, while it is open.
    fn dispatch(&self) -> Result<&WSK_PROVIDER_CONNECTION_DISPATCH, NtError> {
        // SAFETY: a `Socket` of its own is a connection socket (the type invariant); a listening
        // or datagram one lives inside a `Listener` or `Datagram`, which never call this.
        unsafe { self.dispatch_as() }
    }

    /// Runs one operation: a request through the socket's reference, waited for; a request that
    /// a cancel does not complete closes the socket.
    fn operate(
        &self,
        what: &core::ffi::CStr,
        timeout: Timeout,
        call: impl FnOnce(*mut IRP) -> NTSTATUS,
    ) -> Result<usize, NtError> {
        let Some(reference) = self
            .reference
            .as_ref()
            .filter(|_| !self.closed.load(Ordering::Acquire))
        else {
            return Err(NtError::CONNECTION_ABORTED);
        };
        let requested = self.blocking.call_or(
            reference,
            timeout,
            |_, irp| {
                // The call counted as in progress (an abort closes only once none is); refused
                // once the socket was aborted: then the IRP, untaken, is completed with that.
                if !self.enter_call() {
                    return NtStatus::CONNECTION_ABORTED.raw();
                }
                let status = call(irp);
                self.leave_call();
                status
            },
            || {
                // The last resort: close the socket, which completes its pending requests, and
                // wait for the close (the operation's buffers stay borrowed until it ends).
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "socket: closing it to end a stuck request"
                );
                if self.closed.swap(true, Ordering::AcqRel) {
                    return;
                }
                // With no call of the socket's functions in progress, closed here and waited for;
                // else by the last call to return (the wait below goes on until then).
                if self.calls.close(Closer::Owner) == Close::Idle
                    && let Some(request) = self.take_close()
                {
                    close_waited::<C>(self.socket, reference, request);
                }
            },
        );
        let (status, information) =
            requested.map_err(|status| op::not_requested::<C>(what, status))?;
        op::finish::<C>(what, status, information)
    }

    /// `WskBind` to `local` (a client binds the wildcard address of its family, port 0).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status; `STATUS_NOT_SUPPORTED` without `WskBind`.
    pub fn bind_blocking(&self, local: SocketAddr, timeout: Timeout) -> Result<(), NtError> {
        let bind = self.dispatch()?.WskBind.ok_or(NtError::NOT_SUPPORTED)?;
        let mut address = Sockaddr::new(local);
        let socket = self.socket.as_ptr();
        // SAFETY: the open socket's WskBind, with an address that outlives the request (waited
        // for to the end) and the request's IRP.
        self.operate(c"WskBind", timeout, |irp| unsafe {
            bind(socket, address.as_mut_ptr(), 0, irp)
        })
        .map(|_| ())
    }

    /// `WskConnect` to `remote`.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status (`STATUS_CONNECTION_REFUSED`, ...); `STATUS_NOT_SUPPORTED` without
    /// `WskConnect`.
    pub fn connect_blocking(&self, remote: SocketAddr, timeout: Timeout) -> Result<(), NtError> {
        let connect = self.dispatch()?.WskConnect.ok_or(NtError::NOT_SUPPORTED)?;
        let mut address = Sockaddr::new(remote);
        let socket = self.socket.as_ptr();
        // SAFETY: as in `bind`.
        self.operate(c"WskConnect", timeout, |irp| unsafe {
            connect(socket, address.as_mut_ptr(), 0, irp)
        })
        .map(|_| ())
    }

    /// `WskSend` of the first `length` bytes of `buffer` (at most its capacity); returns how many
    /// were sent.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status; `STATUS_NOT_SUPPORTED` without `WskSend`.
    pub fn send_blocking(
        &self,
        buffer: &Buffer,
        length: usize,
        timeout: Timeout,
    ) -> Result<usize, NtError> {
        let send = self.dispatch()?.WskSend.ok_or(NtError::NOT_SUPPORTED)?;
        let mut wsk_buf: WSK_BUF = buffer.wsk_buf(length);
        let socket = self.socket.as_ptr();
        // SAFETY: the open socket's WskSend, with a WSK_BUF within the buffer's MDL; both
        // outlive the request (waited for to the end).
        self.operate(c"WskSend", timeout, |irp| unsafe {
            send(socket, &raw mut wsk_buf, 0, irp)
        })
    }

    /// `WskReceive` into `buffer` (up to its capacity); returns how many bytes arrived (0: the
    /// peer closed its side).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status; `STATUS_NOT_SUPPORTED` without `WskReceive`.
    pub fn receive_blocking(
        &self,
        buffer: &mut Buffer,
        timeout: Timeout,
    ) -> Result<usize, NtError> {
        let receive = self.dispatch()?.WskReceive.ok_or(NtError::NOT_SUPPORTED)?;
        let mut wsk_buf: WSK_BUF = buffer.wsk_buf(buffer.capacity());
        let socket = self.socket.as_ptr();
        // SAFETY: as in `send`; the buffer is borrowed mutably for the whole request.
        self.operate(c"WskReceive", timeout, |irp| unsafe {
            receive(socket, &raw mut wsk_buf, 0, irp)
        })
    }

    /// `WskDisconnect` (graceful). A provider that does not implement it (Wine's answers
    /// `STATUS_NOT_IMPLEMENTED`) is logged; the socket is closed anyway when dropped.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The provider's status.
    pub fn disconnect_blocking(&self, timeout: Timeout) -> Result<(), NtError> {
        let Some(disconnect) = self.dispatch()?.WskDisconnect else {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "socket: no WskDisconnect; closing without it"
            );
            return Err(NtError::NOT_SUPPORTED);
        };
        let socket = self.socket.as_ptr();
        // SAFETY: the open socket's WskDisconnect, without a final buffer, with the request's IRP.
        let result = self.operate(c"WskDisconnect", timeout, |irp| unsafe {
            disconnect(socket, ptr::null_mut(), 0, irp)
        });
        if result == Err(NtError::NOT_IMPLEMENTED) {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "socket: closing without a graceful disconnect"
            );
        }
        result.map(|_| ())
    }

    /// The raw socket, for the provider's functions (valid while `self` lives).
    #[must_use]
    pub fn as_raw(&self) -> *mut WSK_SOCKET {
        self.socket.as_ptr()
    }

    /// Closes the socket (`WskCloseSocket`); its binding reference goes when the close completes.
    ///
    /// IRQL <= `DISPATCH_LEVEL`; never blocks.
    pub fn close(mut self) {
        self.close_now();
    }

    /// The close's prepared request, for the first close that takes it.
    fn take_close(&self) -> Option<Prepared<C, Closed<C>>> {
        let raw = NonNull::new(self.close.swap(ptr::null_mut(), Ordering::AcqRel))?;
        // SAFETY: `close` holds only `Prepared::<C, Closed<C>>::into_raw`, taken back once (swap).
        Some(unsafe { Prepared::from_raw(raw) })
    }

    fn close_now(&mut self) {
        // Its kept requests first: freed now, or by the end of their use in flight, which holds a
        // reference of its own — so none is left once the close's reference goes.
        self.sends.release();
        self.receives.release();
        self.blocking.release();
        // Closed already by a stuck operation's last resort: the reference just goes.
        if let (Some(reference), Some(close)) = (self.reference.take(), self.take_close())
            && !self.closed.load(Ordering::Acquire)
        {
            let events = self.events.as_ref().map(EventsRef::share);
            close_raw::<C>(self.socket, reference, close, events);
        }
    }
}

impl<C: Client> Drop for Socket<C> {
    /// Closes the socket like [`Socket::close`]. IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        self.close_now();
    }
}

/// What `WskSocket` makes: the kind (`WSK_FLAG_*`), the type and the protocol.
#[derive(Clone, Copy)]
pub(super) struct Kind {
    flags: u32,
    socket_type: u16,
    protocol: u32,
}

impl Kind {
    /// A TCP connection.
    pub(super) const CONNECTION: Self = Self {
        flags: WSK_FLAG_CONNECTION_SOCKET,
        socket_type: SOCK_STREAM,
        protocol: IPPROTO_TCP,
    };
    /// A listening TCP socket.
    pub(super) const LISTEN: Self = Self {
        flags: WSK_FLAG_LISTEN_SOCKET,
        socket_type: SOCK_STREAM,
        protocol: IPPROTO_TCP,
    };
    /// A UDP socket.
    pub(super) const DATAGRAM: Self = Self {
        flags: WSK_FLAG_DATAGRAM_SOCKET,
        socket_type: SOCK_DGRAM,
        protocol: IPPROTO_UDP,
    };
}

/// Calls `WskSocket` for a socket of `family` and `kind`, with its context and client dispatch
/// (NULLs: no callbacks).
///
/// # Safety
/// `socket_fn` is the provider's `WskSocket` of `reference`'s binding; the context lives until
/// the socket's close completes and the dispatch is `'static` and of the socket's kind; `irp` is
/// a request's IRP with its completion routine set; IRQL <= `DISPATCH_LEVEL`.
unsafe fn request_socket<C: Client>(
    socket_fn: crate::sys::PFN_WSK_SOCKET,
    reference: &BindingRef<C>,
    family: u16,
    kind: Kind,
    (context, dispatch): (crate::sys::PVOID, *const core::ffi::c_void),
    irp: *mut IRP,
) -> NTSTATUS {
    let Some(socket_fn) = socket_fn else {
        return NtStatus::NOT_SUPPORTED.raw();
    };
    // SAFETY: per the contract: the binding's WskSocket, with its WSK_CLIENT.
    unsafe {
        socket_fn(
            reference.client(),
            family,
            kind.socket_type,
            kind.protocol,
            kind.flags,
            context,
            dispatch,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            irp,
        )
    }
}

/// What ends a close: the socket's events (its owner in the close) and reference go.
pub(crate) struct Closed<C: Client> {
    events: Option<EventsRef<C>>,
}

impl<C: Client> Completion<C> for Closed<C> {
    fn complete(self, reference: BindingRef<C>, status: NtStatus, _information: usize) {
        if status.is_success() {
            log!(C, DPFLTR_INFO_LEVEL, "socket: closed");
        } else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "socket: WskCloseSocket failed: 0x%08X",
                status.bits()
            );
        }
        // The provider calls the socket's events no more: the close's owner of them goes.
        drop(self.events);
        drop(reference);
    }
}

/// The provider's `WskCloseSocket` for an open `socket`; a provider without one is logged (the
/// socket then stays open).
fn close_fn<C: Client>(socket: NonNull<WSK_SOCKET>) -> crate::sys::PFN_WSK_CLOSE_SOCKET {
    // SAFETY: an open socket's dispatch starts with WSK_PROVIDER_BASIC_DISPATCH.
    let dispatch = unsafe { (*socket.as_ptr()).Dispatch }.cast::<WSK_PROVIDER_BASIC_DISPATCH>();
    // SAFETY: the provider's dispatch of this socket, valid while it is open.
    let close = unsafe { dispatch.as_ref() }.and_then(|d| d.WskCloseSocket);
    if close.is_none() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: the provider has no WskCloseSocket"
        );
    }
    close
}

/// `WskCloseSocket` of `socket` with its prepared request, waited for (a stuck operation's last
/// resort; `PASSIVE_LEVEL`).
fn close_waited<C: Client>(
    socket: NonNull<WSK_SOCKET>,
    reference: &BindingRef<C>,
    request: Prepared<C, Closed<C>>,
) {
    let Some(close) = close_fn::<C>(socket) else {
        return;
    };
    let (status, _) = request.call_or(
        reference,
        Timeout::Never,
        |_, irp| {
            // SAFETY: the open socket, closed once (`closed` is set); the IRP is the request's.
            unsafe { close(socket.as_ptr(), irp) }
        },
        || {},
    );
    if status.is_success() {
        log!(C, DPFLTR_INFO_LEVEL, "socket: closed");
    } else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "socket: WskCloseSocket failed: 0x%08X",
            status.bits()
        );
    }
}

/// `WskCloseSocket` of `socket`, with its prepared request, which holds `reference` (and an owner
/// of the socket's `events`) until it completes. Never fails; a provider without `WskCloseSocket`
/// leaves the socket open (logged).
fn close_raw<C: Client>(
    socket: NonNull<WSK_SOCKET>,
    reference: BindingRef<C>,
    request: Prepared<C, Closed<C>>,
    events: Option<EventsRef<C>>,
) {
    let Some(close) = close_fn::<C>(socket) else {
        return;
    };
    request.submit(reference, Closed { events }, |_reference, irp| {
        // SAFETY: the open socket, closed once (the Socket's reference moved here); the IRP is the
        // request's; IRQL <= DISPATCH_LEVEL.
        unsafe { close(socket.as_ptr(), irp) }
    });
}
