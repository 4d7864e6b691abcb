//! Kernel-image glue (kernel build only): the exported `DriverEntry`, the panic handler, and the
//! symbols a `no_std` image needs.

use crate::abi::{DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};
use crate::status::NtStatus;

/// `DRIVER_INITIALIZE`: the image's entry point.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called once by the I/O manager with a valid `DRIVER_OBJECT`.
// SAFETY: `DriverEntry` is the one name the linker's /ENTRY expects; nothing else defines it.
#[unsafe(export_name = "DriverEntry")]
#[allow(non_snake_case)]
pub unsafe extern "system" fn DriverEntry(
    DriverObject: *mut DRIVER_OBJECT,
    _RegistryPath: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager passes the driver's own DRIVER_OBJECT, exclusively, for this call.
    let Some(driver) = (unsafe { DriverObject.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // SAFETY: the I/O manager runs DriverEntry once, never concurrently with DriverUnload.
    unsafe { crate::entry::driver_entry(driver) }.raw()
}

/// No reachable path panics (clippy denies `unwrap`, `expect`, `panic!` and indexing in the
/// driver, and `cargo xtask check-image` proves no panic machinery is linked into the image);
/// should one ever be reached, the CPU spins here instead of unwinding. The Windows build with the
/// WDK uses `wdk-panic`'s handler instead (it bugchecks), see `wdk_glue.rs`.
#[cfg(not(feature = "wdk"))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

// The MSVC floating-point marker that `core` and `compiler_builtins` reference; the kernel uses no
// floating point, so a plain definition satisfies the linker. Defined in assembly rather than as a
// `#[no_mangle]` static so that the cdylib does not export it: the image's only export is
// `DriverEntry`. With the `wdk` feature, wdk-sys defines it.
#[cfg(not(feature = "wdk"))]
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
);
