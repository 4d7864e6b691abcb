"""The ABI the harness speaks: NTSTATUS values, WSK versions and NPI ids, pool flags and tags,
event and work queue types, and the x64 sizes and offsets of the structures it reads or writes
(DRIVER_OBJECT, DEVICE_OBJECT, IRP, IO_STACK_LOCATION, MDL, KEVENT, the NMR and WSK structures),
plus the little formatting helpers every other module uses.

Values from wdm.h, netioddk.h and wsk.h (Windows Driver Kit); see
shared/reference/nmr-wsk-abi.md and https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/
and .../ddi/netioddk/ for the structures.
"""
import uuid
from typing import Optional

import driver_profiles

STATUS_SUCCESS = 0x00000000
STATUS_TIMEOUT = 0x00000102
STATUS_PENDING = 0x00000103
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_NOT_IMPLEMENTED = 0xC0000002
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_NOINTERFACE = 0xC00002B9
STATUS_DEVICE_NOT_READY = 0xC00000A3
STATUS_INVALID_DEVICE_STATE = 0xC0000184
STATUS_OBJECT_NAME_COLLISION = 0xC0000035
STATUS_OBJECT_NAME_NOT_FOUND = 0xC0000034
STATUS_INVALID_HANDLE = 0xC0000008
STATUS_BUFFER_TOO_SMALL = 0xC0000023
STATUS_BUFFER_OVERFLOW = 0x80000005
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_CANCELLED = 0xC0000120
STATUS_CONNECTION_REFUSED = 0xC0000236
STATUS_CONNECTION_ABORTED = 0xC0000241
STATUS_INVALID_DEVICE_REQUEST = 0xC0000010
REG_SZ = 1
REG_DWORD = 4

STATUS_NAMES = {
    STATUS_SUCCESS: "STATUS_SUCCESS",
    STATUS_TIMEOUT: "STATUS_TIMEOUT",
    STATUS_PENDING: "STATUS_PENDING",
    STATUS_UNSUCCESSFUL: "STATUS_UNSUCCESSFUL",
    STATUS_NOT_IMPLEMENTED: "STATUS_NOT_IMPLEMENTED",
    STATUS_INVALID_PARAMETER: "STATUS_INVALID_PARAMETER",
    STATUS_INSUFFICIENT_RESOURCES: "STATUS_INSUFFICIENT_RESOURCES",
    STATUS_NOT_SUPPORTED: "STATUS_NOT_SUPPORTED",
    STATUS_NOINTERFACE: "STATUS_NOINTERFACE",
    STATUS_DEVICE_NOT_READY: "STATUS_DEVICE_NOT_READY",
    STATUS_INVALID_DEVICE_STATE: "STATUS_INVALID_DEVICE_STATE",
    STATUS_OBJECT_NAME_COLLISION: "STATUS_OBJECT_NAME_COLLISION",
    STATUS_OBJECT_NAME_NOT_FOUND: "STATUS_OBJECT_NAME_NOT_FOUND",
    STATUS_INVALID_HANDLE: "STATUS_INVALID_HANDLE",
    STATUS_BUFFER_TOO_SMALL: "STATUS_BUFFER_TOO_SMALL",
    STATUS_BUFFER_OVERFLOW: "STATUS_BUFFER_OVERFLOW",
    STATUS_MORE_PROCESSING_REQUIRED: "STATUS_MORE_PROCESSING_REQUIRED",
    STATUS_CANCELLED: "STATUS_CANCELLED",
    STATUS_CONNECTION_REFUSED: "STATUS_CONNECTION_REFUSED",
    STATUS_CONNECTION_ABORTED: "STATUS_CONNECTION_ABORTED",
    STATUS_INVALID_DEVICE_REQUEST: "STATUS_INVALID_DEVICE_REQUEST",
    0xC000021B: "STATUS_DATA_NOT_ACCEPTED",
}

# More failure statuses, for the failure matrix (tests/failure-matrix.txt).
STATUS_ACCESS_DENIED = 0xC0000022
STATUS_FILE_FORCED_CLOSED = 0xC00000B6
STATUS_IO_TIMEOUT = 0xC00000B5
STATUS_CONNECTION_RESET = 0xC000020D
STATUS_ADDRESS_ALREADY_EXISTS = 0xC000020A
STATUS_NOT_FOUND = 0xC0000225
STATUS_NAMES.update({
    STATUS_ACCESS_DENIED: "STATUS_ACCESS_DENIED",
    STATUS_FILE_FORCED_CLOSED: "STATUS_FILE_FORCED_CLOSED",
    STATUS_IO_TIMEOUT: "STATUS_IO_TIMEOUT",
    STATUS_CONNECTION_RESET: "STATUS_CONNECTION_RESET",
    STATUS_ADDRESS_ALREADY_EXISTS: "STATUS_ADDRESS_ALREADY_EXISTS",
    STATUS_NOT_FOUND: "STATUS_NOT_FOUND",
})

