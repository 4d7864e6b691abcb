//! `NtStatus`: the one place where an `NTSTATUS` becomes control flow; [`NtError`], a status that
//! is not a success code, what every fallible function of the library returns in its `Err`
//! ([`Result`]): a success status can never appear there.
//!
//! Pure value code: any IRQL.

use core::fmt;

use crate::sys as abi;

/// An `NTSTATUS` value. Success and informational values (`NT_SUCCESS`) are `>= 0`.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(abi::NTSTATUS);

impl NtStatus {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(abi::STATUS_SUCCESS);
    /// `STATUS_PENDING`.
    pub const PENDING: Self = Self(abi::STATUS_PENDING);
    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: Self = Self(abi::STATUS_UNSUCCESSFUL);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(abi::STATUS_INVALID_PARAMETER);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: Self = Self(abi::STATUS_INSUFFICIENT_RESOURCES);
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: Self = Self(abi::STATUS_NOT_SUPPORTED);
    /// `STATUS_DEVICE_NOT_READY`.
    pub const DEVICE_NOT_READY: Self = Self(abi::STATUS_DEVICE_NOT_READY);
    /// `STATUS_NOINTERFACE`.
    pub const NOINTERFACE: Self = Self(abi::STATUS_NOINTERFACE);
    /// `STATUS_INVALID_DEVICE_STATE`.
    pub const INVALID_DEVICE_STATE: Self = Self(abi::STATUS_INVALID_DEVICE_STATE);
    /// `STATUS_CANCELLED`.
    pub const CANCELLED: Self = Self(abi::STATUS_CANCELLED);
    /// `STATUS_NOT_IMPLEMENTED`.
    pub const NOT_IMPLEMENTED: Self = Self(abi::STATUS_NOT_IMPLEMENTED);
    /// `STATUS_CONNECTION_ABORTED`.
    pub const CONNECTION_ABORTED: Self = Self(abi::STATUS_CONNECTION_ABORTED);
    /// `STATUS_CONNECTION_REFUSED`.
    pub const CONNECTION_REFUSED: Self = Self(abi::STATUS_CONNECTION_REFUSED);
    /// `STATUS_CONNECTION_RESET`.
    pub const CONNECTION_RESET: Self = Self(abi::STATUS_CONNECTION_RESET);
    /// `STATUS_IO_TIMEOUT`: a wait's time ran out ([`crate::timer::timeout`]).
    pub const IO_TIMEOUT: Self = Self(abi::STATUS_IO_TIMEOUT);
    /// `STATUS_OBJECT_NAME_NOT_FOUND`: a registry key or value that is not there.
    pub const OBJECT_NAME_NOT_FOUND: Self = Self(0xC000_0034_u32.cast_signed());

    /// Wraps a raw status.
    #[must_use]
    pub const fn from_raw(raw: abi::NTSTATUS) -> Self {
        Self(raw)
    }

    /// The raw value, for returning to C.
    #[must_use]
    pub const fn raw(self) -> abi::NTSTATUS {
        self.0
    }

    /// The value as the unsigned number logs print (`0xC00002B9`).
    #[must_use]
    #[allow(clippy::cast_sign_loss)]
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// `NT_SUCCESS(status)`: success or informational (includes `STATUS_PENDING`).
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// `Ok(self)` for a success value, `Err` otherwise.
    ///
    /// # Errors
    /// The status as an [`NtError`], when it is not `NT_SUCCESS`.
    pub const fn into_result(self) -> Result<Self> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(NtError(self))
        }
    }

    /// Collapses a `Result` back into the status a C caller expects.
    #[must_use]
    pub const fn from_result(result: Result<Self>) -> Self {
        match result {
            Ok(status) => status,
            Err(error) => error.0,
        }
    }

    /// The `STATUS_*` name of the values this crate uses, if it is one of them.
    #[must_use]
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::PENDING => "STATUS_PENDING",
            Self::UNSUCCESSFUL => "STATUS_UNSUCCESSFUL",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            Self::DEVICE_NOT_READY => "STATUS_DEVICE_NOT_READY",
            Self::NOINTERFACE => "STATUS_NOINTERFACE",
            Self::INVALID_DEVICE_STATE => "STATUS_INVALID_DEVICE_STATE",
            Self::CANCELLED => "STATUS_CANCELLED",
            Self::NOT_IMPLEMENTED => "STATUS_NOT_IMPLEMENTED",
            Self::CONNECTION_ABORTED => "STATUS_CONNECTION_ABORTED",
            Self::CONNECTION_REFUSED => "STATUS_CONNECTION_REFUSED",
            Self::IO_TIMEOUT => "STATUS_IO_TIMEOUT",
            _ => return None,
        })
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "NtStatus({:#010X})", self.bits()),
        }
    }
}

