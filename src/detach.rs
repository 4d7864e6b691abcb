//! `ClientDetachProvider`: stop new calls through the binding; complete now or when the last call
//! in flight returns.

use core::ptr::NonNull;

use crate::abi::{NTSTATUS, PVOID};
use crate::binding::{BindingContext, DetachState};
use crate::log::log;
use crate::status::NtStatus;

/// `NPI_CLIENT_DETACH_PROVIDER_FN`, registered with NMR.
///
/// IRQL <= `DISPATCH_LEVEL`: never blocks. Returns `STATUS_SUCCESS` when no call is in flight,
/// otherwise `STATUS_PENDING`; the last call to return then calls
/// `NmrClientDetachProviderComplete` (see `crate::binding::InFlight`). The context is freed by
/// cleanup, never here.
///
/// # Safety
/// Called by NMR with the `ClientBindingContext` of an attached binding, once, before cleanup.
#[allow(non_snake_case)]
pub unsafe extern "system" fn ClientDetachProvider(ClientBindingContext: PVOID) -> NTSTATUS {
    let Some(context) = NonNull::new(ClientBindingContext.cast::<BindingContext>()) else {
        log!(DPFLTR_ERROR_LEVEL, "detach: NULL binding context");
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // SAFETY: per this function's contract the context is live until cleanup; its slot field was
    // written before NMR got the context and is never written again.
    let slot = unsafe { (*context.as_ptr()).slot };
    detach_status(slot.begin_detach()).raw()
}

/// Logs the outcome of a detach and maps it to the status NMR expects. Any IRQL.
#[must_use]
pub fn detach_status(state: DetachState) -> NtStatus {
    match state {
        DetachState::Idle => {
            log!(DPFLTR_INFO_LEVEL, "detach: no call in flight, detached");
            NtStatus::SUCCESS
        }
        DetachState::InFlight(count) => {
            log!(
                DPFLTR_INFO_LEVEL,
                "detach: %u call(s) in flight, pending",
                count
            );
            NtStatus::PENDING
        }
    }
}
