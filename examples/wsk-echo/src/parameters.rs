//! The echo driver's parameters, from its service key's `Parameters` subkey: `Host` (`REG_SZ`:
//! an IPv4/IPv6 literal or a name), `Port` (`REG_DWORD`), `Message` (`REG_SZ`, sent as UTF-8). A
//! missing or malformed value is logged and the driver still loads (it then echoes nothing).
//!
//! IRQL: [`read`] at `PASSIVE_LEVEL` (`ZwOpenKey`, `ZwQueryValueKey`); the parsing is pure.

use core::ptr;

use wsk_client::sys::{
    HANDLE, KEY_READ, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, REG_DWORD, REG_SZ, UNICODE_STRING,
    ZwClose, ZwOpenKey, ZwQueryValueKey,
};
use wsk_client::{NtStatus, dbg_print};

use crate::WskEcho;

/// The longest host, in bytes (ASCII).
pub const MAX_HOST: usize = 255;
/// The longest message, in UTF-8 bytes.
pub const MAX_MESSAGE: usize = 512;

/// What the echo exchange needs.
#[derive(Clone, Copy)]
pub struct Parameters {
    host: [u8; MAX_HOST],
    host_len: usize,
    /// The port.
    pub port: u16,
    message: [u8; MAX_MESSAGE],
    message_len: usize,
}

impl Parameters {
    /// The host (ASCII).
    #[must_use]
    pub fn host(&self) -> &str {
        self.host
            .get(..self.host_len)
            .and_then(|bytes| core::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    /// The message (UTF-8 bytes).
    #[must_use]
    pub fn message(&self) -> &[u8] {
        self.message.get(..self.message_len).unwrap_or(&[])
    }
}

/// Why the parameters are unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A value is missing or unreadable (the status).
    Missing(&'static core::ffi::CStr, NtStatus),
    /// A value has the wrong type, length or content.
    Malformed(&'static core::ffi::CStr),
}

/// The `REG_SZ` data `data` (UTF-16LE, optionally NUL-terminated) as UTF-8 into `out`; `None`
/// when it is not whole UTF-16, is empty, or does not fit.
#[must_use]
pub fn utf16_to_utf8(data: &[u8], out: &mut [u8]) -> Option<usize> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let units = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes(pair.try_into().unwrap_or([0, 0])))
        .take_while(|unit| *unit != 0);
    let mut len = 0;
    for decoded in char::decode_utf16(units) {
        let c = decoded.ok()?;
        let mut buf = [0u8; 4];
        let encoded = c.encode_utf8(&mut buf).as_bytes();
        out.get_mut(len..len + encoded.len())?
            .copy_from_slice(encoded);
        len += encoded.len();
    }
    (len > 0).then_some(len)
}

impl Parameters {
    const EMPTY: Self = Self {
        host: [0; MAX_HOST],
        host_len: 0,
        port: 0,
        message: [0; MAX_MESSAGE],
        message_len: 0,
    };

    /// `Host`: a `REG_SZ` of printable ASCII without spaces.
    fn set_host(&mut self, value_type: u32, data: &[u8]) -> Result<(), Problem> {
        let len = (value_type == REG_SZ)
            .then(|| utf16_to_utf8(data, &mut self.host))
            .flatten()
            .ok_or(Problem::Malformed(c"Host"))?;
        self.host_len = len;
        if self.host().bytes().all(|b| b.is_ascii_graphic()) {
            Ok(())
        } else {
            self.host_len = 0;
            Err(Problem::Malformed(c"Host"))
        }
    }

    /// `Port`: a `REG_DWORD` from 1 to 65535.
    fn set_port(&mut self, value_type: u32, data: &[u8]) -> Result<(), Problem> {
        let bytes: [u8; 4] = data.try_into().map_err(|_| Problem::Malformed(c"Port"))?;
        self.port = u16::try_from(u32::from_le_bytes(bytes))
            .ok()
            .filter(|port| *port != 0 && value_type == REG_DWORD)
            .ok_or(Problem::Malformed(c"Port"))?;
        Ok(())
    }

    /// `Message`: a non-empty `REG_SZ`, kept as UTF-8.
    fn set_message(&mut self, value_type: u32, data: &[u8]) -> Result<(), Problem> {
        self.message_len = (value_type == REG_SZ)
            .then(|| utf16_to_utf8(data, &mut self.message))
            .flatten()
            .ok_or(Problem::Malformed(c"Message"))?;
        Ok(())
    }
}

/// Parses raw values into parameters: `host` and `message` are `(type, REG_SZ data)`, `port` a
/// `(type, REG_DWORD data)`. Pure (the fuzz target's).
///
/// # Errors
/// [`Problem::Malformed`] naming the first bad value.
#[allow(dead_code)] // the entry of the tests and of a fuzz target; `read` sets value by value
pub fn parse(
    host: (u32, &[u8]),
    port: (u32, &[u8]),
    message: (u32, &[u8]),
) -> Result<Parameters, Problem> {
    let mut p = Parameters::EMPTY;
    p.set_host(host.0, host.1)?;
    p.set_port(port.0, port.1)?;
    p.set_message(message.0, message.1)?;
    Ok(p)
}

/// A registry key handle, closed when dropped.
struct Key(HANDLE);

impl Key {
    /// Opens `name`, relative to `root` (NULL: `name` is absolute). `PASSIVE_LEVEL`.
    fn open(root: HANDLE, name: &UNICODE_STRING) -> Result<Self, NtStatus> {
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
    ) -> Result<(u32, usize), NtStatus> {
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
            return Err(NtStatus::INVALID_PARAMETER);
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
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Problem, parse, utf16_to_utf8};
    use wsk_client::sys::{REG_DWORD, REG_SZ};

    fn sz(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn good_values_parse() {
        let p = parse(
            (REG_SZ, &sz("127.0.0.1")),
            (REG_DWORD, &7u32.to_le_bytes()),
            (REG_SZ, &sz("héllo")),
        )
        .unwrap();
        assert_eq!(
            (p.host(), p.port, p.message()),
            ("127.0.0.1", 7, "héllo".as_bytes())
        );
    }

    #[test]
    fn bad_values_are_named() {
        let port = 7u32.to_le_bytes();
        let msg = sz("x");
        assert_eq!(
            parse((REG_DWORD, &sz("h")), (REG_DWORD, &port), (REG_SZ, &msg)).err(),
            Some(Problem::Malformed(c"Host"))
        );
        assert_eq!(
            parse((REG_SZ, &sz("a b")), (REG_DWORD, &port), (REG_SZ, &msg)).err(),
            Some(Problem::Malformed(c"Host"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_DWORD, &0u32.to_le_bytes()),
                (REG_SZ, &msg)
            )
            .err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_DWORD, &70000u32.to_le_bytes()),
                (REG_SZ, &msg)
            )
            .err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse((REG_SZ, &sz("h")), (REG_SZ, &port), (REG_SZ, &msg)).err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse((REG_SZ, &sz("h")), (REG_DWORD, &port), (REG_SZ, &sz(""))).err(),
            Some(Problem::Malformed(c"Message"))
        );
        // Odd length, an unpaired surrogate, too long for the buffer.
        let mut out = [0u8; 4];
        assert_eq!(utf16_to_utf8(&[0x41, 0, 0x42], &mut out), None);
        assert_eq!(utf16_to_utf8(&[0x00, 0xD8, 0x41, 0], &mut out), None);
        assert_eq!(utf16_to_utf8(&sz("abcde"), &mut out), None);
    }
}
