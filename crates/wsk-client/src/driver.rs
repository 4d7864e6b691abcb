//! A WSK driver in safe code: implement [`Driver`] for the driver's type (its [`Client`]
//! identity and what it keeps from `DriverEntry` to `DriverUnload`), and write
//! [`driver!`](macro@crate::driver)`(MyDriver);` once. The macro generates the image's entry points,
//! which call the library's:
//!
//! - `DriverEntry` ([`entry`]): selects the pool routine (the WDK's `ExInitializeDriverRuntime`),
//!   calls [`Driver::load`] with the service key, registers the client (NMR may attach it before
//!   the registration returns), sets `DriverUnload`, then calls [`Driver::start`]. A failure of
//!   either step fails `DriverEntry` with its status, with nothing left registered, allocated or
//!   running.
//! - `DriverUnload` (`unload`): deregisters — the library's stop runs [`Client::on_detach`] and
//!   waits until every binding is detached and cleaned up, and every task has ended — then drops
//!   the driver's value (its `Drop` is the driver's teardown), then logs `unloaded, live pool
//!   allocations: N` (0 when healthy).
//!
//! and brings the image's panic handler and `_fltused` (crate `wsk-rt`, unless the driver is built
//! with windows-drivers-rs's `wdk-panic`: feature `wdk`).
//!
//! ```
//! use wsk_client::registry::ServiceKey;
//! use wsk_client::{Client, ClientState, Driver, NtError, PoolTag, WskVersion, guid};
//! use wsk_client::binding::BindingSlot;
//!
//! pub struct MyDriver;
//!
//! impl Client for MyDriver {
//!     const NAME: &'static core::ffi::CStr = c"my_driver";
//!     const MODULE_ID: wsk_client::sys::GUID = guid(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
//!     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
//!     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
//!     fn state() -> &'static ClientState {
//!         static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();
//!         &STATE
//!     }
//! }
//!
//! impl Driver for MyDriver {
//!     fn load(_service: ServiceKey<'_>) -> Result<Self, NtError> {
//!         wsk_client::info!(MyDriver, "loading");
//!         Ok(MyDriver)
//!     }
//! }
//!
//! // In the driver crate's root (the crate depends on `wsk-rt` too):
//! // wsk_client::driver!(MyDriver);
//! ```
//!
//! IRQL: `PASSIVE_LEVEL` (where the I/O manager calls `DriverEntry` and `DriverUnload`).

use crate::client::Client;
use crate::driver_cell::DriverCell;
use crate::log::log;
use crate::registration::{RegisterError, Registration};
use crate::registry::ServiceKey;
use crate::status::{NtError, NtStatus};
use crate::sys::{DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};

/// A kernel driver built on the library: what it does in `DriverEntry` and keeps until
/// `DriverUnload`. The value (`Self`) is made by [`Driver::load`] before the client registers
/// and dropped after it deregistered; its `Drop` is the driver's teardown.
///
/// No method runs inside an NMR callback: the library calls them from the entry points only.
pub trait Driver: Client + Sized + Send + 'static {
    /// `DriverEntry`, before the client registers: reads the driver's parameters under `service`
    /// and sets up what it keeps. An error fails `DriverEntry` with its status (say why in a log
    /// line first: the library adds none).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// The status `DriverEntry` returns.
    fn load(service: ServiceKey<'_>) -> Result<Self, NtError>;

    /// `DriverEntry`, once the client is registered (a provider may be attached already):
    /// starts the driver's tasks. Nothing to do by default.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    fn start(&mut self) {}
}

/// What a driver keeps from `DriverEntry` to `DriverUnload`: its registration, then its value
/// (taken apart in that order).
pub struct Loaded<D: Driver> {
    registration: Registration<D>,
    driver: D,
}

/// Where [`driver!`](macro@crate::driver) keeps a driver's [`Loaded`] (a static of the driver crate;
/// only the entry points touch it).
pub struct Slot<D: Driver>(DriverCell<Loaded<D>>);

impl<D: Driver> Slot<D> {
    /// Empty.
    #[must_use]
    pub const fn new() -> Self {
        Self(DriverCell::new())
    }
}

impl<D: Driver> Default for Slot<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// The driver's [`Slot`], which [`driver!`](macro@crate::driver) declares. Not implemented by hand.
pub trait Kept: Driver {
    /// The driver's slot.
    fn slot() -> &'static Slot<Self>;
}

