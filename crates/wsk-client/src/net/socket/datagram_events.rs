//! Receive-from events (`WskReceiveFromEvent`): a datagram socket made with events
//! ([`Datagram::create_with_events`]) and turned on ([`Datagram::enable_receive_from_events`])
//! has its datagrams handed to a callback instead of a pending `WskReceiveFrom`. The callback
//! runs at IRQL <= `DISPATCH_LEVEL`: it copies each datagram of the provider's list (read
//! defensively, as a connection's indication is: [`super::indication`]) with its sender into one
//! of [`SLOTS`] slots of [`SLOT`] bytes (a longer datagram is cut, as a receive into a buffer of
//! that size cuts it), and returns `STATUS_SUCCESS`: a datagram that finds no free slot, or a
//! malformed entry, is dropped and counted ([`Datagram::dropped`]), as UDP drops what a full
//! receive buffer cannot take. ([`Datagram::receive_from`] takes from the slots.)
//!
//! IRQL: the callback at <= `DISPATCH_LEVEL`; the rest as [`Datagram`]'s.

use core::net::{Ipv4Addr, SocketAddr};
use core::ptr::{self, NonNull};

use super::accept_events::copy_address;
use super::events::Events;
use super::indication::{MAX_INDICATIONS, copy_indicated};
use super::{Datagram, EventsRef};
use crate::client::Client;
use crate::status::NtError;
use crate::sys::{
    NTSTATUS, PVOID, STATUS_SUCCESS, WSK_CLIENT_DATAGRAM_DISPATCH, WSK_DATA_INDICATION,
    WSK_DATAGRAM_INDICATION, WSK_EVENT_RECEIVE_FROM,
};

/// The datagrams a socket holds for its reader.
pub const SLOTS: usize = 8;
/// The bytes a slot holds: a longer datagram is cut to it.
pub const SLOT: usize = 2048;

/// A datagram socket's received datagrams, under its events block's lock.
pub(super) struct DatagramQueue {
    /// `SLOTS * SLOT` bytes of pool (`C::EVENTS_TAG`), freed with the block.
    pub(super) memory: NonNull<u8>,
    /// Each slot's length and sender (meaningful for the `len` slots from `start` only).
    slots: [(usize, SocketAddr); SLOTS],
    start: usize,
    len: usize,
    dropped: u32,
    dead: bool,
}

// SAFETY: the memory is pool, reached only under the lock.
unsafe impl Send for DatagramQueue {}

impl DatagramQueue {
    pub(super) fn new(memory: NonNull<u8>) -> Self {
        Self {
            memory,
            slots: [(0, SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)); SLOTS],
            start: 0,
            len: 0,
            dropped: 0,
            dead: false,
        }
    }

    fn slot_mut(&mut self, index: usize) -> &mut [u8] {
        // SAFETY: `index < SLOTS`: `SLOT` bytes of the queue's `SLOTS * SLOT`, reached under the
        // lock (the `&mut self`).
        unsafe {
            core::slice::from_raw_parts_mut(self.memory.as_ptr().wrapping_add(index * SLOT), SLOT)
        }
    }
}

/// The callbacks of a datagram socket of `C`, `'static`.
pub(super) fn dispatch<C: Client>() -> &'static WSK_CLIENT_DATAGRAM_DISPATCH {
    &Callbacks::<C>::DISPATCH
}

struct Callbacks<C>(core::marker::PhantomData<C>);

impl<C: Client> Callbacks<C> {
    const DISPATCH: WSK_CLIENT_DATAGRAM_DISPATCH = WSK_CLIENT_DATAGRAM_DISPATCH {
        WskReceiveFromEvent: Some(receive_from_event::<C>),
    };
}

/// The datagram socket's context and client dispatch for `WskSocket`.
pub(super) fn datagram_context<C: Client>(
    events: &EventsRef<C>,
) -> (PVOID, *const core::ffi::c_void) {
    (events.context(), ptr::from_ref(dispatch::<C>()).cast())
}