# IRQLs (wdm.h): DIRQL stands for any device IRQL (3 and above).
PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL, DIRQL = 0, 1, 2, 3
IRQL_LEVELS = {"PASSIVE_LEVEL": PASSIVE_LEVEL, "APC_LEVEL": APC_LEVEL,
               "DISPATCH_LEVEL": DISPATCH_LEVEL, "DIRQL": DIRQL}

WSK_1_0 = 0x0100
WSK_1_1 = 0x0101
WSK_NO_WAIT = 0
WSK_INFINITE_WAIT = 0xFFFFFFFF

NPI_WSK_INTERFACE_ID = uuid.UUID("2227E803-8D8B-11D4-ABAD-009027719E09")
# The NPI id of the network-layer NPI, used as a "wrong NpiId" in tests.
NPI_OTHER_INTERFACE_ID = uuid.UUID("2227E804-8D8B-11D4-ABAD-009027719E09")
# The provider's own module id (any GUID; Windows' afd.sys uses its own).
PROVIDER_MODULE_ID = uuid.UUID("7B2D5A54-9C3E-4A8B-8C3E-5F1A2B3C4D5E")

POOL_FLAG_NON_PAGED = 0x40
NON_PAGED_POOL = 0  # before Windows 8
NON_PAGED_POOL_NX = 512

NOTIFICATION_EVENT = 0
SYNCHRONIZATION_EVENT = 1
EVENT_TYPES = {NOTIFICATION_EVENT: "NotificationEvent",
               SYNCHRONIZATION_EVENT: "SynchronizationEvent"}
WORK_QUEUES = {0: "CriticalWorkQueue", 1: "DelayedWorkQueue", 2: "HyperCriticalWorkQueue",
               3: "NormalWorkQueue", 4: "BackgroundWorkQueue", 5: "RealTimeWorkQueue",
               6: "SuperCriticalWorkQueue"}
DELAYED_WORK_QUEUE = 1

# Sizes / offsets (x64)
SIZEOF_NPI_CLIENT_CHARACTERISTICS = 72
SIZEOF_NPI_REGISTRATION_INSTANCE = 40
SIZEOF_NPI_MODULEID = 24
SIZEOF_WSK_CLIENT_DISPATCH = 16
SIZEOF_WSK_PROVIDER_DISPATCH = 56
SIZEOF_WSK_CLIENT_NPI = 16
SIZEOF_WSK_PROVIDER_NPI = 16
SIZEOF_WSK_REGISTRATION = 24
SIZEOF_KEVENT = 24
SIZEOF_DEVICE_OBJECT = 0x150
SIZEOF_IO_WORKITEM = 0x58  # opaque; what IoSizeofWorkItem says on x64
DRIVER_OBJECT_DEVICE_OBJECT = 0x08
DRIVER_OBJECT_DRIVER_UNLOAD = 0x68
DRIVER_OBJECT_MAJOR_FUNCTION = 0x70  # PDRIVER_DISPATCH MajorFunction[IRP_MJ_MAXIMUM_FUNCTION + 1]
IRP_MJ_MAXIMUM_FUNCTION = 0x1B
IRP_MJ_INTERNAL_DEVICE_CONTROL = 0x0F
DEVICE_OBJECT_DRIVER_OBJECT = 0x08
DEVICE_OBJECT_NEXT_DEVICE = 0x10
IO_TYPE_DEVICE = 3
KERNEL_STACK_SIZE = 0x6000  # x64

# The emulated clock counts in 100 ns units, like the kernel's.
TICKS_PER_MS = 10_000
# A wait that keeps timing out while nothing else happens is reported after this many timeouts,
# and the emulation of a scenario stops at this emulated time.
MAX_FRUITLESS_TIMEOUTS = 60
MAX_EMULATED_TIME = 3600 * 1000 * TICKS_PER_MS
# "System Worker Threads": a work item routine must be short; one that runs longer than this (of
# emulated time) is reported.
MAX_WORK_ITEM_TIME = 1000 * TICKS_PER_MS

WSK_PROVIDER_DISPATCH_FUNCS = [  # (name, argc), in table order from +8
    ("WskSocket", 11),
    ("WskSocketConnect", 12),
    ("WskControlClient", 8),
    ("WskGetAddressInfo", 10),
    ("WskFreeAddressInfo", 2),
    ("WskGetNameInfo", 9),
]

