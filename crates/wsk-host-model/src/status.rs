//! [`Status`]: the model's own `NTSTATUS` value type (the model does not depend on the library it
//! tests), printed by name in test failures.

use std::fmt;

use wsk_sys as sys;

/// An `NTSTATUS` as the model reports it.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(sys::NTSTATUS);

impl Status {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(sys::STATUS_SUCCESS);
    /// `STATUS_PENDING`.
    pub const PENDING: Self = Self(sys::STATUS_PENDING);
    /// `STATUS_UNSUCCESSFUL`.
    pub const UNSUCCESSFUL: Self = Self(sys::STATUS_UNSUCCESSFUL);
    /// `STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(sys::STATUS_INVALID_PARAMETER);
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub const INSUFFICIENT_RESOURCES: Self = Self(sys::STATUS_INSUFFICIENT_RESOURCES);
    /// `STATUS_NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: Self = Self(sys::STATUS_NOT_SUPPORTED);
    /// `STATUS_DEVICE_NOT_READY`.
    pub const DEVICE_NOT_READY: Self = Self(sys::STATUS_DEVICE_NOT_READY);
    /// `STATUS_NOINTERFACE`.
    pub const NOINTERFACE: Self = Self(sys::STATUS_NOINTERFACE);

    /// Wraps a raw status.
    #[must_use]
    pub const fn from_raw(raw: sys::NTSTATUS) -> Self {
        Self(raw)
    }

    /// The raw value.
    #[must_use]
    pub const fn raw(self) -> sys::NTSTATUS {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::PENDING => "STATUS_PENDING",
            Self::UNSUCCESSFUL => "STATUS_UNSUCCESSFUL",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            Self::DEVICE_NOT_READY => "STATUS_DEVICE_NOT_READY",
            Self::NOINTERFACE => "STATUS_NOINTERFACE",
            _ => return None,
        })
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}"),
            #[allow(clippy::cast_sign_loss)] // the unsigned spelling of the headers
            None => write!(f, "Status({:#010X})", self.0 as u32),
        }
    }
}
