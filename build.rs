//! Build script: chooses between the kernel build and the host build.
//!
//! - Target OS Windows: the kernel image. Sets `cfg(wsk_kernel)` (the crate becomes `no_std` and
//!   imports ntoskrnl.exe / NETIO.SYS through raw-dylib) and passes the linker the flags of a WDM
//!   driver. Link arguments come from here, not from RUSTFLAGS, so changing them does not rebuild
//!   `core`.
//! - Any other target: the host build for tests. Compiles `src/host_model/dbgprint.c`, the
//!   variadic `DbgPrintEx` of the host model (stable Rust cannot define a C-variadic function).

use std::env;

/// Linker arguments for a WDM driver image (lld-link / link.exe syntax). The set wdk-build
/// passes, plus what a driver built without the WDK's default libraries needs.
const KERNEL_LINK_ARGS: &[&str] = &[
    "/NODEFAULTLIB",
    "/DRIVER",
    "/KERNEL",
    "/SUBSYSTEM:NATIVE,10.00",
    "/ENTRY:DriverEntry",
    "/INTEGRITYCHECK",
    "/DYNAMICBASE",
    "/NXCOMPAT",
    "/TSAWARE:NO",
    "/MANIFEST:NO",
    "/RELEASE",
    "/OPT:REF,ICF",
    "/MERGE:.edata=.rdata",
    "/MERGE:.rustc=.data",
    "/IGNORE:4257",
    "/IGNORE:4216",
    "/MAP",
    // rustc asks for a PDB; the Linux image carries no debug directory (the Windows build makes one).
    "/DEBUG:NONE",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(wsk_kernel)");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "windows" {
        println!("cargo::rustc-cfg=wsk_kernel");
        for arg in KERNEL_LINK_ARGS {
            println!("cargo::rustc-cdylib-link-arg={arg}");
        }
    } else {
        println!("cargo::rerun-if-changed=src/host_model/dbgprint.c");
        cc::Build::new()
            .file("src/host_model/dbgprint.c")
            .warnings(true)
            .compile("wsk_host_dbgprint");
    }
}
