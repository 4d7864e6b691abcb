//! Every size and field offset of the hand-declared ABI, against the x64 layout of the C headers
//! (see the project's ABI reference: netioddk.h, wsk.h, wdm.h).

use std::mem::{align_of, offset_of, size_of};

use wsk_sys::*;

#[test]
fn guid_and_luid() {
    assert_eq!(size_of::<GUID>(), 16);
    assert_eq!(align_of::<GUID>(), 4);
    assert_eq!(offset_of!(GUID, Data1), 0);
    assert_eq!(offset_of!(GUID, Data2), 4);
    assert_eq!(offset_of!(GUID, Data3), 6);
    assert_eq!(offset_of!(GUID, Data4), 8);
    assert_eq!(size_of::<LUID>(), 8);
    assert_eq!(offset_of!(LUID, HighPart), 4);
}

#[test]
fn npi_moduleid() {
    assert_eq!(size_of::<NPI_MODULEID>(), 0x18);
    assert_eq!(align_of::<NPI_MODULEID>(), 4);
    assert_eq!(offset_of!(NPI_MODULEID, Length), 0);
    assert_eq!(offset_of!(NPI_MODULEID, Type), 4);
    assert_eq!(offset_of!(NPI_MODULEID, u), 8);
    assert_eq!(size_of::<NPI_MODULEID_TYPE>(), 4);
    assert_eq!((MIT_GUID, MIT_IF_LUID), (1, 2));
}

#[test]
fn npi_registration_instance() {
    assert_eq!(size_of::<NPI_REGISTRATION_INSTANCE>(), 0x28);
    assert_eq!(align_of::<NPI_REGISTRATION_INSTANCE>(), 8);
    assert_eq!(offset_of!(NPI_REGISTRATION_INSTANCE, Version), 0);
    assert_eq!(offset_of!(NPI_REGISTRATION_INSTANCE, Size), 2);
    assert_eq!(offset_of!(NPI_REGISTRATION_INSTANCE, NpiId), 8);
    assert_eq!(offset_of!(NPI_REGISTRATION_INSTANCE, ModuleId), 16);
    assert_eq!(offset_of!(NPI_REGISTRATION_INSTANCE, Number), 24);
    assert_eq!(
        offset_of!(NPI_REGISTRATION_INSTANCE, NpiSpecificCharacteristics),
        32
    );
}

#[test]
fn npi_client_characteristics() {
    assert_eq!(size_of::<NPI_CLIENT_CHARACTERISTICS>(), 0x48);
    assert_eq!(align_of::<NPI_CLIENT_CHARACTERISTICS>(), 8);
    assert_eq!(offset_of!(NPI_CLIENT_CHARACTERISTICS, Version), 0);
    assert_eq!(offset_of!(NPI_CLIENT_CHARACTERISTICS, Length), 2);
    assert_eq!(
        offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientAttachProvider),
        8
    );
    assert_eq!(
        offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientDetachProvider),
        16
    );
    assert_eq!(
        offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientCleanupBindingContext),
        24
    );
    assert_eq!(
        offset_of!(NPI_CLIENT_CHARACTERISTICS, ClientRegistrationInstance),
        32
    );
    // The callbacks are nullable function pointers: one pointer each.
    assert_eq!(size_of::<Option<NPI_CLIENT_ATTACH_PROVIDER_FN>>(), 8);
    assert_eq!(size_of::<Option<NPI_CLIENT_DETACH_PROVIDER_FN>>(), 8);
    assert_eq!(
        size_of::<Option<NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN>>(),
        8
    );
}

#[test]
fn wsk_client_dispatch() {
    assert_eq!(size_of::<WSK_CLIENT_DISPATCH>(), 16);
    assert_eq!(offset_of!(WSK_CLIENT_DISPATCH, Version), 0);
    assert_eq!(offset_of!(WSK_CLIENT_DISPATCH, Reserved), 2);
    assert_eq!(offset_of!(WSK_CLIENT_DISPATCH, WskClientEvent), 8);
}

