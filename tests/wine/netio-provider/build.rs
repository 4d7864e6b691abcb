//! Build script of the test NETIO.SYS: the same linker arguments as the drivers'
//! build (a native-subsystem DLL image with `DriverEntry` as its entry point). The `wsk-sys`
//! declarations link through raw-dylib (its own build script sets their kernel cfg).

// The driver's own linker arguments, shared.
include!("../../../build/kernel_link_args.rs");

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../../../build/kernel_link_args.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    assert!(
        target_os == "windows",
        "the test NETIO.SYS is a kernel image: build it for x86_64-pc-windows-msvc \
         (tests/wine/build-provider.sh)"
    );
    for arg in KERNEL_LINK_ARGS {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
}
