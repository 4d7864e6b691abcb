//! The C ABI this driver uses, declared by hand: declarations only, no behaviour.
//!
//! `wdk-sys` has no bindings for `netioddk.h` (NMR) or `wsk.h` (WSK), so they are written here from
//! the public headers, keeping the C names. Every struct's size and field offsets are asserted in
//! `tests/abi_layout.rs` (x64 layout: LLP64).
//!
//! Imports are resolved at link time: in the kernel build through `raw-dylib` from
//! `ntoskrnl.exe` and `NETIO.SYS`; in the host build by `crate::host_model`, which defines the same
//! symbols with the same signatures.

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    missing_docs
)]

mod netioddk;
mod ntdef;
mod wdm;
mod wsk;

pub use netioddk::*;
pub use ntdef::*;
pub use wdm::*;
pub use wsk::*;
