//! Wine's user-mode loader (ntdll), which a test NETIO.SYS reaches because winedevice.exe is an
//! ordinary Wine process: modules by name, their exports, the image holding an address, module
//! references, and writes over read-only or code pages of loaded images.
//!
//! Importing `ntdll.dll` makes Wine's loader treat this image as an ordinary DLL (not a native
//! subsystem one): it calls the entry point as `DllMain` (see `DriverEntry`).

use core::ffi::{CStr, c_void};
use core::ptr;

use crate::abi::{HANDLE, NTSTATUS, PVOID, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, UNICODE_STRING};
use crate::hex;

/// `LDR_ADDREF_DLL_PIN`: the module stays loaded until the process ends.
pub(crate) const LDR_ADDREF_DLL_PIN: u32 = 1;
/// `LDR_DLL_NOTIFICATION_REASON_UNLOADED`.
pub(crate) const LDR_DLL_NOTIFICATION_REASON_UNLOADED: u32 = 2;
/// `IMAGE_DIRECTORY_ENTRY_IAT`: the import address table.
pub(crate) const IMAGE_DIRECTORY_ENTRY_IAT: u16 = 12;
/// `PAGE_READWRITE`, `PAGE_EXECUTE_READWRITE`.
pub(crate) const PAGE_READWRITE: u32 = 0x04;
pub(crate) const PAGE_EXECUTE_READWRITE: u32 = 0x40;

/// `LDR_DLL_NOTIFICATION_DATA` (its `Loaded` and `Unloaded` members have this one layout).
#[repr(C)]
pub(crate) struct DllNotificationData {
    pub(crate) flags: u32,
    pub(crate) full_dll_name: *const UNICODE_STRING,
    pub(crate) base_dll_name: *const UNICODE_STRING,
    pub(crate) dll_base: PVOID,
    pub(crate) size_of_image: u32,
}

/// `PLDR_DLL_NOTIFICATION_FUNCTION`. Called with the loader lock held.
pub(crate) type DllNotification =
    unsafe extern "system" fn(Reason: u32, Data: *const DllNotificationData, Context: PVOID);

#[link(name = "ntdll.dll", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    #[cfg(feature = "bridge")]
    pub(crate) fn LdrLoadDll(
        SearchPath: *const u16,
        DllCharacteristics: *mut u32,
        DllName: *const UNICODE_STRING,
        BaseAddress: *mut PVOID,
    ) -> NTSTATUS;
    fn LdrGetProcedureAddress(
        BaseAddress: PVOID,
        Name: *const ANSI_STRING,
        Ordinal: u32,
        ProcedureAddress: *mut PVOID,
    ) -> NTSTATUS;
    fn LdrGetDllHandle(
        SearchPath: *const u16,
        DllCharacteristics: *mut u32,
        DllName: *const UNICODE_STRING,
        BaseAddress: *mut PVOID,
    ) -> NTSTATUS;
    /// One more reference on a loaded module (`Flags` 0), or pins it (`LDR_ADDREF_DLL_PIN`).
    pub(crate) fn LdrAddRefDll(Flags: u32, Module: PVOID) -> NTSTATUS;
    /// Drops a reference; the last one unloads the module.
    pub(crate) fn LdrUnloadDll(Module: PVOID) -> NTSTATUS;
    fn RtlPcToFileHeader(PcValue: PVOID, BaseOfImage: *mut PVOID) -> PVOID;
    pub(crate) fn RtlImageDirectoryEntryToData(
        Base: PVOID,
        MappedAsImage: u8,
        Directory: u16,
        Size: *mut u32,
    ) -> PVOID;
    pub(crate) fn LdrRegisterDllNotification(
        Flags: u32,
        Callback: DllNotification,
        Context: PVOID,
        Cookie: *mut PVOID,
    ) -> NTSTATUS;
    /// TRUE while the process is ending (its modules are detached, none unloaded).
    pub(crate) fn RtlDllShutdownInProgress() -> u8;
    fn NtProtectVirtualMemory(
        Process: HANDLE,
        BaseAddress: *mut PVOID,
        Size: *mut usize,
        NewProtection: u32,
        OldProtection: *mut u32,
    ) -> NTSTATUS;
    fn NtFlushInstructionCache(Process: HANDLE, BaseAddress: PVOID, Size: usize) -> NTSTATUS;
}

/// `ANSI_STRING`.
#[repr(C)]
#[allow(clippy::upper_case_acronyms, non_camel_case_types)] // the C name
struct ANSI_STRING {
    Length: u16,
    MaximumLength: u16,
    Buffer: *const u8,
}

