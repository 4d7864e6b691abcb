//! `ClientDetachProvider`: stop new calls through the binding; complete now or when the last call
//! in flight returns.

use core::ptr::NonNull;

use crate::binding::BindingContext;
use crate::client::{Client, DetachNotice, DetachReason};
use crate::gate::Close;
use crate::log::log;
use crate::status::NtStatus;
use crate::sys::{NTSTATUS, PVOID};

/// `NPI_CLIENT_DETACH_PROVIDER_FN` of client `C`, registered with NMR.
///
/// IRQL <= `DISPATCH_LEVEL`: never blocks. Returns `STATUS_SUCCESS` when no reference is held,
/// otherwise `STATUS_PENDING`; the last reference released then calls
/// `NmrClientDetachProviderComplete` (see `crate::binding::InFlight`). Tells the client through
/// [`Client::on_detach`], unless its unload already did. The context is freed by cleanup, never
/// here.
///
/// # Safety
/// Called by NMR with the `ClientBindingContext` of an attached binding, once, before cleanup.
#[allow(non_snake_case)]
pub(crate) unsafe extern "system" fn ClientDetachProvider<C: Client>(
    ClientBindingContext: PVOID,
) -> NTSTATUS {
    let Some(context) = NonNull::new(ClientBindingContext.cast::<BindingContext>()) else {
        log!(C, DPFLTR_ERROR_LEVEL, "detach: NULL binding context");
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // SAFETY: per this function's contract the context is live until cleanup; its slot field was
    // written before NMR got the context and is never written again.
    let slot = unsafe { (*context.as_ptr()).slot };
    let close = slot.begin_detach();
    let status = detach_status::<C>(close);
    if !C::state().runtime.is_unloading() {
        C::on_detach(DetachNotice {
            reason: DetachReason::Provider,
            references: match close {
                Close::Idle => 0,
                Close::Pending(count) => count,
            },
        });
    }
    status.raw()
}

/// Logs the outcome of a detach and maps it to the status NMR expects. Any IRQL.
#[must_use]
pub fn detach_status<C: Client>(close: Close) -> NtStatus {
    match close {
        Close::Idle => {
            log!(C, DPFLTR_INFO_LEVEL, "detach: no call in flight, detached");
            NtStatus::SUCCESS
        }
        Close::Pending(count) => {
            log!(
                C,
                DPFLTR_INFO_LEVEL,
                "detach: %u call(s) in flight, pending",
                count
            );
            NtStatus::PENDING
        }
    }
}
