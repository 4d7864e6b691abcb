//! Receive events (`WskReceiveEvent`, `WskDisconnectEvent`): the fast receive path of a
//! connection — the provider hands its data to a callback instead of waiting for a `WskReceive`
//! IRP (usbip-win2 measured a 12% lower median latency). A socket made with events
//! ([`crate::socket::Listener::accept_with_events`]) has an [`Events`] block as its socket
//! context, alive until its close completes (after which the provider calls nothing); once
//! [`Socket::enable_receive_events`] turned the callbacks on (`SO_WSK_EVENT_CALLBACK`), the
//! provider's data lands in the block's ring and [`Socket::read`] takes it from there.
//!
//! The callbacks run at IRQL <= `DISPATCH_LEVEL` (`@WskReceiveEvent` in `tests/irql-rules.txt`):
//! they copy what fits into the ring under its spin lock, wake the reading task and return — no
//! WSK call, no wait, nothing of the embedder's. Back-pressure is the one WSK documents: a full
//! ring takes part of the data (`*BytesAccepted`, `STATUS_SUCCESS`) or none
//! (`STATUS_DATA_NOT_ACCEPTED`), the transport keeps the rest, and the provider indicates nothing
//! more until a `WskReceive` — which [`Socket::read`] posts, with the caller's buffer, once the
//! ring is empty. While that receive is pending, indications are refused, so the bytes reach the
//! reader in order. A list that is not what it claims ([`super::indication`]) is refused the
//! same way (the `WskReceive` then gets the data through the provider's own copy). A NULL list
//! (the socket no longer works) and a disconnect end the stream once the ring is drained.
//!
//! A provider without events (Wine's `WskControlSocket` is a stub) answers the enabling with
//! `STATUS_NOT_IMPLEMENTED`; [`Socket::read`] is then a `WskReceive`.
//!
//! IRQL: the callbacks at <= `DISPATCH_LEVEL`; [`Socket::enable_receive_events`] and
//! [`Socket::read`] at <= `DISPATCH_LEVEL` (a task polls at `PASSIVE_LEVEL`).

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::task::{Context, Poll};

use super::Socket;
use super::indication::{copy_indicated, system_address};
use super::op::{TransferOp, abort_if_cancelled};
use crate::buffer::Buffer;
use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::spin_lock::SpinLock;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    NPI_WSK_INTERFACE_ID, NTSTATUS, PVOID, SO_WSK_EVENT_CALLBACK, SOL_SOCKET,
    STATUS_DATA_NOT_ACCEPTED, STATUS_SUCCESS, WSK_CLIENT_CONNECTION_DISPATCH, WSK_DATA_INDICATION,
    WSK_EVENT_CALLBACK_CONTROL, WSK_EVENT_DISCONNECT, WSK_EVENT_RECEIVE, WSK_FLAG_ABORTIVE,
    WskSetOption,
};
use crate::task::atomic_waker::{AtomicWaker, Slot};

/// The ring's size: what the callbacks take before the provider keeps the rest.
pub const RING: usize = 16 * 1024;

/// The stream's state, under the block's lock.
struct Stream {
    /// The ring: `RING` bytes of pool (`C::EVENTS_TAG`), `len` of them from `start` (wrapping);
    /// none for a listening socket's block.
    ring: Option<NonNull<u8>>,
    start: usize,
    len: usize,
    /// The provider indicates nothing until a `WskReceive` (it kept data back).
    paused: bool,
    /// A `WskReceive` of the reader is pending: indications are refused meanwhile.
    receiving: bool,
    /// The peer disconnected: `Some(true)` abortively.
    disconnected: Option<bool>,
    /// A NULL indication: the socket no longer works.
    dead: bool,
}

// SAFETY: the ring is pool memory, reached only under the lock.
unsafe impl Send for Stream {}

/// A connection socket's event context: the provider's `SocketContext`.
pub struct Events<C: Client> {
    stream: SpinLock<Stream>,
    /// A listening socket's accepted connections (`super::accept_events`).
    pub(super) accepts: Option<SpinLock<super::accept_events::AcceptQueue<C>>>,
    /// A datagram socket's received datagrams (`super::datagram_events`).
    pub(super) datagrams: Option<SpinLock<super::datagram_events::DatagramQueue>>,
    pub(super) waker: AtomicWaker<AtomicU64, Slot>,
    /// Its owners ([`EventsRef`]): the socket, and its close's request until the close completed
    /// (after which the provider calls nothing); freed by the last.
    owners: AtomicU32,
    _client: PhantomData<C>,
}

