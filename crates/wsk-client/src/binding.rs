//! The binding context (one per attachment to a WSK provider) and the binding slots that count the
//! calls in flight through each binding: the NMR policy on top of [`crate::gate::Gate`].
//!
//! # Why slots
//! `ClientDetachProvider` runs at IRQL <= `DISPATCH_LEVEL` and must not block, so calls in flight
//! are counted by a [`Gate`] (an interlocked count plus a closing flag, Microsoft's pattern for WSK
//! clients), not by `EX_RUNDOWN_REF`'s blocking wait. The gate lives in a slot of the client's
//! static [`crate::ClientState`] rather than in the pool-allocated context: code that looks a
//! binding up ([`crate::provider`]) then enters static memory, which cannot be freed under it.
//!
//! The policy: the detach callback closes the gate (as its owner); the call that leaves a closing
//! gate last calls `NmrClientDetachProviderComplete`; cleanup frees the slot. The unload sweeps
//! every slot (closes it as the sweep): no reference or attach from then on, and the last call to
//! leave a swept slot tells the unload (`Runtime::slot_drained`). A reference is
//! thus one interlocked entry and one interlocked leave, whatever waits for it.
//!
//! IRQL: everything here is interlocked, non-blocking and non-paged: any IRQL <= `DISPATCH_LEVEL`.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::client::{Backend, Client};
use crate::gate::{Close, Closer, Gate, Generation, Leave, Refused};
use crate::log::log;
use crate::sys::{HANDLE, NmrClientDetachProviderComplete, PWSK_CLIENT};
use crate::version::WskVersion;

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
    /// The detach notice's work item, allocated with the context (`crate::detach`): a
    /// `work::Reserved<C, detach::Notify<C>>` in raw form; NULL once taken by the detach (or
    /// never made, for a backend without NMR detaches). Taken by the detach callback or, if still
    /// here, freed by cleanup; never touched by anyone else.
    pub(crate) notice: AtomicPtr<()>,
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
            notice: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

/// One binding slot: the gate that counts calls in flight, the context it tracks and the NMR
/// binding handle that completes a pending detach. Declared only inside a
/// [`crate::ClientState`].
///
/// Every call writes the gate (an entry, a leave) and reads the context: the two are on separate
/// cache lines, so that calls on other processors, which keep taking the gate's line, do not also
/// take the context's away between a call's entry and its read of it.
#[repr(C)]
pub struct BindingSlot {
    context: AtomicPtr<BindingContext>,
    // The NmrBindingHandle, kept here (not only in the context) so that a release never needs
    // the context to complete a detach.
    nmr_binding_handle: AtomicPtr<c_void>,
    gate: CacheLine<Gate>,
}

// The context and the gate on separate cache lines (see `BindingSlot`).
const _: () = assert!(
    core::mem::offset_of!(BindingSlot, gate) / 64
        > core::mem::offset_of!(BindingSlot, nmr_binding_handle) / 64
);

/// A value on a cache line of its own (64 bytes on x64).
#[repr(C, align(64))]
struct CacheLine<T>(T);

impl<T> core::ops::Deref for CacheLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl BindingSlot {
    /// A free slot.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            context: AtomicPtr::new(ptr::null_mut()),
            nmr_binding_handle: AtomicPtr::new(ptr::null_mut()),
            gate: CacheLine(Gate::new()),
        }
    }

    pub(crate) fn in_use(&self) -> bool {
        self.gate.is_reserved()
    }

    /// The unload's sweep: no new call or attach through this slot until [`Self::unsweep`].
    pub(crate) fn sweep(&self) -> Close {
        self.gate.close(Closer::Sweep)
    }

    /// Ends the sweep (the unload is done).
    pub(crate) fn unsweep(&self) {
        self.gate.unsweep();
    }
}

impl Default for BindingSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// A reserved slot, as seen by the attachment that reserved it.
#[derive(Clone, Copy)]
pub struct SlotRef {
    slot: &'static BindingSlot,
    generation: Generation,
}

/// Why no call could start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireError {
    /// No binding is attached.
    NotAttached,
    /// The only bindings are detaching (or still attaching).
    Detaching,
    /// The client's unload has begun.
    Unloading,
}

/// Reserves a free slot of `slots` for an attach of `nmr_binding_handle`.
pub(crate) fn reserve(
    slots: &'static [BindingSlot],
    nmr_binding_handle: HANDLE,
) -> Option<SlotRef> {
    slots.iter().find_map(|slot| {
        let generation = slot.gate.reserve()?;
        slot.nmr_binding_handle
            .store(nmr_binding_handle, Ordering::Release);
        Some(SlotRef { slot, generation })
    })
}

