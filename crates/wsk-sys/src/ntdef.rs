//! Basic types and status values (`ntdef.h`, `ntstatus.h`, `guiddef.h`).

use core::ffi::c_void;

pub type NTSTATUS = i32;
pub type HANDLE = *mut c_void;
pub type PVOID = *mut c_void;

/// An `NTSTATUS` from the unsigned spelling the headers use (`0xC00002B9`).
#[allow(clippy::cast_possible_wrap)]
const fn ntstatus(bits: u32) -> NTSTATUS {
    bits as NTSTATUS
}

pub const STATUS_SUCCESS: NTSTATUS = 0x0000_0000;
pub const STATUS_TIMEOUT: NTSTATUS = 0x0000_0102;
pub const STATUS_PENDING: NTSTATUS = 0x0000_0103;
pub const STATUS_UNSUCCESSFUL: NTSTATUS = ntstatus(0xC000_0001);
pub const STATUS_INVALID_PARAMETER: NTSTATUS = ntstatus(0xC000_000D);
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = ntstatus(0xC000_009A);
pub const STATUS_NOT_SUPPORTED: NTSTATUS = ntstatus(0xC000_00BB);
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = ntstatus(0xC000_00A3);
pub const STATUS_NOINTERFACE: NTSTATUS = ntstatus(0xC000_02B9);
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = ntstatus(0xC000_0184);
pub const STATUS_NOT_IMPLEMENTED: NTSTATUS = ntstatus(0xC000_0002);
pub const STATUS_CANCELLED: NTSTATUS = ntstatus(0xC000_0120);
/// The time a wait allowed ran out (an error, unlike `STATUS_TIMEOUT`).
pub const STATUS_IO_TIMEOUT: NTSTATUS = ntstatus(0xC000_00B5);
pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = ntstatus(0xC000_0016);
pub const STATUS_CONNECTION_ABORTED: NTSTATUS = ntstatus(0xC000_0241);
/// `STATUS_REQUEST_NOT_ACCEPTED`: an accept event callback refuses the connection.
pub const STATUS_REQUEST_NOT_ACCEPTED: NTSTATUS = ntstatus(0xC000_00D0);
/// `STATUS_DATA_NOT_ACCEPTED`: a receive event callback took none of the data indicated.
pub const STATUS_DATA_NOT_ACCEPTED: NTSTATUS = ntstatus(0xC000_021B);
pub const STATUS_CONNECTION_REFUSED: NTSTATUS = ntstatus(0xC000_0236);
/// `STATUS_CONNECTION_RESET`: the peer reset the connection.
pub const STATUS_CONNECTION_RESET: NTSTATUS = ntstatus(0xC000_020D);

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
