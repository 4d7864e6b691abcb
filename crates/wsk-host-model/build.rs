//! Build script: compiles `src/dbgprint.c`, the model's variadic `DbgPrintEx` (stable Rust cannot
//! define a C-variadic function).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/dbgprint.c");
    cc::Build::new()
        .file("src/dbgprint.c")
        .warnings(true)
        .compile("wsk_host_dbgprint");
}