#[test]
fn wsk_provider_characteristics() {
    assert_eq!(size_of::<WSK_PROVIDER_CHARACTERISTICS>(), 4);
    assert_eq!(offset_of!(WSK_PROVIDER_CHARACTERISTICS, HighestVersion), 0);
    assert_eq!(offset_of!(WSK_PROVIDER_CHARACTERISTICS, LowestVersion), 2);
}

#[test]
fn wsk_provider_dispatch() {
    assert_eq!(size_of::<WSK_PROVIDER_DISPATCH>(), 56);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, Version), 0);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, Reserved), 2);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskSocket), 8);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskSocketConnect), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskControlClient), 24);
    // WSK 1.0 ends here: 32 bytes.
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskGetAddressInfo), 32);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskFreeAddressInfo), 40);
    assert_eq!(offset_of!(WSK_PROVIDER_DISPATCH, WskGetNameInfo), 48);
}

#[test]
fn unicode_string() {
    assert_eq!(size_of::<UNICODE_STRING>(), 16);
    assert_eq!(offset_of!(UNICODE_STRING, Length), 0);
    assert_eq!(offset_of!(UNICODE_STRING, MaximumLength), 2);
    assert_eq!(offset_of!(UNICODE_STRING, Buffer), 8);
}

#[test]
fn driver_object() {
    assert_eq!(size_of::<DRIVER_OBJECT>(), 0x150);
    assert_eq!(offset_of!(DRIVER_OBJECT, Type), 0);
    assert_eq!(offset_of!(DRIVER_OBJECT, Size), 2);
    assert_eq!(offset_of!(DRIVER_OBJECT, DeviceObject), 8);
    assert_eq!(offset_of!(DRIVER_OBJECT, Flags), 16);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverStart), 24);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverSize), 32);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverSection), 40);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverExtension), 48);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverName), 56);
    assert_eq!(offset_of!(DRIVER_OBJECT, HardwareDatabase), 72);
    assert_eq!(offset_of!(DRIVER_OBJECT, FastIoDispatch), 80);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverInit), 88);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverStartIo), 96);
    assert_eq!(offset_of!(DRIVER_OBJECT, DriverUnload), 0x68);
    assert_eq!(offset_of!(DRIVER_OBJECT, MajorFunction), 112);
}

#[test]
fn constants() {
    assert_eq!(
        NPI_WSK_INTERFACE_ID,
        GUID {
            Data1: 0x2227_E803,
            Data2: 0x8D8B,
            Data3: 0x11D4,
            Data4: [0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09],
        }
    );
    assert_eq!(MAKE_WSK_VERSION(1, 0), 0x0100);
    assert_eq!(MAKE_WSK_VERSION(1, 1), 0x0101);
    assert_eq!(WSK_MAJOR_VERSION(0x0102), 1);
    assert_eq!(WSK_MINOR_VERSION(0x0102), 2);
    assert_eq!(STATUS_SUCCESS, 0);
    assert_eq!(STATUS_PENDING, 0x103);
    assert_eq!(STATUS_UNSUCCESSFUL.cast_unsigned(), 0xC000_0001);
    assert_eq!(STATUS_INVALID_PARAMETER.cast_unsigned(), 0xC000_000D);
    assert_eq!(STATUS_INSUFFICIENT_RESOURCES.cast_unsigned(), 0xC000_009A);
    assert_eq!(STATUS_NOINTERFACE.cast_unsigned(), 0xC000_02B9);
    assert_eq!(STATUS_INVALID_DEVICE_STATE.cast_unsigned(), 0xC000_0184);
    assert_eq!(POOL_FLAG_NON_PAGED, 0x40);
    assert_eq!((NonPagedPool, NonPagedPoolNx), (0, 512));
    assert_eq!(DPFLTR_IHVDRIVER_ID, 77);
}