# A socket's WSK_PROVIDER_CONNECTION_DISPATCH (wsk.h): WSK_PROVIDER_BASIC_DISPATCH
# (WskControlSocket, WskCloseSocket), then WskBind .. WskDisconnect; (name, argc), from +0.
WSK_CONNECTION_DISPATCH_FUNCS = [
    ("WskControlSocket", 10),
    ("WskCloseSocket", 2),
    ("WskBind", 4),
    ("WskConnect", 4),
    ("WskGetLocalAddress", 3),
    ("WskGetRemoteAddress", 3),
    ("WskSend", 4),
    ("WskReceive", 4),
    ("WskDisconnect", 4),
]
SIZEOF_WSK_PROVIDER_CONNECTION_DISPATCH = 8 * len(WSK_CONNECTION_DISPATCH_FUNCS)  # 72
AF_INET = 2
SOCK_STREAM = 1
IPPROTO_TCP = 6
WSK_FLAG_CONNECTION_SOCKET = 2
# Listening and datagram sockets (wsk.h, ws2def.h): their WSK_PROVIDER_LISTEN_DISPATCH and
# WSK_PROVIDER_DATAGRAM_DISPATCH (both start with WSK_PROVIDER_BASIC_DISPATCH); (name, argc).
WSK_FLAG_LISTEN_SOCKET = 1
WSK_FLAG_DATAGRAM_SOCKET = 4
SOCK_DGRAM = 2
IPPROTO_UDP = 17
WSK_LISTEN_DISPATCH_FUNCS = [
    ("WskControlSocket", 10),
    ("WskCloseSocket", 2),
    ("WskBind", 4),
    ("WskAccept", 7),
    ("WskInspectComplete", 4),
    ("WskGetLocalAddress", 3),
]
WSK_DATAGRAM_DISPATCH_FUNCS = [
    ("WskControlSocket", 10),
    ("WskCloseSocket", 2),
    ("WskBind", 4),
    ("WskSendTo", 7),
    ("WskReceiveFrom", 8),
    ("WskRelease", 2),
    ("WskGetLocalAddress", 3),
]
# WskControlSocket (wsk.h, ws2def.h): WskSetOption, the levels and options the server sets, and
# SO_WSK_EVENT_CALLBACK with its WSK_EVENT_CALLBACK_CONTROL input {NpiId*, EventMask} (16 bytes).
WSK_SET_OPTION = 0
SOL_SOCKET = 0xFFFF
SO_EXCLUSIVEADDRUSE = 0xFFFFFFFB  # (int)(~SO_REUSEADDR)
TCP_NODELAY = 1
SO_WSK_EVENT_CALLBACK = 0x4002
SIZEOF_WSK_EVENT_CALLBACK_CONTROL = 16
WSK_EVENT_RECEIVE = 0x40
WSK_EVENT_DISCONNECT = 0x80
# A WSK_DATA_INDICATION {Next, WSK_BUF {Mdl, Offset (ULONG), Length (SIZE_T)}}: 32 bytes.
SIZEOF_WSK_DATA_INDICATION = 32
# STATUS_DATA_NOT_ACCEPTED: a receive event callback took none of the data.
STATUS_DATA_NOT_ACCEPTED = 0xC000021B
# IRP (x64, wdm.h): sizeof(IRP) 0xD0, then the IO_STACK_LOCATIONs (0x48 each).
IO_TYPE_IRP = 6
SIZEOF_IRP = 0xD0
SIZEOF_IO_STACK_LOCATION = 0x48
IRP_IO_STATUS = 0x30
IRP_STACK_COUNT = 0x42
IRP_CURRENT_LOCATION = 0x43
IRP_CANCEL = 0x44
IRP_CURRENT_STACK_LOCATION = 0xB8  # Tail.Overlay.CurrentStackLocation
# IO_STACK_LOCATION (x64): MajorFunction at +0, ..., DeviceObject at +0x28.
IO_STACK_LOCATION_DEVICE_OBJECT = 0x28
# MDL (x64): Next, Size, MdlFlags, Process, MappedSystemVa, StartVa, ByteCount, ByteOffset;
# then one PFN_NUMBER per page.
SIZEOF_MDL = 0x30
MDL_MAPPED_SYSTEM_VA = 0x18
MDL_BYTE_COUNT = 0x28
MDL_SOURCE_IS_NONPAGED_POOL = 0x0004
PAGE_SIZE = 0x1000
# "client": a remote client of the driver's listening and datagram sockets (Scenario.client).
PEERS = (None, "echo", "refuse", "silent", "client")

DEFAULT_IMAGE = driver_profiles.DEFAULT_IMAGE

BACKENDS = ("nmr", "wskregister")


def status_name(st: Optional[int]) -> str:
    if st is None:
        return "(no value)"
    st &= 0xFFFFFFFF
    return STATUS_NAMES.get(st, "0x%08X" % st)


def version_name(v: Optional[int]) -> str:
    if v is None:
        return "?"
    return "%d.%d (0x%04x)" % (v >> 8, v & 0xFF, v)


def short_version(v: int) -> str:
    return "%d.%d" % (v >> 8, v & 0xFF)


def pool_tag(text: str) -> int:
    """The ULONG of a four-character pool tag, as the driver passes it ('WskA' -> 0x416b7357)."""
    raw = text.encode("ascii")
    if len(raw) != 4:
        raise ValueError("pool tag %r is not four characters" % text)
    return int.from_bytes(raw, "little")


def tag_name(tag: int) -> str:
    raw = (tag & 0xFFFFFFFF).to_bytes(4, "little")
    if all(0x20 <= b < 0x7F for b in raw):
        return "'%s'" % raw.decode("ascii")
    return "0x%08x" % tag


def guid_bytes(g: uuid.UUID) -> bytes:
    return g.bytes_le


def seconds(ticks: int) -> str:
    return "%.3f s" % (ticks / (1000.0 * TICKS_PER_MS))
