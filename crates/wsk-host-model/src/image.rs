//! Where the driver's code runs, so that the model can tell when image code would still run after
//! Windows unmaps the image.
//!
//! Windows unmaps a driver image once `DriverUnload` has returned and the last reference to its
//! driver object is gone; a device object of the driver holds such a reference, and the I/O
//! manager holds a device object while a work item queued on it (`IoQueueWorkItem`) or a
//! completion routine set with `IoSetCompletionRoutineEx` runs. NMR does not return from
//! `NmrWaitForClientDeregisterComplete` while one of the client's callbacks runs. Any other thread
//! running driver code — a thread of the driver's own, a DPC, a plain completion routine — is
//! something `DriverUnload` itself must have waited for.
//!
//! The model counts the driver contexts it starts (and the ones a test declares with
//! [`crate::Session::driver_thread`]) as protected or not, and records as rules broken:
//! - `DriverUnload` returning while an unprotected context still runs driver code;
//! - the driver calling into the model, or the model calling into the driver, after the image was
//!   unmapped.

use std::cell::Cell;

use crate::state::{self, State};

/// Why a context may still run driver code while `DriverUnload` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Guard {
    /// Nothing holds the image for it (a thread of the driver's own, a plain completion routine).
    Unprotected,
    /// The I/O manager holds a device object of the driver (work item, `...Ex` completion).
    Device(usize),
    /// NMR waits for its callbacks; `DriverEntry`/`DriverUnload` are the I/O manager's own calls.
    Caller,
}

/// The image's life as the model sees it.
#[derive(Default)]
pub(crate) struct Image {
    /// `DriverUnload` returned (or `DriverEntry` failed).
    pub unloading: bool,
    /// Unmapped: unloading, and nothing holds it any more.
    pub unmapped: bool,
    /// Unprotected contexts running driver code now.
    pub unprotected: usize,
    /// Protected contexts running driver code now.
    pub protected: usize,
    /// Live device objects of the driver (created and not yet released for good).
    pub devices: usize,
}

std::thread_local! {
    /// The innermost driver context this thread is inside, if any.
    static CURRENT: Cell<Option<Guard>> = const { Cell::new(None) };
}

/// The guard of the driver context running on this thread, if any.
pub(crate) fn current() -> Option<Guard> {
    CURRENT.with(Cell::get)
}

/// A wake-up call (an event set, a detach completed) from a context nothing waits for: the model
/// lets the woken thread run first, as a preemption right after the call would, so that a driver
/// racing its own unload loses the race every time rather than now and then.
pub(crate) fn preempt_after_wake_up() {
    if current() == Some(Guard::Unprotected) {
        let _ = state::wait_for(std::time::Duration::from_millis(300), |s| s.image.unloading);
    }
}

/// After a `KeSetEvent`: a completion routine's thread pauses for
/// `Session::pause_routines_after_set_event`, as a preemption right after the call would.
pub(crate) fn pause_signalling_routine() {
    if matches!(current(), Some(Guard::Device(_)))
        && let Some(pause) = state::with(|s| s.routine_pause_after_set_event)
    {
        std::thread::sleep(pause);
    }
}

/// Runs `f`, driver code, in a context guarded by `guard`.
pub(crate) fn run<R>(guard: Guard, f: impl FnOnce() -> R) -> R {
    state::with(|s| {
        if s.image.unmapped {
            s.violation("the system called into the driver image after it was unloaded".into());
        }
        match guard {
            Guard::Unprotected => s.image.unprotected += 1,
            Guard::Device(_) | Guard::Caller => s.image.protected += 1,
        }
    });
    let outer = CURRENT.with(|c| c.replace(Some(guard)));
    let result = f();
    CURRENT.with(|c| c.set(outer));
    state::with(|s| {
        match guard {
            Guard::Unprotected => s.image.unprotected -= 1,
            Guard::Device(_) | Guard::Caller => s.image.protected -= 1,
        }
        settle(s);
    });
    result
}

/// Called by every model function the driver imports (and every provider function it calls): a
/// call after the image was unmapped is driver code running in unmapped memory. Counts the call;
/// returns the failure [`crate::Session::fail_call`] chose for it, which a function that can fail
/// applies (the others ignore it).
pub(crate) fn driver_calls(s: &mut State, what: &'static str) -> Option<crate::Status> {
    if s.image.unmapped {
        s.violation(format!(
            "{what} called by driver code after the image was unloaded"
        ));
    }
    crate::irql::check(s, what);
    if what.starts_with("Wsk") && crate::irp::in_completion_routine() {
        s.violation(format!(
            "{what} called inside a completion routine: a WSK client starts no new WSK call there \
             (Using IRPs with Winsock Kernel Functions)"
        ));
    }
    s.count_call(what)
}

/// `DriverUnload` returned: the image goes once nothing holds it.
pub(crate) fn unload_returned(s: &mut State) {
    s.image.unloading = true;
    if s.image.unprotected > 0 {
        let n = s.image.unprotected;
        s.violation(format!(
            "DriverUnload returned while driver code still runs in {n} context(s) nothing waits for \
             (a thread, DPC or completion routine of the driver's own): the image is unmapped under it"
        ));
    }
    settle(s);
}

/// Unmaps the image once it is unloading and neither a protected context nor a device object
/// holds it.
pub(crate) fn settle(s: &mut State) {
    if s.image.unloading && s.image.protected == 0 && s.image.devices == 0 {
        s.image.unmapped = true;
    }
}
