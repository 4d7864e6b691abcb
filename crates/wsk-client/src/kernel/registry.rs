//! A driver's parameters from the registry, in safe code: [`Parameters::open`] opens the
//! `Parameters` subkey of the service key `DriverEntry` is given, and [`Parameters::dword`] and
//! [`Parameters::string`] read one value each — typed, bounded (a string longer than the
//! caller's buffer is an error, never a truncation), every failure a [`RegistryError`] that says
//! which.
//!
//! IRQL: `PASSIVE_LEVEL` (`ZwOpenKey`, `ZwQueryValueKey`, `ZwClose`).

use core::ptr;

use crate::status::{NtError, NtStatus};
use crate::sys::{
    HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, REG_DWORD, REG_SZ, UNICODE_STRING,
    ZwClose, ZwOpenKey, ZwQueryValueKey,
};

/// The longest value name (in characters, ASCII).
pub const MAX_NAME: usize = 32;

/// The longest string value (in UTF-16 units, the terminating NUL included).
pub const MAX_STRING_UNITS: usize = 256;

/// `KEY_VALUE_PARTIAL_INFORMATION`'s header before the data.
const HEADER: usize = 12;

/// `STATUS_BUFFER_OVERFLOW` (a warning) and `STATUS_BUFFER_TOO_SMALL`: a value longer than the
/// buffer given for it.
const BUFFER_OVERFLOW: u32 = 0x8000_0005;
const BUFFER_TOO_SMALL: u32 = 0xC000_0023;

/// Why a key or value could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The key or value is not there.
    NotFound,
    /// The value has another type than the one asked for.
    WrongType,
    /// The value is longer than its type allows, or than the caller's buffer.
    TooLong,
    /// The value is the right type but not what it must be (a string that is not whole UTF-16,
    /// or empty).
    Malformed,
    /// The routine failed with this status.
    Failed(NtError),
}

impl RegistryError {
    /// The status a driver returns for it.
    #[must_use]
    pub const fn status(self) -> NtError {
        match self {
            Self::NotFound => NtError::OBJECT_NAME_NOT_FOUND,
            Self::WrongType | Self::TooLong | Self::Malformed => NtError::INVALID_PARAMETER,
            Self::Failed(status) => status,
        }
    }

    fn from_status(status: NtError) -> Self {
        if status == NtError::OBJECT_NAME_NOT_FOUND {
            Self::NotFound
        } else {
            Self::Failed(status)
        }
    }
}

/// An open registry key, closed when dropped.
///
/// # Invariants
/// `0` is a kernel handle `ZwOpenKey` returned, closed only by the drop.
pub struct Parameters(HANDLE);

/// A counted UTF-16 copy of an ASCII name.
struct Name {
    units: [u16; MAX_NAME],
    length: u16,
}

impl Name {
    fn new(name: &str) -> Result<Self, RegistryError> {
        if name.len() > MAX_NAME || !name.is_ascii() {
            return Err(RegistryError::TooLong);
        }
        let mut units = [0u16; MAX_NAME];
        for (unit, byte) in units.iter_mut().zip(name.bytes()) {
            *unit = u16::from(byte);
        }
        #[allow(clippy::cast_possible_truncation)] // at most 2 * MAX_NAME
        let length = (name.len() * 2) as u16;
        Ok(Self { units, length })
    }

    /// The name as a `UNICODE_STRING` (borrowing `self`).
    fn as_unicode(&mut self) -> UNICODE_STRING {
        UNICODE_STRING {
            Length: self.length,
            MaximumLength: self.length,
            Buffer: self.units.as_mut_ptr(),
        }
    }
}

impl Parameters {
    /// Opens the `Parameters` subkey of `service` (the registry path `DriverEntry` is given).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] without the service key or its `Parameters` subkey;
    /// [`RegistryError::Failed`] for any other failure of `ZwOpenKey`.
    pub fn open(service: &UNICODE_STRING) -> Result<Self, RegistryError> {
        let service = Self::open_key(ptr::null_mut(), service)?;
        let mut name = Name::new("Parameters")?;
        Self::open_key(service.0, &name.as_unicode())
    }

    /// `ZwOpenKey` of `name`, relative to `root` (NULL: `name` is absolute).
    fn open_key(root: HANDLE, name: &UNICODE_STRING) -> Result<Self, RegistryError> {
        let attributes = OBJECT_ATTRIBUTES {
            #[allow(clippy::cast_possible_truncation)] // 48
            Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: root,
            ObjectName: name,
            Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
            SecurityDescriptor: ptr::null_mut(),
            SecurityQualityOfService: ptr::null_mut(),
        };
        let mut handle: HANDLE = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; valid attributes and out-pointer for the call.
        let status = NtStatus::from_raw(unsafe {
            ZwOpenKey(&raw mut handle, KEY_READ, &raw const attributes)
        });
        // INVARIANT: the handle ZwOpenKey returned.
        status
            .into_result()
            .map(|_| Self(handle))
            .map_err(RegistryError::from_status)
    }

