//! wsk-rt: what a Rust WDM driver image needs from a runtime when it is built without the WDK
//! (windows-drivers-rs's `wdk-panic` and `wdk-sys` bring the same with it):
//!
//! - the **panic handler**: no reachable path of a driver built on `wsk-client` panics (clippy
//!   denies `unwrap`, `expect`, `panic!` and indexing, and `cargo xtask check-image` proves that
//!   no panic machinery is linked into an image). Should one ever be reached, the system stops
//!   with bug check `0x52504E43` ("RPNC", Rust panic) and the source location (file address,
//!   length, line, column) in its parameters, as wdk-panic does;
//! - **`_fltused`**, the MSVC floating-point marker that `core` and `compiler_builtins`
//!   reference; a kernel driver uses no floating point, so a plain definition satisfies the
//!   linker. It is defined in assembly rather than as a `#[no_mangle]` static so that the image
//!   does not export it: a driver's only export is `DriverEntry`.
//!
//! A driver links it by naming it once: `wsk_client::driver!` does, in the kernel build
//! (`cfg(wsk_kernel)`) without the feature `wdk`; the test provider `NETIO.SYS` under
//! `tests/wine` writes `extern crate wsk_rt as _;`. Both items exist only for Windows targets:
//! on the host, std brings its own.

#![no_std]

/// Bug check code of a Rust panic: "RPNC", as windows-drivers-rs's wdk-panic.
pub const RUST_PANIC_BUGCHECK_CODE: u32 = u32::from_be_bytes(*b"RPNC");

#[cfg(all(target_os = "windows", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let (file, file_len, line, column) = info.location().map_or((0, 0, 0, 0), |location| {
        (
            location.file().as_ptr() as usize,
            location.file().len(),
            location.line() as usize,
            location.column() as usize,
        )
    });
    // SAFETY: KeBugCheckEx may be called at any IRQL and takes any parameters.
    unsafe { wsk_sys::KeBugCheckEx(RUST_PANIC_BUGCHECK_CODE, file, file_len, line, column) }
}

#[cfg(target_os = "windows")]
core::arch::global_asm!(
    ".section .rdata,\"dr\"",
    ".globl _fltused",
    ".p2align 2",
    "_fltused:",
    ".long 0",
);
