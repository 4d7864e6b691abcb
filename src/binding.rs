//! The binding context (one per attachment to a WSK provider) and the binding slots that count the
//! calls in flight through each binding.
//!
//! # Why slots
//! `ClientDetachProvider` runs at IRQL <= `DISPATCH_LEVEL` and must not block, so calls in flight
//! are tracked with an interlocked count plus a detaching flag (Microsoft's pattern for WSK
//! clients), not with `EX_RUNDOWN_REF`'s blocking wait. The count lives in a static slot rather
//! than in the pool-allocated context: code that looks a binding up (`crate::provider`) then
//! increments the count of static memory, which cannot be freed under it. A slot's state word
//! packs the count, three flags and a generation:
//!
//! | bits  | meaning                                                              |
//! |-------|----------------------------------------------------------------------|
//! | 0-31  | calls in flight                                                      |
//! | 32    | `IN_USE`: reserved by an attach, until cleanup frees it              |
//! | 33    | `OPEN`: attached; new calls may start                                |
//! | 34    | `DETACHING`: detach has begun; no new call may start                 |
//! | 40-63 | generation, bumped when the slot is freed                            |
//!
//! The generation makes a late `open` by an attach whose binding was already detached and
//! cleaned up (NMR may detach as soon as it accepts the binding) fail instead of opening a slot
//! that another attach has reused since.
//!
//! IRQL: everything here is interlocked, non-blocking and non-paged: any IRQL <= `DISPATCH_LEVEL`.

use core::ffi::c_void;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::abi::{HANDLE, NmrClientDetachProviderComplete, PWSK_CLIENT};
use crate::log::log;
use crate::version::WskVersion;

/// How many bindings (WSK providers attached at once) the client can hold. Windows has one WSK
/// provider; the spare slots cover a provider re-registering before the old binding is cleaned up.
pub const MAX_BINDINGS: usize = 4;

const COUNT_MASK: u64 = 0xFFFF_FFFF;
const IN_USE: u64 = 1 << 32;
const OPEN: u64 = 1 << 33;
const DETACHING: u64 = 1 << 34;
const GENERATION_ONE: u64 = 1 << 40;
const GENERATION_MASK: u64 = !(GENERATION_ONE - 1);

/// The client's binding context for one attachment: allocated from non-paged pool by
/// `ClientAttachProvider`, handed to NMR as the `ClientBindingContext`, freed by
/// `ClientCleanupBindingContext`.
///
/// Every field is written before `NmrClientAttachProvider` is called, except the two NMR writes
/// during that call (`wsk_client`, `provider_dispatch`); after the call the attach path no longer
/// touches it.
#[repr(C)]
pub struct BindingContext {
    /// The `NmrBindingHandle` NMR passed to `ClientAttachProvider`.
    pub(crate) nmr_binding_handle: HANDLE,
    /// The `WSK_CLIENT` (`ProviderBindingContext`), written by NMR.
    pub(crate) wsk_client: PWSK_CLIENT,
    /// The `WSK_PROVIDER_DISPATCH`, written by NMR.
    pub(crate) provider_dispatch: *const c_void,
    /// The version named by the client dispatch of the current (finally, the successful) try.
    pub(crate) version: WskVersion,
    /// The slot that counts calls in flight through this binding.
    pub(crate) slot: SlotRef,
}

impl BindingContext {
    /// A context for `nmr_binding_handle`, tracked by `slot`, before any attach try.
    #[must_use]
    pub(crate) const fn new(nmr_binding_handle: HANDLE, slot: SlotRef) -> Self {
        Self {
            nmr_binding_handle,
            wsk_client: ptr::null_mut(),
            provider_dispatch: ptr::null(),
            version: WskVersion::from_raw(0),
            slot,
        }
    }
}

/// One slot: a state word (see the module docs) and the context it tracks.
struct BindingSlot {
    state: AtomicU64,
    context: AtomicPtr<BindingContext>,
}

/// A reserved slot, as seen by the attachment that reserved it.
#[derive(Clone, Copy)]
pub struct SlotRef {
    slots: &'static BindingSlots,
    index: usize,
    generation: u64,
}

/// What detach found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachState {
    /// No call in flight: detached at once.
    Idle,
    /// This many calls in flight: the last one to finish completes the detach.
    InFlight(u32),
}

/// Why no call could start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// No binding is attached.
    NotAttached,
    /// The only bindings are detaching (or still attaching).
    Detaching,
}

/// The client's bindings. One static instance, [`BINDINGS`], is the `ClientContext` the driver
/// registers with NMR.
pub struct BindingSlots {
    slots: [BindingSlot; MAX_BINDINGS],
}

/// The driver's bindings.
pub static BINDINGS: BindingSlots = BindingSlots::new();

impl BindingSlots {
    /// All slots free.
    #[must_use]
    pub const fn new() -> Self {
        // A `const` item is the way to repeat a non-`Copy` value in an array initialiser; each
        // slot is a fresh copy of it, never shared.
        #[allow(clippy::declare_interior_mutable_const)]
        const FREE: BindingSlot = BindingSlot {
            state: AtomicU64::new(0),
            context: AtomicPtr::new(ptr::null_mut()),
        };
        Self {
            slots: [FREE; MAX_BINDINGS],
        }
    }