#[test]
fn rtl_osversioninfow() {
    assert_eq!(size_of::<RTL_OSVERSIONINFOW>(), 276);
    assert_eq!(align_of::<RTL_OSVERSIONINFOW>(), 4);
    assert_eq!(offset_of!(RTL_OSVERSIONINFOW, dwMajorVersion), 4);
    assert_eq!(offset_of!(RTL_OSVERSIONINFOW, dwMinorVersion), 8);
    assert_eq!(offset_of!(RTL_OSVERSIONINFOW, dwBuildNumber), 12);
    assert_eq!(offset_of!(RTL_OSVERSIONINFOW, szCSDVersion), 20);
}

#[test]
fn kernel_objects() {
    assert_eq!(size_of::<KEVENT>(), 24);
    assert_eq!(align_of::<KEVENT>(), 8);
    assert_eq!((NotificationEvent, SynchronizationEvent), (0, 1));
    assert_eq!((Executive, KernelMode), (0, 0));
    // wdm.h (x64): KDPC is 0x40 bytes (its DpcData pointer at 0x38), KTIMER 0x40 (Period at 0x3C),
    // KSPIN_LOCK a ULONG_PTR, KIRQL a UCHAR.
    assert_eq!((size_of::<KDPC>(), align_of::<KDPC>()), (0x40, 8));
    assert_eq!((size_of::<KTIMER>(), align_of::<KTIMER>()), (0x40, 8));
    assert_eq!(size_of::<KSPIN_LOCK>(), 8);
    assert_eq!(size_of::<KIRQL>(), 1);
    assert_eq!((PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL), (0, 1, 2));
    assert_eq!(DelayedWorkQueue, 1);
    assert_eq!(
        (FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN),
        (0x22, 0x100)
    );
    assert_eq!(STATUS_TIMEOUT, 0x102);
    assert_eq!(STATUS_NOT_IMPLEMENTED.cast_unsigned(), 0xC000_0002);
    assert_eq!(STATUS_CANCELLED.cast_unsigned(), 0xC000_0120);
}

#[test]
fn wsk_registration() {
    assert_eq!(size_of::<WSK_CLIENT_NPI>(), 16);
    assert_eq!(offset_of!(WSK_CLIENT_NPI, Dispatch), 8);
    assert_eq!(size_of::<WSK_REGISTRATION>(), 24);
    assert_eq!(align_of::<WSK_REGISTRATION>(), 8);
    assert_eq!(offset_of!(WSK_REGISTRATION, ReservedRegistrationContext), 8);
    assert_eq!(offset_of!(WSK_REGISTRATION, ReservedRegistrationLock), 16);
    assert_eq!(size_of::<WSK_PROVIDER_NPI>(), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_NPI, Dispatch), 8);
    assert_eq!((WSK_NO_WAIT, WSK_INFINITE_WAIT), (0, 0xFFFF_FFFF));
}

