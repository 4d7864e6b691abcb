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
pub const MAX_STRING_UNITS: usize = 512;

/// `KEY_VALUE_PARTIAL_INFORMATION`'s header before the data.
const HEADER: usize = 12;

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
    /// The routine failed with this status (a value longer than the library's buffer for its
    /// type: `STATUS_BUFFER_OVERFLOW`).
    Failed(NtError),
    /// The driver's service key itself could not be opened, with this status (whatever it is:
    /// the service key is always there for a loaded driver, so a failure is never "not
    /// configured").
    ServiceKey(NtError),
}

impl RegistryError {
    /// The status a driver returns for it.
    #[must_use]
    pub const fn status(self) -> NtError {
        match self {
            Self::NotFound => NtError::OBJECT_NAME_NOT_FOUND,
            Self::WrongType | Self::TooLong | Self::Malformed => NtError::INVALID_PARAMETER,
            Self::Failed(status) | Self::ServiceKey(status) => status,
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

/// The driver's service key, as `DriverEntry` is given it (see [`crate::Driver::load`]).
#[derive(Clone, Copy)]
pub struct ServiceKey<'a>(Option<&'a UNICODE_STRING>);

impl<'a> ServiceKey<'a> {
    /// The path `DriverEntry` got (`None`: it got none).
    #[must_use]
    pub const fn new(path: Option<&'a UNICODE_STRING>) -> Self {
        Self(path)
    }

    /// Opens its `Parameters` subkey, where a driver's settings are.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As [`Parameters::open`]; [`RegistryError::ServiceKey`] (`STATUS_OBJECT_NAME_NOT_FOUND`)
    /// without a path.
    pub fn parameters(&self) -> Result<Parameters, RegistryError> {
        self.0.map_or(
            Err(RegistryError::ServiceKey(NtError::OBJECT_NAME_NOT_FOUND)),
            Parameters::open,
        )
    }
}

impl Parameters {
    /// Opens the `Parameters` subkey of `service` (the registry path `DriverEntry` is given).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// [`RegistryError::ServiceKey`] when the service key cannot be opened;
    /// [`RegistryError::NotFound`] without its `Parameters` subkey; [`RegistryError::Failed`]
    /// for any other failure to open that.
    pub fn open(service: &UNICODE_STRING) -> Result<Self, RegistryError> {
        let service = Self::open_key(ptr::null_mut(), service)
            .map_err(|error| RegistryError::ServiceKey(error.status()))?;
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
        // A value longer than `out` is the routine's STATUS_BUFFER_OVERFLOW (or
        // STATUS_BUFFER_TOO_SMALL): a failure with that status, kept so that it reaches the
        // driver's log line.
        status.into_result().map_err(RegistryError::from_status)?;
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
        // Room for a value of another type or length too, so that it is named as such (a
        // REG_SZ where a REG_DWORD should be), not as an overflow.
        let mut out = [0u8; HEADER + 128];
        match self.value(name, &mut out) {
            Ok((value_type, data)) => decode_dword(value_type, data).map(Some),
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
        match self.value(name, &mut raw) {
            Ok((value_type, data)) => decode_string(value_type, data, out).map(Some),
            Err(RegistryError::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// A value's type and data as a `REG_DWORD` (what [`Parameters::dword`] reads; pure, for tests
/// and fuzzing of a driver's parsing).
///
/// # Errors
/// [`RegistryError::WrongType`] for another type; [`RegistryError::Malformed`] for data that is
/// not 4 bytes.
pub fn decode_dword(value_type: u32, data: &[u8]) -> Result<u32, RegistryError> {
    if value_type != REG_DWORD {
        return Err(RegistryError::WrongType);
    }
    let bytes: [u8; 4] = data.try_into().map_err(|_| RegistryError::Malformed)?;
    Ok(u32::from_le_bytes(bytes))
}

/// A value's type and data as a `REG_SZ`, in UTF-8 in `out` (what [`Parameters::string`]
/// reads; pure, for tests and fuzzing of a driver's parsing).
///
/// # Errors
/// [`RegistryError::WrongType`] for another type; as [`utf16_to_utf8`] otherwise.
pub fn decode_string<'o>(
    value_type: u32,
    data: &[u8],
    out: &'o mut [u8],
) -> Result<&'o str, RegistryError> {
    if value_type != REG_SZ {
        return Err(RegistryError::WrongType);
    }
    let length = utf16_to_utf8(data, out)?;
    core::str::from_utf8(out.get(..length).ok_or(RegistryError::TooLong)?)
        .map_err(|_| RegistryError::Malformed)
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
