//! Winsock Kernel (`wsk.h`): the NPI id, versions and dispatch tables.

use super::ntdef::{GUID, NTSTATUS, PVOID, UNICODE_STRING};
use super::wdm::IRP;

/// `NPI_WSK_INTERFACE_ID` {2227E803-8D8B-11D4-ABAD-009027719E09}.
pub const NPI_WSK_INTERFACE_ID: GUID = GUID {
    Data1: 0x2227_E803,
    Data2: 0x8D8B,
    Data3: 0x11D4,
    Data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09],
};

/// `MAKE_WSK_VERSION(Mj, Mn)`.
#[must_use]
pub const fn MAKE_WSK_VERSION(Mj: u8, Mn: u8) -> u16 {
    ((Mj as u16) << 8) | (Mn as u16)
}

/// `WSK_MAJOR_VERSION(V)`.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub const fn WSK_MAJOR_VERSION(V: u16) -> u8 {
    (V >> 8) as u8
}

/// `WSK_MINOR_VERSION(V)`.
#[must_use]
#[allow(clippy::cast_possible_truncation)]
pub const fn WSK_MINOR_VERSION(V: u16) -> u8 {
    V as u8
}

/// Opaque kernel objects that appear in WSK signatures.
#[repr(C)]
pub struct EPROCESS {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct ETHREAD {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct SECURITY_DESCRIPTOR {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct SOCKADDR {
    _opaque: [u8; 0],
}
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ADDRINFOEXW {
    pub ai_flags: i32,
    pub ai_family: i32,
    pub ai_socktype: i32,
    pub ai_protocol: i32,
    pub ai_addrlen: usize,
    pub ai_canonname: *mut u16,
    pub ai_addr: *mut SOCKADDR,
    pub ai_blob: PVOID,
    pub ai_bloblen: usize,
    pub ai_provider: *mut GUID,
    pub ai_next: *mut ADDRINFOEXW,
}

/// `NS_ALL`: every name space, for `WskGetAddressInfo`.
pub const NS_ALL: u32 = 0;

/// `PWSK_CLIENT`: opaque, the `ProviderBindingContext` NMR returns.
pub type PWSK_CLIENT = PVOID;
/// `ADDRESS_FAMILY`.
pub type ADDRESS_FAMILY = u16;

/// `PFN_WSK_CLIENT_EVENT`.
pub type PFN_WSK_CLIENT_EVENT = Option<
    unsafe extern "system" fn(
        ClientContext: PVOID,
        EventType: u32,
        Information: PVOID,
        InformationLength: usize,
    ) -> NTSTATUS,
>;

/// `WSK_CLIENT_DISPATCH`: size 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_CLIENT_DISPATCH {
    pub Version: u16,
    pub Reserved: u16,
    pub WskClientEvent: PFN_WSK_CLIENT_EVENT,
}

/// `WSK_PROVIDER_CHARACTERISTICS`: size 4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WSK_PROVIDER_CHARACTERISTICS {
    pub HighestVersion: u16,
    pub LowestVersion: u16,
}

/// `PFN_WSK_SOCKET`.
pub type PFN_WSK_SOCKET = Option<
    unsafe extern "system" fn(
        Client: PWSK_CLIENT,
        AddressFamily: ADDRESS_FAMILY,
        SocketType: u16,
        Protocol: u32,
        Flags: u32,
        SocketContext: PVOID,
        Dispatch: *const core::ffi::c_void,
        OwningProcess: *mut EPROCESS,
        OwningThread: *mut ETHREAD,
        SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_SOCKET_CONNECT`.
pub type PFN_WSK_SOCKET_CONNECT = Option<
    unsafe extern "system" fn(
        Client: PWSK_CLIENT,
        SocketType: u16,
        Protocol: u32,
        LocalAddress: *mut SOCKADDR,
        RemoteAddress: *mut SOCKADDR,
        Flags: u32,
        SocketContext: PVOID,
        Dispatch: *const core::ffi::c_void,
        OwningProcess: *mut EPROCESS,
        OwningThread: *mut ETHREAD,
        SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_CONTROL_CLIENT`.
pub type PFN_WSK_CONTROL_CLIENT = Option<
    unsafe extern "system" fn(
        Client: PWSK_CLIENT,
        ControlCode: u32,
        InputSize: usize,
        InputBuffer: PVOID,
        OutputSize: usize,
        OutputBuffer: PVOID,
        OutputSizeReturned: *mut usize,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_GET_ADDRESS_INFO` (WSK 1.1).
pub type PFN_WSK_GET_ADDRESS_INFO = Option<
    unsafe extern "system" fn(
        Client: PWSK_CLIENT,
        NodeName: *mut UNICODE_STRING,
        ServiceName: *mut UNICODE_STRING,
        NameSpace: u32,
        Provider: *mut GUID,
        Hints: *mut ADDRINFOEXW,
        Result: *mut *mut ADDRINFOEXW,
        OwningProcess: *mut EPROCESS,
        OwningThread: *mut ETHREAD,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_FREE_ADDRESS_INFO` (WSK 1.1).
pub type PFN_WSK_FREE_ADDRESS_INFO =
    Option<unsafe extern "system" fn(Client: PWSK_CLIENT, AddrInfo: *mut ADDRINFOEXW)>;

/// `PFN_WSK_GET_NAME_INFO` (WSK 1.1).
pub type PFN_WSK_GET_NAME_INFO = Option<
    unsafe extern "system" fn(
        Client: PWSK_CLIENT,
        SockAddr: *mut SOCKADDR,
        SockAddrLength: u32,
        NodeName: *mut UNICODE_STRING,
        ServiceName: *mut UNICODE_STRING,
        Flags: u32,
        OwningProcess: *mut EPROCESS,
        OwningThread: *mut ETHREAD,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `WSK_CLIENT_NPI`: what `WskRegister` registers. Size 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_CLIENT_NPI {
    pub ClientContext: PVOID,
    pub Dispatch: *const WSK_CLIENT_DISPATCH,
}

/// `WSK_REGISTRATION`: opaque state of `WskRegister`, owned by the client, never touched by it.
/// Size 24. Must stay allocated until `WskDeregister` returns.
#[repr(C)]
pub struct WSK_REGISTRATION {
    pub ReservedRegistrationState: u64,
    pub ReservedRegistrationContext: PVOID,
    /// `KSPIN_LOCK` (`ULONG_PTR`).
    pub ReservedRegistrationLock: usize,
}

/// `WSK_PROVIDER_NPI`: what `WskCaptureProviderNPI` returns. Size 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_NPI {
    pub Client: PWSK_CLIENT,
    pub Dispatch: *const WSK_PROVIDER_DISPATCH,
}

/// `WskCaptureProviderNPI` wait: return at once.
pub const WSK_NO_WAIT: u32 = 0;
/// `WskCaptureProviderNPI` wait: until the provider is ready (never from `DriverEntry`).
pub const WSK_INFINITE_WAIT: u32 = 0xFFFF_FFFF;

#[cfg_attr(
    wsk_kernel,
    link(name = "NETIO.SYS", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// `PASSIVE_LEVEL`. Registers the client NPI; `WskRegistration` stays allocated until
    /// `WskDeregister` returns.
    pub fn WskRegister(
        WskClientNpi: *const WSK_CLIENT_NPI,
        WskRegistration: *mut WSK_REGISTRATION,
    ) -> NTSTATUS;
    /// `PASSIVE_LEVEL` (<= `DISPATCH_LEVEL` with `WSK_NO_WAIT`). `WaitTimeout` in milliseconds,
    /// or `WSK_NO_WAIT` / `WSK_INFINITE_WAIT`.
    pub fn WskCaptureProviderNPI(
        WskRegistration: *mut WSK_REGISTRATION,
        WaitTimeout: u32,
        WskProviderNpi: *mut WSK_PROVIDER_NPI,
    ) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`. Once per successful capture.
    pub fn WskReleaseProviderNPI(WskRegistration: *mut WSK_REGISTRATION);
    /// IRQL <= `DISPATCH_LEVEL`. May be unimplemented (Wine: `STATUS_NOT_IMPLEMENTED`).
    pub fn WskQueryProviderCharacteristics(
        WskRegistration: *mut WSK_REGISTRATION,
        WskProviderCharacteristics: *mut WSK_PROVIDER_CHARACTERISTICS,
    ) -> NTSTATUS;
    /// `PASSIVE_LEVEL`. Blocks until every captured NPI is released and every socket closed.
    pub fn WskDeregister(WskRegistration: *mut WSK_REGISTRATION);
}

/// `WSK_SOCKET`: what a provider returns for a socket; only its dispatch is public.
#[repr(C)]
pub struct WSK_SOCKET {
    pub Dispatch: *const core::ffi::c_void,
}

/// `PFN_WSK_CLOSE_SOCKET`: IRQL <= `DISPATCH_LEVEL`; completes `Irp`.
pub type PFN_WSK_CLOSE_SOCKET =
    Option<unsafe extern "system" fn(Socket: *mut WSK_SOCKET, Irp: *mut IRP) -> NTSTATUS>;

/// `PFN_WSK_CONTROL_SOCKET`.
pub type PFN_WSK_CONTROL_SOCKET = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        RequestType: i32,
        ControlCode: u32,
        Level: u32,
        InputSize: usize,
        InputBuffer: PVOID,
        OutputSize: usize,
        OutputBuffer: PVOID,
        OutputSizeReturned: *mut usize,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `WSK_PROVIDER_BASIC_DISPATCH`: the first members of every socket's dispatch table. Size 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_BASIC_DISPATCH {
    pub WskControlSocket: PFN_WSK_CONTROL_SOCKET,
    pub WskCloseSocket: PFN_WSK_CLOSE_SOCKET,
}

/// `MDL` (wdm.h, x64): a client builds its own with `IoAllocateMdl` + `MmBuildMdlForNonPagedPool`
/// and never reads them; a provider's (a receive indication's) are read for their bytes
/// (`MmGetSystemAddressForMdlSafe`). Size 48.
#[repr(C)]
pub struct MDL {
    pub Next: *mut MDL,
    pub Size: i16,
    pub MdlFlags: i16,
    pub Process: *mut EPROCESS,
    pub MappedSystemVa: PVOID,
    pub StartVa: PVOID,
    pub ByteCount: u32,
    pub ByteOffset: u32,
}

/// `MdlFlags` bits: the MDL's pages are mapped at `MappedSystemVa`, or it describes non-paged
/// pool (mapped there too).
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;

/// `MmMapLockedPagesSpecifyCache` arguments for `MmGetSystemAddressForMdlSafe`: `KernelMode`,
/// `MmCached`, `NormalPagePriority | MdlMappingNoExecute`.
pub const MmCached: i32 = 1;
pub const NormalPagePriority: u32 = 16;
pub const MdlMappingNoExecute: u32 = 0x4000_0000;

/// `WSK_BUF`: a byte range of an MDL chain. Size 24. `Offset + Length` must not pass the MDL.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_BUF {
    pub Mdl: *mut MDL,
    pub Offset: u32,
    pub Length: usize,
}

/// `SOCKADDR_IN`: size 16; port and address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SOCKADDR_IN {
    pub sin_family: u16,
    pub sin_port: u16,
    pub sin_addr: [u8; 4],
    pub sin_zero: [u8; 8],
}

/// `SOCKADDR_IN6`: size 28; port and address in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SOCKADDR_IN6 {
    pub sin6_family: u16,
    pub sin6_port: u16,
    pub sin6_flowinfo: u32,
    pub sin6_addr: [u8; 16],
    pub sin6_scope_id: u32,
}

/// `PFN_WSK_BIND`, `PFN_WSK_CONNECT`: `(Socket, Address, Flags, Irp)`.
pub type PFN_WSK_ADDRESS_CALL = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Address: *mut SOCKADDR,
        Flags: u32,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_GET_LOCAL_ADDRESS`, `PFN_WSK_GET_REMOTE_ADDRESS`: `(Socket, Address, Irp)`.
pub type PFN_WSK_GET_ADDRESS = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Address: *mut SOCKADDR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_SEND`, `PFN_WSK_RECEIVE`, `PFN_WSK_DISCONNECT`: `(Socket, Buffer, Flags, Irp)`.
pub type PFN_WSK_BUFFER_CALL = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: u32,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `WSK_PROVIDER_CONNECTION_DISPATCH`, the members up to `WskDisconnect` (the rest is never read).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_CONNECTION_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_ADDRESS_CALL,
    pub WskConnect: PFN_WSK_ADDRESS_CALL,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
    pub WskGetRemoteAddress: PFN_WSK_GET_ADDRESS,
    pub WskSend: PFN_WSK_BUFFER_CALL,
    pub WskReceive: PFN_WSK_BUFFER_CALL,
    pub WskDisconnect: PFN_WSK_BUFFER_CALL,
}

/// `PFN_WSK_ACCEPT`: `(ListenSocket, Flags, AcceptSocketContext, AcceptSocketDispatch,
/// LocalAddress, RemoteAddress, Irp)`; the accepted `WSK_SOCKET` in `Irp->IoStatus.Information`,
/// the addresses written before the IRP completes. IRQL <= `DISPATCH_LEVEL`.
pub type PFN_WSK_ACCEPT = Option<
    unsafe extern "system" fn(
        ListenSocket: *mut WSK_SOCKET,
        Flags: u32,
        AcceptSocketContext: PVOID,
        AcceptSocketDispatch: *const core::ffi::c_void,
        LocalAddress: *mut SOCKADDR,
        RemoteAddress: *mut SOCKADDR,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_INSPECT_COMPLETE`: `(ListenSocket, InspectID, Action, Irp)`; never called by this
/// library (no conditional accept), declared for the table's layout.
pub type PFN_WSK_INSPECT_COMPLETE = Option<
    unsafe extern "system" fn(
        ListenSocket: *mut WSK_SOCKET,
        InspectID: PVOID,
        Action: i32,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `WSK_PROVIDER_LISTEN_DISPATCH`: a listening socket's table. Size 48.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_LISTEN_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_ADDRESS_CALL,
    pub WskAccept: PFN_WSK_ACCEPT,
    pub WskInspectComplete: PFN_WSK_INSPECT_COMPLETE,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
}

/// `PFN_WSK_SEND_TO`: `(Socket, Buffer, Flags, RemoteAddress, ControlInfoLength, ControlInfo,
/// Irp)`. IRQL <= `DISPATCH_LEVEL`.
pub type PFN_WSK_SEND_TO = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: u32,
        RemoteAddress: *mut SOCKADDR,
        ControlInfoLength: u32,
        ControlInfo: PVOID,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_RECEIVE_FROM`: `(Socket, Buffer, Flags, RemoteAddress, ControlLength, ControlInfo,
/// ControlFlags, Irp)`; the datagram's sender written to `RemoteAddress`. IRQL <=
/// `DISPATCH_LEVEL`.
pub type PFN_WSK_RECEIVE_FROM = Option<
    unsafe extern "system" fn(
        Socket: *mut WSK_SOCKET,
        Buffer: *mut WSK_BUF,
        Flags: u32,
        RemoteAddress: *mut SOCKADDR,
        ControlLength: *mut u32,
        ControlInfo: PVOID,
        ControlFlags: *mut u32,
        Irp: *mut IRP,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_RELEASE_DATAGRAM_INDICATION_LIST`: `(Socket, DatagramIndication)`; never called by
/// this library yet (no receive event), declared for the table's layout.
pub type PFN_WSK_RELEASE_DATAGRAM_INDICATION_LIST = Option<
    unsafe extern "system" fn(Socket: *mut WSK_SOCKET, DatagramIndication: PVOID) -> NTSTATUS,
>;

/// `WSK_PROVIDER_DATAGRAM_DISPATCH`, the WSK 1.0 members (the rest is never read). Size 56.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_DATAGRAM_DISPATCH {
    pub Basic: WSK_PROVIDER_BASIC_DISPATCH,
    pub WskBind: PFN_WSK_ADDRESS_CALL,
    pub WskSendTo: PFN_WSK_SEND_TO,
    pub WskReceiveFrom: PFN_WSK_RECEIVE_FROM,
    pub WskRelease: PFN_WSK_RELEASE_DATAGRAM_INDICATION_LIST,
    pub WskGetLocalAddress: PFN_WSK_GET_ADDRESS,
}

/// `SOCK_DGRAM` and `IPPROTO_UDP` (`ws2def.h`).
pub const SOCK_DGRAM: u16 = 2;
pub const IPPROTO_UDP: u32 = 17;

/// `WSK_DATA_INDICATION`: one buffer of received data in a provider's list. Size 32.
#[repr(C)]
pub struct WSK_DATA_INDICATION {
    pub Next: *mut WSK_DATA_INDICATION,
    pub Buffer: WSK_BUF,
}

/// `PFN_WSK_RECEIVE_EVENT`: `(SocketContext, Flags, DataIndication, BytesIndicated,
/// BytesAccepted)`. Called at IRQL <= `DISPATCH_LEVEL`.
pub type PFN_WSK_RECEIVE_EVENT = Option<
    unsafe extern "system" fn(
        SocketContext: PVOID,
        Flags: u32,
        DataIndication: *mut WSK_DATA_INDICATION,
        BytesIndicated: usize,
        BytesAccepted: *mut usize,
    ) -> NTSTATUS,
>;

/// `PFN_WSK_DISCONNECT_EVENT`: `(SocketContext, Flags)` (`WSK_FLAG_ABORTIVE`: a reset). Called at
/// IRQL <= `DISPATCH_LEVEL`.
pub type PFN_WSK_DISCONNECT_EVENT =
    Option<unsafe extern "system" fn(SocketContext: PVOID, Flags: u32) -> NTSTATUS>;

/// `PFN_WSK_SEND_BACKLOG_EVENT`: `(SocketContext, IdealBacklogSize)`.
pub type PFN_WSK_SEND_BACKLOG_EVENT =
    Option<unsafe extern "system" fn(SocketContext: PVOID, IdealBacklogSize: usize) -> NTSTATUS>;

/// `WSK_CLIENT_CONNECTION_DISPATCH`: a connection socket's event callbacks. Size 24.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_CLIENT_CONNECTION_DISPATCH {
    pub WskReceiveEvent: PFN_WSK_RECEIVE_EVENT,
    pub WskDisconnectEvent: PFN_WSK_DISCONNECT_EVENT,
    pub WskSendBacklogEvent: PFN_WSK_SEND_BACKLOG_EVENT,
}

/// `PFN_WSK_ACCEPT_EVENT`: `(SocketContext, Flags, LocalAddress, RemoteAddress, AcceptSocket,
/// AcceptSocketContext, AcceptSocketDispatch)`; `STATUS_SUCCESS` takes the socket (and gives its
/// context and client dispatch), `STATUS_REQUEST_NOT_ACCEPTED` refuses it (the provider closes
/// it). A NULL `AcceptSocket`: the listening socket no longer works. Called at IRQL <=
/// `DISPATCH_LEVEL`.
pub type PFN_WSK_ACCEPT_EVENT = Option<
    unsafe extern "system" fn(
        SocketContext: PVOID,
        Flags: u32,
        LocalAddress: *mut SOCKADDR,
        RemoteAddress: *mut SOCKADDR,
        AcceptSocket: *mut WSK_SOCKET,
        AcceptSocketContext: *mut PVOID,
        AcceptSocketDispatch: *mut *const WSK_CLIENT_CONNECTION_DISPATCH,
    ) -> NTSTATUS,
>;

/// `WSK_CLIENT_LISTEN_DISPATCH`: a listening socket's event callbacks (the inspect and abort
/// events of conditional accept are never set here). Size 24.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_CLIENT_LISTEN_DISPATCH {
    pub WskAcceptEvent: PFN_WSK_ACCEPT_EVENT,
    pub WskInspectEvent: PVOID,
    pub WskAbortEvent: PVOID,
}

// SAFETY: a table of function pointers (the two unused members NULL), read-only.
unsafe impl Sync for WSK_CLIENT_LISTEN_DISPATCH {}

/// `WSK_DATAGRAM_INDICATION`: one received datagram in a provider's list. Size 56.
#[repr(C)]
pub struct WSK_DATAGRAM_INDICATION {
    pub Next: *mut WSK_DATAGRAM_INDICATION,
    pub Buffer: WSK_BUF,
    pub ControlInfo: PVOID,
    pub ControlInfoLength: u32,
    pub RemoteAddress: *mut SOCKADDR,
}

/// `PFN_WSK_RECEIVE_FROM_EVENT`: `(SocketContext, Flags, DataIndication)`. Called at IRQL <=
/// `DISPATCH_LEVEL`; a NULL list: the socket no longer works.
pub type PFN_WSK_RECEIVE_FROM_EVENT = Option<
    unsafe extern "system" fn(
        SocketContext: PVOID,
        Flags: u32,
        DataIndication: *mut WSK_DATAGRAM_INDICATION,
    ) -> NTSTATUS,
>;

/// `WSK_CLIENT_DATAGRAM_DISPATCH`: a datagram socket's event callback. Size 8.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_CLIENT_DATAGRAM_DISPATCH {
    pub WskReceiveFromEvent: PFN_WSK_RECEIVE_FROM_EVENT,
}

/// `WSK_EVENT_CALLBACK_CONTROL`: `SO_WSK_EVENT_CALLBACK`'s input. Size 16.
#[repr(C)]
pub struct WSK_EVENT_CALLBACK_CONTROL {
    pub NpiId: *const GUID,
    pub EventMask: u32,
}

/// `WSK_SO_BASE + 2`: enables or disables event callbacks (`WskControlSocket`, no IRP to enable).
pub const SO_WSK_EVENT_CALLBACK: u32 = 0x4002;
/// `SO_WSK_EVENT_CALLBACK` event flags.
pub const WSK_EVENT_SEND_BACKLOG: u32 = 0x0000_0010;
pub const WSK_EVENT_RECEIVE: u32 = 0x0000_0040;
pub const WSK_EVENT_DISCONNECT: u32 = 0x0000_0080;
pub const WSK_EVENT_RECEIVE_FROM: u32 = 0x0000_0100;
pub const WSK_EVENT_ACCEPT: u32 = 0x0000_0200;
pub const WSK_EVENT_DISABLE: u32 = 0x8000_0000;

/// `SOCKADDR_STORAGE` (`ws2def.h`): room for any socket address. Size 128, alignment 8.
#[allow(clippy::pub_underscore_fields)] // the C names
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SOCKADDR_STORAGE {
    pub ss_family: u16,
    pub __ss_pad1: [u8; 6],
    pub __ss_align: i64,
    pub __ss_pad2: [u8; 112],
}

impl SOCKADDR_STORAGE {
    /// All zero (`ss_family` 0: `AF_UNSPEC`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            ss_family: 0,
            __ss_pad1: [0; 6],
            __ss_align: 0,
            __ss_pad2: [0; 112],
        }
    }
}

/// `WSK_CONTROL_SOCKET_TYPE`: `WskControlSocket`'s `RequestType`.
pub const WskSetOption: i32 = 0;
pub const WskGetOption: i32 = 1;
pub const WskIoctl: i32 = 2;

/// Option levels and names for `WskControlSocket` (`ws2def.h`, `ws2ipdef.h`, `mswsock.h`).
pub const SOL_SOCKET: u32 = 0xFFFF;
pub const SO_REUSEADDR: u32 = 0x0004;
pub const SO_KEEPALIVE: u32 = 0x0008;
pub const SO_BROADCAST: u32 = 0x0020;
/// `SO_EXCLUSIVEADDRUSE`: `(int)(~SO_REUSEADDR)`.
pub const SO_EXCLUSIVEADDRUSE: u32 = !SO_REUSEADDR;
pub const TCP_NODELAY: u32 = 0x0001;
pub const IPPROTO_IPV6: u32 = 41;
pub const IPV6_V6ONLY: u32 = 27;

/// `WskDisconnect` flag: abort (reset) instead of a graceful disconnect.
pub const WSK_FLAG_ABORTIVE: u32 = 0x0000_0001;

/// `WSK_FLAG_*` socket kinds for `WskSocket`.
pub const WSK_FLAG_BASIC_SOCKET: u32 = 0x0000_0000;
pub const WSK_FLAG_LISTEN_SOCKET: u32 = 0x0000_0001;
pub const WSK_FLAG_CONNECTION_SOCKET: u32 = 0x0000_0002;
pub const WSK_FLAG_DATAGRAM_SOCKET: u32 = 0x0000_0004;
/// Address families and socket types (`ws2def.h`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 23;
pub const SOCK_STREAM: u16 = 1;
pub const IPPROTO_TCP: u32 = 6;

/// `WSK_PROVIDER_DISPATCH`: 32 bytes at WSK 1.0, 56 with the WSK 1.1 members. A client attached
/// at 1.0 must not read past `WskControlClient`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSK_PROVIDER_DISPATCH {
    pub Version: u16,
    pub Reserved: u16,
    pub WskSocket: PFN_WSK_SOCKET,
    pub WskSocketConnect: PFN_WSK_SOCKET_CONNECT,
    pub WskControlClient: PFN_WSK_CONTROL_CLIENT,
    pub WskGetAddressInfo: PFN_WSK_GET_ADDRESS_INFO,
    pub WskFreeAddressInfo: PFN_WSK_FREE_ADDRESS_INFO,
    pub WskGetNameInfo: PFN_WSK_GET_NAME_INFO,
}
