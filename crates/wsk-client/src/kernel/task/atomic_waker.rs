//! [`AtomicWaker`]: where a future leaves its waker for whoever completes what it waits for — the
//! rendezvous between a request's future (polled in a task) and its completion routine (at
//! `DISPATCH_LEVEL`, on any processor). Neither side ever waits for the other: a wake that finds
//! a registration in progress leaves the waking to it, and a registration that finds a wake in
//! progress wakes its own waker at once. (A spin lock would not do: a completion routine at
//! `DISPATCH_LEVEL` spinning on a lock held by the thread it interrupted, on the same processor,
//! spins for ever.)
//!
//! One registrant at a time (the future that owns the request); any number of wakers.
//! Exposed for its loom model check (`tests/loom_waker.rs`), which gives it loom's cell and
//! atomic; the library uses [`Slot`] over `UnsafeCell` and `AtomicU64`.
//!
//! IRQL: any (interlocked, non-blocking); waking runs the waker's own code (a task's queues its
//! work item: <= `DISPATCH_LEVEL`).

use core::cell::UnsafeCell;
use core::sync::atomic::Ordering;
use core::task::Waker;

use crate::gate::AtomicWord;

/// Nobody is registering or waking.
const WAITING: u64 = 0;
/// The registrant is writing the slot.
const REGISTERING: u64 = 1;
/// A waker is taking the slot (or asked the registrant to wake).
const WAKING: u64 = 2;

/// The cell holding the registered waker: accessed only by whoever moved the state out of
/// `WAITING` (the registrant, or the one waker that did).
pub trait WakerCell {
    /// Runs `f` on the slot. The caller has exclusive access (see the type).
    ///
    /// # Safety
    /// The caller holds the state's `REGISTERING` or `WAKING` claim.
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut Option<Waker>) -> R) -> R;
}

/// The kernel's cell: an `UnsafeCell`.
pub struct Slot(UnsafeCell<Option<Waker>>);

impl Slot {
    /// Empty.
    #[must_use]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

impl WakerCell for Slot {
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut Option<Waker>) -> R) -> R {
        // SAFETY: per the contract, the caller's access is exclusive.
        f(unsafe { &mut *self.0.get() })
    }
}

/// A waker slot shared by one registrant and any number of wakers.
pub struct AtomicWaker<W, S> {
    state: W,
    slot: S,
}

// SAFETY: the slot is accessed by one party at a time (the state's claims); wakers are Send +
// Sync.
unsafe impl<W: Send, S: Send> Sync for AtomicWaker<W, S> {}

impl<W: AtomicWord, S: WakerCell> AtomicWaker<W, S> {
    /// An empty slot over `state` (which must be 0) and `slot` (empty).
    pub const fn with(state: W, slot: S) -> Self {
        Self { state, slot }
    }

    /// Leaves `waker` to be woken by the next [`AtomicWaker::wake`]. A wake in progress wakes it
    /// at once instead (the registrant will be polled again).
    pub fn register(&self, waker: &Waker) {
        match self.state.compare_exchange(
            WAITING,
            REGISTERING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // SAFETY: REGISTERING is this registrant's claim.
                let old = unsafe {
                    self.slot.with_mut(|slot| match slot {
                        Some(old) if old.will_wake(waker) => None,
                        _ => slot.replace(waker.clone()),
                    })
                };
                let woken_meanwhile = self
                    .state
                    .compare_exchange(REGISTERING, WAITING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err();
                if woken_meanwhile {
                    // A wake came while the slot was written (REGISTERING | WAKING): it left the
                    // waking to this registrant, which still holds the claim.
                    // SAFETY: still REGISTERING (with WAKING): the claim is this registrant's.
                    let taken = unsafe { self.slot.with_mut(Option::take) };
                    self.state.store(WAITING, Ordering::Release);
                    if let Some(waker) = taken {
                        waker.wake();
                    }
                }
                drop(old);
            }
            // A wake is taking the slot now: the registrant is polled again.
            Err(_) => waker.wake_by_ref(),
        }
    }

    /// Takes the registered waker, if any, unless a registration is in progress (which then
    /// wakes it itself).
    pub fn take(&self) -> Option<Waker> {
        match self.state.fetch_or(WAKING, Ordering::AcqRel) {
            WAITING => {
                // SAFETY: WAKING over WAITING is this waker's claim.
                let waker = unsafe { self.slot.with_mut(Option::take) };
                let _ = self.state.fetch_and(!WAKING, Ordering::Release);
                waker
            }
            // REGISTERING: the registrant sees WAKING and wakes; WAKING: another waker takes it.
            _ => None,
        }
    }

    /// Wakes the registered waker, if any (see [`AtomicWaker::take`]).
    pub fn wake(&self) {
        if let Some(waker) = self.take() {
            waker.wake();
        }
    }
}
