//! `wsk_echo_server.sys`: Microsoft's WSK sample echosrv, in async Rust on `wsk-client` — a TCP
//! echo server. `DriverEntry` reads its parameters (`Port`, `MaxConnections`, `Address`:
//! `parameters.rs`), registers as a WSK client (raw NMR, or `WskRegister` with the `wsk-register`
//! feature) and starts the server (`server.rs`): a listening task that accepts, and a task per
//! connection that echoes every byte it receives. `DriverUnload` deregisters: the stop cancels
//! every task (each closes its socket) and waits for them, then logs the live pool allocations.
//!
//! Kernel build (`cfg(wsk_kernel)`): `no_std`, exports `DriverEntry`, brings the panic handler and
//! `_fltused`. Host build: the unit tests run the same entry points against `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
use wsk_client::sys::{DRIVER_OBJECT, GUID, NTSTATUS, UNICODE_STRING};
use wsk_client::{
    Backend, Client, ClientState, DetachNotice, DriverCell, NtStatus, PoolTag, Registration,
    WskVersion, dbg_print, guid,
};

mod parameters;
mod server;

/// The echo server as a WSK client.
pub struct WskEchoServer;

impl Client for WskEchoServer {
    const NAME: &'static core::ffi::CStr = c"wsk_echo_server";
    /// {5E7A1C42-0B9D-4E63-8F21-7A4C9D3E6B15}: its own, not the other drivers'.
    const MODULE_ID: GUID = guid(0x5E7A_1C42_0B9D_4E63_8F21_7A4C_9D3E_6B15);
    /// The binding context's tag (the library derives its others from it: `SrvW`, `SrvT`, ...).
    const POOL_TAG: PoolTag = PoolTag::new(*b"SrvB");
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

    /// A detach or the unload began: cancel the listening task and every connection's.
    fn on_detach(_notice: DetachNotice) {
        server::stop();
    }
}

static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();

static REGISTRATION: DriverCell<Registration<WskEchoServer>> = DriverCell::new();

/// `DRIVER_INITIALIZE`: reads the parameters, registers the client, starts the server.
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
    let _ = wsk_client::pool::select::<WskEchoServer>();
    server::reset();
    // The parameters (a problem is logged as `listen failed: parameters`; the driver loads and
    // serves nothing).
    // SAFETY: the I/O manager passes the service key's path, valid for DriverEntry.
    let parameters = parameters::read(unsafe { RegistryPath.as_ref() });
    let registration = match Registration::<WskEchoServer>::register(driver) {
        Ok(registration) => registration,
        Err(error) => return error.driver_entry_status().raw(),
    };
    // SAFETY: DriverEntry; DriverUnload is not set yet, so nothing else touches the cell.
    drop(unsafe { REGISTRATION.set(registration) });
    driver.DriverUnload = Some(DriverUnload);
    if let Some(parameters) = parameters {
        server::start(parameters);
    }
    NtStatus::SUCCESS.raw()
}

/// `DRIVER_UNLOAD`: deregisters — the stop cancels every task and the deregistration waits until
/// each has closed its socket and every binding is gone — then logs the live pool allocations.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager after a successful `DriverEntry`, never concurrently with it.
#[allow(non_snake_case)]
unsafe extern "system" fn DriverUnload(_DriverObject: *mut DRIVER_OBJECT) {
    // SAFETY: DriverUnload, after DriverEntry returned: nothing else touches the cell.
    if let Some(registration) = unsafe { REGISTRATION.take() } {
        // Deregistration failures are logged by the library; DriverUnload returns no status.
        let _ = registration.deregister();
    }
    #[allow(clippy::cast_possible_truncation)] // a handful at most
    let live = WskEchoServer::state().live_allocations() as u32;
    // SAFETY: `%u` takes the `u32`; no Unicode conversion.
    let _ = unsafe {
        dbg_print!(
            WskEchoServer,
            DPFLTR_INFO_LEVEL,
            "unloaded, live pool allocations: %u",
            live
        )
    };
}

/// The panic handler of the image: bug check "RPNC" with the source location, like the other
/// drivers' (no path reaches it; `cargo xtask check-image` proves none is linked).
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