/// `PFN_WSK_RECEIVE_FROM_EVENT` of client `C`.
///
/// # Safety
/// Called by the provider with the datagram socket's context the library gave it (an [`Events`]
/// block of `C` with a datagram queue, alive until the socket's close completes) and its list.
unsafe extern "system" fn receive_from_event<C: Client>(
    context: PVOID,
    _flags: u32,
    list: *mut WSK_DATAGRAM_INDICATION,
) -> NTSTATUS {
    // SAFETY: per the contract, the socket's live Events block of C (or NULL).
    let Some(events) = (unsafe { context.cast::<Events<C>>().as_ref() }) else {
        return STATUS_SUCCESS;
    };
    let Some(datagrams) = events.datagrams.as_ref() else {
        return STATUS_SUCCESS;
    };
    let mut queue = datagrams.lock();
    if list.is_null() {
        queue.dead = true;
        drop(queue);
        events.waker.wake();
        return STATUS_SUCCESS;
    }
    let mut entry = list.cast_const();
    let mut seen = 0;
    while !entry.is_null() && seen < MAX_INDICATIONS {
        seen += 1;
        // SAFETY: per the contract, a readable entry of the provider's list.
        let indication = unsafe { entry.read() };
        entry = indication.Next;
        // SAFETY: the provider's sender address for the call (or NULL).
        let sender = unsafe { copy_address(indication.RemoteAddress) };
        let Some(sender) = sender.filter(|_| queue.len < SLOTS) else {
            queue.dropped = queue.dropped.saturating_add(1);
            continue;
        };
        let index = (queue.start + queue.len) % SLOTS;
        // One datagram: a one-entry list over its buffer.
        let one = WSK_DATA_INDICATION {
            Next: ptr::null_mut(),
            Buffer: indication.Buffer,
        };
        let slot = queue.slot_mut(index);
        // SAFETY: the provider's buffer (the callback's contract) in a list of one, its MDLs
        // mapped as MmGetSystemAddressForMdlSafe does.
        let copied = unsafe {
            copy_indicated(
                &raw const one,
                indication.Buffer.Length,
                0,
                slot,
                &super::events::map,
            )
        };
        match copied {
            Ok(n) => {
                if let Some(entry) = queue.slots.get_mut(index) {
                    *entry = (n, sender);
                }
                queue.len += 1;
            }
            Err(_) => queue.dropped = queue.dropped.saturating_add(1),
        }
    }
    drop(queue);
    events.waker.wake();
    STATUS_SUCCESS
}

/// What the queue gives a waiting receive now.
pub(super) enum Received {
    Datagram(usize, SocketAddr),
    Dead,
    Wait,
}

impl<C: Client> Events<C> {
    /// Takes the next datagram into `out` (cut to it): its length and sender.
    pub(super) fn take_datagram(&self, out: &mut [u8]) -> Received {
        let Some(datagrams) = self.datagrams.as_ref() else {
            return Received::Dead;
        };
        let mut queue = datagrams.lock();
        if queue.len == 0 {
            return if queue.dead {
                Received::Dead
            } else {
                Received::Wait
            };
        }
        let index = queue.start;
        let Some(&(length, sender)) = queue.slots.get(index) else {
            // `start` is below `SLOTS`: not reached.
            return Received::Dead;
        };
        let n = length.min(out.len());
        if let (Some(to), Some(from)) = (out.get_mut(..n), queue.slot_mut(index).get(..n)) {
            to.copy_from_slice(from);
        }
        queue.start = (queue.start + 1) % SLOTS;
        queue.len -= 1;
        drop(queue);
        Received::Datagram(n, sender)
    }

    /// Datagrams dropped so far (no free slot, or malformed).
    fn dropped(&self) -> u32 {
        self.datagrams.as_ref().map_or(0, |d| d.lock().dropped)
    }
}

impl<C: Client> Datagram<C> {
    /// Turns on the receive-from events of a datagram socket made with events, once bound
    /// (`SO_WSK_EVENT_CALLBACK`, without an IRP). IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_NOT_SUPPORTED` for a socket made without events; the provider's answer otherwise
    /// ([`Datagram::receive_from`] then posts `WskReceiveFrom`s).
    pub fn enable_receive_from_events(&self) -> Result<(), NtError> {
        self.socket
            .enable_events(WSK_EVENT_RECEIVE_FROM, c"receive-from")
    }

    /// Datagrams the receive-from events dropped (no free slot, or a malformed indication).
    #[must_use]
    pub fn dropped(&self) -> u32 {
        self.socket.events().map_or(0, Events::dropped)
    }
}