/// `DRIVER_INITIALIZE` for driver `D` (see the module): what the `DriverEntry` that
/// [`driver!`](macro@crate::driver) generates calls.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called once, from `DriverEntry`, with the I/O manager's arguments (the driver's own
/// `DRIVER_OBJECT`, exclusively, and its service key's path, both valid for the call), never
/// concurrently with `DriverUnload`.
pub unsafe fn entry<D: Kept>(
    object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager's DRIVER_OBJECT, exclusively ours for this call (the contract).
    let Some(object) = (unsafe { object.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // First: the pool routine and type for this system (the WDK's ExInitializeDriverRuntime).
    let _ = crate::pool::select::<D>();
    // SAFETY: the service key's path, valid for DriverEntry (the contract).
    let service = ServiceKey::new(unsafe { registry_path.as_ref() });
    let mut driver = match D::load(service) {
        Ok(driver) => driver,
        Err(status) => return status.raw(),
    };
    let registration = match Registration::<D>::register(object) {
        Ok(registration) => registration,
        Err(error) => {
            // NoHandle returns STATUS_SUCCESS without DriverUnload: the image stays loaded for
            // good (a registration nobody can remove), and the driver's value with it.
            if error == RegisterError::NoHandle {
                core::mem::forget(driver);
            }
            return error.driver_entry_status().raw();
        }
    };
    driver.start();
    // SAFETY: DriverEntry, before DriverUnload is set: nothing else touches the slot.
    let previous = unsafe {
        D::slot().0.set(Loaded {
            registration,
            driver,
        })
    };
    // A slot holds one load at a time: DriverUnload emptied it (a second load, in tests).
    drop(previous);
    object.DriverUnload = Some(unload::<D>);
    NtStatus::SUCCESS.raw()
}

/// `DRIVER_UNLOAD` for driver `D` (see the module); set by [`entry`].
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager after a successful `DriverEntry`, never concurrently with it.
unsafe extern "system" fn unload<D: Kept>(_object: *mut DRIVER_OBJECT) {
    // SAFETY: DriverUnload, after DriverEntry returned: nothing else touches the slot.
    let loaded = unsafe { D::slot().0.take() };
    if let Some(Loaded {
        registration,
        driver,
    }) = loaded
    {
        // Deregistration failures are logged by the library; DriverUnload returns no status.
        let _ = registration.deregister();
        drop(driver);
    }
    #[allow(clippy::cast_possible_truncation)] // a handful at most
    let live = D::state().live_allocations() as u32;
    log!(
        D,
        DPFLTR_INFO_LEVEL,
        "unloaded, live pool allocations: %u",
        live
    );
}

/// Generates the image's entry points for driver type `$driver` (which implements [`Driver`]):
/// `DriverEntry` (exported; calls [`entry`]) and, through it, `DriverUnload`; the slot that
/// keeps the driver's value between them; and, in the kernel build without the WDK, the
/// panic handler and `_fltused` of crate `wsk-rt` (a dependency of the driver crate). Written
/// once, in the driver crate's root: `wsk_client::driver!(MyDriver);`.
#[macro_export]
macro_rules! driver {
    ($driver:ty) => {
        const _: () = {
            static SLOT: $crate::driver::Slot<$driver> = $crate::driver::Slot::new();
            impl $crate::driver::Kept for $driver {
                fn slot() -> &'static $crate::driver::Slot<Self> {
                    &SLOT
                }
            }
        };

        /// `DRIVER_INITIALIZE`: see `wsk_client::driver`.
        ///
        /// # Safety
        /// Called once by the I/O manager (or a test), with a valid `DRIVER_OBJECT` and
        /// service key path, never concurrently with `DriverUnload`.
        // SAFETY: `DriverEntry` is the one name the linker's /ENTRY expects; nothing else
        // defines it.
        #[cfg_attr(wsk_kernel, unsafe(export_name = "DriverEntry"))]
        #[allow(non_snake_case)]
        pub unsafe extern "system" fn DriverEntry(
            DriverObject: *mut $crate::sys::DRIVER_OBJECT,
            RegistryPath: *const $crate::sys::UNICODE_STRING,
        ) -> $crate::sys::NTSTATUS {
            // SAFETY: the I/O manager's arguments, passed on as they came (the contract above).
            unsafe { $crate::driver::entry::<$driver>(DriverObject, RegistryPath) }
        }

        // The panic handler (bug check "RPNC") and `_fltused`; with the WDK, wdk-panic's and
        // wdk-sys's instead.
        #[cfg(all(wsk_kernel, not(feature = "wdk")))]
        extern crate wsk_rt as _;
    };
}
