//! The NMR client registration: client `C`'s `NPI_CLIENT_CHARACTERISTICS`, built at compile time,
//! and [`Registration`], a guard that registers when created and deregisters (and waits) when
//! dropped.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, size_of};
use core::ptr::{self, NonNull};

use crate::attach::{ClientAttachProvider, client_context};
use crate::cleanup::ClientCleanupBindingContext;
use crate::client::{Backend, Client};
use crate::detach::ClientDetachProvider;
use crate::log::log;

use crate::status::{NtError, NtStatus};
use crate::sys::{
    DRIVER_OBJECT, HANDLE, MIT_GUID, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_u,
    NPI_REGISTRATION_INSTANCE, NPI_WSK_INTERFACE_ID, NmrDeregisterClient, NmrRegisterClient,
    NmrWaitForClientDeregisterComplete,
};
use crate::unload;
use crate::version::Dispatch;
use crate::wsk_register;

#[allow(clippy::cast_possible_truncation)] // 24 and 40 and 72 bytes
const fn size_u16<T>() -> u16 {
    size_of::<T>() as u16
}

/// The characteristics client `C` registers: a WSK NPI client with `C`'s module id, whose
/// callbacks are `C`'s monomorphised trampolines. A constant with a `'static` address: NMR reads
/// it until `NmrWaitForClientDeregisterComplete` returns.
pub struct Characteristics<C>(PhantomData<C>);

impl<C: Client> Characteristics<C> {
    /// The raw characteristics.
    pub const TABLE: &'static NPI_CLIENT_CHARACTERISTICS = &NPI_CLIENT_CHARACTERISTICS {
        Version: 0,
        Length: size_u16::<NPI_CLIENT_CHARACTERISTICS>(),
        ClientAttachProvider: Some(ClientAttachProvider::<C>),
        ClientDetachProvider: Some(ClientDetachProvider::<C>),
        ClientCleanupBindingContext: Some(ClientCleanupBindingContext::<C>),
        ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: size_u16::<NPI_REGISTRATION_INSTANCE>(),
            NpiId: &NPI_WSK_INTERFACE_ID,
            ModuleId: &NPI_MODULEID {
                Length: size_u16::<NPI_MODULEID>(),
                Type: MIT_GUID,
                u: NPI_MODULEID_u { Guid: C::MODULE_ID },
            },
            Number: 0,
            NpiSpecificCharacteristics: ptr::null(),
        },
    };
}

/// Why [`Registration::register`] gave no registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// `NmrRegisterClient` failed: nothing is registered. Fail `DriverEntry` with this status.
    Failed(NtError),
    /// `NmrRegisterClient` succeeded but returned no handle. The client is registered (and may be
    /// attached already) but can never be deregistered, so NMR may call into the image for as long
    /// as the system runs: the image must never unload. `DriverEntry` must return
    /// `STATUS_SUCCESS` and leave `DriverUnload` unset (the driver then cannot be stopped), which
    /// is what [`RegisterError::driver_entry_status`] tells it.
    NoHandle,
}

impl RegisterError {
    /// The status `DriverEntry` returns for this error: the failure, or `STATUS_SUCCESS` for
    /// [`RegisterError::NoHandle`] (failing `DriverEntry` would unmap an image NMR still calls).
    #[must_use]
    pub const fn driver_entry_status(self) -> NtStatus {
        match self {
            Self::Failed(error) => error.status(),
            Self::NoHandle => NtStatus::SUCCESS,
        }
    }
}

/// A registered NMR client `C`. Dropping it deregisters and waits until every binding is detached
/// and cleaned up.
pub struct Registration<C: Client> {
    // INVARIANT: NMR backend: the handle NmrRegisterClient returned, not yet deregistered;
    // WskRegister backend: None (the registration is in the client's state).
    handle: Option<NonNull<c_void>>,
    _client: PhantomData<C>,
}

// SAFETY: an NMR client handle may be deregistered from any thread.
unsafe impl<C: Client> Send for Registration<C> {}
// SAFETY: `&Registration` gives no access to the handle.
unsafe impl<C: Client> Sync for Registration<C> {}