#[test]
fn irp_prefix_and_sockets() {
    assert_eq!(size_of::<IO_STATUS_BLOCK>(), 16);
    assert_eq!(offset_of!(IO_STATUS_BLOCK, Information), 8);
    assert_eq!(offset_of!(IRP, MdlAddress), 8);
    assert_eq!(offset_of!(IRP, Flags), 0x10);
    assert_eq!(offset_of!(IRP, AssociatedIrp), 0x18);
    assert_eq!(offset_of!(IRP, ThreadListEntry), 0x20);
    assert_eq!(offset_of!(IRP, IoStatus), 0x30);
    assert_eq!(offset_of!(IRP, RequestorMode), 0x40);
    assert_eq!(offset_of!(IRP, StackCount), 0x42);
    assert_eq!(offset_of!(IRP, CurrentLocation), 0x43);
    assert_eq!(offset_of!(IRP, UserIosb), 0x48);
    assert_eq!(offset_of!(IRP, UserEvent), 0x50);
    assert_eq!(offset_of!(IRP, Overlay), 0x58);
    assert_eq!(offset_of!(IRP, CancelRoutine), 0x68);
    assert_eq!(offset_of!(IRP, UserBuffer), 0x70);
    assert_eq!(offset_of!(IRP, Tail), 0x78);
    assert_eq!(offset_of!(IRP_TAIL_OVERLAY, Thread), 0x20);
    assert_eq!(
        offset_of!(IRP, Tail) + offset_of!(IRP_TAIL_OVERLAY, CurrentStackLocation),
        0xB8
    );
    assert_eq!(size_of::<IRP_TAIL_OVERLAY>(), 0x50);
    assert_eq!(size_of::<IRP>(), 0xD0);
    assert_eq!(size_of::<IO_STACK_LOCATION>(), 0x48);
    assert_eq!(offset_of!(IO_STACK_LOCATION, Parameters), 0x08);
    assert_eq!(offset_of!(IO_STACK_LOCATION, DeviceObject), 0x28);
    assert_eq!(offset_of!(IO_STACK_LOCATION, CompletionRoutine), 0x38);
    assert_eq!(offset_of!(IO_STACK_LOCATION, Context), 0x40);
    assert_eq!(STATUS_MORE_PROCESSING_REQUIRED.cast_unsigned(), 0xC000_0016);
    assert_eq!(size_of::<WSK_SOCKET>(), 8);
    assert_eq!(size_of::<WSK_PROVIDER_BASIC_DISPATCH>(), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_BASIC_DISPATCH, WskCloseSocket), 8);
    assert_eq!(
        (
            WSK_FLAG_BASIC_SOCKET,
            WSK_FLAG_LISTEN_SOCKET,
            WSK_FLAG_CONNECTION_SOCKET,
            WSK_FLAG_DATAGRAM_SOCKET
        ),
        (0, 1, 2, 4)
    );
    assert_eq!((AF_INET, AF_INET6, SOCK_STREAM, IPPROTO_TCP), (2, 23, 1, 6));
}

#[test]
fn buffers_addresses_and_connection_dispatch() {
    assert_eq!(size_of::<WSK_BUF>(), 24);
    assert_eq!(offset_of!(WSK_BUF, Offset), 8);
    assert_eq!(offset_of!(WSK_BUF, Length), 16);
    assert_eq!(size_of::<SOCKADDR_IN>(), 16);
    assert_eq!(offset_of!(SOCKADDR_IN, sin_port), 2);
    assert_eq!(offset_of!(SOCKADDR_IN, sin_addr), 4);
    assert_eq!(size_of::<SOCKADDR_IN6>(), 28);
    assert_eq!(offset_of!(SOCKADDR_IN6, sin6_flowinfo), 4);
    assert_eq!(offset_of!(SOCKADDR_IN6, sin6_addr), 8);
    assert_eq!(offset_of!(SOCKADDR_IN6, sin6_scope_id), 24);
    assert_eq!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskBind), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskConnect), 24);
    assert_eq!(
        offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskGetLocalAddress),
        32
    );
    assert_eq!(
        offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskGetRemoteAddress),
        40
    );
    assert_eq!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskSend), 48);
    assert_eq!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskReceive), 56);
    assert_eq!(
        offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskDisconnect),
        64
    );
    assert_eq!(WSK_FLAG_ABORTIVE, 1);
}

#[test]
fn addrinfoexw() {
    assert_eq!(size_of::<ADDRINFOEXW>(), 72);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_family), 4);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_addrlen), 16);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_canonname), 24);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_addr), 32);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_blob), 40);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_bloblen), 48);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_provider), 56);
    assert_eq!(offset_of!(ADDRINFOEXW, ai_next), 64);
    assert_eq!(NS_ALL, 0);
}

