//! `ClientAttachProvider`: decide whether the offered WSK provider fits, allocate the binding
//! context, and attach with the highest common WSK version, falling back on `STATUS_NOINTERFACE`.
//!
//! IRQL: `PASSIVE_LEVEL` for the callback and [`attach`]; [`provider_range`] is pure (any IRQL).

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::Ordering;

use crate::binding::{self, BindingContext};
use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    HANDLE, NPI_REGISTRATION_INSTANCE, NPI_WSK_INTERFACE_ID, NTSTATUS, NmrClientAttachProvider,
    PVOID, WSK_PROVIDER_CHARACTERISTICS,
};
use crate::version::{Candidate, ProviderRange, RangeError, WskVersion};

/// Why a provider was declined before anything was allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decline {
    /// `ProviderRegistrationInstance` is NULL.
    NoRegistrationInstance,
    /// Its `Size` is smaller than `NPI_REGISTRATION_INSTANCE`.
    ShortRegistrationInstance(u16),
    /// Its `NpiId` is NULL or not `NPI_WSK_INTERFACE_ID`.
    NotWsk,
    /// Its `NpiSpecificCharacteristics` is NULL.
    NoCharacteristics,
    /// The version range is inverted or holds no supported version.
    Range(RangeError),
}

/// Checks a provider's registration instance and reads its WSK version range, for client `C`.
///
/// # Errors
/// The [`Decline`] reason.
pub fn provider_range<C: Client>(
    instance: Option<&NPI_REGISTRATION_INSTANCE>,
) -> Result<ProviderRange, Decline> {
    let instance = instance.ok_or(Decline::NoRegistrationInstance)?;
    if usize::from(instance.Size) < size_of::<NPI_REGISTRATION_INSTANCE>() {
        return Err(Decline::ShortRegistrationInstance(instance.Size));
    }
    // SAFETY: a non-NULL NpiId in a registration instance NMR hands out points at a GUID.
    let npi_id = unsafe { instance.NpiId.as_ref() };
    if npi_id != Some(&NPI_WSK_INTERFACE_ID) {
        return Err(Decline::NotWsk);
    }
    let characteristics = instance
        .NpiSpecificCharacteristics
        .cast::<WSK_PROVIDER_CHARACTERISTICS>();
    if characteristics.is_null() {
        return Err(Decline::NoCharacteristics);
    }
    // SAFETY: a WSK provider's NpiSpecificCharacteristics points at its
    // WSK_PROVIDER_CHARACTERISTICS; read unaligned, as nothing guarantees its alignment.
    let characteristics = unsafe { characteristics.read_unaligned() };
    ProviderRange::new(&characteristics)
        .and_then(ProviderRange::require_common_version::<C>)
        .map_err(Decline::Range)
}

fn log_decline<C: Client>(decline: Decline) {
    match decline {
        Decline::NoRegistrationInstance => {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "attach declined: no registration instance"
            );
        }
        Decline::ShortRegistrationInstance(size) => log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "attach declined: registration instance size %u too small",
            u32::from(size),
        ),
        Decline::NotWsk => log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "attach declined: provider is not WSK"
        ),
        Decline::NoCharacteristics => {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "attach declined: no provider characteristics"
            );
        }
        Decline::Range(RangeError::Inverted { lowest, highest }) => log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "attach declined: inverted version range %u.%u > %u.%u",
            u32::from(lowest.major()),
            u32::from(lowest.minor()),
            u32::from(highest.major()),
            u32::from(highest.minor()),
        ),
        Decline::Range(RangeError::NoCommonVersion(range)) => log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "attach declined: no supported version in WSK %u.%u-%u.%u",
            u32::from(range.lowest().major()),
            u32::from(range.lowest().minor()),
            u32::from(range.highest().major()),
            u32::from(range.highest().minor()),
        ),
    }
}

/// `NPI_CLIENT_ATTACH_PROVIDER_FN` of client `C`, registered with NMR.
///
/// IRQL: `PASSIVE_LEVEL`. May run before `NmrRegisterClient` has returned (and so before its
/// out-handle is written), which is why nothing here uses that handle.
///
/// # Safety
/// Called by NMR: `ClientContext` is the one `crate::Registration::<C>::register` passed to
/// `NmrRegisterClient` (`C::state()`), and `ProviderRegistrationInstance` is NULL or valid for the
/// duration of the call.
#[allow(non_snake_case)]
pub(crate) unsafe extern "system" fn ClientAttachProvider<C: Client>(
    NmrBindingHandle: HANDLE,
    ClientContext: PVOID,
    ProviderRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    if ClientContext.cast_const() != client_context::<C>() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "attach failed: unexpected client context"
        );
        return NtStatus::INVALID_PARAMETER.raw();
    }
    // SAFETY: per this function's contract, the instance is NULL or valid during the call.
    let instance = unsafe { ProviderRegistrationInstance.as_ref() };
    attach::<C>(NmrBindingHandle, instance).raw()
}

/// The `ClientContext` client `C` registers with NMR: the address of its state.
pub(crate) fn client_context<C: Client>() -> *const core::ffi::c_void {
    ptr::from_ref(C::state()).cast()
}

