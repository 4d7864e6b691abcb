//! Glue to the windows-drivers-rs crates, for the Windows-host build with the WDK only (feature
//! `wdk`, `cargo make`). This file cannot be compiled on Linux; every item was checked against the
//! pinned crates' sources (wdk-sys 0.5.2, wdk-alloc 0.4.2, wdk-panic 0.5.0; see README.md).
//!
//! The driver keeps its own hand-declared ABI (`wsk-sys`) and raw-dylib imports on this path
//! too, so both kernel builds run the same code; the assertions below tie the declarations that
//! wdk-sys also has to wdk-sys's, at compile time.

use core::mem::{align_of, offset_of, size_of};

use wsk_client::sys as abi;

// wdk-panic: the panic handler (bugchecks with code 'RPNC'); replaces driver.rs's.
use wdk_panic as _;

/// wdk-alloc's `ExAllocatePool2`-backed allocator (pool tag `rust`). The driver itself allocates
/// only through `crate::pool` (tag `WskA`); this serves code an embedder adds that uses `alloc`.
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

const _: () = assert!(size_of::<abi::NTSTATUS>() == size_of::<wdk_sys::NTSTATUS>());
const _: () = assert!(size_of::<abi::UNICODE_STRING>() == size_of::<wdk_sys::UNICODE_STRING>());
const _: () = assert!(align_of::<abi::UNICODE_STRING>() == align_of::<wdk_sys::UNICODE_STRING>());
const _: () = assert!(size_of::<abi::DRIVER_OBJECT>() == size_of::<wdk_sys::DRIVER_OBJECT>());
const _: () = assert!(
    offset_of!(abi::DRIVER_OBJECT, DriverUnload)
        == offset_of!(wdk_sys::DRIVER_OBJECT, DriverUnload)
);
const _: () = assert!(size_of::<abi::GUID>() == size_of::<wdk_sys::GUID>());
const _: () = assert!(abi::STATUS_SUCCESS as i64 == wdk_sys::STATUS_SUCCESS as i64);
const _: () = assert!(abi::STATUS_PENDING as i64 == wdk_sys::STATUS_PENDING as i64);
const _: () = assert!(abi::STATUS_NOINTERFACE as i64 == wdk_sys::STATUS_NOINTERFACE as i64);
const _: () = assert!(
    abi::STATUS_INSUFFICIENT_RESOURCES as i64 == wdk_sys::STATUS_INSUFFICIENT_RESOURCES as i64
);
const _: () = assert!(abi::POOL_FLAG_NON_PAGED as u64 == wdk_sys::POOL_FLAG_NON_PAGED as u64);
