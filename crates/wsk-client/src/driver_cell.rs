//! [`DriverCell`]: where a driver keeps a value from `DriverEntry` to `DriverUnload` (typically its
//! [`crate::Registration`]), declared as a static by the driver.
//!
//! IRQL: `PASSIVE_LEVEL` (where `DriverEntry` and `DriverUnload` run).

use core::cell::UnsafeCell;

/// A value set by `DriverEntry` and taken by `DriverUnload`. Not a lock: it relies on the I/O
/// manager never running a driver's `DriverEntry` and `DriverUnload` concurrently, which is why
/// its accessors are `unsafe`.
pub struct DriverCell<T>(UnsafeCell<Option<T>>);

// SAFETY: the only accesses are `set` and `take`, whose callers guarantee (per their contracts)
// that no two run at once; `T: Send` because DriverEntry and DriverUnload may run on different
// threads.
unsafe impl<T: Send> Sync for DriverCell<T> {}

impl<T> DriverCell<T> {
    /// Empty.
    #[must_use]
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }

    /// Stores `value`, returning what was there.
    ///
    /// # Safety
    /// Called from `DriverEntry` or `DriverUnload` only (never concurrently with another access).
    pub unsafe fn set(&self, value: T) -> Option<T> {
        // SAFETY: per this function's contract, no other access runs now.
        unsafe { (*self.0.get()).replace(value) }
    }

    /// Takes the value out.
    ///
    /// # Safety
    /// As for [`DriverCell::set`].
    pub unsafe fn take(&self) -> Option<T> {
        // SAFETY: per this function's contract, no other access runs now.
        unsafe { (*self.0.get()).take() }
    }
}

impl<T> Default for DriverCell<T> {
    fn default() -> Self {
        Self::new()
    }
}
