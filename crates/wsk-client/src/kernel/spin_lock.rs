//! [`SpinLock`]: a `KSPIN_LOCK` around the data it guards, as windows-drivers-rs's `wdf::SpinLock`
//! and Rust-for-Linux's `SpinLock<T>` put them together: the data is reachable only through the
//! guard, and the guard gives the lock back (and the IRQL) when it goes.
//!
//! IRQL: [`SpinLock::lock`] at <= `DISPATCH_LEVEL`; the guard holds the processor at
//! `DISPATCH_LEVEL`: nothing done under it may wait, page-fault or call a function limited to
//! lower levels. Every lock of the library is taken alone (never one inside another).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use crate::sys::{KIRQL, KSPIN_LOCK, KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};

/// `T` guarded by a kernel spin lock. In resident (non-paged) memory, as every spin lock must be
/// (the library's are in the client's static state).
pub(crate) struct SpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only by the holder of the lock, one thread at a time.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// An unlocked lock (`KeInitializeSpinLock` stores 0: a const initialiser does the same).
    pub(crate) const fn new(value: T) -> Self {
        Self {
            lock: UnsafeCell::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Raises to `DISPATCH_LEVEL` and takes the lock. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn lock(&self) -> Guard<'_, T> {
        // SAFETY: a spin lock initialised to 0 that lives as long as `self`; IRQL <=
        // DISPATCH_LEVEL; released by the guard's drop.
        let before = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        Guard { lock: self, before }
    }
}

/// The lock held; dropping it releases the lock and goes back to the IRQL before.
pub(crate) struct Guard<'a, T> {
    lock: &'a SpinLock<T>,
    before: KIRQL,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the lock is held by this guard: no other reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and the guard is borrowed mutably.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the lock this guard acquired, released once, with the IRQL it returned.
        unsafe { KeReleaseSpinLock(self.lock.lock.get(), self.before) };
    }
}
