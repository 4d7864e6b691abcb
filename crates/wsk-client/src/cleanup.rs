//! `ClientCleanupBindingContext`: free the binding context once both sides have detached.

use core::ptr::NonNull;

use crate::binding::BindingContext;
use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::sys::PVOID;

/// `NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN` of client `C`, registered with NMR.
///
/// IRQL <= `DISPATCH_LEVEL`. Frees the context with the tag it was allocated with and frees its
/// slot for a later attach.
///
/// # Safety
/// Called by NMR, once per binding, after its detach completed, with the `ClientBindingContext`
/// that `ClientAttachProvider` passed to a successful `NmrClientAttachProvider`.
#[allow(non_snake_case)]
pub(crate) unsafe extern "system" fn ClientCleanupBindingContext<C: Client>(
    ClientBindingContext: PVOID,
) {
    let Some(context) = NonNull::new(ClientBindingContext.cast::<BindingContext>()) else {
        log!(C, DPFLTR_ERROR_LEVEL, "cleanup: NULL binding context");
        return;
    };
    // SAFETY: per this function's contract, `context` is the pool box attach gave up with
    // `into_raw`, made by `PoolBox::try_new::<C>` with `C::POOL_TAG`, and nothing uses it any more.
    let context = unsafe { PoolBox::from_raw::<C>(context, C::POOL_TAG) };
    // SAFETY: the context is live and owned here; its slot field is never written after attach.
    let slot = unsafe { (*context.as_ptr()).slot };
    // Normally taken by the detach; freed here if it is still there.
    // SAFETY: as above.
    crate::detach::free_notice::<C>(unsafe { &*context.as_ptr() });
    slot.free();
    drop(context);
    log!(C, DPFLTR_INFO_LEVEL, "cleanup: binding context freed");
}
