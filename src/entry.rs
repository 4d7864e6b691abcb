//! The bodies of `DriverEntry` and `DriverUnload`: register the NMR client, and on unload
//! deregister it, wait for every binding to be cleaned up, and report the pool balance.
//!
//! The exported `DriverEntry` itself is in `driver.rs` (kernel build only); everything here also
//! runs on the host, against `crate::host_model`.

use core::cell::UnsafeCell;

use crate::abi::DRIVER_OBJECT;
use crate::binding::BINDINGS;
use crate::log::log;
use crate::pool::{self, Allocator};
use crate::registration::ClientRegistration;
use crate::status::NtStatus;

/// The registration made by `DriverEntry`, dropped by `DriverUnload`.
struct RegistrationCell(UnsafeCell<Option<ClientRegistration>>);

// SAFETY: only `driver_entry` and `unload` touch it, and the I/O manager never runs a driver's
// DriverEntry and DriverUnload concurrently (their callers' contracts below).
unsafe impl Sync for RegistrationCell {}

static REGISTRATION: RegistrationCell = RegistrationCell(UnsafeCell::new(None));

/// The body of `DriverEntry`: choose the pool allocator, register the NMR client, set
/// `DriverUnload`. On failure nothing stays registered or allocated, and the status is
/// `NmrRegisterClient`'s.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Not concurrent with itself or [`unload`] (the I/O manager's guarantee for a driver's entry and
/// unload routines).
pub unsafe fn driver_entry(driver: &mut DRIVER_OBJECT) -> NtStatus {
    match pool::select_allocator() {
        Allocator::Pool2 => log!(DPFLTR_INFO_LEVEL, "pool: ExAllocatePool2"),
        Allocator::PoolWithTag => log!(
            DPFLTR_INFO_LEVEL,
            "pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"
        ),
    }
    let registration = match ClientRegistration::register(&BINDINGS) {
        Ok(registration) => registration,
        Err(status) => return status,
    };
    // SAFETY: per this function's contract, nothing else accesses REGISTRATION now.
    let previous = unsafe { (*REGISTRATION.0.get()).replace(registration) };
    drop(previous);
    driver.DriverUnload = Some(DriverUnload);
    log!(DPFLTR_INFO_LEVEL, "registered as WSK NPI client");
    NtStatus::SUCCESS
}

/// `DRIVER_UNLOAD`.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager, after a successful `DriverEntry`, never concurrently with it.
#[allow(non_snake_case)]
pub unsafe extern "system" fn DriverUnload(_DriverObject: *mut DRIVER_OBJECT) {
    // SAFETY: per this function's contract.
    unsafe { unload() };
}

/// The body of `DriverUnload`: deregister the NMR client and wait until every binding is detached
/// and cleaned up; then log the number of live pool allocations (0 when healthy). Returns the
/// deregistration status (`STATUS_SUCCESS` when nothing was registered).
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Not concurrent with itself or [`driver_entry`].
pub unsafe fn unload() -> NtStatus {
    // SAFETY: per this function's contract, nothing else accesses REGISTRATION now.
    let registration = unsafe { (*REGISTRATION.0.get()).take() };
    let status = registration.map_or(NtStatus::SUCCESS, ClientRegistration::deregister);
    #[allow(clippy::cast_possible_truncation)] // a handful at most
    let live = pool::live_allocations() as u32;
    log!(
        DPFLTR_INFO_LEVEL,
        "unloaded, live pool allocations: %u",
        live
    );
    status
}
