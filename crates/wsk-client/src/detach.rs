//! `ClientDetachProvider`: stop new calls through the binding; complete now or when the last call
//! in flight returns — and tell the client, outside NMR's call.
//!
//! The callback counts itself as a call in flight while it runs (`crate::binding::Detaching`),
//! so the decision is made by its own last action: when every other call has returned by then it
//! returns `STATUS_SUCCESS`, otherwise `STATUS_PENDING`, and only then can the last call to
//! return complete the detach (`NmrClientDetachProviderComplete`, whose page allows it "after
//! returning `STATUS_PENDING`").
//!
//! The client's [`Client::on_detach`] never runs inside the callback: NMR may call it at
//! `DISPATCH_LEVEL`, and a close the client starts there may complete at once and drop the
//! binding's last reference before the callback has returned. The callback queues the binding's
//! notice work item instead — allocated with the binding by `ClientAttachProvider`, so queueing it
//! cannot fail for want of memory — and `on_detach` runs there, at `PASSIVE_LEVEL`.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;

use crate::binding::BindingContext;
use crate::client::{Client, DetachNotice, DetachReason};
use crate::log::log;
use crate::status::{NtError, NtStatus};
use crate::sys::{NTSTATUS, PVOID};
use crate::work::{Reserved, Work};

/// The detach notice's work: [`Client::on_detach`] with [`DetachReason::Provider`].
pub(crate) struct Notify<C> {
    references: u32,
    _client: PhantomData<fn() -> C>,
}

impl<C: Client> Work for Notify<C> {
    /// `PASSIVE_LEVEL`, in a work item of the client (so the unload waits for it).
    fn run(self) {
        // The unload tells the client itself (once): a notice that comes after it began is moot.
        if !C::state().runtime.is_unloading() {
            C::on_detach(DetachNotice {
                reason: DetachReason::Provider,
                references: self.references,
            });
        }
    }
}

/// The binding's notice work item, made with its context by `ClientAttachProvider`.
///
/// # Errors
/// No pool or no work item (logged).
pub(crate) fn reserve_notice<C: Client>() -> Result<Reserved<C, Notify<C>>, NtError> {
    Reserved::new()
}

/// Frees the notice work item of `context` if the detach did not take it (cleanup, or an attach
/// that gave up). IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn free_notice<C: Client>(context: &BindingContext) {
    if let Some(raw) = NonNull::new(context.notice.swap(core::ptr::null_mut(), Ordering::AcqRel)) {
        // SAFETY: `notice` holds only `Reserved::<C, Notify<C>>::into_raw` (attach), taken once
        // (swapped out here or by the detach).
        drop(unsafe { Reserved::<C, Notify<C>>::from_raw(raw) });
    }
}

/// `NPI_CLIENT_DETACH_PROVIDER_FN` of client `C`, registered with NMR.
///
/// IRQL <= `DISPATCH_LEVEL`: never blocks. Returns `STATUS_SUCCESS` when no call is in flight
/// by its end, otherwise `STATUS_PENDING`; the last call to return then calls
/// `NmrClientDetachProviderComplete` (see `crate::binding`). Tells the client through
/// [`Client::on_detach`] in a work item, unless its unload already did. The context is freed by
/// cleanup, never here.
///
/// # Safety
/// Called by NMR with the `ClientBindingContext` of an attached binding, once, before cleanup.
#[allow(non_snake_case)]
pub(crate) unsafe extern "system" fn ClientDetachProvider<C: Client>(
    ClientBindingContext: PVOID,
) -> NTSTATUS {
    let Some(context) = NonNull::new(ClientBindingContext.cast::<BindingContext>()) else {
        // Not a binding of this client: there is nothing to wait for, and only STATUS_SUCCESS
        // and STATUS_PENDING are defined answers.
        log!(C, DPFLTR_ERROR_LEVEL, "detach: NULL binding context");
        return NtStatus::SUCCESS.raw();
    };
    // SAFETY: per this function's contract the context is live until cleanup, which cannot run
    // before this callback returns; after attach it is only read, but for `notice` (atomic).
    let context = unsafe { context.as_ref() };
    let detaching = context.slot.begin_detach();
    let references = detaching.others;
    if let Some(raw) = NonNull::new(context.notice.swap(core::ptr::null_mut(), Ordering::AcqRel)) {
        // SAFETY: as in `free_notice`: taken once.
        let notice = unsafe { Reserved::<C, Notify<C>>::from_raw(raw) };
        // Refused (and freed) once the unload began: the unload tells the client itself.
        let queued = notice.queue(Notify {
            references,
            _client: PhantomData,
        });
        if queued.is_err() {
            log!(
                C,
                DPFLTR_INFO_LEVEL,
                "detach: the unload has begun and tells the client itself"
            );
        }
    }
    // The last action on the binding: once it leaves, a pending detach may complete at once.
    let status = if detaching.end::<C>() {
        log!(C, DPFLTR_INFO_LEVEL, "detach: no call in flight, detached");
        NtStatus::SUCCESS
    } else {
        log!(
            C,
            DPFLTR_INFO_LEVEL,
            "detach: %u call(s) in flight, pending",
            references
        );
        NtStatus::PENDING
    };
    status.raw()
}

#[cfg(test)]
mod tests {
    use crate::status::NtStatus;
    use crate::test_client::TestClient;

    #[test]
    fn a_null_context_is_answered_with_a_defined_status() {
        // Only STATUS_SUCCESS and STATUS_PENDING are defined answers of a detach; with no
        // binding there is nothing to wait for.
        let session = wsk_host_model::session();
        // SAFETY: NULL is the case under test; the callback reads nothing through it.
        let status = unsafe { super::ClientDetachProvider::<TestClient>(core::ptr::null_mut()) };
        assert_eq!(NtStatus::from_raw(status), NtStatus::SUCCESS);
        assert!(
            session
                .log()
                .iter()
                .any(|l| l == "unit_test: detach: NULL binding context")
        );
    }
}
