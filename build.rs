//! Build script of the seed driver: the workspace's driver build (`build/driver_build.rs`), shared
//! with `examples/wsk-echo`.

include!("build/driver_build.rs");

fn main() {
    configure_driver("build");
}
