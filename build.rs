//! Build script of the seed driver: `wsk-build` sets the kernel cfg and links the `.sys` (see
//! `crates/wsk-build`).

fn main() {
    wsk_build::configure_driver();
}