/// A result whose error is an [`NtError`]: what the library's fallible functions return.
pub type Result<T, E = NtError> = core::result::Result<T, E>;

/// An `NTSTATUS` that is not a success code (`NT_SUCCESS` is false): an error or a warning.
///
/// # Invariants
/// The status inside is negative (`!is_success()`): made only by [`NtError::new`], the constants
/// below, or [`NtStatus::into_result`].
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtError(NtStatus);

impl NtError {
    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: Self = Self(NtStatus::UNSUCCESSFUL);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(NtStatus::INVALID_PARAMETER);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: Self = Self(NtStatus::INSUFFICIENT_RESOURCES);
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: Self = Self(NtStatus::NOT_SUPPORTED);
    /// `STATUS_DEVICE_NOT_READY`.
    pub const DEVICE_NOT_READY: Self = Self(NtStatus::DEVICE_NOT_READY);
    /// `STATUS_NOINTERFACE`.
    pub const NOINTERFACE: Self = Self(NtStatus::NOINTERFACE);
    /// `STATUS_INVALID_DEVICE_STATE`.
    pub const INVALID_DEVICE_STATE: Self = Self(NtStatus::INVALID_DEVICE_STATE);
    /// `STATUS_CANCELLED`.
    pub const CANCELLED: Self = Self(NtStatus::CANCELLED);
    /// `STATUS_NOT_IMPLEMENTED`.
    pub const NOT_IMPLEMENTED: Self = Self(NtStatus::NOT_IMPLEMENTED);
    /// `STATUS_CONNECTION_ABORTED`.
    pub const CONNECTION_ABORTED: Self = Self(NtStatus::CONNECTION_ABORTED);
    /// `STATUS_CONNECTION_REFUSED`.
    pub const CONNECTION_REFUSED: Self = Self(NtStatus::CONNECTION_REFUSED);
    /// `STATUS_CONNECTION_RESET`.
    pub const CONNECTION_RESET: Self = Self(NtStatus::CONNECTION_RESET);
    /// `STATUS_IO_TIMEOUT`: a wait's time ran out ([`crate::timer::timeout`]).
    pub const IO_TIMEOUT: Self = Self(NtStatus::IO_TIMEOUT);
    /// `STATUS_OBJECT_NAME_NOT_FOUND`: a registry key or value that is not there.
    pub const OBJECT_NAME_NOT_FOUND: Self = Self(NtStatus::OBJECT_NAME_NOT_FOUND);

    /// `status` as an error; `None` for a success code.
    #[must_use]
    pub const fn new(status: NtStatus) -> Option<Self> {
        if status.is_success() {
            None
        } else {
            Some(Self(status))
        }
    }

    /// The status.
    #[must_use]
    pub const fn status(self) -> NtStatus {
        self.0
    }

    /// The raw value, for returning to C.
    #[must_use]
    pub const fn raw(self) -> abi::NTSTATUS {
        self.0.raw()
    }

    /// The value as the unsigned number logs print (`0xC00002B9`).
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0.bits()
    }
}

impl From<NtError> for NtStatus {
    fn from(error: NtError) -> Self {
        error.0
    }
}

impl PartialEq<NtStatus> for NtError {
    fn eq(&self, other: &NtStatus) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for NtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