/// What an events block is for.
enum Block<C: Client> {
    /// A connection: its ring.
    Stream,
    /// A listening socket: its accept queue, cloning this reference for each connection.
    Listener(BindingRef<C>),
    /// A datagram socket: its datagram slots.
    Datagrams,
}

/// An owner of an [`Events`] block in pool.
///
/// # Invariants
/// `block` is a live block of `C` (allocated by [`EventsRef::new`]) of which this value is one
/// of the `owners`.
pub(super) struct EventsRef<C: Client> {
    block: NonNull<Events<C>>,
}

// SAFETY: the block is Sync; its last owner frees it, from any thread.
unsafe impl<C: Client> Send for EventsRef<C> {}
// SAFETY: shared, an owner hands out `&Events<C>` only (Sync).
unsafe impl<C: Client> Sync for EventsRef<C> {}

impl<C: Client> EventsRef<C> {
    /// A new block for a connection (its ring), its one owner. IRQL <= `DISPATCH_LEVEL`.
    pub(super) fn new() -> Result<Self, NtError> {
        Self::with(Block::Stream)
    }

    /// A new block for a datagram socket (its datagram slots), its one owner. IRQL <=
    /// `DISPATCH_LEVEL`.
    pub(super) fn for_datagrams() -> Result<Self, NtError> {
        Self::with(Block::Datagrams)
    }

    /// A new block for a listening socket (its accept queue, cloning `reference` for each
    /// connection), its one owner. IRQL <= `DISPATCH_LEVEL`.
    pub(super) fn for_listener(reference: BindingRef<C>) -> Result<Self, NtError> {
        Self::with(Block::Listener(reference))
    }

    fn with(kind: Block<C>) -> Result<Self, NtError> {
        // INVARIANT: a new block with one owner, this value.
        Events::<C>::new(kind).map(|block| Self {
            block: block.into_raw(),
        })
    }

    /// Another owner (the close's request).
    pub(super) fn share(&self) -> Self {
        self.get().owners.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: counted just above.
        Self { block: self.block }
    }

    pub(super) fn get(&self) -> &Events<C> {
        // SAFETY: live while this owner is (the invariant).
        unsafe { self.block.as_ref() }
    }

    /// The provider's socket context.
    pub(super) fn context(&self) -> PVOID {
        self.block.as_ptr().cast()
    }
}

impl<C: Client> Drop for EventsRef<C> {
    fn drop(&mut self) {
        if self.get().owners.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: the last owner: the block came from `PoolBox::into_raw` of a box of C with
            // C::EVENTS_TAG (`new`), and nobody else holds it.
            drop(unsafe { PoolBox::from_raw::<C>(self.block, C::EVENTS_TAG) });
        }
    }
}

// SAFETY: the stream is reached under its lock; the waker slot is atomic.
unsafe impl<C: Client> Sync for Events<C> {}
// SAFETY: as above; nothing is tied to a thread.
unsafe impl<C: Client> Send for Events<C> {}

impl<C: Client> Events<C> {
    /// The callbacks the provider calls with a block of `C` as the socket context.
    const DISPATCH: WSK_CLIENT_CONNECTION_DISPATCH = WSK_CLIENT_CONNECTION_DISPATCH {
        WskReceiveEvent: Some(receive_event::<C>),
        WskDisconnectEvent: Some(disconnect_event::<C>),
        WskSendBacklogEvent: None,
    };