#[test]
fn registry() {
    assert_eq!(size_of::<OBJECT_ATTRIBUTES>(), 48);
    assert_eq!(offset_of!(OBJECT_ATTRIBUTES, RootDirectory), 8);
    assert_eq!(offset_of!(OBJECT_ATTRIBUTES, ObjectName), 16);
    assert_eq!(offset_of!(OBJECT_ATTRIBUTES, Attributes), 24);
    assert_eq!(offset_of!(OBJECT_ATTRIBUTES, SecurityDescriptor), 32);
    assert_eq!(offset_of!(OBJECT_ATTRIBUTES, SecurityQualityOfService), 40);
    assert_eq!(offset_of!(KEY_VALUE_PARTIAL_INFORMATION, Data), 12);
    assert_eq!(
        (OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, KEY_READ),
        (0x40, 0x200, 0x20019)
    );
    assert_eq!((KeyValuePartialInformation, REG_SZ, REG_DWORD), (2, 1, 4));
}

#[test]
fn performance_counter() {
    // LARGE_INTEGER is a union of QuadPart (LONGLONG) and two 32-bit halves: 8 bytes, 8-aligned.
    assert_eq!(size_of::<LARGE_INTEGER>(), 8);
    assert_eq!(align_of::<LARGE_INTEGER>(), 8);
    // The routine looked up by name: a plain code pointer, NULL-able as an Option.
    assert_eq!(size_of::<PFN_KE_QUERY_PERFORMANCE_COUNTER>(), 8);
    assert_eq!(size_of::<Option<PFN_KE_QUERY_PERFORMANCE_COUNTER>>(), 8);
}

#[test]
fn listen_dispatch_and_addresses() {
    assert_eq!(size_of::<WSK_PROVIDER_LISTEN_DISPATCH>(), 48);
    assert_eq!(offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, Basic), 0);
    assert_eq!(offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, WskBind), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, WskAccept), 24);
    assert_eq!(
        offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, WskInspectComplete),
        32
    );
    assert_eq!(
        offset_of!(WSK_PROVIDER_LISTEN_DISPATCH, WskGetLocalAddress),
        40
    );
    // WskBind sits where a connection socket's does: both tables start Basic, WskBind.
    assert_eq!(offset_of!(WSK_PROVIDER_CONNECTION_DISPATCH, WskBind), 16);
    assert_eq!(size_of::<SOCKADDR_STORAGE>(), 128);
    assert_eq!(align_of::<SOCKADDR_STORAGE>(), 8);
    assert_eq!(offset_of!(SOCKADDR_STORAGE, ss_family), 0);
    assert_eq!(offset_of!(SOCKADDR_STORAGE, __ss_align), 8);
    assert_eq!(offset_of!(SOCKADDR_STORAGE, __ss_pad2), 16);
    assert_eq!(size_of::<PFN_WSK_ACCEPT>(), 8);
    assert_eq!(WSK_FLAG_LISTEN_SOCKET, 1);
}

#[test]
fn socket_options() {
    assert_eq!((WskSetOption, WskGetOption, WskIoctl), (0, 1, 2));
    assert_eq!(SOL_SOCKET, 0xFFFF);
    assert_eq!((SO_REUSEADDR, SO_KEEPALIVE, SO_BROADCAST), (4, 8, 0x20));
    assert_eq!(SO_EXCLUSIVEADDRUSE, 0xFFFF_FFFB);
    assert_eq!((IPPROTO_TCP, TCP_NODELAY), (6, 1));
    assert_eq!((IPPROTO_IPV6, IPV6_V6ONLY), (41, 27));
}

#[test]
fn datagram_dispatch() {
    assert_eq!(size_of::<WSK_PROVIDER_DATAGRAM_DISPATCH>(), 56);
    assert_eq!(offset_of!(WSK_PROVIDER_DATAGRAM_DISPATCH, WskBind), 16);
    assert_eq!(offset_of!(WSK_PROVIDER_DATAGRAM_DISPATCH, WskSendTo), 24);
    assert_eq!(
        offset_of!(WSK_PROVIDER_DATAGRAM_DISPATCH, WskReceiveFrom),
        32
    );
    assert_eq!(offset_of!(WSK_PROVIDER_DATAGRAM_DISPATCH, WskRelease), 40);
    assert_eq!(
        offset_of!(WSK_PROVIDER_DATAGRAM_DISPATCH, WskGetLocalAddress),
        48
    );
    assert_eq!(
        (SOCK_DGRAM, IPPROTO_UDP, WSK_FLAG_DATAGRAM_SOCKET),
        (2, 17, 4)
    );
}