    /// Reserves a free slot for an attach. Any IRQL.
    pub fn reserve(&'static self) -> Option<SlotRef> {
        self.slots.iter().enumerate().find_map(|(index, slot)| {
            let state = slot.state.load(Ordering::Acquire);
            let free = state & !GENERATION_MASK == 0;
            (free
                && slot
                    .state
                    .compare_exchange(state, state | IN_USE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok())
            .then_some(SlotRef {
                slots: self,
                index,
                generation: state & GENERATION_MASK,
            })
        })
    }

    /// How many slots are reserved (attaching, attached or detaching). Any IRQL.
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.state.load(Ordering::Acquire) & IN_USE != 0)
            .count()
    }

    /// Starts a call through the first open binding. Any IRQL.
    ///
    /// # Errors
    /// [`AcquireError`] when no binding accepts new calls.
    pub fn acquire(&self) -> Result<InFlight<'_>, AcquireError> {
        let mut error = AcquireError::NotAttached;
        for slot in &self.slots {
            let started = slot
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                    let accepting = state & (IN_USE | OPEN | DETACHING) == IN_USE | OPEN;
                    (accepting && state & COUNT_MASK < COUNT_MASK).then_some(state + 1)
                });
            match started {
                Ok(_) => {
                    if let Some(context) = NonNull::new(slot.context.load(Ordering::Acquire)) {
                        // INVARIANT: the count taken above keeps the binding from completing its
                        // detach, so cleanup cannot free `context` before `InFlight` drops.
                        return Ok(InFlight { slot, context });
                    }
                    // Not reachable: a slot is OPEN only after its context was published. Undo.
                    slot.state.fetch_sub(1, Ordering::AcqRel);
                }
                Err(state) if state & IN_USE != 0 => error = AcquireError::Detaching,
                Err(_) => {}
            }
        }
        Err(error)
    }
}

impl Default for BindingSlots {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotRef {
    fn slot(self) -> Option<&'static BindingSlot> {
        self.slots.slots.get(self.index)
    }

    /// Records the context this slot tracks; done before `NmrClientAttachProvider`. Any IRQL.
    pub(crate) fn publish(self, context: *mut BindingContext) {
        if let Some(slot) = self.slot() {
            slot.context.store(context, Ordering::Release);
        }
    }

    /// Opens the binding to calls once NMR accepted it. Fails (returns `false`) when a detach
    /// has begun, or the binding was already cleaned up and the slot freed. Any IRQL.
    pub(crate) fn open(self) -> bool {
        self.slot().is_some_and(|slot| {
            slot.state
                .compare_exchange(
                    self.generation | IN_USE,
                    self.generation | IN_USE | OPEN,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        })
    }

    /// Stops new calls. Any IRQL; never blocks.
    pub(crate) fn begin_detach(self) -> DetachState {
        let previous = self
            .slot()
            .map_or(0, |slot| slot.state.fetch_or(DETACHING, Ordering::AcqRel));
        #[allow(clippy::cast_possible_truncation)] // masked to 32 bits
        match (previous & COUNT_MASK) as u32 {
            0 => DetachState::Idle,
            count => DetachState::InFlight(count),
        }
    }

    /// Frees the slot for reuse: cleanup, or an attach that gave up. Any IRQL.
    pub(crate) fn free(self) {
        if let Some(slot) = self.slot() {
            slot.context.store(ptr::null_mut(), Ordering::Release);
            slot.state.store(
                self.generation.wrapping_add(GENERATION_ONE),
                Ordering::Release,
            );
        }
    }
}

/// A call in flight through a binding; dropping it ends the call, and the last call to end after
/// a detach began completes that detach.
pub struct InFlight<'a> {
    slot: &'a BindingSlot,
    // INVARIANT: live for as long as this value holds its count (see `acquire`).
    context: NonNull<BindingContext>,
}

impl InFlight<'_> {
    /// The binding context. Valid until this value is dropped.
    pub(crate) fn context(&self) -> &BindingContext {
        // SAFETY: by the type invariant the context is live; after attach, only reads happen.
        unsafe { self.context.as_ref() }
    }
}

impl Drop for InFlight<'_> {
    /// IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        // Read before giving the count back: afterwards the context may be freed at any time.
        let handle = self.context().nmr_binding_handle;
        let previous = self.slot.state.fetch_sub(1, Ordering::AcqRel);
        if previous & DETACHING != 0 && previous & COUNT_MASK == 1 {
            log!(
                DPFLTR_INFO_LEVEL,
                "detach completed: last call in flight returned"
            );
            // SAFETY: `handle` is the binding whose detach returned STATUS_PENDING (calls were in
            // flight when it began); this is the one transition of its count to zero after that,
            // so NmrClientDetachProviderComplete is called exactly once; IRQL <= DISPATCH_LEVEL.
            unsafe { NmrClientDetachProviderComplete(handle) };
        }
    }
}