/// ASCII `text` widened to UTF-16 with a NUL after it (`N` is its length + 1).
#[allow(clippy::indexing_slicing)] // const evaluation: an index past the end fails the build
pub(crate) const fn wide<const N: usize>(text: &[u8]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < text.len() {
        out[i] = text[i] as u16;
        i += 1;
    }
    out
}

/// A counted `UNICODE_STRING` over `name`, a NUL-terminated UTF-16 static (Wine's loader reads
/// the buffer as a C string too).
pub(crate) fn unicode(name: &'static [u16]) -> UNICODE_STRING {
    let bytes = name.len() * 2;
    #[allow(clippy::cast_possible_truncation)] // short names
    UNICODE_STRING {
        Length: bytes.saturating_sub(2) as u16,
        MaximumLength: bytes as u16,
        Buffer: name.as_ptr().cast_mut(),
    }
}

/// The base of the loaded module `name` (a NUL-terminated UTF-16 static; `shown` for the log).
pub(crate) fn module(name: &'static [u16], shown: &CStr) -> Result<PVOID, NTSTATUS> {
    let counted = unicode(name);
    let mut base: PVOID = ptr::null_mut();
    // SAFETY: no search path, no flags, a counted NUL-terminated name, an out-pointer.
    let status = unsafe {
        LdrGetDllHandle(
            ptr::null(),
            ptr::null_mut(),
            &raw const counted,
            &raw mut base,
        )
    };
    if status != STATUS_SUCCESS || base.is_null() {
        log!(
            "ERROR: LdrGetDllHandle(%s) 0x%08X",
            shown.as_ptr(),
            hex(status)
        );
        return Err(STATUS_UNSUCCESSFUL);
    }
    Ok(base)
}

/// The export `name` of the loaded module at `base` (`module` names it in the log).
pub(crate) fn export(base: PVOID, module: &CStr, name: &CStr) -> Result<PVOID, NTSTATUS> {
    let bytes = name.to_bytes();
    #[allow(clippy::cast_possible_truncation)] // short names
    let ansi = ANSI_STRING {
        Length: bytes.len() as u16,
        MaximumLength: bytes.len() as u16,
        Buffer: bytes.as_ptr(),
    };
    let mut address: PVOID = ptr::null_mut();
    // SAFETY: a loaded module's base, a counted name, an out-pointer.
    let status = unsafe { LdrGetProcedureAddress(base, &raw const ansi, 0, &raw mut address) };
    if status != STATUS_SUCCESS || address.is_null() {
        log!(
            "ERROR: %s has no export %s (0x%08X)",
            module.as_ptr(),
            name.as_ptr(),
            hex(status)
        );
        return Err(STATUS_UNSUCCESSFUL);
    }
    Ok(address)
}

/// The base of the loaded image that holds `address` (code or data), if any.
pub(crate) fn image_of(address: *const c_void) -> Option<PVOID> {
    let mut base: PVOID = ptr::null_mut();
    // SAFETY: a lookup in the loader's module list by address; an out-pointer.
    let _ = unsafe { RtlPcToFileHeader(address.cast_mut(), &raw mut base) };
    (!base.is_null()).then_some(base)
}

/// Writes `bytes` at `address`, a page of a loaded image mapped read-only or read-execute, under
/// `protection` (`PAGE_READWRITE` for data, `PAGE_EXECUTE_READWRITE` for code), then restores the
/// old protection and flushes the instruction cache over it. Nothing may run or read those bytes
/// meanwhile (the caller's guarantee).
pub(crate) fn write_over(address: *mut u8, bytes: &[u8], protection: u32) -> Result<(), NTSTATUS> {
    let process: HANDLE = usize::MAX as HANDLE; // NtCurrentProcess()
    let (mut base, mut size, mut old): (PVOID, usize, u32) = (address.cast(), bytes.len(), 0);
    // SAFETY: this process's pages holding `bytes.len()` bytes at `address`.
    let status = unsafe {
        NtProtectVirtualMemory(
            process,
            &raw mut base,
            &raw mut size,
            protection,
            &raw mut old,
        )
    };
    if status != STATUS_SUCCESS {
        log!(
            "ERROR: NtProtectVirtualMemory(%p) 0x%08X",
            address,
            hex(status)
        );
        return Err(status);
    }
    // SAFETY: now writable; nothing uses these bytes meanwhile (the caller's guarantee).
    unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), address, bytes.len()) };
    let (mut base, mut size, mut ignored): (PVOID, usize, u32) = (address.cast(), bytes.len(), 0);
    // SAFETY: as above, back to the old protection.
    let _ = unsafe {
        NtProtectVirtualMemory(process, &raw mut base, &raw mut size, old, &raw mut ignored)
    };
    // SAFETY: this process, the bytes just written.
    let _ = unsafe { NtFlushInstructionCache(process, address.cast(), bytes.len()) };
    Ok(())
}
