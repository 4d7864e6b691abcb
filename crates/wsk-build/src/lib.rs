//! wsk-build: the build script of a Rust WDM driver built on `wsk-client` (see the README). A
//! driver crate's `build.rs`: `fn main() { wsk_build::configure_driver(); }`.
//!
//! - Kernel image: target OS Windows, and either a cross build (the Linux `cargo xtask` builds)
//!   or the driver's feature `wdk` (the Windows `cargo make`). Sets `cfg(wsk_kernel)`: the driver
//!   becomes `no_std`, with its `DriverEntry` export, and links `wsk-rt` (or `wdk-panic`).
//!   - Cross build: passes the linker the flags of a WDM driver ([`KERNEL_LINK_ARGS`]), from here
//!     rather than RUSTFLAGS so that changing them does not rebuild `core`, and a DOS stub.
//!   - `wdk`: `wdk_build::configure_wdk_binary_build()` passes its own (the same set).
//! - Otherwise the host build for tests: nothing to do (the host model is a dev-dependency).

/// Linker arguments (lld-link / link.exe syntax) for a WDM kernel image cross-built without the
/// WDK: the set wdk-build passes, plus what a driver built without the WDK's default libraries
/// needs. The drivers and the test `NETIO.SYS` (`tests/wine/netio-provider`) are linked alike.
pub const KERNEL_LINK_ARGS: &[&str] = &[
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
    // Size: unwind data in the read-only data section (one section fewer).
    "/MERGE:.pdata=.rdata",
];

/// Configures the build of a driver crate (see the crate documentation). Exits the build script
/// with a message when it cannot (a build script reports failure by exiting non-zero).
pub fn configure_driver() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(wsk_kernel)");

    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let cross = std::env::var("HOST").ok() != std::env::var("TARGET").ok();
    let wdk = std::env::var_os("CARGO_FEATURE_WDK").is_some();
    if target_os == "windows" && wdk {
        println!("cargo::rustc-cfg=wsk_kernel");
        configure_wdk();
    } else if target_os == "windows" && cross {
        println!("cargo::rustc-cfg=wsk_kernel");
        link_kernel_image();
    }
}

/// Passes the linker [`KERNEL_LINK_ARGS`] and a DOS stub, for a cdylib that is a kernel image
/// (a driver, or the test `NETIO.SYS`).
pub fn link_kernel_image() {
    for arg in KERNEL_LINK_ARGS {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
    println!(
        "cargo::rustc-cdylib-link-arg=/STUB:{}",
        write_dos_stub().display()
    );
}

/// Writes the smallest DOS stub lld-link accepts: a 64-byte DOS header ("MZ", the rest zero; the
/// linker fills in `e_lfanew`). Windows never runs it; it only has to be there.
fn write_dos_stub() -> std::path::PathBuf {
    let mut stub = [0u8; 64];
    let [m, z, ..] = &mut stub;
    *m = b'M';
    *z = b'Z';
    let out_dir = std::env::var_os("OUT_DIR").unwrap_or_default();
    let path = std::path::Path::new(&out_dir).join("stub.bin");
    if let Err(error) = std::fs::write(&path, stub) {
        eprintln!("cannot write {}: {error}", path.display());
        std::process::exit(1);
    }
    path
}

/// The Windows-host build with the WDK: wdk-build finds the WDK, emits the WDM link arguments and
/// the `driver_model__*` cfgs that wdk-alloc and wdk-panic key on.
#[cfg(windows)]
fn configure_wdk() {
    if let Err(error) = wdk_build::configure_wdk_binary_build() {
        eprintln!("wdk-build could not configure the driver build: {error:?}");
        std::process::exit(1);
    }
}

#[cfg(not(windows))]
fn configure_wdk() {
    eprintln!(
        "feature `wdk` needs a Windows host with the WDK (cargo make); on Linux, `cargo xtask sys` \
         builds the driver"
    );
    std::process::exit(1);
}