/// Starts a call through the first open binding of `slots`.
///
/// # Errors
/// [`AcquireError`] when no binding accepts new calls.
pub(crate) fn acquire<C: Client>(
    slots: &'static [BindingSlot],
) -> Result<InFlight<C>, AcquireError> {
    let mut error = AcquireError::NotAttached;
    for slot in slots {
        match slot.gate.enter() {
            Ok(()) => {
                #[cfg(test)]
                tests::after_enter();
                if let Some(context) = NonNull::new(slot.context.load(Ordering::Acquire)) {
                    // INVARIANT: the entry taken above keeps the binding from completing its
                    // detach, so cleanup cannot free `context` before `InFlight` drops.
                    return Ok(InFlight {
                        slot,
                        context,
                        _client: PhantomData,
                    });
                }
                // Not reachable: a slot is opened only after its context was published. Leave
                // through the one release path, which completes a detach that began meanwhile.
                release::<C>(slot);
            }
            Err((refused, leave)) => {
                // The refused entry left at once; its leave may still complete a close.
                left::<C>(slot, leave);
                match refused {
                    Refused::Swept => error = AcquireError::Unloading,
                    Refused::Closed | Refused::Full if error != AcquireError::Unloading => {
                        error = AcquireError::Detaching;
                    }
                    Refused::Closed | Refused::Full | Refused::Free => {}
                }
            }
        }
    }
    Err(error)
}

/// Ends one call through `slot` (see [`left`]).
fn release<C: Client>(slot: &BindingSlot) {
    left::<C>(slot, slot.gate.leave());
}

/// Acts on a leave of `slot`: the last call of a detaching binding completes the detach, and the
/// last call of a swept one tells the unload (in that order: the unload may return at once).
fn left<C: Client>(slot: &BindingSlot, leave: Leave) {
    let Leave::LastOfClosing { owner, sweep } = leave else {
        return;
    };
    // A `WskRegister` binding has no NMR detach to complete (its close is the unload's, which
    // waits for the client's references itself); the backend is a constant, so an image of that
    // backend does not link NmrClientDetachProviderComplete at all.
    if owner && C::BACKEND == Backend::Nmr {
        // Read now, safely: the detach is not complete before the call below, so the binding is
        // not cleaned up and its slot not freed (or reused) meanwhile.
        let handle = slot.nmr_binding_handle.load(Ordering::Acquire);
        if !handle.is_null() {
            log!(
                C,
                DPFLTR_INFO_LEVEL,
                "detach completed: last call in flight returned"
            );
            // SAFETY: `handle` is the binding whose detach returned STATUS_PENDING (calls were in
            // flight when it began); the gate lets one leave claim each close, so
            // NmrClientDetachProviderComplete is called exactly once; IRQL <= DISPATCH_LEVEL.
            unsafe { NmrClientDetachProviderComplete(handle) };
        }
    }
    if sweep {
        C::state().runtime.slot_drained();
    }
}

impl SlotRef {
    /// Records the context this slot tracks; done before `NmrClientAttachProvider`.
    pub(crate) fn publish(self, context: *mut BindingContext) {
        self.slot.context.store(context, Ordering::Release);
    }

    /// Opens the binding to calls once NMR accepted it. Fails (returns `false`) when a detach
    /// has begun, or the binding was already cleaned up and the slot freed.
    pub(crate) fn open(self) -> bool {
        self.slot.gate.open(self.generation)
    }

    /// Stops new calls, the detach callback counted inside until [`Detaching::end`] (so that no
    /// other call can complete the detach before the callback has said it pends). Never blocks.
    pub(crate) fn begin_detach(self) -> Detaching {
        let others = self.slot.gate.close_held(Closer::Owner);
        Detaching {
            slot: self.slot,
            others,
        }
    }

    /// Frees the slot for reuse: cleanup, or an attach that gave up.
    pub(crate) fn free(self) {
        self.slot.context.store(ptr::null_mut(), Ordering::Release);
        self.slot
            .nmr_binding_handle
            .store(ptr::null_mut(), Ordering::Release);
        self.slot.gate.free(self.generation);
    }
}

/// A detach under way inside `ClientDetachProvider`, which is counted as a user of its slot.
pub(crate) struct Detaching {
    slot: &'static BindingSlot,
    /// The calls in flight (other than the callback) when it began.
    pub(crate) others: u32,
}

impl Detaching {
    /// The callback's own leave, its last action: `true` when the detach is complete (every call
    /// in flight has returned: the callback returns `STATUS_SUCCESS`); `false` when a call is
    /// still in flight, whose last leave calls `NmrClientDetachProviderComplete` (the callback
    /// returns `STATUS_PENDING`). A sweep this leave completes is told to the unload.
    pub(crate) fn end<C: Client>(self) -> bool {
        match self.slot.gate.leave() {
            Leave::LastOfClosing { owner, sweep } => {
                if sweep {
                    C::state().runtime.slot_drained();
                }
                owner
            }
            Leave::Left => false,
        }
    }
}

