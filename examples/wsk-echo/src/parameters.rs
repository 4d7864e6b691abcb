//! The echo driver's parameters, from its service key's `Parameters` subkey (`Host`, `Port`,
//! `Message`, and the optional `Bytes`; parsed by [`crate::values`]). A missing or malformed value
//! is logged and the driver still loads (it then echoes nothing); `Bytes` may be absent (one
//! message is echoed), but when present it must be well-formed.
//!
//! IRQL: [`read`] at `PASSIVE_LEVEL` (`ZwOpenKey`, `ZwQueryValueKey`).

use core::ptr;

use wsk_client::sys::{
    HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, UNICODE_STRING, ZwClose, ZwOpenKey,
    ZwQueryValueKey,
};
use wsk_client::{NtError, NtStatus, dbg_print};

use crate::WskEcho;
use crate::values::{MAX_MESSAGE, Parameters, Problem};

/// `STATUS_OBJECT_NAME_NOT_FOUND`: `ZwQueryValueKey` of a value that is not there.
const OBJECT_NAME_NOT_FOUND: NtStatus = NtStatus::from_raw(0xC000_0034_u32.cast_signed());

/// A registry key handle, closed when dropped.
struct Key(HANDLE);

impl Key {
    /// Opens `name`, relative to `root` (NULL: `name` is absolute). `PASSIVE_LEVEL`.
    fn open(root: HANDLE, name: &UNICODE_STRING) -> Result<Self, NtError> {
        let attributes = OBJECT_ATTRIBUTES {
            #[allow(clippy::cast_possible_truncation)] // 48
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
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
        status.into_result().map(|_| Self(handle))
    }

    /// One value: its type and data, copied into `out` (returns the data length).
    fn value(
        &self,
        name: &str,
        out: &mut [u8; 12 + 2 * MAX_MESSAGE],
    ) -> Result<(u32, usize), NtError> {
        let mut wide = [0u16; 16];
        for (unit, byte) in wide.iter_mut().zip(name.bytes()) {
            *unit = u16::from(byte);
        }
        #[allow(clippy::cast_possible_truncation)] // short names
        let bytes = (name.len().min(16) * 2) as u16;
        let value_name = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: wide.as_mut_ptr(),
        };
        let mut result = 0u32;
        #[allow(clippy::cast_possible_truncation)] // a fixed 2 KiB buffer
        let length = out.len() as u32;
        // SAFETY: PASSIVE_LEVEL; an open key, a counted name, an output buffer of `length` bytes.
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
        status.into_result()?;
        // SAFETY: the routine wrote a KEY_VALUE_PARTIAL_INFORMATION header at the start.
        let header = unsafe {
            out.as_ptr()
                .cast::<KEY_VALUE_PARTIAL_INFORMATION>()
                .read_unaligned()
        };
        let data_len = header.DataLength as usize;
        if 12 + data_len > out.len() {
            return Err(NtError::INVALID_PARAMETER);
        }
        Ok((header.Type, data_len))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: a handle ZwOpenKey returned, closed once; PASSIVE_LEVEL.
        let _ = unsafe { ZwClose(self.0) };
    }
}

/// Reads the parameters under `registry_path` (the service key `DriverEntry` got). Logs a
/// problem and returns `None`.
///
/// IRQL: `PASSIVE_LEVEL`.
pub fn read(registry_path: &UNICODE_STRING) -> Option<Parameters> {
    let result = read_values(registry_path);
    match result {
        Ok(parameters) => Some(parameters),
        Err(Problem::Missing(name, status)) if name == c"Parameters" => {
            // No Parameters key: the usual configuration of a driver with nothing to echo.
            // SAFETY: `%08X` takes the `u32`; no Unicode conversion.
            let _ = unsafe {
                dbg_print!(
                    WskEcho,
                    DPFLTR_INFO_LEVEL,
                    "parameters: no Parameters key (0x%08X): no echo",
                    status.bits()
                )
            };
            None
        }
        Err(Problem::Missing(name, status)) => {
            // SAFETY: `%s` takes a NUL-terminated string, `%08X` the `u32`; no Unicode.
            let _ = unsafe {
                dbg_print!(
                    WskEcho,
                    DPFLTR_WARNING_LEVEL,
                    "parameters: %s missing (0x%08X): no echo",
                    name.as_ptr(),
                    status.bits()
                )
            };
            None
        }
        Err(Problem::Malformed(name)) => {
            // SAFETY: `%s` takes a NUL-terminated string; no Unicode.
            let _ = unsafe {
                dbg_print!(
                    WskEcho,
                    DPFLTR_WARNING_LEVEL,
                    "parameters: %s malformed: no echo",
                    name.as_ptr()
                )
            };
            None
        }
    }
}

fn read_values(registry_path: &UNICODE_STRING) -> Result<Parameters, Problem> {
    let service = Key::open(ptr::null_mut(), registry_path)
        .map_err(|s| Problem::Missing(c"the service key", s))?;
    let mut name = [0u16; 10];
    for (unit, byte) in name.iter_mut().zip(b"Parameters") {
        *unit = u16::from(*byte);
    }
    let subkey = UNICODE_STRING {
        Length: 20,
        MaximumLength: 20,
        Buffer: name.as_mut_ptr(),
    };
    let key = Key::open(service.0, &subkey).map_err(|s| Problem::Missing(c"Parameters", s))?;
    let mut p = Parameters::EMPTY;
    // One buffer for the three values, one after the other (a kernel stack is small).
    let mut buffer = [0u8; 12 + 2 * MAX_MESSAGE];
    let (t, len) = key
        .value("Host", &mut buffer)
        .map_err(|s| Problem::Missing(c"Host", s))?;
    p.set_host(t, buffer.get(12..12 + len).unwrap_or(&[]))?;
    let (t, len) = key
        .value("Port", &mut buffer)
        .map_err(|s| Problem::Missing(c"Port", s))?;
    p.set_port(t, buffer.get(12..12 + len).unwrap_or(&[]))?;
    let (t, len) = key
        .value("Message", &mut buffer)
        .map_err(|s| Problem::Missing(c"Message", s))?;
    p.set_message(t, buffer.get(12..12 + len).unwrap_or(&[]))?;
    // Optional: absent, one message; present, it must be a good REG_DWORD. Any other failure
    // to read it (too long for a REG_DWORD included) is logged with its status.
    match key.value("Bytes", &mut buffer) {
        Ok((t, len)) => p.set_bytes(t, buffer.get(12..12 + len).unwrap_or(&[]))?,
        Err(status) if status == OBJECT_NAME_NOT_FOUND => {}
        Err(status) => return Err(Problem::Missing(c"Bytes", status)),
    }
    Ok(p)
}
