//! Build script of the example driver: `wsk-build` sets the kernel cfg and links the `.sys`.

fn main() {
    wsk_build::configure_driver();
}
