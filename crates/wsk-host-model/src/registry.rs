//! The model's registry: `ZwOpenKey`, `ZwQueryValueKey` (`KeyValuePartialInformation`),
//! `ZwClose`, over keys a test sets with [`crate::Session::set_parameter`] (paths compared
//! case-insensitively, as Windows does).

use wsk_sys::{
    HANDLE, KEY_VALUE_PARTIAL_INFORMATION, KeyValuePartialInformation, NTSTATUS, OBJECT_ATTRIBUTES,
    PVOID, UNICODE_STRING,
};

use crate::Status;
use crate::image;
use crate::state;

/// `STATUS_OBJECT_NAME_NOT_FOUND`.
pub(crate) const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32.cast_signed();
/// `STATUS_BUFFER_OVERFLOW`.
const STATUS_BUFFER_OVERFLOW: NTSTATUS = 0x8000_0005_u32.cast_signed();

fn text(name: *const UNICODE_STRING) -> String {
    // SAFETY: the driver passes a valid counted string.
    let name = unsafe { &*name };
    // SAFETY: its buffer holds `Length` bytes.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    String::from_utf16_lossy(units)
}

/// `ZwOpenKey`: an absolute path, or one relative to an open key.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwOpenKey(
    KeyHandle: *mut HANDLE,
    _DesiredAccess: u32,
    ObjectAttributes: *const OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    // SAFETY: per the contract.
    let attributes = unsafe { *ObjectAttributes };
    let name = text(attributes.ObjectName);
    let opened = state::with(|s| {
        if let Some(status) = image::driver_calls(s, "ZwOpenKey") {
            return Err(status.raw());
        }
        let path = if attributes.RootDirectory.is_null() {
            name.to_lowercase()
        } else {
            let root = s
                .key_handles
                .get(&(attributes.RootDirectory as usize))
                .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)?
                .clone();
            format!("{root}\\{}", name.to_lowercase())
        };
        if !s.registry.contains_key(&path) {
            return Err(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        s.next_handle += 1;
        let handle = 0x6B65_0000 + s.next_handle * 8;
        s.key_handles.insert(handle, path);
        Ok(handle)
    });
    match opened {
        Ok(handle) => {
            // SAFETY: per the contract, a valid out-pointer.
            unsafe { KeyHandle.write(handle as HANDLE) };
            Status::SUCCESS.raw()
        }
        Err(status) => status,
    }
}

/// `ZwQueryValueKey` (`KeyValuePartialInformation` only).
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwQueryValueKey(
    KeyHandle: HANDLE,
    ValueName: *const UNICODE_STRING,
    KeyValueInformationClass: i32,
    KeyValueInformation: PVOID,
    Length: u32,
    ResultLength: *mut u32,
) -> NTSTATUS {
    let name = text(ValueName).to_lowercase();
    let value = state::with(|s| {
        if let Some(status) = image::driver_calls(s, "ZwQueryValueKey") {
            return Err(status.raw());
        }
        if KeyValueInformationClass != KeyValuePartialInformation {
            s.violation("ZwQueryValueKey: only KeyValuePartialInformation is modelled".into());
        }
        let path = s
            .key_handles
            .get(&(KeyHandle as usize))
            .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)?;
        s.registry
            .get(path)
            .and_then(|values| values.get(&name).cloned())
            .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)
    });
    let (value_type, data) = match value {
        Ok(value) => value,
        Err(status) => return status,
    };
    let needed = 12 + data.len();
    // SAFETY: per the contract, a valid out-pointer.
    unsafe { ResultLength.write(u32::try_from(needed).unwrap_or(u32::MAX)) };
    if (Length as usize) < needed {
        return STATUS_BUFFER_OVERFLOW;
    }
    let out = KeyValueInformation.cast::<u8>();
    let header = KEY_VALUE_PARTIAL_INFORMATION {
        TitleIndex: 0,
        Type: value_type,
        DataLength: u32::try_from(data.len()).unwrap_or(u32::MAX),
        Data: [0],
    };
    let mut bytes = Vec::with_capacity(needed);
    // SAFETY: the header is plain data; its first 12 bytes are the C header.
    bytes.extend_from_slice(unsafe {
        std::slice::from_raw_parts((&raw const header).cast::<u8>(), 12)
    });
    bytes.extend_from_slice(&data);
    // SAFETY: `Length` bytes are writable (per the contract) and `needed` fit.
    unsafe { out.copy_from_nonoverlapping(bytes.as_ptr(), needed) };
    Status::SUCCESS.raw()
}

/// `ZwClose` of a key handle.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwClose(Handle: HANDLE) -> NTSTATUS {
    state::with(|s| {
        image::driver_calls(s, "ZwClose");
        if s.key_handles.remove(&(Handle as usize)).is_some() {
            Status::SUCCESS.raw()
        } else {
            s.violation(format!("ZwClose of {Handle:p}: not an open key"));
            Status::INVALID_PARAMETER.raw()
        }
    })
}
