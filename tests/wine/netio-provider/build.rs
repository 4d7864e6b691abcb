//! Build script of the test NETIO.SYS: the same kernel cfg and linker arguments as the driver's
//! build.rs (a native-subsystem DLL image with `DriverEntry` as its entry point), so that the
//! shared `src/abi` declarations link through raw-dylib.

// The driver's own linker arguments, shared.
include!("../../../build/kernel_link_args.rs");

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../../../build/kernel_link_args.rs");
    println!("cargo::rustc-check-cfg=cfg(wsk_kernel)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    assert!(
        target_os == "windows",
        "the test NETIO.SYS is a kernel image: build it for x86_64-pc-windows-msvc \
         (tests/wine/build-provider.sh)"
    );
    println!("cargo::rustc-cfg=wsk_kernel");
    for arg in KERNEL_LINK_ARGS {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
}
