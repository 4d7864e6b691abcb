//! `wsk_echo.sys`: an example driver that embeds `wsk-client` with an identity of its own (module
//! GUID, pool tags, log prefix `wsk_echo`), attaching through raw NMR or, with the `wsk-register`
//! feature, through `WskRegister`, and chains its own setup and teardown around the client's
//! registration: `DriverEntry` sets up the driver's context, then registers;
//! `DriverUnload` deregisters (waiting for every binding), then tears the context down.
//!
//! Kernel build (`cfg(wsk_kernel)`): `no_std`, exports `DriverEntry`, brings the panic handler and
//! `_fltused`. Host build: the unit tests run the same entry points against `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
use wsk_client::pool::PoolBox;
use wsk_client::sys::{DRIVER_OBJECT, GUID, NTSTATUS, UNICODE_STRING};
use wsk_client::{
    Backend, Client, ClientState, DetachNotice, DriverCell, NtStatus, PoolTag, Registration,
    WskVersion, dbg_print, guid,
};

mod connection;
mod parameters;
mod stream;
mod values;

/// The example driver as a WSK client.
pub struct WskEcho;

impl Client for WskEcho {
    const NAME: &'static core::ffi::CStr = c"wsk_echo";
    /// {9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718}: not the seed driver's.
    const MODULE_ID: GUID = guid(0x9A3C_5E21_6B7D_4F80_A1B2_C3D4_E5F6_0718);
    /// The binding context's tag.
    const POOL_TAG: PoolTag = PoolTag::new(*b"EchB");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
    /// Raw NMR by default; `WskRegister` with the `wsk-register` feature.
    const BACKEND: Backend = if cfg!(feature = "wsk-register") {
        Backend::WskRegister
    } else {
        Backend::Nmr
    };

    fn state() -> &'static ClientState {
        &STATE
    }

    /// A detach or the unload began: cancel the connection's task (which closes it).
    fn on_detach(notice: DetachNotice) {
        connection::on_detach(notice);
    }
}

/// The tag of the driver's own context (one tag per purpose).
const DRIVER_CONTEXT_TAG: PoolTag = PoolTag::new(*b"EchG");

// One tag per purpose: the driver's own differ from each other and from every tag the library
// allocates with for it (binding contexts, work items, requests, buffers, names).
const _: () = assert!(wsk_client::pool::distinct(
    &WskEcho::LIBRARY_TAGS,
    &[DRIVER_CONTEXT_TAG, connection::PARAMETERS_TAG]
));

static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();

/// What the driver sets up for itself before it registers (later: the echo parameters and
/// connection).
struct EchoContext {
    /// Start/stop cycles seen; a placeholder for the echo state to come.
    started: u32,
}

/// The driver's context and its registration, from `DriverEntry` to `DriverUnload`, which takes
/// them apart in order: deregister first (bindings may still use the context), then free.
struct Loaded {
    registration: Registration<WskEcho>,
    context: PoolBox<EchoContext>,
}

static LOADED: DriverCell<Loaded> = DriverCell::new();

/// `DRIVER_INITIALIZE`: sets up the driver's context, then registers the NMR client.
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
    RegistryPath: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager passes the driver's own DRIVER_OBJECT, exclusively, for this call.
    let Some(driver) = (unsafe { DriverObject.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // First: the pool routine and type for this system (the WDK's ExInitializeDriverRuntime).
    let _ = wsk_client::pool::select::<WskEcho>();
    connection::reset();
    // The driver's own setup first...
    let context = match PoolBox::try_new::<WskEcho>(EchoContext { started: 1 }, DRIVER_CONTEXT_TAG)
    {
        Ok(context) => context,
        Err(status) => {
            // SAFETY: no argument; no Unicode conversion.
            let _ = unsafe { dbg_print!(WskEcho, DPFLTR_ERROR_LEVEL, "setup failed: no pool") };
            return status.raw();
        }
    };
    // SAFETY: the context was just initialised and nothing else sees it yet.
    let started = unsafe { (*context.as_ptr()).started };
    // SAFETY: `%u` takes the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskEcho,
            DPFLTR_INFO_LEVEL,
            "setup: driver context ready (start %u)",
            started
        )
    };
    // The echo parameters (a problem is logged; the driver loads anyway and echoes nothing).
    // SAFETY: the I/O manager passes the service key's path, valid for DriverEntry.
    let parameters = unsafe { RegistryPath.as_ref() }.and_then(parameters::read);
    // ... then the client's registration, which may attach before it returns.
    let registration = match Registration::<WskEcho>::register(driver) {
        Ok(registration) => registration,
        Err(error) => {
            // NoHandle leaves the image loaded for good, and the context with it.
            if error == wsk_client::RegisterError::NoHandle {
                core::mem::forget(context);
            }
            return error.driver_entry_status().raw();
        }
    };
    // SAFETY: DriverEntry; DriverUnload is not set yet, so nothing else touches the cell.
    drop(unsafe {
        LOADED.set(Loaded {
            registration,
            context,
        })
    });
    driver.DriverUnload = Some(DriverUnload);
    // Then the connection, a task of the driver's (a failure is logged; the driver stays
    // loaded: the exchange's result line says what happened).
    let _ = connection::start(parameters);
    NtStatus::SUCCESS.raw()
}

/// `DRIVER_UNLOAD`: deregisters (waiting until every binding is detached and cleaned up), then
/// tears down the driver's context, then logs the number of live pool allocations.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager after a successful `DriverEntry`, never concurrently with it.
#[allow(non_snake_case)]
unsafe extern "system" fn DriverUnload(_DriverObject: *mut DRIVER_OBJECT) {
    // SAFETY: DriverUnload, after DriverEntry returned: nothing else touches the cell.
    let loaded = unsafe { LOADED.take() };
    if let Some(Loaded {
        registration,
        context,
    }) = loaded
    {
        // Deregistration failures are logged by the library; DriverUnload returns no status.
        let _ = registration.deregister();
        drop(context);
        // SAFETY: no argument; no Unicode conversion.
        let _ = unsafe { dbg_print!(WskEcho, DPFLTR_INFO_LEVEL, "teardown: driver context freed") };
    }
    #[allow(clippy::cast_possible_truncation)] // a handful at most
    let live = WskEcho::state().live_allocations() as u32;
    // SAFETY: `%u` takes the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskEcho,
            DPFLTR_INFO_LEVEL,
            "unloaded, live pool allocations: %u",
            live
        )
    };
}

/// The panic handler of the image: bug check "RPNC" with the source location, like the seed
/// driver's (no path reaches it; `cargo xtask check-image` proves none is linked).
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

// `_fltused`, defined in assembly so that the image exports only `DriverEntry` (see the seed
// driver). With the `wdk` feature, wdk-sys defines it.
#[cfg(all(wsk_kernel, not(feature = "wdk")))]
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
);

// With the WDK: windows-drivers-rs's panic handler and allocator, as in the seed driver.
#[cfg(feature = "wdk")]
use wdk_panic as _;

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(test)]
mod tests;
