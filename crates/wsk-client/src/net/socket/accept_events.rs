//! Accept events (`WskAcceptEvent`): a listening socket made with events
//! ([`Listener::create_with_events`]) and turned on ([`Listener::enable_accept_events`]) has its
//! connections handed to a callback instead of a pending `WskAccept`. The callback runs at IRQL
//! <= `DISPATCH_LEVEL`: it makes what the new socket needs (its own binding reference, its
//! close's request, its receive events block, so that it can read through events too), takes it
//! into the listening socket's queue of [`BACKLOG`] and wakes the accepting task; with the
//! queue full, the listener closing, or no memory, it refuses the connection
//! (`STATUS_REQUEST_NOT_ACCEPTED`: the provider closes it). [`Listener::accept`] takes from the
//! queue. A NULL socket (the listening socket no longer works) ends the accepts.
//!
//! The queue is emptied (its sockets closed, from the task) before the listening socket is
//! closed — and refuses connections from then on — so that no socket is closed from the close's
//! completion routine.
//!
//! IRQL: the callback at <= `DISPATCH_LEVEL`; the rest as [`Listener`]'s.

use core::ffi::c_void;
use core::net::SocketAddr;
use core::ptr;

use super::address::AddressSlot;
use super::events::{Events, EventsRef};
use super::{Closed, Listener, Socket};
use crate::client::Client;
use crate::irp::Prepared;
use crate::log::log;
use crate::provider::BindingRef;
use crate::status::NtError;
use crate::sys::{
    NTSTATUS, PVOID, SOCKADDR, SOCKADDR_IN6, STATUS_REQUEST_NOT_ACCEPTED, STATUS_SUCCESS,
    WSK_CLIENT_CONNECTION_DISPATCH, WSK_CLIENT_LISTEN_DISPATCH, WSK_EVENT_ACCEPT, WSK_SOCKET,
};

/// The most accepted connections waiting for the task.
pub const BACKLOG: usize = 8;

/// A listening socket's accepted connections, under its events block's lock.
pub(super) struct AcceptQueue<C: Client> {
    /// The listening socket's binding: each connection's own reference is cloned from it.
    reference: BindingRef<C>,
    queue: [Option<(Socket<C>, SocketAddr)>; BACKLOG],
    start: usize,
    len: usize,
    /// The listener is closing: connections are refused.
    closing: bool,
    /// A NULL socket: the listening socket no longer works.
    dead: bool,
}

impl<C: Client> AcceptQueue<C> {
    pub(super) fn new(reference: BindingRef<C>) -> Self {
        Self {
            reference,
            queue: [const { None }; BACKLOG],
            start: 0,
            len: 0,
            closing: false,
            dead: false,
        }
    }

