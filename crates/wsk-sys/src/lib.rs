//! The C ABI of a WSK client, declared by hand: declarations only, no behaviour.
//!
//! `wdk-sys` has no bindings for `netioddk.h` (NMR) or `wsk.h` (WSK), so they are written here from
//! the public headers, keeping the C names, together with the few `wdm.h`/`ntddk.h` items a WSK
//! client needs. Every struct's size and field offsets are asserted in `tests/layout.rs` (x64
//! layout: LLP64).
//!
//! Imports are resolved at link time: in a kernel image (`cfg(wsk_kernel)`, see `build.rs`) through
//! `raw-dylib` from `ntoskrnl.exe` and `NETIO.SYS`; on the host by the `wsk-host-model` test
//! double, which defines the same symbols with the same signatures.

#![no_std]
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
