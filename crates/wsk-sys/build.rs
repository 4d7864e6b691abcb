//! Build script: decides whether the `extern` blocks import through `raw-dylib` (a kernel image)
//! or are left for the host to define (the host model under `cargo test`).
//!
//! Kernel (`cfg(wsk_kernel)`): target OS Windows and either a cross build (the Linux `cargo xtask`
//! builds) or `+crt-static`, which windows-drivers-rs's `cargo make` flow always sets for a driver
//! (wdk-build refuses to build without it). A plain `cargo test` on a Windows host is neither, so it
//! links against the host model like on Linux.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(wsk_kernel)");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let cross = std::env::var("HOST").ok() != std::env::var("TARGET").ok();
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .unwrap_or_default()
        .split(',')
        .any(|feature| feature == "crt-static");
    if target_os == "windows" && (cross || crt_static) {
        println!("cargo::rustc-cfg=wsk_kernel");
    }
}