    fn push(&mut self, connection: (Socket<C>, SocketAddr)) {
        if let Some(slot) = self.queue.get_mut((self.start + self.len) % BACKLOG) {
            *slot = Some(connection);
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<(Socket<C>, SocketAddr)> {
        if self.len == 0 {
            return None;
        }
        let taken = self.queue.get_mut(self.start).and_then(Option::take);
        self.start = (self.start + 1) % BACKLOG;
        self.len -= 1;
        taken
    }
}

/// The callbacks of a listening socket of `C`, `'static`.
pub(super) fn dispatch<C: Client>() -> &'static WSK_CLIENT_LISTEN_DISPATCH {
    &Callbacks::<C>::DISPATCH
}

struct Callbacks<C>(core::marker::PhantomData<C>);

impl<C: Client> Callbacks<C> {
    const DISPATCH: WSK_CLIENT_LISTEN_DISPATCH = WSK_CLIENT_LISTEN_DISPATCH {
        WskAcceptEvent: Some(accept_event::<C>),
        WskInspectEvent: ptr::null_mut(),
        WskAbortEvent: ptr::null_mut(),
    };
}

/// A socket address the provider passed (copied: it is the provider's only during the call).
///
/// # Safety
/// `address` is NULL or a readable `SOCKADDR` of its family's length.
pub(super) unsafe fn copy_address(address: *const SOCKADDR) -> Option<SocketAddr> {
    if address.is_null() {
        return None;
    }
    let mut slot = AddressSlot::new();
    // SAFETY: per the contract, at least a family's worth; at most an IPv6 address is read.
    let family = unsafe { address.cast::<u16>().read_unaligned() };
    let length = match family {
        crate::sys::AF_INET => size_of::<crate::sys::SOCKADDR_IN>(),
        crate::sys::AF_INET6 => size_of::<SOCKADDR_IN6>(),
        _ => return None,
    };
    // SAFETY: `length` readable bytes (the family's), into a slot of 128.
    unsafe { ptr::copy_nonoverlapping(address.cast::<u8>(), slot.as_mut_ptr().cast(), length) };
    slot.decode()
}

/// `PFN_WSK_ACCEPT_EVENT` of client `C`.
///
/// # Safety
/// Called by the provider with the listening socket's context the library gave it (an
/// [`Events`] block of `C` with an accept queue, alive until that socket's close completes), its
/// addresses, the new socket and the out-parameters for its context and dispatch.
unsafe extern "system" fn accept_event<C: Client>(
    context: PVOID,
    _flags: u32,
    _local: *mut SOCKADDR,
    remote: *mut SOCKADDR,
    socket: *mut WSK_SOCKET,
    socket_context: *mut PVOID,
    socket_dispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
) -> NTSTATUS {
    // SAFETY: per the contract, the listening socket's live Events block of C (or NULL).
    let Some(events) = (unsafe { context.cast::<Events<C>>().as_ref() }) else {
        return STATUS_REQUEST_NOT_ACCEPTED;
    };
    let Some(accepts) = events.accepts.as_ref() else {
        return STATUS_REQUEST_NOT_ACCEPTED;
    };
    let Some(socket) = ptr::NonNull::new(socket) else {
        accepts.lock().dead = true;
        events.waker.wake();
        return STATUS_SUCCESS;
    };
    // SAFETY: the provider's address for the call.
    let Some(remote) = (unsafe { copy_address(remote) }) else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "events: an accept without a peer address; refused"
        );
        return STATUS_REQUEST_NOT_ACCEPTED;
    };
    // What the socket needs, made before the queue is looked at (nothing is allocated under a
    // spin lock); dropped unused when the connection is refused.
    let own = accepts.lock().reference.try_clone();
    let (Ok(own), Ok(close), Ok(receive)) =
        (own, Prepared::<C, Closed<C>>::new(), EventsRef::<C>::new())
    else {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "events: a connection refused: no binding or no memory for it"
        );
        return STATUS_REQUEST_NOT_ACCEPTED;
    };
    let mut queue = accepts.lock();
    if queue.closing || queue.len == BACKLOG {
        drop(queue);
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "events: a connection refused: the accept queue is full or closing"
        );
        return STATUS_REQUEST_NOT_ACCEPTED;
    }
    if !socket_context.is_null() && !socket_dispatch.is_null() {
        // SAFETY: the provider's out-parameter for the socket's context, for the call.
        unsafe { socket_context.write(receive.context()) };
        // SAFETY: the provider's out-parameter for the socket's client dispatch ('static).
        unsafe { socket_dispatch.write(Events::<C>::dispatch()) };
    }
    // INVARIANT: the provider's new connection socket, open, now the library's.
    queue.push((Socket::open(socket, own, close, Some(receive)), remote));
    drop(queue);
    events.waker.wake();
    STATUS_SUCCESS
}

impl<C: Client> Listener<C> {
    /// Turns on the accept events of a listening socket made with events, once bound
    /// (`SO_WSK_EVENT_CALLBACK`, without an IRP). IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` for a listener made without events; the provider's answer
    /// otherwise (Wine's stub: `STATUS_NOT_IMPLEMENTED`; [`Listener::accept`] then posts
    /// `WskAccept`s).
    pub fn enable_accept_events(&self) -> Result<(), NtError> {
        self.socket.enable_events(WSK_EVENT_ACCEPT, c"accept")
    }

    /// The accept queue, when accept events are on.
    pub(super) fn accept_events(&self) -> Option<&Events<C>> {
        self.socket
            .events_if_on()
            .filter(|events| events.accepts.is_some())
    }

    /// Empties the accept queue (its sockets closed here) and refuses connections from now on:
    /// before the listening socket closes. IRQL <= `DISPATCH_LEVEL`.
    pub(super) fn drain(&self) {
        let Some(accepts) = self.socket.events().and_then(|e| e.accepts.as_ref()) else {
            return;
        };
        loop {
            let mut queue = accepts.lock();
            queue.closing = true;
            let taken = queue.pop();
            drop(queue);
            match taken {
                Some((socket, _)) => socket.close(),
                None => return,
            }
        }
    }
}

/// What the accept queue gives a waiting accept now.
pub(super) enum Queued<C: Client> {
    Connection(Socket<C>, SocketAddr),
    /// The listening socket no longer works.
    Dead,
    Wait,
}

impl<C: Client> Events<C> {
    /// Takes the next accepted connection, if any.
    pub(super) fn take_accepted(&self) -> Queued<C> {
        let Some(accepts) = self.accepts.as_ref() else {
            return Queued::Dead;
        };
        let mut queue = accepts.lock();
        let taken = queue.pop();
        let dead = queue.dead;
        drop(queue);
        match taken {
            Some((socket, remote)) => Queued::Connection(socket, remote),
            None if dead => Queued::Dead,
            None => Queued::Wait,
        }
    }
}

/// The listening socket's context and client dispatch for `WskSocket`.
pub(super) fn listen_context<C: Client>(events: &EventsRef<C>) -> (PVOID, *const c_void) {
    (events.context(), ptr::from_ref(dispatch::<C>()).cast())
}
