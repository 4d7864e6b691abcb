//! The Network Module Registrar, client side (`netioddk.h`; exported by NETIO.SYS).

use core::ffi::c_void;

use super::ntdef::{GUID, HANDLE, LUID, NTSTATUS, PVOID};

/// `NPIID`: the GUID naming a network programming interface.
pub type NPIID = GUID;

/// `NPI_MODULEID_TYPE` (an `enum` in C: 4 bytes).
pub type NPI_MODULEID_TYPE = i32;
pub const MIT_GUID: NPI_MODULEID_TYPE = 1;
pub const MIT_IF_LUID: NPI_MODULEID_TYPE = 2;

/// The anonymous union of `NPI_MODULEID`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union NPI_MODULEID_u {
    pub Guid: GUID,
    pub IfLuid: LUID,
}

/// `NPI_MODULEID`: size 24, align 4.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_MODULEID {
    pub Length: u16,
    pub Type: NPI_MODULEID_TYPE,
    pub u: NPI_MODULEID_u,
}

/// `NPI_REGISTRATION_INSTANCE`: size 40. For WSK, `NpiSpecificCharacteristics` points at a
/// `WSK_PROVIDER_CHARACTERISTICS` (provider side) or is NULL (client side).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_REGISTRATION_INSTANCE {
    pub Version: u16,
    pub Size: u16,
    pub NpiId: *const NPIID,
    pub ModuleId: *const NPI_MODULEID,
    pub Number: u32,
    pub NpiSpecificCharacteristics: *const c_void,
}

/// `NPI_CLIENT_ATTACH_PROVIDER_FN`. `PASSIVE_LEVEL`.
pub type NPI_CLIENT_ATTACH_PROVIDER_FN = unsafe extern "system" fn(
    NmrBindingHandle: HANDLE,
    ClientContext: PVOID,
    ProviderRegistrationInstance: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS;

/// `NPI_CLIENT_DETACH_PROVIDER_FN`. IRQL <= `DISPATCH_LEVEL`.
pub type NPI_CLIENT_DETACH_PROVIDER_FN =
    unsafe extern "system" fn(ClientBindingContext: PVOID) -> NTSTATUS;

/// `NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN`. IRQL <= `DISPATCH_LEVEL`.
pub type NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN =
    unsafe extern "system" fn(ClientBindingContext: PVOID);

/// `NPI_CLIENT_CHARACTERISTICS`: size 72.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NPI_CLIENT_CHARACTERISTICS {
    pub Version: u16,
    pub Length: u16,
    pub ClientAttachProvider: Option<NPI_CLIENT_ATTACH_PROVIDER_FN>,
    pub ClientDetachProvider: Option<NPI_CLIENT_DETACH_PROVIDER_FN>,
    pub ClientCleanupBindingContext: Option<NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN>,
    pub ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE,
}

#[cfg_attr(
    wsk_kernel,
    link(name = "NETIO.SYS", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// `PASSIVE_LEVEL`. May call `ClientAttachProvider` before it returns.
    pub fn NmrRegisterClient(
        ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS,
        ClientContext: PVOID,
        NmrClientHandle: *mut HANDLE,
    ) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`. Returns `STATUS_PENDING` on Windows.
    pub fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS;
    /// `PASSIVE_LEVEL`. Returns once every binding is detached and cleaned up.
    pub fn NmrWaitForClientDeregisterComplete(NmrClientHandle: HANDLE) -> NTSTATUS;
    /// `PASSIVE_LEVEL` (called from `ClientAttachProvider`).
    pub fn NmrClientAttachProvider(
        NmrBindingHandle: HANDLE,
        ClientBindingContext: PVOID,
        ClientDispatch: *const c_void,
        ProviderBindingContext: *mut PVOID,
        ProviderDispatch: *mut *const c_void,
    ) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`.
    pub fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE);
}