    /// One value into `out`: its type and its data (a slice of `out`).
    fn value<'o>(&self, name: &str, out: &'o mut [u8]) -> Result<(u32, &'o [u8]), RegistryError> {
        let mut name = Name::new(name)?;
        let value_name = name.as_unicode();
        let mut result = 0u32;
        let length = u32::try_from(out.len()).map_err(|_| RegistryError::TooLong)?;
        // SAFETY: PASSIVE_LEVEL; an open key (the invariant), a counted name, an output buffer
        // of `length` bytes, an out-pointer.
        let status = NtStatus::from_raw(unsafe {
            ZwQueryValueKey(
                self.0,
                &raw const value_name,
                KeyValuePartialInformation,
                out.as_mut_ptr().cast(),
                length,
                &raw mut result,
            )
        });
        match status.into_result() {
            Ok(_) => {}
            Err(status) if matches!(status.bits(), BUFFER_OVERFLOW | BUFFER_TOO_SMALL) => {
                return Err(RegistryError::TooLong);
            }
            Err(status) => return Err(RegistryError::from_status(status)),
        }
        if out.len() < HEADER {
            return Err(RegistryError::TooLong);
        }
        // SAFETY: the routine wrote a KEY_VALUE_PARTIAL_INFORMATION header at the start of `out`
        // (at least HEADER bytes); read unaligned (`out` is bytes).
        let header = unsafe {
            out.as_ptr()
                .cast::<KEY_VALUE_PARTIAL_INFORMATION>()
                .read_unaligned()
        };
        let data = out
            .get(HEADER..HEADER + header.DataLength as usize)
            .ok_or(RegistryError::TooLong)?;
        Ok((header.Type, data))
    }

    /// A `REG_DWORD` value; `Ok(None)` when it is not there.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// [`RegistryError::WrongType`] for another type; [`RegistryError::Malformed`] for data that is
    /// not 4 bytes; [`RegistryError::Failed`] when the value cannot be read.
    pub fn dword(&self, name: &str) -> Result<Option<u32>, RegistryError> {
        let mut out = [0u8; HEADER + 8];
        match self.value(name, &mut out) {
            Ok((REG_DWORD, data)) => {
                let bytes: [u8; 4] = data.try_into().map_err(|_| RegistryError::Malformed)?;
                Ok(Some(u32::from_le_bytes(bytes)))
            }
            Ok(_) => Err(RegistryError::WrongType),
            Err(RegistryError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// A `REG_SZ` value as UTF-8 in `out` (at most [`MAX_STRING_UNITS`] UTF-16 units, up to the
    /// first NUL); `Ok(None)` when it is not there.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// [`RegistryError::WrongType`] for another type; [`RegistryError::TooLong`] when it does not
    /// fit in `out` or is longer than [`MAX_STRING_UNITS`]; [`RegistryError::Malformed`] when it
    /// is not whole UTF-16 or is empty.
    pub fn string<'o>(
        &self,
        name: &str,
        out: &'o mut [u8],
    ) -> Result<Option<&'o str>, RegistryError> {
        let mut raw = [0u8; HEADER + 2 * MAX_STRING_UNITS];
        let data = match self.value(name, &mut raw) {
            Ok((REG_SZ, data)) => data,
            Ok(_) => return Err(RegistryError::WrongType),
            Err(RegistryError::NotFound) => return Ok(None),
            Err(error) => return Err(error),
        };
        let length = utf16_to_utf8(data, out)?;
        core::str::from_utf8(out.get(..length).ok_or(RegistryError::TooLong)?)
            .map(Some)
            .map_err(|_| RegistryError::Malformed)
    }
}

impl Drop for Parameters {
    fn drop(&mut self) {
        // SAFETY: a handle ZwOpenKey returned, closed once (the invariant); PASSIVE_LEVEL.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// `REG_SZ` data (UTF-16LE, up to the first NUL) as UTF-8 into `out`: its length.
///
/// # Errors
/// [`RegistryError::Malformed`] for data that is not whole UTF-16 or is empty;
/// [`RegistryError::TooLong`] when it does not fit in `out`.
pub fn utf16_to_utf8(data: &[u8], out: &mut [u8]) -> Result<usize, RegistryError> {
    if !data.len().is_multiple_of(2) {
        return Err(RegistryError::Malformed);
    }
    let units = data
        .chunks_exact(2)
        .map(|pair| match pair {
            [low, high] => u16::from_le_bytes([*low, *high]),
            _ => 0,
        })
        .take_while(|unit| *unit != 0);
    let mut length = 0;
    for decoded in char::decode_utf16(units) {
        let c = decoded.map_err(|_| RegistryError::Malformed)?;
        let mut buffer = [0u8; 4];
        let encoded = c.encode_utf8(&mut buffer).as_bytes();
        out.get_mut(length..length + encoded.len())
            .ok_or(RegistryError::TooLong)?
            .copy_from_slice(encoded);
        length += encoded.len();
    }
    if length == 0 {
        return Err(RegistryError::Malformed);
    }
    Ok(length)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> std::vec::Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    #[test]
    fn reg_sz_data_becomes_utf8_up_to_its_nul() {
        let mut out = [0u8; 16];
        let mut data = utf16("::1");
        data.extend([0, 0, b'x', 0]);
        assert_eq!(utf16_to_utf8(&data, &mut out), Ok(3));
        assert_eq!(&out[..3], b"::1");
        assert_eq!(utf16_to_utf8(&utf16("é"), &mut out), Ok(2));
    }

    #[test]
    fn bad_reg_sz_data_is_named() {
        let mut out = [0u8; 4];
        assert_eq!(
            utf16_to_utf8(&[0x41], &mut out),
            Err(RegistryError::Malformed)
        );
        assert_eq!(utf16_to_utf8(&[], &mut out), Err(RegistryError::Malformed));
        assert_eq!(
            utf16_to_utf8(&[0, 0], &mut out),
            Err(RegistryError::Malformed)
        );
        // A lone surrogate.
        assert_eq!(
            utf16_to_utf8(&[0x00, 0xD8], &mut out),
            Err(RegistryError::Malformed)
        );
        assert_eq!(
            utf16_to_utf8(&utf16("12345"), &mut out),
            Err(RegistryError::TooLong)
        );
    }
}
