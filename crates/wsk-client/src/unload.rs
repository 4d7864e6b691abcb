//! The unload of a client, in an order a driver cannot get wrong: it drops its
//! [`crate::Registration`] (after stopping its own threads and DPCs), and this runs:
//!
//! 1. no new [`crate::provider::BindingRef`] from now on;
//! 2. [`crate::Client::on_detach`] with [`crate::client::DetachReason::Unload`], once, so that the
//!    client closes its sockets and drops its references (it may queue work items for that);
//!    then every task of the client is cancelled ([`crate::task`]): marked, and woken;
//! 3. a `PASSIVE_LEVEL` wait until every reference is released (logged every 5 s while it lasts:
//!    an embedder that ignores the notification shows up in the debugger, and the unload resumes
//!    once it lets go); then no new work item or task, and a wait until every queued work item
//!    has finished and every task has ended; then the client's timer is cancelled and its DPC
//!    flushed ([`crate::timer`]);
//! 4. the backend's deregistration — `NmrDeregisterClient` + `NmrWaitForClientDeregisterComplete`:
//!    every binding is idle by now, so each detach completes at once, in NMR's call;
//! 5. `IoDeleteDevice` of the client's device object. The I/O manager still holds it for a work
//!    item that is returning from its last action (leaving the work gate), so the image is
//!    unmapped only after that code is done (see [`crate::runtime`]). When the NMR
//!    deregistration failed, the device object is kept instead: NMR may still call the client, and
//!    the device object keeps the image mapped for it (logged; the driver stays loaded).
//!
//! When `DriverUnload` returns after this, no code of the image runs anywhere, provided the driver
//! released references only in the contexts [`crate::provider`] lists.
//!
//! IRQL: `PASSIVE_LEVEL`.

use crate::client::{Backend, Client, DetachNotice, DetachReason};
use crate::log::log;
use crate::status::NtStatus;

/// Runs the unload of client `C`, with `deregister` as step 4; returns its status.
pub(crate) fn unload<C: Client>(deregister: impl FnOnce() -> NtStatus) -> NtStatus {
    let state = C::state();
    let runtime = &state.runtime;
    let (references, wait) = runtime.close_references(&state.slots);
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "unload: %u reference(s) outstanding",
        references
    );
    C::on_detach(DetachNotice {
        reason: DetachReason::Unload,
        references,
    });
    let tasks = u32::try_from(runtime.cancel_tasks()).unwrap_or(u32::MAX);
    if tasks > 0 {
        log!(C, DPFLTR_INFO_LEVEL, "unload: %u task(s) cancelled", tasks);
    }
    runtime.wait_references::<C>(wait, references);
    let work = runtime.close_work();
    if work > 0 {
        log!(
            C,
            DPFLTR_INFO_LEVEL,
            "unload: %u work item(s) outstanding",
            work
        );
    }
    runtime.wait_work::<C>(work);
    // Every task has ended (each was outstanding work), and with it every sleep: no DPC of the
    // client's timer may run once DriverUnload returns.
    runtime.timers.shut_down();
    let status = deregister();
    // Still registered (or not known to be deregistered): NMR may call the client's callbacks at
    // any time. Its device object is kept then, and with it the driver object and the image, so
    // that those calls find the code mapped; the driver cannot unload for good.
    let keep_device = C::BACKEND == Backend::Nmr && !status.is_success();
    if keep_device {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "unload: deregistration failed: the device object is kept, the image stays loaded"
        );
    }
    runtime.stop(&state.slots, keep_device);
    status
}