    /// The callbacks, `'static` (the provider keeps the pointer for the socket's life).
    pub(super) fn dispatch() -> &'static WSK_CLIENT_CONNECTION_DISPATCH {
        &Self::DISPATCH
    }

    /// A block in pool (tag `C::EVENTS_TAG`), with its ring (a connection's), its accept queue
    /// (a listening socket's) or its datagram slots (a datagram socket's). IRQL <=
    /// `DISPATCH_LEVEL`.
    fn new(kind: Block<C>) -> Result<PoolBox<Self>, NtError> {
        let pool = &C::state().pool;
        let bytes = |size| {
            pool.allocate_bytes(size, C::EVENTS_TAG)
                .ok_or(NtError::INSUFFICIENT_RESOURCES)
        };
        let (ring, listener, datagrams) = match kind {
            Block::Stream => (Some(bytes(RING)?), None, None),
            Block::Listener(reference) => (None, Some(reference), None),
            Block::Datagrams => (
                None,
                None,
                Some(bytes(
                    super::datagram_events::SLOTS * super::datagram_events::SLOT,
                )?),
            ),
        };
        let events = Self {
            accepts: listener
                .map(|reference| SpinLock::new(super::accept_events::AcceptQueue::new(reference))),
            datagrams: datagrams
                .map(|memory| SpinLock::new(super::datagram_events::DatagramQueue::new(memory))),
            stream: SpinLock::new(Stream {
                ring,
                start: 0,
                len: 0,
                paused: false,
                receiving: false,
                disconnected: None,
                dead: false,
            }),
            waker: AtomicWaker::with(AtomicU64::new(0), Slot::new()),
            owners: AtomicU32::new(1),
            _client: PhantomData,
        };
        PoolBox::try_new::<C>(events, C::EVENTS_TAG).inspect_err(|_| {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "events: no pool for a socket's events"
            );
        })
    }

    /// A receive indication (`WskReceiveEvent`): see the module's documentation.
    ///
    /// # Safety
    /// `list` and `accepted` are what the provider passed.
    unsafe fn indicated(
        &self,
        list: *const WSK_DATA_INDICATION,
        indicated: usize,
        accepted: *mut usize,
    ) -> NTSTATUS {
        let mut stream = self.stream.lock();
        if list.is_null() {
            stream.dead = true;
            drop(stream);
            self.waker.wake();
            return STATUS_SUCCESS;
        }
        let Some(ring) = stream.ring else {
            // A listening socket's block has no stream.
            return STATUS_DATA_NOT_ACCEPTED;
        };
        if stream.receiving || stream.len == RING {
            stream.paused = true;
            return STATUS_DATA_NOT_ACCEPTED;
        }
        // The free part of the ring from its end: up to the wrap, then from the start.
        let end = (stream.start + stream.len) % RING;
        let first = if end >= stream.start {
            RING - end
        } else {
            stream.start - end
        };
        let second = RING - stream.len - first;
        let ring = ring.as_ptr();
        // SAFETY: `end + first <= RING` bytes of the ring, free, reached under the lock.
        let to_end = unsafe { core::slice::from_raw_parts_mut(ring.wrapping_add(end), first) };
        // SAFETY: the provider's list (the callback's contract); its MDLs mapped as
        // MmGetSystemAddressForMdlSafe does.
        let copied = unsafe { copy_indicated(list, indicated, 0, to_end, &map) };
        let copied = match copied {
            Ok(n) if n == first && n < indicated && second > 0 => {
                // The rest wraps to the ring's start: the list's bytes from `n` on.
                // SAFETY: `second` free bytes at the ring's start, under the lock.
                let from_start = unsafe { core::slice::from_raw_parts_mut(ring, second) };
                // SAFETY: as above.
                unsafe { copy_indicated(list, indicated, n, from_start, &map) }.map(|more| n + more)
            }
            other => other,
        };
        let status = match copied {
            Ok(n) => {
                stream.len += n;
                if n < indicated {
                    stream.paused = true;
                    if !accepted.is_null() {
                        // SAFETY: the provider's out-parameter.
                        unsafe { accepted.write(n) };
                    }
                }
                STATUS_SUCCESS
            }
            Err(malformed) => {
                stream.paused = true;
                drop(stream);
                log!(
                    C,
                    DPFLTR_ERROR_LEVEL,
                    "events: a receive indication refused (malformed: %d); the data goes to WskReceive",
                    malformed as i32
                );
                self.waker.wake();
                return STATUS_DATA_NOT_ACCEPTED;
            }
        };
        drop(stream);
        self.waker.wake();
        status
    }

    /// `WskDisconnectEvent`.
    fn disconnected(&self, flags: u32) {
        let mut stream = self.stream.lock();
        stream.disconnected = Some(flags & WSK_FLAG_ABORTIVE != 0);
        drop(stream);
        self.waker.wake();
    }
}

impl<C: Client> Drop for Events<C> {
    fn drop(&mut self) {
        if let Some(ring) = self.stream.lock().ring {
            // SAFETY: the ring was allocated with C::EVENTS_TAG by `new`, freed once (here).
            unsafe { C::state().pool.free_bytes(ring, C::EVENTS_TAG) };
        }
        if let Some(datagrams) = self.datagrams.as_ref() {
            let memory = datagrams.lock().memory;
            // SAFETY: the slots were allocated with C::EVENTS_TAG by `new`, freed once (here).
            unsafe { C::state().pool.free_bytes(memory, C::EVENTS_TAG) };
        }
    }
}

