//! `wsk_attach.sys`: the seed driver. It does what Microsoft's "Attaching a WSK Application to the
//! WSK Subsystem" describes — `DriverEntry` registers an NPI client of WSK with NMR; NMR attaches
//! it to the WSK provider, with a fallback to an older WSK version; `DriverUnload` deregisters and
//! waits until every binding is detached and cleaned up — through the `wsk-client` library, which
//! does the work. What is left here is the driver's identity and its entry points.
//!
//! Kernel build (`cfg(wsk_kernel)`): `no_std`, exports `DriverEntry`, brings the panic handler and
//! `_fltused`; with the WDK (feature `wdk`) `wdk_glue.rs` brings windows-drivers-rs's instead.
//! Host build: the same `DriverEntry`/`DriverUnload`, run by the unit tests against
//! `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
#[cfg(not(feature = "no-log"))]
use wsk_client::dbg_print;
use wsk_client::sys::{DRIVER_OBJECT, GUID, NTSTATUS, UNICODE_STRING};
use wsk_client::{
    Client, ClientState, DriverCell, NtStatus, PoolTag, Registration, WskVersion, guid,
};

/// The seed driver as a WSK client.
pub struct WskAttach;

impl Client for WskAttach {
    const NAME: &'static core::ffi::CStr = c"wsk_attach";
    /// {4D636F0B-B15B-48CA-8894-FB0987DBE869}. A driver built from this one needs a GUID of its own.
    const MODULE_ID: GUID = guid(0x4D63_6F0B_B15B_48CA_8894_FB09_87DB_E869);
    const POOL_TAG: PoolTag = PoolTag::new(*b"WskA");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];

    fn state() -> &'static ClientState {
        &STATE
    }
}

/// Four bindings: Windows has one WSK provider; the spares cover a provider that re-registers
/// before its old binding is cleaned up.
static STATE: ClientState<[BindingSlot; 4]> = ClientState::new();

/// The registration, from `DriverEntry` to `DriverUnload`.
static REGISTRATION: DriverCell<Registration<WskAttach>> = DriverCell::new();

/// `DRIVER_INITIALIZE`: registers the NMR client and sets `DriverUnload`. On failure nothing
/// stays registered or allocated, and the status is `NmrRegisterClient`'s.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called once by the I/O manager with a valid `DRIVER_OBJECT`, never concurrently with
/// `DriverUnload`.
// SAFETY: `DriverEntry` is the one name the linker's /ENTRY expects; nothing else defines it.
#[cfg_attr(wsk_kernel, unsafe(export_name = "DriverEntry"))]
#[allow(non_snake_case)]
pub unsafe extern "system" fn DriverEntry(
    DriverObject: *mut DRIVER_OBJECT,
    _RegistryPath: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager passes the driver's own DRIVER_OBJECT, exclusively, for this call.
    let Some(driver) = (unsafe { DriverObject.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // First: the pool routine and type for this system (the WDK's ExInitializeDriverRuntime).
    let _ = wsk_client::pool::select::<WskAttach>();
    let registration = match Registration::<WskAttach>::register(driver) {
        Ok(registration) => registration,
        // NoHandle returns STATUS_SUCCESS without DriverUnload: the image must stay loaded.
        Err(error) => return error.driver_entry_status().raw(),
    };
    // SAFETY: DriverEntry; DriverUnload is not set yet, so nothing else touches the cell.
    drop(unsafe { REGISTRATION.set(registration) });
    driver.DriverUnload = Some(DriverUnload);
    NtStatus::SUCCESS.raw()
}

/// `DRIVER_UNLOAD`: deregisters and waits until every binding is detached and cleaned up, then
/// logs the number of live pool allocations (0 when healthy; not with the feature `no-log`).
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager after a successful `DriverEntry`, never concurrently with it.
#[allow(non_snake_case)]
unsafe extern "system" fn DriverUnload(_DriverObject: *mut DRIVER_OBJECT) {
    // SAFETY: DriverUnload, after DriverEntry returned: nothing else touches the cell.
    if let Some(registration) = unsafe { REGISTRATION.take() } {
        // Deregistration failures are logged by the library; DriverUnload has no status to return.
        let _ = registration.deregister();
    }
    log_unloaded();
}

/// The last line of `DriverUnload`: the number of live pool allocations (0 when healthy).
#[cfg(not(feature = "no-log"))]
fn log_unloaded() {
    #[allow(clippy::cast_possible_truncation)] // a handful at most
    let live = WskAttach::state().live_allocations() as u32;
    // SAFETY: `%u` takes the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskAttach,
            DPFLTR_INFO_LEVEL,
            "unloaded, live pool allocations: %u",
            live
        )
    };
}

/// Feature `no-log`: the line is compiled out with the library's.
#[cfg(feature = "no-log")]
fn log_unloaded() {}

/// No reachable path panics (clippy denies `unwrap`, `expect`, `panic!` and indexing, and
/// `cargo xtask check-image` proves no panic machinery is linked into the image). Should one ever
/// be reached, the system stops with bug check `0x52504E43` ("RPNC", Rust panic) and the source
/// location in the parameters, as windows-drivers-rs's wdk-panic does (used instead with the WDK).
#[cfg(all(wsk_kernel, not(feature = "wdk")))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    const RUST_PANIC_BUGCHECK_CODE: u32 = u32::from_be_bytes(*b"RPNC");
    let (file, file_len, line, column) = info.location().map_or((0, 0, 0, 0), |location| {
        (
            location.file().as_ptr() as usize,
            location.file().len(),
            location.line() as usize,
            location.column() as usize,
        )
    });
    // SAFETY: KeBugCheckEx may be called at any IRQL and takes any parameters.
    unsafe { wsk_client::sys::KeBugCheckEx(RUST_PANIC_BUGCHECK_CODE, file, file_len, line, column) }
}

// The MSVC floating-point marker that `core` and `compiler_builtins` reference; the kernel uses no
// floating point, so a plain definition satisfies the linker. Defined in assembly rather than as a
// `#[no_mangle]` static so that the cdylib does not export it: the image's only export is
// `DriverEntry`. With the `wdk` feature, wdk-sys defines it.
#[cfg(all(wsk_kernel, not(feature = "wdk")))]
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
);

#[cfg(feature = "wdk")]
mod wdk_glue;

#[cfg(test)]
mod tests;
