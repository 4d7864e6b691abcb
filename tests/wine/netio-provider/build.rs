//! Build script of the test NETIO.SYS: the same linker arguments as the drivers' build
//! (`wsk_build::KERNEL_LINK_ARGS`: a native-subsystem DLL image with `DriverEntry` as its entry
//! point). The `wsk-sys` declarations link through raw-dylib.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    assert!(
        target_os == "windows",
        "the test NETIO.SYS is a kernel image: build it for x86_64-pc-windows-msvc \
         (tests/wine/build-provider.sh)"
    );
    for arg in wsk_build::KERNEL_LINK_ARGS {
        println!("cargo::rustc-cdylib-link-arg={arg}");
    }
}