/// A provider's MDL mapped as `MmGetSystemAddressForMdlSafe` does.
pub(super) fn map(mdl: *mut crate::sys::MDL) -> *const u8 {
    // SAFETY: an MDL of a provider's receive indication (the callback's contract): valid, its
    // pages locked.
    unsafe { system_address(mdl) }
}

/// `PFN_WSK_RECEIVE_EVENT` of client `C`.
///
/// # Safety
/// Called by the provider with the socket context the library gave it (an [`Events`] block of
/// `C`, alive until the socket's close completes) and its own list and out-parameter.
unsafe extern "system" fn receive_event<C: Client>(
    context: PVOID,
    _flags: u32,
    list: *mut WSK_DATA_INDICATION,
    indicated: usize,
    accepted: *mut usize,
) -> NTSTATUS {
    // SAFETY: per the contract, the socket's live Events block of C (or NULL: refused).
    let Some(events) = (unsafe { context.cast::<Events<C>>().as_ref() }) else {
        return STATUS_DATA_NOT_ACCEPTED;
    };
    // SAFETY: the provider's list and out-parameter.
    unsafe { events.indicated(list, indicated, accepted) }
}

/// `PFN_WSK_DISCONNECT_EVENT` of client `C`.
///
/// # Safety
/// As [`receive_event`].
unsafe extern "system" fn disconnect_event<C: Client>(context: PVOID, flags: u32) -> NTSTATUS {
    // SAFETY: per the contract, the socket's live Events block of C (or NULL).
    if let Some(events) = unsafe { context.cast::<Events<C>>().as_ref() } {
        events.disconnected(flags);
    }
    STATUS_SUCCESS
}

impl<C: Client> Socket<C> {
    /// The socket's events block, if it was made with one.
    pub(super) fn events(&self) -> Option<&Events<C>> {
        self.events.as_ref().map(EventsRef::get)
    }

    /// Turns on the receive and disconnect events of a socket made with events
    /// (`SO_WSK_EVENT_CALLBACK`, without an IRP, as enabling requires). IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` for a socket made without events; the provider's answer otherwise
    /// (Wine's stub: `STATUS_NOT_IMPLEMENTED`; [`Socket::read`] then posts `WskReceive`s).
    pub fn enable_receive_events(&self) -> Result<(), NtError> {
        self.enable_events(WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT, c"receive")
    }

    /// `SO_WSK_EVENT_CALLBACK` enabling `mask` (`what`: for the log) on a socket made with an
    /// events block.
    pub(super) fn enable_events(&self, mask: u32, what: &core::ffi::CStr) -> Result<(), NtError> {
        if self.events().is_none() {
            return Err(NtError::NOT_SUPPORTED);
        }
        let control = self
            .basic()?
            .WskControlSocket
            .ok_or(NtError::NOT_SUPPORTED)?;
        let mut input = WSK_EVENT_CALLBACK_CONTROL {
            NpiId: &NPI_WSK_INTERFACE_ID,
            EventMask: mask,
        };
        if !self.enter_call() {
            return Err(NtError::CONNECTION_ABORTED);
        }
        // SAFETY: the open socket's WskControlSocket, enabling events synchronously (no IRP, as
        // SO_WSK_EVENT_CALLBACK asks), with an input that outlives the call.
        let status = NtStatus::from_raw(unsafe {
            control(
                self.as_raw(),
                WskSetOption,
                SO_WSK_EVENT_CALLBACK,
                SOL_SOCKET,
                size_of::<WSK_EVENT_CALLBACK_CONTROL>(),
                ptr::from_mut(&mut input).cast(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        });
        self.leave_call();
        match status.into_result() {
            Ok(_) => {
                self.events_on.store(true, Ordering::Release);
                log!(C, DPFLTR_INFO_LEVEL, "events: %s events on", what);
                Ok(())
            }
            Err(error) => {
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "events: no %s events (0x%08X): with IRPs",
                    what,
                    error.bits()
                );
                Err(error)
            }
        }
    }

    /// The socket's events block, once its events are on.
    pub(super) fn events_if_on(&self) -> Option<&Events<C>> {
        self.events()
            .filter(|_| self.events_on.load(Ordering::Acquire))
    }

    /// The next bytes of the connection into `buffer` (up to its capacity): from the events'
    /// ring when receive events are on, else (and whenever the provider kept data back) a
    /// `WskReceive`. 0: the peer closed its side.
    pub fn read(&self, buffer: Buffer) -> ReadOp<'_, C> {
        let state = match self.events_if_on() {
            Some(events) => ReadState::Ring { events, buffer },
            None => ReadState::Irp(self.receive(buffer)),
        };
        ReadOp {
            state,
            socket: self,
        }
    }
}