/// The body of `ClientAttachProvider`. `PASSIVE_LEVEL`.
///
/// Returns `STATUS_SUCCESS` once attached; `STATUS_NOINTERFACE` without allocating when the
/// provider does not fit; `STATUS_INSUFFICIENT_RESOURCES` when no slot or no pool is free (no NMR
/// call then); otherwise the status of the last `NmrClientAttachProvider` call, with the context
/// freed.
pub fn attach<C: Client>(
    nmr_binding_handle: HANDLE,
    instance: Option<&NPI_REGISTRATION_INSTANCE>,
) -> NtStatus {
    let range = match provider_range::<C>(instance) {
        Ok(range) => range,
        Err(decline) => {
            log_decline::<C>(decline);
            return NtStatus::NOINTERFACE;
        }
    };
    let Some(slot) = binding::reserve(&C::state().slots, nmr_binding_handle) else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "attach failed: every binding slot is in use"
        );
        return NtStatus::INSUFFICIENT_RESOURCES;
    };
    let context = match new_context::<C>(nmr_binding_handle, slot) {
        Ok(context) => context,
        Err(error) => {
            slot.free();
            return error.status();
        }
    };
    slot.publish(context.as_ptr());

    let mut last = NtStatus::NOINTERFACE;
    let mut previous: Option<WskVersion> = None;
    for candidate in range.candidates::<C>() {
        if let Some(from) = previous {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "fallback from WSK %u.%u to WSK %u.%u",
                u32::from(from.major()),
                u32::from(from.minor()),
                u32::from(candidate.version.major()),
                u32::from(candidate.version.minor()),
            );
        }
        last = try_attach::<C>(&context, candidate);
        if last == NtStatus::SUCCESS {
            // NMR owns the context now; ClientCleanupBindingContext frees it. From here on it may
            // be detached and even cleaned up at any moment, so it is not touched again.
            let _ = context.into_raw();
            let (major, minor) = (
                u32::from(candidate.version.major()),
                u32::from(candidate.version.minor()),
            );
            if slot.open() {
                log!(C, DPFLTR_INFO_LEVEL, "attached at WSK %u.%u", major, minor);
            } else {
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "attached at WSK %u.%u, but detached before the attach returned",
                    major,
                    minor,
                );
            }
            return NtStatus::SUCCESS;
        }
        if last != NtStatus::NOINTERFACE {
            break;
        }
        previous = Some(candidate.version);
    }

    slot.free();
    // SAFETY: the live context this attach still owns (NMR refused it).
    crate::detach::free_notice::<C>(unsafe { &*context.as_ptr() });
    drop(context);
    if last.is_success() {
        // A success code other than STATUS_SUCCESS: NMR never returns one. The context is gone,
        // so report a failure rather than an attachment NMR might then detach into freed memory.
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "attach failed: unexpected status 0x%08X",
            last.bits(),
        );
        return NtStatus::UNSUCCESSFUL;
    }
    log!(C, DPFLTR_ERROR_LEVEL, "attach failed: 0x%08X", last.bits());
    last
}

/// The binding context for an attach of `nmr_binding_handle` tracked by `slot`, with the work
/// item of its detach notice made now, so that the detach cannot fail to send it. `PASSIVE_LEVEL`.
///
/// # Errors
/// No pool or no work item (logged).
fn new_context<C: Client>(
    nmr_binding_handle: HANDLE,
    slot: binding::SlotRef,
) -> Result<PoolBox<BindingContext>, NtError> {
    let context = PoolBox::try_new::<C>(BindingContext::new(nmr_binding_handle, slot), C::POOL_TAG)
        .inspect_err(|status| {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "attach failed: no pool for the binding context: 0x%08X",
                status.bits()
            );
        })?;
    let notice = crate::detach::reserve_notice::<C>().inspect_err(|status| {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "attach failed: no work item for the detach notice: 0x%08X",
            status.bits()
        );
    })?;
    // SAFETY: the live context this attach owns, not shared yet; an atomic field.
    let field = unsafe { &(*context.as_ptr()).notice };
    field.store(notice.into_raw().as_ptr(), Ordering::Release);
    Ok(context)
}

/// One `NmrClientAttachProvider` call naming `candidate`'s version. `PASSIVE_LEVEL`.
fn try_attach<C: Client>(context: &PoolBox<BindingContext>, candidate: Candidate) -> NtStatus {
    let raw = context.as_ptr();
    // SAFETY: `raw` is the live context this attach owns; no other code writes it before NMR has
    // it, and the field is written through the raw pointer, creating no reference.
    unsafe { (*raw).version = candidate.version };
    // SAFETY: as above: a field address of the live context, no reference created.
    let wsk_client = unsafe { &raw mut (*raw).wsk_client };
    // SAFETY: as above.
    let provider_dispatch = unsafe { &raw mut (*raw).provider_dispatch };
    // SAFETY: as above: a read of a field of the live context.
    let nmr_binding_handle = unsafe { (*raw).nmr_binding_handle };
    // SAFETY: PASSIVE_LEVEL; the binding handle is the one NMR gave this attach; the client
    // dispatch is static; the context and both out-pointers stay valid for the whole call (and,
    // on success, until cleanup).
    let status = NtStatus::from_raw(unsafe {
        NmrClientAttachProvider(
            nmr_binding_handle,
            raw.cast(),
            ptr::from_ref(candidate.dispatch).cast(),
            wsk_client,
            provider_dispatch,
        )
    });
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "attach tried WSK %u.%u: 0x%08X",
        u32::from(candidate.version.major()),
        u32::from(candidate.version.minor()),
        status.bits(),
    );
    status
}