impl<C: Client> Registration<C> {
    /// Starts client `C`'s run-time objects (its device object, on `driver`) and registers it with
    /// NMR, with `C::state()` as the client context. NMR may attach before this returns.
    ///
    /// The library takes `driver`'s `MajorFunction[IRP_MJ_INTERNAL_DEVICE_CONTROL]`: a request's
    /// IRP that no WSK provider took is sent to the client's device object and completed there
    /// (`crate::irp`). A driver with device objects of its own does not use that major function.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// [`crate::pool::select`] must have run first (the top of `DriverEntry`, like the WDK's
    /// `ExInitializeDriverRuntime`): NMR may attach, and so allocate, before this returns.
    ///
    /// # Errors
    /// [`RegisterError`]: read its variants — one of them must not fail `DriverEntry`.
    /// `Failed(STATUS_INVALID_DEVICE_STATE)` when [`crate::pool::select`] never ran.
    pub fn register(driver: &mut DRIVER_OBJECT) -> Result<Self, RegisterError> {
        // Fails the build when C::VERSIONS is malformed.
        let () = Dispatch::<C>::CHECK;
        if !C::state().pool.is_selected() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "register: call wsk_client::pool::select first (at the top of DriverEntry)"
            );
            return Err(RegisterError::Failed(NtError::INVALID_DEVICE_STATE));
        }
        if let Err(status) = C::state().runtime.start::<C>(driver) {
            return Err(RegisterError::Failed(status));
        }
        if C::BACKEND == Backend::WskRegister {
            if let Err(status) = wsk_register::register::<C>() {
                C::state().runtime.stop(&C::state().slots, false);
                return Err(RegisterError::Failed(status));
            }
            log!(
                C,
                DPFLTR_INFO_LEVEL,
                "registered as WSK client (WskRegister)"
            );
            // INVARIANT: the WskRegister backend has no NMR handle.
            return Ok(Self {
                handle: None,
                _client: PhantomData,
            });
        }
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; the characteristics are a constant with a 'static address and
        // the client context is the client's static state, both valid until after
        // deregistration completes; `handle` is a valid out-pointer.
        let status = NtStatus::from_raw(unsafe {
            NmrRegisterClient(
                Characteristics::<C>::TABLE,
                client_context::<C>().cast_mut(),
                &raw mut handle,
            )
        });
        if let Err(status) = status.into_result() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "NmrRegisterClient failed: 0x%08X",
                status.bits()
            );
            C::state().runtime.stop(&C::state().slots, false);
            return Err(RegisterError::Failed(status));
        }
        let Some(handle) = NonNull::new(handle) else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "NmrRegisterClient returned no handle: registered for good, the image must stay loaded"
            );
            return Err(RegisterError::NoHandle);
        };
        log!(C, DPFLTR_INFO_LEVEL, "registered as WSK NPI client");
        // INVARIANT: a fresh registration handle.
        Ok(Self {
            handle: Some(handle),
            _client: PhantomData,
        })
    }

    /// Unloads the client (the order is `unload.rs`'s): no new reference or work item;
    /// [`Client::on_detach`]; waits at `PASSIVE_LEVEL` until every reference is released and every
    /// work item finished; `NmrDeregisterClient` and `NmrWaitForClientDeregisterComplete`; deletes
    /// the device object. Returns the first failure, or the status of the wait.
    ///
    /// Before this, the driver stops its own work: it joins its threads and flushes its DPCs, so
    /// that nothing but the library's own contexts can still hold a reference.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    #[must_use]
    pub fn deregister(self) -> NtStatus {
        let this = ManuallyDrop::new(self);
        this.unload()
    }

    /// The unload, shared by [`Registration::deregister`] and the drop: one copy in the image
    /// (each caller's closure would otherwise make its own, inlined where it is called — the drop
    /// of a slot's previous value in `DriverEntry` included).
    fn unload(&self) -> NtStatus {
        unload::unload::<C>(|| self.deregister_backend())
    }

    /// Step 4 of the unload: the backend's deregistration.
    fn deregister_backend(&self) -> NtStatus {
        // On the compile-time backend, so that an image links only its own backend's imports.
        match (C::BACKEND, self.handle) {
            (Backend::Nmr, Some(handle)) => Self::deregister_nmr(handle),
            (Backend::WskRegister, _) => wsk_register::deregister::<C>(),
            (Backend::Nmr, None) => {
                log!(C, DPFLTR_ERROR_LEVEL, "deregister: no NMR handle");
                NtStatus::INVALID_DEVICE_STATE
            }
        }
    }

    /// `NmrDeregisterClient`, then `NmrWaitForClientDeregisterComplete` whenever the former
    /// succeeded: `STATUS_PENDING` is what Windows returns, but a success says the deregistration
    /// began as well, and only the wait says it ended.
    fn deregister_nmr(handle: NonNull<c_void>) -> NtStatus {
        let handle = handle.as_ptr();
        // SAFETY: by the type invariant, a live registration handle; IRQL <= DISPATCH_LEVEL.
        let status = NtStatus::from_raw(unsafe { NmrDeregisterClient(handle) });
        if !status.is_success() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "NmrDeregisterClient failed: 0x%08X",
                status.bits()
            );
            return status;
        }
        // SAFETY: PASSIVE_LEVEL; the handle was deregistered just above and is waited on once.
        let status = NtStatus::from_raw(unsafe { NmrWaitForClientDeregisterComplete(handle) });
        if !status.is_success() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "NmrWaitForClientDeregisterComplete failed: 0x%08X",
                status.bits(),
            );
        }
        status
    }
}

impl<C: Client> Drop for Registration<C> {
    /// IRQL: `PASSIVE_LEVEL`. A failure is logged; [`Registration::deregister`] returns it.
    fn drop(&mut self) {
        let _ = self.unload();
    }
}
