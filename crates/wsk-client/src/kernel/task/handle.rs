//! What [`super::spawn`] hands back: a [`TaskHandle`] that cancels its task from elsewhere (a
//! driver's `on_detach`), and a [`TaskCell`] to keep one in a `static` without `unsafe`.
//!
//! A handle is a counted reference to its task, like a waker: the task's memory stays until the
//! handle is dropped too, and the client's unload waits for that (the task is outstanding work
//! until its last reference goes). So a handle is kept where the unload's own steps drop it —
//! a [`TaskCell`] that `on_detach` cancels, which the unload calls first.
//!
//! IRQL: every function at <= `DISPATCH_LEVEL`.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use super::Header;

/// A spawned task: cancel it, ask whether it finished; dropping the handle lets the task run on.
///
/// # Invariants
/// `header` is a live task of which this handle holds one reference.
#[derive(Debug)]
pub struct TaskHandle {
    header: NonNull<Header>,
}

// SAFETY: the task is in pool, shared only through its atomic state; the handle's reference is
// released once, from any thread.
unsafe impl Send for TaskHandle {}
// SAFETY: every method takes `&self` and touches only the atomic state.
unsafe impl Sync for TaskHandle {}

impl TaskHandle {
    /// A handle over a reference the caller gives it.
    ///
    /// # Safety
    /// `header` is a live task and the caller hands one of its references to the handle.
    pub(super) unsafe fn from_reference(header: NonNull<Header>) -> Self {
        // INVARIANT: per the contract.
        Self { header }
    }

    fn header(&self) -> &Header {
        // SAFETY: live while the handle holds its reference (the invariant).
        unsafe { self.header.as_ref() }
    }

    /// Cancels the task, as the unload does: [`super::is_cancelled`] says so from now on, and the
    /// library's futures in it end (`STATUS_CANCELLED`; a pending socket operation cancels its
    /// IRP and closes its socket). A task that completed already is left as it is.
    pub fn cancel(&self) {
        let header = self.header();
        if header.state.cancel() {
            // SAFETY: scheduled just now by `cancel`: its work item is this caller's to queue.
            unsafe { (header.vtable.queue)(self.header) };
        }
    }

    /// Whether the task's future has completed (and was dropped).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.header().state.is_complete()
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        let header = self.header();
        if header.state.drop_ref() {
            // SAFETY: the last reference: the task completed (its own reference went then), its
            // future is dropped and its work item not queued.
            unsafe { (header.vtable.free)(self.header) };
        }
    }
}

/// The cell's "cancelled" mark: never a task's address (tasks are aligned to 8).
fn closed() -> *mut Header {
    ptr::without_provenance_mut(1)
}

/// A place for one [`TaskHandle`], usable from a `static`: [`TaskCell::keep`] a task when it
/// is spawned, [`TaskCell::cancel`] it from `on_detach`. A cancel that comes first is not lost:
/// the cell stays cancelled, and a task kept later is cancelled at once.
#[derive(Debug)]
pub struct TaskCell {
    /// NULL (empty), [`closed`], or a handle's task (`TaskHandle`'s reference, moved in).
    state: AtomicPtr<Header>,
}

impl TaskCell {
    /// An empty cell, not cancelled.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Keeps `task` (a task kept before is let go, not cancelled); in a cell cancelled already,
    /// cancels it and lets it go.
    pub fn keep(&self, task: TaskHandle) {
        let raw = task.header.as_ptr();
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current == closed() {
                task.cancel();
                return;
            }
            match self
                .state
                .compare_exchange(current, raw, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(previous) => {
                    // The reference moved into the cell.
                    core::mem::forget(task);
                    drop(Self::handle(previous));
                    return;
                }
                Err(now) => current = now,
            }
        }
    }

    /// Cancels the kept task, if any, and lets it go; the cell stays cancelled ([`TaskCell::keep`]).
    pub fn cancel(&self) {
        if let Some(task) = Self::handle(self.state.swap(closed(), Ordering::AcqRel)) {
            task.cancel();
        }
    }

    /// Empties the cell and ends its cancelled state (a driver's next start); a kept task is let
    /// go, not cancelled.
    pub fn reset(&self) {
        drop(Self::handle(
            self.state.swap(ptr::null_mut(), Ordering::AcqRel),
        ));
    }

    /// The handle whose reference the cell held as `raw`, if any.
    fn handle(raw: *mut Header) -> Option<TaskHandle> {
        if raw == closed() {
            return None;
        }
        // SAFETY: anything else but NULL in the cell is a reference a `TaskHandle` moved in
        // (`keep`), taken out once (the swap or exchange that removed it).
        NonNull::new(raw).map(|header| unsafe { TaskHandle::from_reference(header) })
    }
}

impl Default for TaskCell {
    fn default() -> Self {
        Self::new()
    }
}
