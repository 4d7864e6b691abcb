//! The NMR client registration: the static characteristics, and [`ClientRegistration`], a guard
//! that registers when created and deregisters (and waits) when dropped.

use core::ffi::c_void;
use core::mem::{ManuallyDrop, size_of};
use core::ptr::{self, NonNull};

use crate::abi::{
    GUID, HANDLE, MIT_GUID, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_u,
    NPI_REGISTRATION_INSTANCE, NPI_WSK_INTERFACE_ID, NPIID, NmrDeregisterClient, NmrRegisterClient,
    NmrWaitForClientDeregisterComplete,
};
use crate::attach::ClientAttachProvider;
use crate::binding::BindingSlots;
use crate::cleanup::ClientCleanupBindingContext;
use crate::detach::ClientDetachProvider;
use crate::log::log;
use crate::status::NtStatus;

/// This driver's NMR module id: {4D636F0B-B15B-48CA-8894-FB0987DBE869}. A driver built from this
/// template must use a GUID of its own.
pub const MODULE_ID_GUID: GUID = GUID {
    Data1: 0x4D63_6F0B,
    Data2: 0xB15B,
    Data3: 0x48CA,
    Data4: [0x88, 0x94, 0xFB, 0x09, 0x87, 0xDB, 0xE8, 0x69],
};

#[allow(clippy::cast_possible_truncation)] // 24 and 40 and 72 bytes
const fn size_u16<T>() -> u16 {
    size_of::<T>() as u16
}

static WSK_NPI_ID: NPIID = NPI_WSK_INTERFACE_ID;

static MODULE_ID: NPI_MODULEID = NPI_MODULEID {
    Length: size_u16::<NPI_MODULEID>(),
    Type: MIT_GUID,
    u: NPI_MODULEID_u {
        Guid: MODULE_ID_GUID,
    },
};

/// `NPI_CLIENT_CHARACTERISTICS` in a static: NMR reads it until
/// `NmrWaitForClientDeregisterComplete` returns.
#[repr(transparent)]
pub struct StaticCharacteristics(NPI_CLIENT_CHARACTERISTICS);

// SAFETY: never written after initialisation; its pointers lead only to immutable statics.
unsafe impl Sync for StaticCharacteristics {}

impl StaticCharacteristics {
    /// The raw characteristics.
    #[must_use]
    pub const fn get(&self) -> &NPI_CLIENT_CHARACTERISTICS {
        &self.0
    }
}

/// The characteristics this driver registers: a WSK NPI client with this driver's module id.
pub static CLIENT_CHARACTERISTICS: StaticCharacteristics =
    StaticCharacteristics(NPI_CLIENT_CHARACTERISTICS {
        Version: 0,
        Length: size_u16::<NPI_CLIENT_CHARACTERISTICS>(),
        ClientAttachProvider: Some(ClientAttachProvider),
        ClientDetachProvider: Some(ClientDetachProvider),
        ClientCleanupBindingContext: Some(ClientCleanupBindingContext),
        ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: size_u16::<NPI_REGISTRATION_INSTANCE>(),
            NpiId: &raw const WSK_NPI_ID,
            ModuleId: &raw const MODULE_ID,
            Number: 0,
            NpiSpecificCharacteristics: ptr::null(),
        },
    });

/// A registered NMR client. Dropping it deregisters and waits until every binding is detached
/// and cleaned up.
pub struct ClientRegistration {
    // INVARIANT: the handle NmrRegisterClient returned, not yet deregistered.
    handle: NonNull<c_void>,
}

impl ClientRegistration {
    /// Registers [`CLIENT_CHARACTERISTICS`] with `bindings` as the client context. NMR may attach
    /// before this returns.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The status of `NmrRegisterClient`, or `STATUS_UNSUCCESSFUL` if it succeeded without
    /// returning a handle.
    pub fn register(bindings: &'static BindingSlots) -> Result<Self, NtStatus> {
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; the characteristics and the client context are statics, valid
        // until after deregistration completes; `handle` is a valid out-pointer.
        let status = NtStatus::from_raw(unsafe {
            NmrRegisterClient(
                CLIENT_CHARACTERISTICS.get(),
                ptr::from_ref(bindings).cast_mut().cast(),
                &raw mut handle,
            )
        });
        if let Err(status) = status.into_result() {
            log!(
                DPFLTR_ERROR_LEVEL,
                "NmrRegisterClient failed: 0x%08X",
                status.bits()
            );
            return Err(status);
        }
        let Some(handle) = NonNull::new(handle) else {
            log!(DPFLTR_ERROR_LEVEL, "NmrRegisterClient returned no handle");
            return Err(NtStatus::UNSUCCESSFUL);
        };
        // INVARIANT: a fresh registration handle.
        Ok(Self { handle })
    }

    /// Deregisters and waits for every binding to be cleaned up; returns the first failure, or
    /// the status of the wait.
    ///
    /// IRQL: `PASSIVE_LEVEL` (the wait).
    #[must_use]
    pub fn deregister(self) -> NtStatus {
        let this = ManuallyDrop::new(self);
        this.deregister_and_wait()
    }

    fn deregister_and_wait(&self) -> NtStatus {
        let handle = self.handle.as_ptr();
        // SAFETY: by the type invariant, a live registration handle; IRQL <= DISPATCH_LEVEL.
        let status = NtStatus::from_raw(unsafe { NmrDeregisterClient(handle) });
        if status != NtStatus::PENDING {
            // STATUS_SUCCESS would mean done already; anything else is an error. Either way
            // there is nothing to wait for.
            if !status.is_success() {
                log!(
                    DPFLTR_ERROR_LEVEL,
                    "NmrDeregisterClient failed: 0x%08X",
                    status.bits()
                );
            }
            return status;
        }
        // SAFETY: PASSIVE_LEVEL; the handle was deregistered just above and is waited on once.
        let status = NtStatus::from_raw(unsafe { NmrWaitForClientDeregisterComplete(handle) });
        if !status.is_success() {
            log!(
                DPFLTR_ERROR_LEVEL,
                "NmrWaitForClientDeregisterComplete failed: 0x%08X",
                status.bits(),
            );
        }
        status
    }
}

impl Drop for ClientRegistration {
    /// IRQL: `PASSIVE_LEVEL`. A failure is logged; [`ClientRegistration::deregister`] returns it.
    fn drop(&mut self) {
        let _ = self.deregister_and_wait();
    }
}