/// A call in flight through a binding; dropping it ends the call, and the last call to end after
/// a detach began completes that detach.
pub struct InFlight<C: Client> {
    slot: &'static BindingSlot,
    // INVARIANT: live for as long as this value holds its entry (see `acquire`).
    context: NonNull<BindingContext>,
    _client: PhantomData<C>,
}

impl<C: Client> InFlight<C> {
    /// Another call through the same binding.
    ///
    /// # Errors
    /// [`AcquireError::Unloading`] or [`AcquireError::Detaching`] once those have begun.
    pub(crate) fn try_clone(&self) -> Result<Self, AcquireError> {
        self.slot.gate.enter().map_err(|(refused, leave)| {
            left::<C>(self.slot, leave);
            match refused {
                Refused::Swept => AcquireError::Unloading,
                Refused::Free | Refused::Closed | Refused::Full => AcquireError::Detaching,
            }
        })?;
        // INVARIANT: the new entry keeps the same context alive, like the one cloned.
        Ok(Self {
            slot: self.slot,
            context: self.context,
            _client: PhantomData,
        })
    }

    /// Another call through the same binding, made from this one while it is held: never
    /// refused, even after a detach or the unload began (the count cannot reach zero while this
    /// call is held). For what must happen through a binding the caller already holds — a
    /// socket's close.
    pub(crate) fn clone_held(&self) -> Self {
        self.slot.gate.enter_held();
        // INVARIANT: the new entry keeps the same context alive, like the one cloned.
        Self {
            slot: self.slot,
            context: self.context,
            _client: PhantomData,
        }
    }

    /// Whether the binding still accepts new calls: no detach and no unload has begun.
    pub(crate) fn is_open(&self) -> bool {
        self.slot.gate.is_open()
    }

    /// The binding context. Valid until this value is dropped.
    pub(crate) fn context(&self) -> &BindingContext {
        // SAFETY: by the type invariant the context is live; after attach, only reads happen.
        unsafe { self.context.as_ref() }
    }
}

impl<C: Client> Drop for InFlight<C> {
    /// IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        release::<C>(self.slot);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
pub(crate) mod tests {
    //! The "not reachable" undo in `acquire`, made reachable: a hook runs between entering the
    //! gate and reading the context.

    use std::cell::Cell;

    use super::{BindingSlot, acquire, reserve};
    use crate::test_client::TestClient;

    std::thread_local! {
        static AFTER_ENTER: Cell<Option<fn()>> = const { Cell::new(None) };
    }

    pub(crate) fn after_enter() {
        if let Some(hook) = AFTER_ENTER.with(Cell::take) {
            hook();
        }
    }

    static SLOTS: [BindingSlot; 1] = [const { BindingSlot::new() }];

    #[test]
    fn the_undo_of_an_open_slot_without_context_completes_a_detach() {
        let session = wsk_host_model::session();
        let handle = 0x4E4D_0010 as crate::sys::HANDLE;
        let slot = reserve(&SLOTS, handle).unwrap();
        // A slot opened without a published context: what `acquire` calls not reachable.
        assert!(slot.open());
        AFTER_ENTER.with(|hook| {
            hook.set(Some(|| {
                // A detach begins (and its callback returns) while `acquire` holds the entry it
                // is about to undo.
                let detaching = super::SlotRef {
                    slot: &SLOTS[0],
                    generation: SLOT_GENERATION.with(Cell::get).unwrap(),
                }
                .begin_detach();
                assert_eq!(detaching.others, 1);
                assert!(!detaching.end::<TestClient>(), "pending");
            }));
        });
        SLOT_GENERATION.with(|g| g.set(Some(slot.generation)));
        assert!(acquire::<TestClient>(&SLOTS).is_err());
        let completions = session
            .events()
            .into_iter()
            .filter(|event| {
                matches!(
                    event,
                    wsk_host_model::Event::NmrClientDetachProviderComplete { binding }
                        if *binding == handle as usize
                )
            })
            .count();
        slot.free();
        assert_eq!(completions, 1, "the undo lost the detach completion");
        // The model did not know this binding: that is the only rule this test breaks.
        let violations = session.violations();
        assert!(
            violations
                .iter()
                .all(|v| v.contains("NmrClientDetachProviderComplete")),
            "{violations:?}"
        );
        session.forget_violations();
    }

    std::thread_local! {
        static SLOT_GENERATION: Cell<Option<crate::gate::Generation>> = const { Cell::new(None) };
    }
}