#[test]
fn mdl_and_receive_events() {
    assert_eq!(size_of::<MDL>(), 48);
    assert_eq!(offset_of!(MDL, Next), 0);
    assert_eq!(offset_of!(MDL, Size), 8);
    assert_eq!(offset_of!(MDL, MdlFlags), 10);
    assert_eq!(offset_of!(MDL, Process), 16);
    assert_eq!(offset_of!(MDL, MappedSystemVa), 24);
    assert_eq!(offset_of!(MDL, StartVa), 32);
    assert_eq!(offset_of!(MDL, ByteCount), 40);
    assert_eq!(offset_of!(MDL, ByteOffset), 44);
    assert_eq!(
        (MDL_MAPPED_TO_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL),
        (1, 4)
    );
    assert_eq!(
        (MmCached, NormalPagePriority, MdlMappingNoExecute),
        (1, 16, 0x4000_0000)
    );
    assert_eq!(size_of::<WSK_DATA_INDICATION>(), 32);
    assert_eq!(offset_of!(WSK_DATA_INDICATION, Buffer), 8);
    assert_eq!(size_of::<WSK_CLIENT_CONNECTION_DISPATCH>(), 24);
    assert_eq!(
        offset_of!(WSK_CLIENT_CONNECTION_DISPATCH, WskDisconnectEvent),
        8
    );
    assert_eq!(
        offset_of!(WSK_CLIENT_CONNECTION_DISPATCH, WskSendBacklogEvent),
        16
    );
    assert_eq!(size_of::<WSK_EVENT_CALLBACK_CONTROL>(), 16);
    assert_eq!(offset_of!(WSK_EVENT_CALLBACK_CONTROL, EventMask), 8);
    assert_eq!(SO_WSK_EVENT_CALLBACK, 0x4000 + 2);
    assert_eq!(
        (WSK_EVENT_RECEIVE, WSK_EVENT_DISCONNECT, WSK_EVENT_ACCEPT),
        (0x40, 0x80, 0x200)
    );
    assert_eq!(WSK_EVENT_DISABLE, 0x8000_0000);
    assert_eq!(STATUS_DATA_NOT_ACCEPTED.cast_unsigned(), 0xC000_021B);
}

#[test]
fn accept_events() {
    assert_eq!(size_of::<WSK_CLIENT_LISTEN_DISPATCH>(), 24);
    assert_eq!(offset_of!(WSK_CLIENT_LISTEN_DISPATCH, WskInspectEvent), 8);
    assert_eq!(offset_of!(WSK_CLIENT_LISTEN_DISPATCH, WskAbortEvent), 16);
    assert_eq!(size_of::<PFN_WSK_ACCEPT_EVENT>(), 8);
    assert_eq!(STATUS_REQUEST_NOT_ACCEPTED.cast_unsigned(), 0xC000_00D0);
}

#[test]
fn datagram_events() {
    assert_eq!(size_of::<WSK_DATAGRAM_INDICATION>(), 56);
    assert_eq!(offset_of!(WSK_DATAGRAM_INDICATION, Buffer), 8);
    assert_eq!(offset_of!(WSK_DATAGRAM_INDICATION, ControlInfo), 32);
    assert_eq!(offset_of!(WSK_DATAGRAM_INDICATION, ControlInfoLength), 40);
    assert_eq!(offset_of!(WSK_DATAGRAM_INDICATION, RemoteAddress), 48);
    assert_eq!(size_of::<WSK_CLIENT_DATAGRAM_DISPATCH>(), 8);
    assert_eq!(WSK_EVENT_RECEIVE_FROM, 0x100);
}
