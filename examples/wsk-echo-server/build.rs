//! Build script of `wsk_echo_server.sys`: the workspace's driver build (`build/driver_build.rs`).

include!("../../build/driver_build.rs");

fn main() {
    configure_driver("../../build");
}