/// A read in flight: see [`Socket::read`].
#[must_use = "a future does nothing unless awaited"]
pub struct ReadOp<'s, C: Client> {
    state: ReadState<'s, C>,
    socket: &'s Socket<C>,
}

enum ReadState<'s, C: Client> {
    /// Waiting for the ring.
    Ring {
        events: &'s Events<C>,
        buffer: Buffer,
    },
    /// A `WskReceive` (receive events off).
    Irp(TransferOp<'s, C>),
    /// A `WskReceive` the ring asked for (the provider kept data back): indications are taken
    /// again when it ends.
    Resume {
        op: TransferOp<'s, C>,
        events: &'s Events<C>,
    },
    /// Polled to its end.
    Done,
}

/// What the ring holds for a reader now.
enum Ready {
    Bytes(usize),
    Receive,
    End(Result<usize, NtError>),
    Wait,
}

impl<C: Client> Events<C> {
    /// Takes what the ring holds into `out`, or says what the reader does next.
    fn take(&self, out: &mut [u8]) -> Ready {
        let mut stream = self.stream.lock();
        if stream.len > 0
            && let Some(ring) = stream.ring
        {
            let n = stream.len.min(out.len());
            let ring = ring.as_ptr();
            for (i, byte) in out.iter_mut().take(n).enumerate() {
                // SAFETY: `start + i` modulo RING is within the ring's `len` filled bytes.
                *byte = unsafe { ring.wrapping_add((stream.start + i) % RING).read() };
            }
            stream.start = (stream.start + n) % RING;
            stream.len -= n;
            return Ready::Bytes(n);
        }
        if stream.paused {
            stream.paused = false;
            stream.receiving = true;
            return Ready::Receive;
        }
        if stream.dead {
            return Ready::End(Err(NtError::CONNECTION_ABORTED));
        }
        match stream.disconnected {
            Some(true) => Ready::End(Err(NtError::CONNECTION_RESET)),
            Some(false) => Ready::End(Ok(0)),
            None => Ready::Wait,
        }
    }

    /// The reader's `WskReceive` ended: indications are taken again.
    fn received(&self) {
        self.stream.lock().receiving = false;
    }
}

impl<C: Client> Future for ReadOp<'_, C> {
    /// The bytes read (0: the peer closed its side), and the buffer back.
    type Output = (Result<usize, NtError>, Buffer);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match core::mem::replace(&mut this.state, ReadState::Done) {
                ReadState::Done => return Poll::Pending,
                ReadState::Irp(mut op) => {
                    let polled = Pin::new(&mut op).poll(cx);
                    if polled.is_pending() {
                        this.state = ReadState::Irp(op);
                    }
                    return polled;
                }
                ReadState::Resume { mut op, events } => {
                    let polled = Pin::new(&mut op).poll(cx);
                    if polled.is_pending() {
                        this.state = ReadState::Resume { op, events };
                    } else {
                        events.received();
                    }
                    return polled;
                }
                ReadState::Ring { events, mut buffer } => {
                    // Registered first: a callback after the check below wakes this poll.
                    events.waker.register(cx.waker());
                    match events.take(buffer.as_mut_slice()) {
                        Ready::Bytes(n) => return Poll::Ready((Ok(n), buffer)),
                        Ready::End(result) => return Poll::Ready((result, buffer)),
                        Ready::Receive => {
                            this.state = ReadState::Resume {
                                op: this.socket.receive(buffer),
                                events,
                            };
                        }
                        Ready::Wait => {
                            if crate::task::is_cancelled(cx) {
                                // Closed like a pending operation's socket: the stop ends it.
                                abort_if_cancelled(this.socket, cx);
                                return Poll::Ready((Err(NtError::CANCELLED), buffer));
                            }
                            this.state = ReadState::Ring { events, buffer };
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}
