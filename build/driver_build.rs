// The build script of a driver crate of this workspace (the seed driver, examples/wsk-echo):
// included by each driver's build.rs, which calls `configure_driver(...)`.
//
// - Kernel image: target OS Windows, and either a cross build (the Linux `cargo xtask` builds) or
//   the `wdk` feature (the Windows `cargo make`). Sets `cfg(wsk_kernel)`: the driver becomes
//   `no_std` with its `DriverEntry` export, panic handler and `_fltused`.
//   - Cross build: passes the linker the flags of a WDM driver, from here rather than RUSTFLAGS so
//     that changing them does not rebuild `core`.
//   - `wdk`: `wdk_build::configure_wdk_binary_build()` passes its own (the same set).
// - Otherwise the host build for tests: nothing to do (the host model is a dev-dependency).

include!("kernel_link_args.rs");

/// `shared` is this folder's path from the driver's package (`build`, `../../build`).
fn configure_driver(shared: &str) {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={shared}/driver_build.rs");
    println!("cargo::rerun-if-changed={shared}/kernel_link_args.rs");
    println!("cargo::rustc-check-cfg=cfg(wsk_kernel)");

    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let cross = std::env::var("HOST").ok() != std::env::var("TARGET").ok();
    let wdk = std::env::var_os("CARGO_FEATURE_WDK").is_some();
    if target_os == "windows" && wdk {
        println!("cargo::rustc-cfg=wsk_kernel");
        configure_wdk();
    } else if target_os == "windows" && cross {
        println!("cargo::rustc-cfg=wsk_kernel");
        for arg in KERNEL_LINK_ARGS {
            println!("cargo::rustc-cdylib-link-arg={arg}");
        }
        println!(
            "cargo::rustc-cdylib-link-arg=/STUB:{}",
            write_dos_stub().display()
        );
    }
}

/// Writes the smallest DOS stub lld-link accepts: a 64-byte DOS header ("MZ", the rest zero; the
/// linker fills in `e_lfanew`). Windows never runs it; it only has to be there.
fn write_dos_stub() -> std::path::PathBuf {
    let mut stub = [0u8; 64];
    stub[0] = b'M';
    stub[1] = b'Z';
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
        // A build script reports failure by exiting non-zero; the message says what is missing.
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
