//! Basic types and status values (`ntdef.h`, `ntstatus.h`, `guiddef.h`).

use core::ffi::c_void;

pub type NTSTATUS = i32;
pub type HANDLE = *mut c_void;
pub type PVOID = *mut c_void;

pub const STATUS_SUCCESS: NTSTATUS = 0x0000_0000;
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_UNSUCCESSFUL: NTSTATUS = 0xC000_0001_u32 as NTSTATUS;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_INVALID_PARAMETER: NTSTATUS = 0xC000_000D_u32 as NTSTATUS;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = 0xC000_009A_u32 as NTSTATUS;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_NOT_SUPPORTED: NTSTATUS = 0xC000_00BB_u32 as NTSTATUS;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = 0xC000_00A3_u32 as NTSTATUS;
#[allow(clippy::cast_possible_wrap)]
pub const STATUS_NOINTERFACE: NTSTATUS = 0xC000_02B9_u32 as NTSTATUS;

/// `GUID`: 16 bytes, 4-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GUID {
    pub Data1: u32,
    pub Data2: u16,
    pub Data3: u16,
    pub Data4: [u8; 8],
}

/// `LUID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LUID {
    pub LowPart: u32,
    pub HighPart: i32,
}

/// `UNICODE_STRING`: counted UTF-16, lengths in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UNICODE_STRING {
    pub Length: u16,
    pub MaximumLength: u16,
    pub Buffer: *mut u16,
}
