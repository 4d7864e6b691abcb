"""Run a driver image built on wsk-client (wsk_attach.sys, wsk_echo.sys, wsk_echo_wskregister.sys)
under Mandiant's Speakeasy, with this file playing NMR, the WSK subsystem and the parts of the
kernel the images rely on.

Speakeasy (pinned in requirements.txt) emulates an x64 kernel driver with unicorn. It implements
DbgPrintEx, ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress, ... but neither
ExAllocatePool2 nor any Nmr* function nor IoAllocateWorkItem / IoQueueWorkItem / IoFreeWorkItem;
its KeWaitForSingleObject returns at once, its events and device objects are stubs, and its
WskCaptureProviderNPI always succeeds (and writes nothing the second time). This module adds or
replaces them as API hooks and models:

* NMR: NmrRegisterClient / NmrDeregisterClient / NmrWaitForClientDeregisterComplete /
  NmrClientAttachProvider / NmrClientDetachProviderComplete, including NMR calling the driver's
  ClientAttachProvider / ClientDetachProvider / ClientCleanupBindingContext callbacks, which it
  reads out of the NPI_CLIENT_CHARACTERISTICS that DriverEntry passed to NmrRegisterClient;
* the WSK provider: an NPI_REGISTRATION_INSTANCE (NpiId, ModuleId, WSK_PROVIDER_CHARACTERISTICS)
  in emulated memory, an answer per requested WSK version, and a WSK_PROVIDER_DISPATCH whose six
  functions are hooks;
* the WskRegister layer: WskRegister / WskCaptureProviderNPI (WSK_NO_WAIT, a timeout, or
  WSK_INFINITE_WAIT, against a provider that is ready at load, later, or never) /
  WskReleaseProviderNPI / WskDeregister, with the same per-version answers as the NMR provider;
* device objects (IoCreateDevice / IoDeleteDevice), work items (IoAllocateWorkItem /
  IoQueueWorkItem / IoFreeWorkItem: queued routines run on worker threads of the harness) and
  events (KeInitializeEvent / KeSetEvent / KeClearEvent / KeResetEvent / KeWaitForSingleObject,
  with an emulated clock for timeouts);
* the pool: every allocation and free, per tag, for the balance check at unload;
* RtlGetVersion: the Windows version of the scenario (the driver picks its pool type by it);
* IRPs and MDLs (IoAllocateIrp / IoSetCompletionRoutineEx / IoCancelIrp / IoFreeIrp,
  IoAllocateMdl / MmBuildMdlForNonPagedPool / IoFreeMdl) and the provider's connection sockets
  (WskSocket, then the socket's WSK_PROVIDER_CONNECTION_DISPATCH) over a simulated peer: the
  provider completes an IRP as the I/O manager does (IoStatus, then the completion routine,
  which must give it back with STATUS_MORE_PROCESSING_REQUIRED), on a provider thread of its
  own (or inside the call: Scenario.complete_inline).

What is expected of the image (log prefix, pool tags, NMR module id, backend, ...) is its driver
profile (tests/driver_profiles.py), chosen by the image's file name or $WSK_DRIVER_PROFILE.

How a hook makes the emulated CPU call into the driver (see ``_drive``): a hook for a function
Speakeasy does not implement ends with Speakeasy "returning" to the address found at [RSP]. The
hook points RSP at a scratch frame ``[callee, stub, home space...]``, so that return lands on the
driver's callback with return address ``stub``; ``stub`` is a real code stub ``jmp [rip+0]`` to a
reserved address hooked as ``harness.CallbackReturn`` (a ``ret`` straight into Speakeasy's reserved
range executes nothing, hence the stub). That hook reads RAX, and either sets up the next call or
puts RSP back on the original frame, so Speakeasy returns to the driver's original call site.
The NMR behaviour is written as Python generators that ``yield Call(...)`` and get the RAX back.
(For a function Speakeasy does implement, it only returns by itself when the hook left RSP and
RIP alone, so ``_wrap`` does that return when the hook moved RSP.)

Threads (see ``Thread`` and ``schedule``): Speakeasy's runs (DriverEntry, the harness's "after
DriverEntry" run, DriverUnload) are one thread each, on Speakeasy's stack; each work item runs on
a worker thread of its own, with its own 24 KiB stack. Only one runs at a time, and a switch
happens only inside a hook: a thread that must wait (KeWaitForSingleObject on an event that is not
signalled, WskCaptureProviderNPI with a wait while the provider is not ready, the harness's own
"let everything settle") has its registers saved and the scheduler resumes another one (its
registers restored, the value of its blocked call returned), or starts a queued work item. A wait
resumes with its success value once its condition holds, with its timeout value when the emulated
clock reaches its deadline (time advances only when nothing else can run), and is reported as a
violation when nothing could ever satisfy it (the emulation of that thread is then abandoned
instead of looping).

Use ``run_scenario(path, scenario)`` -> ``Result``; ``format_trace(result)`` renders a trace.
"""
from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import struct
import sys
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, Generator, List, Optional, Tuple, Union

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import driver_profiles  # noqa: E402  (tests/driver_profiles.py, shared with tests/wine)
from driver_profiles import DriverProfile, UnknownDriver, profile_for  # noqa: E402,F401

# ---------------------------------------------------------------------------------------------
# Constants (values from wdm.h / netioddk.h / wsk.h; see shared/reference/nmr-wsk-abi.md)
# ---------------------------------------------------------------------------------------------
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
# IRP (x64, wdm.h): sizeof(IRP) 0xD0, then the IO_STACK_LOCATIONs (0x48 each).
IO_TYPE_IRP = 6
SIZEOF_IRP = 0xD0
SIZEOF_IO_STACK_LOCATION = 0x48
IRP_IO_STATUS = 0x30
IRP_STACK_COUNT = 0x42
IRP_CURRENT_LOCATION = 0x43
IRP_CANCEL = 0x44
IRP_CURRENT_STACK_LOCATION = 0xB8  # Tail.Overlay.CurrentStackLocation
# MDL (x64): Next, Size, MdlFlags, Process, MappedSystemVa, StartVa, ByteCount, ByteOffset;
# then one PFN_NUMBER per page.
SIZEOF_MDL = 0x30
MDL_MAPPED_SYSTEM_VA = 0x18
MDL_BYTE_COUNT = 0x28
MDL_SOURCE_IS_NONPAGED_POOL = 0x0004
PAGE_SIZE = 0x1000
PEERS = (None, "echo", "refuse", "silent")

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


# ---------------------------------------------------------------------------------------------
# Scenario description
# ---------------------------------------------------------------------------------------------
AttachAnswer = Union[None, Dict[int, int], Callable[[int, int], int]]


@dataclass
class Provider:
    """One WSK provider registration, as NMR presents it to the client (NMR backend), or the WSK
    subsystem behind WskCaptureProviderNPI (WskRegister backend).

    highest/lowest: WSK_PROVIDER_CHARACTERISTICS. characteristics=False makes
    NpiSpecificCharacteristics NULL. answers: how NmrClientAttachProvider (or
    WskCaptureProviderNPI, for the version the client registered) answers a request for a
    version: a dict {version: status} (versions not in it: STATUS_NOINTERFACE), a function
    (version, try_index) -> status, or None: STATUS_SUCCESS inside [lowest, highest], else
    STATUS_NOINTERFACE (what the real WSK subsystem does).
    """

    name: str = "WSK provider"
    highest: int = WSK_1_1
    lowest: int = WSK_1_0
    characteristics: bool = True
    npi_id: uuid.UUID = NPI_WSK_INTERFACE_ID
    answers: AttachAnswer = None
    dispatch_version: Optional[int] = None  # Version in WSK_PROVIDER_DISPATCH; None: as asked
    # The provider deregisters while NmrClientAttachProvider is completing (the race of
    # ebpf-for-windows #4982): NMR calls ClientDetachProvider before NmrClientAttachProvider
    # returns, and ClientCleanupBindingContext once ClientAttachProvider has returned.
    detach_during_attach: bool = False

    def answer(self, version: int, try_index: int) -> int:
        if self.answers is None:
            if self.lowest <= version <= self.highest:
                return STATUS_SUCCESS
            return STATUS_NOINTERFACE
        if callable(self.answers):
            return self.answers(version, try_index)
        return self.answers.get(version, STATUS_NOINTERFACE)

    def describe(self) -> str:
        parts = []
        if self.npi_id != NPI_WSK_INTERFACE_ID:
            parts.append("NpiId %s (not WSK)" % self.npi_id)
        if not self.characteristics:
            parts.append("NpiSpecificCharacteristics NULL")
        else:
            parts.append("WSK %s .. %s" % (version_name(self.lowest), version_name(self.highest)))
        if self.answers is not None:
            if callable(self.answers):
                parts.append("custom answers")
            else:
                parts.append("answers " + ", ".join(
                    "%s->%s" % (version_name(v), status_name(s)) for v, s in self.answers.items()))
        if self.dispatch_version is not None:
            parts.append("its WSK_PROVIDER_DISPATCH says %s" % version_name(self.dispatch_version))
        return "%s: %s" % (self.name, "; ".join(parts))


@dataclass
class Scenario:
    """What the emulated system looks like and does, from driver load to unload.

    providers: registered with NMR before the driver loads, so NMR attaches them from inside
      NmrRegisterClient (before it has written the client handle). For the WskRegister backend,
      the first one is the WSK subsystem, ready at load.
    after_entry: provider events after DriverEntry returned (and its work items ran), before
      DriverUnload, as ("register", Provider) or ("deregister", provider_name) (NMR backend).
    exallocatepool2: whether MmGetSystemRoutineAddress(L"ExAllocatePool2") finds it.
    windows_version: (major, minor, build) that RtlGetVersion reports; from 6.2 (Windows 8) on,
      the driver's ExAllocatePoolWithTag fallback asks for NonPagedPoolNx, before it NonPagedPool.
    fail_pool_allocations: every pool allocation returns NULL.
    fail_binding_allocations: every allocation with the driver's binding tag (a binding context)
      returns NULL; the driver's own allocations succeed.
    fail_allocations: the pool allocations with these numbers (1: the first) return NULL.
    register_status: what NmrRegisterClient (or WskRegister) returns (non-success: no attach).
    create_device_status: what IoCreateDevice returns.
    work_delay_ms: a queued work item starts this long after IoQueueWorkItem (busy worker
      threads); 0: as soon as nothing else runs.
    unload_after_ms: `sc stop` comes this long after everything DriverEntry started has settled.
    wsk_ready_after_ms: WskRegister backend, no `providers`: the WSK subsystem becomes ready this
      long after the load (None: never).
    drivers: the driver profiles (names) the scenario is meant for; empty: every driver.
    backends: the backends ("nmr", "wskregister") the scenario is meant for.
    needs_own_setup: meant for drivers with allocations of their own in DriverEntry only.
    load_fails_for: the backends whose DriverEntry fails in this scenario, by design.
    wsk_description: the description for the WskRegister backend, when it differs.
    registry: the driver's service key's subkeys (path relative to the service key, e.g.
      "Parameters") and their values {name: (REG_* type, data bytes)}; the service key itself
      always exists. ZwOpenKey finds exactly these.
    needs_connection: meant for drivers that hold a connection (profile.connection) only.
    peer: what is at the other end of a connection socket (WskSocket of the provider dispatch
      and the socket's WSK_PROVIDER_CONNECTION_DISPATCH): None (the provider has no sockets:
      WskSocket answers STATUS_NOT_SUPPORTED), "echo" (connect succeeds; every byte sent comes
      back), "refuse" (WskConnect completes with STATUS_CONNECTION_REFUSED), "silent" (connect
      and send succeed, nothing ever comes back: a receive pends until cancelled or closed).
    peer_ignores_cancel: IoCancelIrp of a pending socket request does nothing (no cancel
      routine, returns FALSE), like Wine's provider; only WskCloseSocket ends it.
    disconnect_stub: WskDisconnect answers STATUS_NOT_IMPLEMENTED without completing its IRP
      (Wine's stub).
    fail_irp_allocations: IoAllocateIrp returns NULL.
    fail_mdl_allocations: IoAllocateMdl returns NULL.
    complete_inline: the provider completes every socket request before its function returns
      (the completion routine runs inside the call, which then returns the final status: legal
      WSK behaviour); else it returns STATUS_PENDING and completes it on a provider thread.
    peer_chunk: a receive gets at most this many bytes (0: as many as the buffer takes).
    fail_call: (call name, occurrence, status): the occurrence-th call (1: the first) of that
      kernel, NMR or WSK function fails with status, as tests/failure-matrix.txt says how: a
      NULL-returning allocator returns NULL (the status is what the driver should report), a
      function returning an NTSTATUS returns it (having done nothing), a WSK provider function
      completes its IRP with it (on a provider thread, or inside the call with complete_inline).
      Every call of those functions is counted in Result.call_counts either way.
    """

    name: str = "default"
    description: str = "a WSK 1.0..1.1 provider already registered when the driver loads"
    providers: List[Provider] = field(default_factory=lambda: [Provider()])
    after_entry: list = field(default_factory=list)
    exallocatepool2: bool = True
    windows_version: Tuple[int, int, int] = (10, 0, 19041)  # Windows 10 2004
    fail_pool_allocations: bool = False
    fail_binding_allocations: bool = False
    fail_allocations: Tuple[int, ...] = ()
    register_status: int = STATUS_SUCCESS
    create_device_status: int = STATUS_SUCCESS
    work_delay_ms: int = 0
    unload_after_ms: int = 0
    wsk_ready_after_ms: Optional[int] = None
    drivers: Tuple[str, ...] = ()
    backends: Tuple[str, ...] = BACKENDS
    needs_own_setup: bool = False
    load_fails_for: Tuple[str, ...] = ()
    wsk_description: Optional[str] = None
    registry: Dict[str, Dict[str, Tuple[int, bytes]]] = field(default_factory=dict)
    needs_connection: bool = False
    peer: Optional[str] = None
    peer_ignores_cancel: bool = False
    disconnect_stub: bool = False
    fail_irp_allocations: bool = False
    fail_mdl_allocations: bool = False
    complete_inline: bool = False
    peer_chunk: int = 0
    fail_call: Optional[Tuple[str, int, int]] = None

    def __post_init__(self):
        if self.peer not in PEERS:
            raise ValueError("%s: unknown peer %r (known: %s)" % (self.name, self.peer, PEERS))

    def is_for(self, profile: DriverProfile) -> bool:
        return ((not self.drivers or profile.name in self.drivers)
                and profile.backend in self.backends
                and (not self.needs_own_setup or bool(profile.own_tags))
                and (not self.needs_connection or profile.connection))

    def load_fails(self, profile: DriverProfile) -> bool:
        return profile.backend in self.load_fails_for

    def describe_for(self, profile: Optional[DriverProfile]) -> str:
        if profile is not None and profile.backend == "wskregister" and self.wsk_description:
            return self.wsk_description
        return self.description

    def applies_to(self) -> str:
        """For --list: which drivers the scenario is for, when not all."""
        parts = []
        if self.drivers:
            parts.append(", ".join(self.drivers) + " only")
        if tuple(self.backends) != BACKENDS:
            parts.append(" and ".join(self.backends) + " backend only")
        if self.needs_own_setup:
            parts.append("drivers with their own set-up only")
        if self.needs_connection:
            parts.append("drivers with a connection only")
        return "; ".join(parts)


# The echo driver's parameters in the echo scenarios (examples/wsk-echo/src/parameters.rs).
ECHO_HOST = "127.0.0.1"
ECHO_PORT = 7
ECHO_MESSAGE = "hello, echo"


def reg_sz(text: str) -> Tuple[int, bytes]:
    """A REG_SZ value: UTF-16LE, NUL-terminated (as regedit and the INF write it)."""
    return REG_SZ, (text + "\0").encode("utf-16-le")


def reg_dword(value: int) -> Tuple[int, bytes]:
    return REG_DWORD, struct.pack("<I", value)


def echo_parameters(host: str = ECHO_HOST, port: int = ECHO_PORT,
                    message: str = ECHO_MESSAGE) -> Dict[str, Dict[str, Tuple[int, bytes]]]:
    """The service key's Parameters subkey the echo driver reads: Host, Port, Message."""
    return {"Parameters": {"Host": reg_sz(host), "Port": reg_dword(port),
                           "Message": reg_sz(message)}}


def _inverted(h, l):
    return Provider(name="WSK provider (inverted range)", highest=h, lowest=l)


SCENARIOS: Dict[str, Scenario] = {
    "default": Scenario(),
    "wsk10-only": Scenario(
        name="wsk10-only",
        description="a provider that only speaks WSK 1.0 (Windows Vista): 1.1 is never asked for",
        wsk_description="a WSK subsystem that only speaks WSK 1.0: the capture at 1.1 gets "
                        "STATUS_NOINTERFACE, the driver re-registers at 1.0",
        providers=[Provider(name="WSK 1.0 provider", highest=WSK_1_0, lowest=WSK_1_0)]),
    "fallback": Scenario(
        name="fallback",
        description="the provider advertises 1.0..1.1 but refuses 1.1 with STATUS_NOINTERFACE",
        wsk_description="WskCaptureProviderNPI refuses 1.1 with STATUS_NOINTERFACE: WskDeregister, "
                        "WskRegister at 1.0, capture again",
        providers=[Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_SUCCESS})]),
    "wsk12-only": Scenario(
        name="wsk12-only",
        description="a provider offering only WSK 1.2: no version in common, nothing allocated",
        wsk_description="a WSK subsystem offering only WSK 1.2: both captures STATUS_NOINTERFACE, "
                        "the load fails",
        providers=[Provider(name="WSK 1.2 provider", highest=0x0102, lowest=0x0102)],
        load_fails_for=("wskregister",)),
    "all-nointerface": Scenario(
        name="all-nointerface",
        description="the provider advertises 1.0..1.1 but refuses every version",
        wsk_description="WskCaptureProviderNPI refuses every version: the load fails",
        providers=[Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_NOINTERFACE})],
        load_fails_for=("wskregister",)),
    "nmr-error": Scenario(
        name="nmr-error",
        description="NmrClientAttachProvider fails with STATUS_INSUFFICIENT_RESOURCES: no retry",
        wsk_description="WskCaptureProviderNPI fails with STATUS_INSUFFICIENT_RESOURCES: no "
                        "retry, the load fails",
        providers=[Provider(answers={WSK_1_1: STATUS_INSUFFICIENT_RESOURCES,
                                     WSK_1_0: STATUS_SUCCESS})],
        load_fails_for=("wskregister",)),
    "no-pool": Scenario(
        name="no-pool",
        description="every allocation of a binding context fails (the driver's own ones do not)",
        wsk_description="the binding context's allocation fails after the capture: released, "
                        "deregistered, the load fails",
        fail_binding_allocations=True,
        load_fails_for=("wskregister",)),
    "setup-no-pool": Scenario(
        name="setup-no-pool",
        description="the first pool allocation, the driver's own context in DriverEntry, fails: "
                    "the load fails before it registers",
        fail_allocations=(1,),
        needs_own_setup=True,
        load_fails_for=BACKENDS),
    "no-exallocatepool2": Scenario(
        name="no-exallocatepool2",
        description="a pre-2004 kernel (Windows 10 1909): no ExAllocatePool2, so "
                    "ExAllocatePoolWithTag(NonPagedPoolNx)",
        exallocatepool2=False, windows_version=(10, 0, 18363)),
    "windows-7": Scenario(
        name="windows-7",
        description="Windows 7 (6.1): no ExAllocatePool2 and no NonPagedPoolNx, so "
                    "ExAllocatePoolWithTag(NonPagedPool)",
        exallocatepool2=False, windows_version=(6, 1, 7601)),
    "null-characteristics": Scenario(
        name="null-characteristics",
        description="a registration instance whose NpiSpecificCharacteristics is NULL",
        providers=[Provider(name="provider without characteristics", characteristics=False)],
        backends=("nmr",)),
    "wrong-npiid": Scenario(
        name="wrong-npiid",
        description="a registration instance of another NPI",
        providers=[Provider(name="non-WSK provider", npi_id=NPI_OTHER_INTERFACE_ID)],
        backends=("nmr",)),
    "inverted-range": Scenario(
        name="inverted-range",
        description="a provider whose LowestVersion (1.1) is above its HighestVersion (1.0)",
        providers=[_inverted(WSK_1_0, WSK_1_1)],
        backends=("nmr",)),
    "late-provider": Scenario(
        name="late-provider",
        description="no provider at load; WSK registers later, deregisters, registers again",
        providers=[],
        after_entry=[("register", Provider()), ("deregister", "WSK provider"),
                     ("register", Provider())],
        backends=("nmr",)),
    "register-fails": Scenario(
        name="register-fails",
        description="NmrRegisterClient fails (STATUS_INSUFFICIENT_RESOURCES): the load fails",
        wsk_description="WskRegister fails (STATUS_INSUFFICIENT_RESOURCES): the load fails",
        register_status=STATUS_INSUFFICIENT_RESOURCES,
        load_fails_for=BACKENDS),
    "device-fails": Scenario(
        name="device-fails",
        description="IoCreateDevice fails (STATUS_INSUFFICIENT_RESOURCES): the driver does not "
                    "register, the load fails",
        create_device_status=STATUS_INSUFFICIENT_RESOURCES,
        load_fails_for=BACKENDS),
    "detach-during-attach": Scenario(
        name="detach-during-attach",
        description="the provider deregisters while NmrClientAttachProvider is still returning",
        providers=[Provider(detach_during_attach=True)],
        backends=("nmr",)),
    "provider-detach": Scenario(
        name="provider-detach",
        description="attach at load, then the WSK provider deregisters before the driver unloads",
        after_entry=[("deregister", "WSK provider")],
        backends=("nmr",)),
    "busy-workers": Scenario(
        name="busy-workers",
        description="the system's worker threads are busy: a work item starts 12 s after it is "
                    "queued; sc stop 20 s after load (the unload's 5 s waits time out)",
        work_delay_ms=12_000, unload_after_ms=20_000),
    "wsk-dispatch-1.0": Scenario(
        name="wsk-dispatch-1.0",
        description="a WSK subsystem like Wine's: WskRegister at 1.1 accepted, its "
                    "WSK_PROVIDER_DISPATCH says 1.0: the client uses 1.0",
        providers=[Provider(name="WSK subsystem (dispatch 1.0)", dispatch_version=WSK_1_0)],
        backends=("wskregister",)),
    "wsk-late": Scenario(
        name="wsk-late",
        description="the WSK subsystem is not ready at load and becomes ready 2.5 s later: "
                    "captured from the work item; sc stop at 5 s",
        providers=[], wsk_ready_after_ms=2500, unload_after_ms=5000,
        backends=("wskregister",)),
    "wsk-never": Scenario(
        name="wsk-never",
        description="the WSK subsystem never becomes ready: the work item retries until the "
                    "unload (sc stop at 3.5 s), then gives up",
        providers=[], wsk_ready_after_ms=None, unload_after_ms=3500,
        backends=("wskregister",)),
    "echo": Scenario(
        name="echo",
        description="Parameters say %s:%d: socket, bind, connect, send, receive from an echoing "
                    "peer; the connection is kept until the unload disconnects and closes it"
                    % (ECHO_HOST, ECHO_PORT),
        registry=echo_parameters(), peer="echo", needs_connection=True),
    "echo-refused": Scenario(
        name="echo-refused",
        description="the peer refuses the connection: WskConnect completes with "
                    "STATUS_CONNECTION_REFUSED; the socket is closed at once",
        registry=echo_parameters(), peer="refuse", needs_connection=True),
    "echo-silent-stop": Scenario(
        name="echo-silent-stop",
        description="the peer never answers; sc stop 1 s later, while the receive is pending: "
                    "the receive times out (5 s), is cancelled, the socket closed, the unload ends",
        registry=echo_parameters(), peer="silent", unload_after_ms=1000,
        needs_connection=True),
    "echo-wine-like": Scenario(
        name="echo-wine-like",
        description="a provider like Wine's: WskDisconnect is a stub (STATUS_NOT_IMPLEMENTED, "
                    "its IRP never completed) and IoCancelIrp does nothing; the peer echoes",
        registry=echo_parameters(), peer="echo", disconnect_stub=True,
        peer_ignores_cancel=True, needs_connection=True),
    "echo-wine-silent": Scenario(
        name="echo-wine-silent",
        description="Wine-like provider, silent peer, sc stop at 0.5 s: the receive times out, "
                    "the cancel does nothing, the last resort closes the socket, which ends it",
        registry=echo_parameters(), peer="silent", disconnect_stub=True,
        peer_ignores_cancel=True, unload_after_ms=500, needs_connection=True),
    "echo-inline": Scenario(
        name="echo-inline",
        description="as 'echo', but the provider completes every request before its function "
                    "returns (the completion routine runs inside the call, which returns the "
                    "final status; IoStatus.Information carries the socket and the byte counts)",
        registry=echo_parameters(), peer="echo", complete_inline=True, needs_connection=True),
    "echo-trickle": Scenario(
        name="echo-trickle",
        description="as 'echo', but each receive gets at most 4 bytes: the message comes back "
                    "in three receives",
        registry=echo_parameters(), peer="echo", peer_chunk=4, needs_connection=True),
    "echo-irp-fails": Scenario(
        name="echo-irp-fails",
        description="IoAllocateIrp returns NULL: the exchange fails at its first request "
                    "(WskSocket is never called)",
        registry=echo_parameters(), peer="echo", fail_irp_allocations=True,
        needs_connection=True),
    "echo-mdl-fails": Scenario(
        name="echo-mdl-fails",
        description="IoAllocateMdl returns NULL: connected, the send buffer cannot be described; "
                    "the socket is closed at once",
        registry=echo_parameters(), peer="echo", fail_mdl_allocations=True,
        needs_connection=True),
}


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass
class Event:
    """One thing that happened, in order.

    kind: 'run' (Speakeasy starts/ends a driver entry point), 'log' (DbgPrintEx), 'nmr' (the driver
    calls NMR), 'callback' (NMR calls the driver; status = what the callback returned), 'pool',
    'kernel' (other ntoskrnl calls we model), 'device' (IoCreateDevice/IoDeleteDevice), 'work'
    (work item calls, and a routine starting/returning), 'ke' (events and waits), 'wskreg'
    (WskRegister and friends), 'wsk' (a provider dispatch function), 'thread' (the scheduler
    switches threads or the clock advances), 'violation'.
    thread: the name of the thread it happened on.
    """

    seq: int
    kind: str
    name: str
    args: dict = field(default_factory=dict)
    status: Optional[int] = None
    depth: int = 0
    text: str = ""
    thread: str = ""
    time: int = 0

    def __repr__(self):  # compact, for assertion messages
        st = "" if self.status is None else " -> %s" % status_name(self.status)
        return "<%s %s %s%s>" % (self.kind, self.name, self.args or self.text, st)


@dataclass
class Allocation:
    address: int
    size: int
    tag: int
    api: str
    pool: int  # POOL_FLAGS for ExAllocatePool2, POOL_TYPE for ExAllocatePoolWithTag
    freed_by: Optional[str] = None
    free_tag: Optional[int] = None


@dataclass
class Binding:
    handle: int
    provider: Provider
    registration_instance: int
    state: str = "new"  # attaching, attached, refused, detaching, detach-pending, cleaned
    client_context: Optional[int] = None
    tries: list = field(default_factory=list)  # AttachTry
    wsk_client: Optional[int] = None
    provider_dispatch: Optional[int] = None
    attach_status: Optional[int] = None
    detach_status: Optional[int] = None
    complete_called: bool = False
    complete_calls: int = 0


@dataclass
class AttachTry:
    binding: int
    client_context: int
    version: int
    status: int
    client_dispatch: int
    reserved: int
    client_event: int
    out_client_in_context: bool
    out_dispatch_in_context: bool
    context_is_pool: bool


@dataclass
class Device:
    address: int
    driver_object: int
    extension_size: int
    name: Optional[str]
    device_type: int
    characteristics: int
    exclusive: int
    created_seq: int
    deleted_seq: Optional[int] = None


@dataclass
class WorkItem:
    """An IO_WORKITEM from IoAllocateWorkItem. state: allocated (not queued yet, or ran and not
    queued again), queued, running, freed."""

    number: int
    address: int
    device: int
    state: str = "allocated"
    routine: int = 0
    context: int = 0
    queue_type: int = 0
    queued_at: int = 0
    ready_at: int = 0
    queued_count: int = 0
    runs: int = 0
    freed: bool = False
    thread: Optional[str] = None


@dataclass
class KEvent:
    address: int
    type: int
    signalled: bool
    init_seq: int
    sets: int = 0
    waits: int = 0


@dataclass
class WskRegistration:
    """One WskRegister call's registration (a WSK_REGISTRATION of the driver)."""

    address: int
    client_npi: int
    version: int  # WSK_CLIENT_DISPATCH.Version of the registered client NPI
    client_dispatch: int
    client_context: int
    status: int
    registered_seq: int
    deregistered_seq: Optional[int] = None
    captures: int = 0  # captured and not released
    capture_answers: List[Tuple[int, int]] = field(default_factory=list)  # (wait ms, status)
    releases: int = 0
    wsk_client: Optional[int] = None
    provider_dispatch: Optional[int] = None
    dispatch_version: Optional[int] = None


@dataclass
class IrpRec:
    """An IRP from IoAllocateIrp. state: allocated (the driver's: new, or completed and given
    back by its completion routine's STATUS_MORE_PROCESSING_REQUIRED), pending (a WSK function
    took it: the provider's until it completes it), completing (its completion routine runs),
    freed."""

    number: int
    address: int
    stack_size: int
    allocated_seq: int
    state: str = "allocated"
    routine: int = 0
    context: int = 0
    device: int = 0
    invoke: Tuple[int, int, int] = (0, 0, 0)  # InvokeOnSuccess, InvokeOnError, InvokeOnCancel
    op: str = ""  # the WSK function it was last given to
    socket: Optional["SocketRec"] = None
    buffer: Optional[tuple] = None  # a pending receive's WSK_BUF: (address, length, MdlRec)
    uses: int = 0  # WSK functions it was given to
    completions: int = 0
    cancels: int = 0
    completed_status: Optional[int] = None
    freed_seq: Optional[int] = None


@dataclass
class MdlRec:
    """An MDL from IoAllocateMdl (describing VirtualAddress .. +Length)."""

    number: int
    address: int
    va: int
    length: int
    allocated_seq: int
    built: bool = False
    freed_seq: Optional[int] = None


@dataclass
class SocketRec:
    """A WSK_SOCKET the provider created (WskSocket). state: open, bound, connected,
    disconnected, closed."""

    number: int
    address: int
    dispatch: int
    client: int
    state: str = "open"
    remote: str = ""
    received_by_peer: bytes = b""  # what the peer got (sent by the driver)
    to_driver: bytes = b""  # what the peer sent that the driver has not received yet
    closed_seq: Optional[int] = None


@dataclass
class Wait:
    """What a blocked thread waits for."""

    kind: str  # 'event' | 'provider' | 'settle' | 'time'
    what: str
    deadline: Optional[int] = None  # emulated time; None: no timeout
    event: int = 0
    registration: Optional[WskRegistration] = None
    since: int = 0  # order of blocking (FIFO among waiters)
    timed_out: bool = False


@dataclass
class Thread:
    """A thread of the emulated system: a Speakeasy run ('run') or a work item ('worker')."""

    tid: int
    name: str
    kind: str
    stack_top: int
    stack_size: int
    min_rsp: int
    pending: list = field(default_factory=list)  # (generator, frame_rsp, Call, depth)
    depth: int = 0
    regs: Optional[dict] = None
    wait: Optional[Wait] = None
    cont: Optional[Callable[[int], int]] = None
    state: str = "running"  # running | blocked | done | abandoned
    run_rsp: int = 0
    item: Optional[WorkItem] = None
    last_log: str = ""
    fruitless_timeouts: int = 0
    progress_at_timeout: int = -1

    @property
    def stack_used(self) -> int:
        return self.stack_top - self.min_rsp


@dataclass
class Result:
    scenario: Scenario
    image: str
    profile: DriverProfile
    events: List[Event]
    bindings: List[Binding]
    allocations: List[Allocation]
    violations: List[str]
    entry_status: Optional[int]
    unload_ran: bool
    unload_set: int
    run_errors: List[dict]
    client_handle: Optional[int]
    characteristics: Optional[dict]
    image_base: int = 0
    image_size: int = 0
    stack_used: int = 0  # deepest RSP seen at an API call, from the top of its 24 KiB stack
    devices: List[Device] = field(default_factory=list)
    work_items: List[WorkItem] = field(default_factory=list)
    kevents: List[KEvent] = field(default_factory=list)
    wsk_registrations: List[WskRegistration] = field(default_factory=list)
    threads: List[Thread] = field(default_factory=list)
    clock: int = 0
    unload_completed: bool = False
    irps: List[IrpRec] = field(default_factory=list)
    mdls: List[MdlRec] = field(default_factory=list)
    sockets: List[SocketRec] = field(default_factory=list)
    mdl_requests: List[int] = field(default_factory=list)
    # The failure matrix: how many times each failable function was called (Harness._inject),
    # and the injected failures that happened: (name, occurrence, status).
    call_counts: Dict[str, int] = field(default_factory=dict)
    injected: List[Tuple[str, int, int]] = field(default_factory=list)

    def in_image(self, addr: int) -> bool:
        return self.image_base <= addr < self.image_base + self.image_size

    # Convenience views used by the tests ----------------------------------------------------
    @property
    def logs(self) -> List[str]:
        return [e.text for e in self.events if e.kind == "log"]

    @property
    def nmr_calls(self) -> List[Event]:
        """Calls between NMR and the driver, both ways, in order."""
        return [e for e in self.events if e.kind in ("nmr", "callback")]

    @property
    def call_names(self) -> List[str]:
        return [e.name for e in self.nmr_calls]

    @property
    def wsk_calls(self) -> List[Event]:
        """The driver's WskRegister / WskCaptureProviderNPI / WskReleaseProviderNPI /
        WskDeregister calls, in order."""
        return [e for e in self.events if e.kind == "wskreg"]

    @property
    def attach_tries(self) -> List[AttachTry]:
        return [t for b in self.bindings for t in b.tries]

    @property
    def outstanding(self) -> List[Allocation]:
        return [a for a in self.allocations if a.freed_by is None]

    def pool_balance(self) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        for a in self.allocations:
            d = out.setdefault(tag_name(a.tag), {"allocated": 0, "freed": 0, "outstanding": 0,
                                                 "bytes_outstanding": 0})
            d["allocated"] += 1
            if a.freed_by is None:
                d["outstanding"] += 1
                d["bytes_outstanding"] += a.size
            else:
                d["freed"] += 1
        return out

    def calls(self, name: str) -> List[Event]:
        return [e for e in self.events if e.name == name
                and e.kind in ("nmr", "callback", "wskreg", "device", "work", "ke")]

    def _tagged(self, tag: Optional[str]) -> List[Allocation]:
        if not tag:
            return []
        t = pool_tag(tag)
        return [a for a in self.allocations if a.tag == t]

    @property
    def binding_allocations(self) -> List[Allocation]:
        """The binding contexts: the allocations with the driver's binding tag."""
        return self._tagged(self.profile.binding_tag)

    @property
    def work_allocations(self) -> List[Allocation]:
        """The library's work item contexts (the profile's work item tag)."""
        return self._tagged(self.profile.work_item_tag)

    @property
    def connection_allocations(self) -> List[Allocation]:
        """The connection's blocks (the profile's connection tag; none for wsk_attach)."""
        return self._tagged(self.profile.connection_tag)

    @property
    def request_allocations(self) -> List[Allocation]:
        """The library's request contexts (crates/wsk-client/src/irp.rs: the binding tag with
        'I' last), one per IRP it sends."""
        return self._tagged(self.profile.binding_tag[:3] + "I")

    @property
    def buffer_allocations(self) -> List[Allocation]:
        """The blocks an IoAllocateMdl was asked to describe (crates/wsk-client/src/buffer.rs;
        their tag, the binding tag with 'D' last, is also the echo driver's own context's)."""
        vas = set(self.mdl_requests)
        return [a for a in self.allocations if a.address in vas]

    @property
    def own_allocations(self) -> List[Allocation]:
        """Everything else the driver allocated (its own context, for wsk_echo)."""
        known = {pool_tag(t) for t in (self.profile.binding_tag, self.profile.work_item_tag,
                                       self.profile.connection_tag,
                                       self.profile.binding_tag[:3] + "I") if t}
        buffers = {a.address for a in self.buffer_allocations}
        return [a for a in self.allocations if a.tag not in known and a.address not in buffers]

    @property
    def socket_calls(self) -> List[Event]:
        """The driver's calls of the provider's socket functions (WskSocket and the socket's
        dispatch), in order; status: what the function returned."""
        return [e for e in self.events if e.kind == "wsk"]

    @property
    def completions(self) -> List[Event]:
        """Every IRP completion (the harness's IoCompleteRequest), in order: args op, Irp,
        Status, Information."""
        return [e for e in self.events if e.kind == "io" and e.name == "IoCompleteRequest"]


class HarnessError(Exception):
    pass


@dataclass
class Call:
    """Request, from an NMR generator, that the emulated CPU call a driver function."""

    fn: int
    args: list
    name: str
    returns: bool = True  # False for VOID functions (RAX is meaningless)


@dataclass
class Block:
    """Request, from a generator of the harness, that its thread wait (see Harness.schedule)."""

    wait: Wait


# Registers a switch between threads saves and restores (every general-purpose register, the
# flags, and the SSE state: Windows x64 code keeps values in RBX, RBP, RDI, RSI, R12-R15 and
# XMM6-XMM15 across calls).
_GPRS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
         "r13", "r14", "r15", "eflags", "mxcsr"]


# ---------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------
class Harness:
    def __init__(self, image: str, scenario: Scenario, verbose: bool = False,
                 profile: Optional[DriverProfile] = None):
        self.image = image
        self.profile = profile or profile_for(image)
        self.scenario = scenario
        self.verbose = verbose
        self.events: List[Event] = []
        self.violations: List[str] = []
        self.allocations: Dict[int, Allocation] = {}
        self.alloc_list: List[Allocation] = []
        self.bindings: List[Binding] = []
        self.depth = 0
        self.client: Optional[dict] = None
        self.client_handle: Optional[int] = None
        self.deregistered = False
        self.wait_done = False
        self.run_errors: List[dict] = []
        self.entry_status: Optional[int] = None
        self.unload_ran = False
        self.unload_completed = False
        self.unload_ptr = 0
        self.driver_object = 0
        self.skipped_exports: List[str] = []
        self.stack_top = 0
        self.allocation_attempts = 0
        # Kernel objects.
        self.devices: List[Device] = []
        self.work_items: List[WorkItem] = []
        self.work_queue: List[WorkItem] = []
        self.kevents: Dict[int, KEvent] = {}
        self.wsk_regs: List[WskRegistration] = []
        self.wsk_capture_answers = 0
        # IRPs, MDLs, the provider's sockets, and the IRP completions it has queued.
        self.irps: List[IrpRec] = []
        self.irp_by_addr: Dict[int, IrpRec] = {}
        self.mdls: List[MdlRec] = []
        self.mdl_by_addr: Dict[int, MdlRec] = {}
        self.mdl_requests: List[int] = []  # VirtualAddress of every IoAllocateMdl
        self.sockets: List[SocketRec] = []
        self.socket_by_addr: Dict[int, SocketRec] = {}
        self.completion_queue: list = []
        # Registry keys open: handle -> path relative to the service key ("" is the key).
        self.open_keys: Dict[int, str] = {}
        self.registry_path = ""  # what DriverEntry got: the service key
        self.next_key_handle = 0xFFFFFFFF80000100
        # Threads and time.
        self.threads: List[Thread] = []
        self.current: Optional[Thread] = None
        self.run_thread: Optional[Thread] = None
        self.now = 0
        self.progress = 0
        self._block_seq = 0
        self._switched = False
        self._free_stacks: List[Tuple[int, int]] = []
        self.settled_at: Optional[int] = None
        # The failure matrix (Scenario.fail_call): calls counted per function, failures made.
        self.call_counts: Dict[str, int] = {}
        self.injected: List[Tuple[str, int, int]] = []
        self.deregister_failed = False

    # -- small helpers ---------------------------------------------------------------------
    def ev(self, kind, name, args=None, status=None, text="", depth=None) -> Event:
        t = self.current
        if t is not None:
            try:
                rsp = self.emu.get_stack_ptr()
                if t.stack_top - t.stack_size <= rsp <= t.stack_top:
                    t.min_rsp = min(t.min_rsp, rsp)
            except Exception:
                pass
        e = Event(len(self.events), kind, name, dict(args or {}), status,
                  self.depth if depth is None else depth, text,
                  thread=t.name if t is not None else "", time=self.now)
        self.events.append(e)
        return e

    def violation(self, msg: str):
        self.violations.append(msg)
        self.ev("violation", "violation", text=msg)

    def _inject(self, name: str) -> Optional[int]:
        """Counts a call of `name` (a function of tests/failure-matrix.txt); the status it must
        fail with when Scenario.fail_call names this occurrence, else None."""
        n = self.call_counts[name] = self.call_counts.get(name, 0) + 1
        fc = self.scenario.fail_call
        if fc is None or fc[0] != name or fc[1] != n:
            return None
        status = fc[2] & 0xFFFFFFFF
        self.injected.append((name, n, status))
        self.ev("provider", "injected failure", text="failure matrix: call %d of %s fails (%s)"
                % (n, name, status_name(status)))
        return status

    def rd(self, addr, n) -> bytes:
        return bytes(self.emu.mem_read(addr, n))

    def rd16(self, a):
        return struct.unpack("<H", self.rd(a, 2))[0]

    def rd32(self, a):
        return struct.unpack("<I", self.rd(a, 4))[0]

    def rd64(self, a):
        return struct.unpack("<Q", self.rd(a, 8))[0]

    def wr(self, a, data: bytes):
        self.emu.mem_write(a, data)

    def wr64(self, a, v):
        self.wr(a, struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF))

    def alloc(self, size: int, tag: str) -> int:
        addr = self.emu.mem_map(max(size, 16), tag="harness.%s" % tag)
        self.wr(addr, b"\0" * max(size, 16))
        return addr

    def readable(self, addr: int, n: int = 1) -> bool:
        if not addr:
            return False
        try:
            self.emu.mem_read(addr, n)
            return True
        except Exception:
            return False

    def in_image(self, addr: int) -> bool:
        base, size = self.module.get_base(), self.module.get_image_size()
        return base <= addr < base + size

    def pool_block(self, addr: int) -> Optional[Allocation]:
        for a in self.allocations.values():
            if a.freed_by is None and a.address <= addr < a.address + a.size:
                return a
        return None

    def on_a_stack(self, addr: int) -> Optional[Thread]:
        for t in self.threads:
            if t.stack_top - t.stack_size <= addr < t.stack_top:
                return t
        return None

    def where(self, addr: int) -> str:
        """Where an address is, for messages."""
        if self.in_image(addr):
            return "in the image"
        if self.pool_block(addr):
            return "in pool tagged %s" % tag_name(self.pool_block(addr).tag)
        t = self.on_a_stack(addr)
        if t:
            return "on the stack of %s" % t.name
        return "elsewhere"

    # -- set-up ----------------------------------------------------------------------------
    def _build(self):
        try:
            import speakeasy  # noqa: F401
        except ImportError as e:  # pragma: no cover
            raise HarnessError("speakeasy-emulator is not installed: run "
                               "tests/speakeasy/setup-venv.sh and use its python") from e
        from speakeasy import Speakeasy

        if not os.path.isfile(self.image):
            raise HarnessError("driver image not found: %s" % self.image)
        logger = logging.getLogger("speakeasy.wsk_driver")
        if not self.verbose:
            logger.setLevel(logging.CRITICAL + 1)
        self.se = Speakeasy(logger=logger)
        self.module = self.se.load_module(self.image)
        self.emu = self.se.emu
        self.uc = self.emu.emu_eng.emu
        # Speakeasy sizes the kernel stack from the image's SizeOfStackCommit (4 KiB for a
        # usual link); Windows x64 gives a thread KERNEL_STACK_SIZE, 24 KiB. Use that.
        self.stack_top, _ = self.emu.alloc_stack(KERNEL_STACK_SIZE)
        self.emu.stack_base = self.stack_top
        self.emu.reset_stack(self.stack_top)

        # Code stub: jmp [rip+0] ; dq harness.CallbackReturn
        self.cont_addr = self.emu.get_proc("harness", "CallbackReturn")
        self.trigger_addr = self.emu.get_proc("harness", "AfterEntry")
        self.stub = self.alloc(32, "stub")
        self.wr(self.stub, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self.cont_addr))
        self.trigger_stub = self.alloc(32, "trigger_stub")
        self.wr(self.trigger_stub, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self.trigger_addr))
        self.exallocatepool2_addr = self.emu.get_proc("ntoskrnl", "ExAllocatePool2")
        self.wsk_funcs = {name: self.emu.get_proc("harness", name)
                          for name, _ in WSK_PROVIDER_DISPATCH_FUNCS}
        self.conn_funcs = {name: self.emu.get_proc("harness", "Socket" + name)
                           for name, _ in WSK_CONNECTION_DISPATCH_FUNCS}

        def add(fn, mod, name, argc):
            # A function Speakeasy implements returns by itself only when the hook leaves RSP
            # and RIP alone: _wrap returns for it when the hook moved the CPU elsewhere.
            _, handler = self.emu.api.get_export_func_handler(mod, name)
            self.se.add_api_hook(self._wrap(fn, handler is not None), mod, name, argc=argc)

        add(self._h_cont, "harness", "CallbackReturn", 0)
        add(self._h_after_entry, "harness", "AfterEntry", 0)
        for name, argc in WSK_PROVIDER_DISPATCH_FUNCS:
            add(self._make_wsk_hook(name, argc), "harness", name, argc)
        socket_hooks = {"WskCloseSocket": self._h_sock_closesocket, "WskBind": self._h_sock_bind,
                        "WskConnect": self._h_sock_connect, "WskSend": self._h_sock_send,
                        "WskReceive": self._h_sock_receive,
                        "WskDisconnect": self._h_sock_disconnect}
        for name, argc in WSK_CONNECTION_DISPATCH_FUNCS:
            add(socket_hooks.get(name) or self._h_sock_unsupported(name), "harness",
                "Socket" + name, argc)
        add(self._h_ioallocateirp, "ntoskrnl", "IoAllocateIrp", 2)
        add(self._h_iofreeirp, "ntoskrnl", "IoFreeIrp", 1)
        add(self._h_iosetcompletionroutineex, "ntoskrnl", "IoSetCompletionRoutineEx", 7)
        add(self._h_iocancelirp, "ntoskrnl", "IoCancelIrp", 1)
        add(self._h_iofcompleterequest, "ntoskrnl", "IofCompleteRequest", 2)
        add(self._h_ioallocatemdl, "ntoskrnl", "IoAllocateMdl", 5)
        add(self._h_mmbuildmdlfornonpagedpool, "ntoskrnl", "MmBuildMdlForNonPagedPool", 1)
        add(self._h_iofreemdl, "ntoskrnl", "IoFreeMdl", 1)
        add(self._h_register, "netio", "NmrRegisterClient", 3)
        add(self._h_deregister, "netio", "NmrDeregisterClient", 1)
        add(self._h_wait, "netio", "NmrWaitForClientDeregisterComplete", 1)
        add(self._h_client_attach, "netio", "NmrClientAttachProvider", 5)
        add(self._h_detach_complete, "netio", "NmrClientDetachProviderComplete", 1)
        add(self._h_wsk_register, "netio", "WskRegister", 2)
        add(self._h_wsk_capture, "netio", "WskCaptureProviderNPI", 3)
        add(self._h_wsk_release, "netio", "WskReleaseProviderNPI", 1)
        add(self._h_wsk_deregister, "netio", "WskDeregister", 1)
        add(self._h_exallocatepool2, "ntoskrnl", "ExAllocatePool2", 3)
        add(self._h_exallocatepoolwithtag, "ntoskrnl", "ExAllocatePoolWithTag", 3)
        add(self._h_exallocatepool, "ntoskrnl", "ExAllocatePool", 2)
        add(self._h_exfreepoolwithtag, "ntoskrnl", "ExFreePoolWithTag", 2)
        add(self._h_exfreepool, "ntoskrnl", "ExFreePool", 1)
        add(self._h_getroutine, "ntoskrnl", "MmGetSystemRoutineAddress", 1)
        add(self._h_rtlgetversion, "ntoskrnl", "RtlGetVersion", 1)
        add(self._h_dbgprintex, "ntoskrnl", "DbgPrintEx", 3)
        add(self._h_dbgprint, "ntoskrnl", "DbgPrint", 1)
        add(self._h_iocreatedevice, "ntoskrnl", "IoCreateDevice", 7)
        add(self._h_iodeletedevice, "ntoskrnl", "IoDeleteDevice", 1)
        add(self._h_ioallocateworkitem, "ntoskrnl", "IoAllocateWorkItem", 1)
        add(self._h_ioqueueworkitem, "ntoskrnl", "IoQueueWorkItem", 4)
        add(self._h_iofreeworkitem, "ntoskrnl", "IoFreeWorkItem", 1)
        add(self._h_zwopenkey, "ntoskrnl", "ZwOpenKey", 3)
        add(self._h_zwqueryvaluekey, "ntoskrnl", "ZwQueryValueKey", 6)
        add(self._h_zwclose, "ntoskrnl", "ZwClose", 1)
        add(self._h_keinitializeevent, "ntoskrnl", "KeInitializeEvent", 3)
        add(self._h_kesetevent, "ntoskrnl", "KeSetEvent", 3)
        add(self._h_keclearevent, "ntoskrnl", "KeClearEvent", 1)
        add(self._h_keresetevent, "ntoskrnl", "KeResetEvent", 1)
        add(self._h_kewaitforsingleobject, "ntoskrnl", "KeWaitForSingleObject", 5)

        # Observe Speakeasy's runs (DriverEntry, DriverUnload, ours) start and end.
        emu = self.emu
        orig_exec_run, orig_complete = emu._exec_run, emu.on_run_complete

        def exec_run(run):
            self._run_started(run)
            out = orig_exec_run(run)
            # Speakeasy put the run's return address (its end-of-run hook) at [RSP].
            self.run_thread.run_rsp = emu.get_stack_ptr()
            return out

        def on_run_complete():
            self._run_completed(emu.curr_run)
            return orig_complete()

        emu._exec_run = exec_run
        emu.on_run_complete = on_run_complete

    def _wrap(self, fn, implemented_by_speakeasy: bool):
        def cb(emu, api, func, argv):
            self._switched = False
            rv = fn(emu, api, func, argv)
            if implemented_by_speakeasy and self._switched:
                sp = emu.get_stack_ptr()
                ret = self.rd64(sp)
                emu.reg_write("rsp", sp + 8)
                emu.set_pc(ret)
                if rv is not None:
                    emu.reg_write("rax", rv & 0xFFFFFFFFFFFFFFFF)
            return rv
        return cb

    # -- Speakeasy runs ----------------------------------------------------------------------
    def _run_name(self, run) -> str:
        from speakeasy.windows.kernel import EP_DRIVER_ENTRY, EP_DRIVER_UNLOAD
        return {EP_DRIVER_ENTRY: "DriverEntry", EP_DRIVER_UNLOAD: "DriverUnload"}.get(
            run.type, str(run.type))

    def _new_thread(self, name, kind, stack_top, stack_size) -> Thread:
        t = Thread(tid=len(self.threads), name=name, kind=kind, stack_top=stack_top,
                   stack_size=stack_size, min_rsp=stack_top)
        self.threads.append(t)
        return t

    def _run_started(self, run):
        name = self._run_name(run)
        self.depth = 0
        self.run_thread = self._new_thread(name, "run", self.stack_top, KERNEL_STACK_SIZE)
        self.current = self.run_thread
        if name == "DriverEntry":
            self.driver_object = run.args[0]
            self.registry_path = self._read_ustr(run.args[1], True) if run.args[1] else ""
            self.ev("run", "DriverEntry", {"DriverObject": run.args[0],
                                           "RegistryPath": run.args[1]})
        elif name == "DriverUnload":
            self.unload_ran = True
            self.ev("run", "DriverUnload", {"DriverObject": run.args[0]})
        elif name == "after DriverEntry":
            parts = ["the system after DriverEntry: the work items it queued run"]
            if self.scenario.after_entry:
                parts.append("then the provider's events")
            if self.scenario.unload_after_ms:
                parts.append("sc stop %d ms after that" % self.scenario.unload_after_ms)
            self.ev("run", "after DriverEntry", text="; ".join(parts))
        else:
            self.ev("run", name)

    def _run_completed(self, run):
        if run is None:
            return
        name = self._run_name(run)
        t = self.run_thread
        abandoned = t is not None and t.state == "abandoned"
        if t is not None and t.state == "running":
            t.state = "done"
        if getattr(run, "error", None):
            err = dict(run.error)
            err.pop("regs", None)
            err["run"] = name
            self.run_errors.append(err)
            self.ev("violation", "emulation-error", text="%s: %s at %s (%s)" % (
                name, err.get("type"), err.get("pc"), err.get("api_name", err.get("instr", ""))))
        if name == "DriverEntry":
            st = None if abandoned else self.emu.get_return_val() & 0xFFFFFFFF
            self.entry_status = st
            if self.driver_object:
                self.unload_ptr = self.rd64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD)
                if (st is None or st & 0x80000000) and self.unload_ptr:
                    # The I/O manager never calls DriverUnload after DriverEntry failed.
                    self.wr64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD, 0)
            self.ev("run", "DriverEntry abandoned" if abandoned else "DriverEntry returned",
                    status=st, args={"DriverUnload": self.unload_ptr})
            # Speakeasy's all-entrypoints mode would now call every export with dummy
            # arguments, DriverEntry included when the image exports it (a cdylib does).
            # Windows never does that: drop those runs, and say so in the trace.
            for dr in list(getattr(self.emu, "delayed_runs", [])):
                if str(dr.type).startswith("export."):
                    self.emu.delayed_runs.remove(dr)
                    self.skipped_exports.append(dr.type[len("export."):])
            if self.skipped_exports:
                self.ev("run", "exports not called", text="exported by the image, not called "
                        "(Windows does not call a driver's exports): %s"
                        % ", ".join(self.skipped_exports))
            if st == STATUS_SUCCESS:
                if (self.scenario.after_entry or self.work_queue or self._blocked()
                        or self.scenario.unload_after_ms):
                    from speakeasy.profiler import Run
                    r = Run()
                    r.type = "after DriverEntry"
                    r.start_addr = self.trigger_stub
                    r.args = []
                    self.emu.add_run(r)
            else:
                self._check_nothing_left("DriverEntry failed")
        elif name == "DriverUnload":
            self.unload_completed = not abandoned
            self.ev("run", "DriverUnload abandoned" if abandoned else "DriverUnload returned")
            self._check_nothing_left("DriverUnload abandoned" if abandoned
                                     else "DriverUnload returned")
        elif name == "after DriverEntry":
            self.ev("run", "after DriverEntry done")

    def _check_nothing_left(self, when: str):
        """When the image may be unmapped: no work item queued or running."""
        for it in self.work_items:
            if it.state == "queued":
                self.violation("%s with work item %d still queued (routine 0x%x): it would run "
                               "in an unmapped image" % (when, it.number, it.routine))
            elif it.state == "running":
                self.violation("%s while work item %d (routine 0x%x) is still running on %s: "
                               "the image would be unmapped under it"
                               % (when, it.number, it.routine, it.thread))

    # -- threads -----------------------------------------------------------------------------
    def _save_regs(self) -> dict:
        from unicorn import x86_const as X
        from unicorn.unicorn import _uc, uc_x86_xmm
        regs = {r: self.uc.reg_read(getattr(X, "UC_X86_REG_" + r.upper())) for r in _GPRS}
        for i in range(16):
            x = uc_x86_xmm()
            _uc.uc_reg_read(self.uc._uch, X.UC_X86_REG_XMM0 + i, ctypes.byref(x))
            regs["xmm%d" % i] = (x.low_qword, x.high_qword)
        return regs

    def _load_regs(self, regs: dict):
        from unicorn import x86_const as X
        from unicorn.unicorn import _uc, uc_x86_xmm
        for r in _GPRS:
            self.uc.reg_write(getattr(X, "UC_X86_REG_" + r.upper()), regs[r])
        for i in range(16):
            x = uc_x86_xmm()
            x.low_qword, x.high_qword = regs["xmm%d" % i]
            _uc.uc_reg_write(self.uc._uch, X.UC_X86_REG_XMM0 + i, ctypes.byref(x))

    def _blocked(self) -> List[Thread]:
        return sorted((t for t in self.threads if t.state == "blocked"),
                      key=lambda t: t.wait.since)

    def _block(self, wait: Wait, cont: Callable[[int], int]):
        """Blocks the current thread (inside a hook); returns what the hook must return."""
        t = self.current
        self._block_seq += 1
        wait.since = self._block_seq
        t.regs = self._save_regs()
        t.depth = self.depth
        t.wait = wait
        t.cont = cont
        t.state = "blocked"
        return self.schedule()

    def _resume(self, t: Thread, value: int):
        self._load_regs(t.regs)
        t.regs = None
        t.state = "running"
        w, t.wait = t.wait, None
        self._switched = True
        switched = self.current is not t
        self.current = t
        self.depth = t.depth
        if switched:
            self.ev("thread", "switch", text="back on %s (%s)" % (
                t.name, "timed out" if w.timed_out else "wait over"), depth=0)
        return t.cont(value)

    def _stack_for_worker(self) -> Tuple[int, int]:
        if self._free_stacks:
            return self._free_stacks.pop()
        base = self.emu.mem_map(KERNEL_STACK_SIZE, tag="harness.worker_stack")
        return base + KERNEL_STACK_SIZE, KERNEL_STACK_SIZE

    def _start_worker(self, item: WorkItem):
        self.work_queue.remove(item)
        top, size = self._stack_for_worker()
        t = self._new_thread("work item %d" % item.number, "worker", top, size)
        t.item = item
        item.state = "running"
        item.runs += 1
        item.thread = t.name
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="a worker thread (%s) runs work item %d" % (
            WORK_QUEUES.get(item.queue_type, item.queue_type), item.number), depth=0)
        self.ev("work", "work item runs", {"WorkerRoutine": item.routine,
                                           "DeviceObject": item.device,
                                           "Context": item.context, "item": item.number},
                depth=1)

        def gen():
            yield Call(item.routine, [item.device, item.context], "WorkerRoutine", returns=False)
            self.depth = 1
            self.ev("work", "work item done", {"item": item.number}, depth=1)
            if item.state == "running":
                item.state = "freed" if item.freed else "allocated"
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _thread_exit(self):
        t = self.current
        t.state = "done"
        if t.kind in ("worker", "provider"):
            self._free_stacks.append((t.stack_top, t.stack_size))
        self.progress += 1
        return self.schedule()

    def _end_run(self, t: Thread):
        """Ends the Speakeasy run of thread t (abandoned): Speakeasy 'returns' to its end hook."""
        self.current = t
        self._switched = True
        self.emu.reg_write("rsp", t.run_rsp)
        return 0

    def _describe_wait(self, t: Thread) -> str:
        w = t.wait
        what = w.what
        if w.deadline is not None:
            what += " (timeout at t=%s)" % seconds(w.deadline)
        else:
            what += " (no timeout)"
        last = (", after its log line %r" % t.last_log.rstrip("\n")) if t.last_log else ""
        return "%s waits for %s%s" % (t.name, what, last)

    def _abandon(self, t: Thread, why: str):
        self.violation("%s: %s; the emulation of %s is abandoned" % (self._describe_wait(t), why,
                                                                     t.name))
        t.state = "abandoned"
        if t.item is not None:
            t.item.state = "running"  # it never returns: reported when the image goes away

    def _satisfied(self, w: Wait) -> bool:
        if w.kind == "event":
            ke = self.kevents.get(w.event)
            return bool(ke and ke.signalled)
        if w.kind == "provider":
            ready = self._wsk_ready_at()
            return (ready is not None and self.now >= ready) or (
                w.registration is not None and w.registration.deregistered_seq is not None)
        return False

    def _wake_time(self, w: Wait) -> Optional[int]:
        times = [w.deadline] if w.deadline is not None else []
        if w.kind == "provider":
            ready = self._wsk_ready_at()
            if ready is not None and ready > self.now:
                times.append(ready)
        return min(times) if times else None

    def schedule(self):
        """Picks what runs next, from inside a hook whose thread just blocked or ended; returns
        what that hook must return (the CPU is then set up for the thread that runs).

        In this order: a blocked thread whose wait is satisfied (FIFO); a queued work item whose
        start time has come (FIFO; it starts on a new worker thread); the harness's own
        "settle" waiter (the system goes on only once nothing else can run); else the clock
        advances to the earliest wake-up (a timeout, the WSK provider becoming ready, a delayed
        work item) and the choice is made again. A wait nothing can satisfy any more is a
        violation: that thread is abandoned (a run ends there)."""
        while True:
            blocked = self._blocked()
            for t in blocked:
                if t.wait.kind not in ("settle", "time") and self._satisfied(t.wait):
                    self.progress += 1
                    return self._resume(t, STATUS_SUCCESS)
            for t in blocked:
                if t.wait.deadline is not None and self.now >= t.wait.deadline:
                    t.wait.timed_out = True
                    if t.wait.kind == "event":
                        ke = self.kevents.get(t.wait.event)
                        if ke:
                            ke.waits += 1
                    return self._resume(t, STATUS_TIMEOUT)
            if self.completion_queue:
                return self._start_provider_thread(self.completion_queue[0])
            for item in self.work_queue:
                if item.ready_at <= self.now:
                    return self._start_worker(item)
            for t in blocked:
                if t.wait.kind == "settle":
                    return self._resume(t, STATUS_SUCCESS)
            # Nothing can run now: let time pass, up to the earliest wake-up.
            wakes = [(self._wake_time(t.wait), 0, t.wait.since, t) for t in blocked
                     if self._wake_time(t.wait) is not None]
            wakes += [(it.ready_at, 1, it.number, it) for it in self.work_queue]
            if wakes:
                when, _, _, who = min(wakes, key=lambda w: w[:3])
                if isinstance(who, Thread) and who.wait.kind == "event" and \
                        when == who.wait.deadline:
                    others = [w for w in wakes if w[3] is not who]
                    if not others:
                        self._abandon(who, "nothing can ever signal it (no work item queued, "
                                           "no other thread that can ever run again)")
                        continue
                    if who.progress_at_timeout == self.progress:
                        who.fruitless_timeouts += 1
                    else:
                        who.fruitless_timeouts = 0
                    who.progress_at_timeout = self.progress
                    if who.fruitless_timeouts >= MAX_FRUITLESS_TIMEOUTS:
                        self._abandon(who, "%d timeouts in a row with nothing happening "
                                           "meanwhile" % who.fruitless_timeouts)
                        continue
                if when > MAX_EMULATED_TIME:
                    for t in blocked:
                        self._abandon(t, "the emulated clock passed %s" % seconds(
                            MAX_EMULATED_TIME))
                    self.work_queue.clear()
                    continue
                if when > self.now:
                    self.ev("thread", "time", text="time passes: t = %s (+%s)" % (
                        seconds(when), seconds(when - self.now)), depth=0)
                    self.now = when
                continue
            # Nothing will ever happen: every blocked thread is stuck for good.
            for t in blocked:
                self._abandon(t, "nothing can ever satisfy it")
            run = self.run_thread
            if run is not None and run.state == "abandoned":
                return self._end_run(run)
            raise HarnessError("the scheduler has nothing to run and no run to end")

    # -- calling into the driver -------------------------------------------------------------
    def _drive(self, gen: Generator, send_value, frame_rsp: Optional[int]):
        """Advance a harness generator from inside a hook.

        Returns the value the hook must return. Either the generator finished (RSP back on
        frame_rsp, whose [RSP] is the original return address; a worker thread's generator has
        no frame_rsp: the thread ends), or it asked for a call: RSP now on a scratch frame
        [fn, stub, home space], so Speakeasy's return lands on fn; or it asked to block.
        """
        self._switched = True
        try:
            req = gen.send(send_value)
        except StopIteration as stop:
            if frame_rsp is None:
                return self._thread_exit()
            self.emu.reg_write("rsp", frame_rsp)
            return STATUS_SUCCESS if stop.value is None else stop.value
        if isinstance(req, Block):
            return self._block(req.wait, lambda v: self._drive(gen, v, frame_rsp))
        if not isinstance(req, Call):
            raise HarnessError("harness generator yielded %r" % (req,))
        base = frame_rsp if frame_rsp is not None else self.current.stack_top - 0x40
        sp = (base - 0x80) & ~0xF  # below the hooked call's return address
        self.wr64(sp, req.fn)
        self.wr64(sp + 8, self.stub)
        self.wr(sp + 16, b"\0" * 0x20)  # home space
        regs = ["rcx", "rdx", "r8", "r9"]
        for i, a in enumerate(req.args):
            self.emu.reg_write(regs[i], a)
        self.emu.reg_write("rsp", sp)
        self.current.pending.append((gen, frame_rsp, req, self.depth))
        self.depth += 1
        return 0

    def _start(self, gen: Generator):
        return self._drive(gen, None, self.emu.get_stack_ptr())

    def _h_cont(self, emu, api, func, argv):
        if not self.current.pending:
            raise HarnessError("CallbackReturn hook without a pending call on %s"
                               % self.current.name)
        gen, frame_rsp, req, depth = self.current.pending.pop()
        self.depth = depth
        rax = emu.get_return_val()
        value = (rax & 0xFFFFFFFF) if req.returns else None
        return self._drive(gen, value, frame_rsp)

    def call(self, fn: int, args: list, name: str, returns: bool = True, arg_names=(),
             kind: str = "callback"):
        """Generator helper: call a driver callback, log it, return its status. kind:
        "callback" (NMR calls it), "io-callback" (the I/O manager: a completion routine)."""
        e = self.ev(kind, name, dict(zip(arg_names, args)))
        st = yield Call(fn, list(args), name, returns)
        e.status = st
        e.text = "returned"
        self.ev("return" if kind == "callback" else "io-return", name, status=st)
        return st

    def in_callback(self, *names) -> Optional[str]:
        """The innermost driver callback of the current thread among `names`, if any."""
        for _, _, c, _ in reversed(self.current.pending):
            if c.name in names:
                return c.name
        return None

    # -- the system after DriverEntry ----------------------------------------------------------
    def _settle(self):
        """Generator helper: wait until every work item that can run has run (or blocked)."""
        yield Block(Wait("settle", "the work items to settle"))

    def _h_after_entry(self, emu, api, func, argv):
        def gen():
            yield from self._settle()
            for action, what in self.scenario.after_entry:
                if self.deregistered:
                    break
                if action == "register":
                    self.ev("provider", "provider registers", text=what.describe())
                    yield from self._attach_gen(what)
                elif action == "deregister":
                    self.ev("provider", "provider deregisters", text=what)
                    for b in self.bindings:
                        if b.provider.name == what and b.state == "attached":
                            yield from self._detach_gen(b, "provider deregistration")
                else:
                    raise HarnessError("unknown after_entry action %r" % action)
                yield from self._settle()
            self.settled_at = self.now
            if self.scenario.unload_after_ms:
                deadline = self.now + self.scenario.unload_after_ms * TICKS_PER_MS
                yield Block(Wait("time", "sc stop at t=%s" % seconds(deadline),
                                 deadline=deadline))
                self.ev("provider", "sc stop", text="t = %s" % seconds(self.now))
            return 0
        return self._start(gen())

    # -- NMR model ---------------------------------------------------------------------------
    def _fake_handle(self, what: str) -> int:
        # Real memory, so a driver that dereferences a handle does not crash in a surprising way.
        return self.alloc(0x40, "nmr.%s" % what)

    def _read_characteristics(self, addr: int) -> dict:
        raw = self.rd(addr, SIZEOF_NPI_CLIENT_CHARACTERISTICS)
        ver, length, attach, detach, cleanup = struct.unpack_from("<HH4xQQQ", raw, 0)
        rver, rsize, npiid_p, modid_p, number, chars_p = struct.unpack_from("<HH4xQQI4xQ", raw, 32)
        c = dict(address=addr, Version=ver, Length=length, ClientAttachProvider=attach,
                 ClientDetachProvider=detach, ClientCleanupBindingContext=cleanup,
                 reg_Version=rver, reg_Size=rsize, reg_NpiId=npiid_p, reg_ModuleId=modid_p,
                 reg_Number=number, reg_NpiSpecificCharacteristics=chars_p)
        c["NpiId"] = uuid.UUID(bytes_le=self.rd(npiid_p, 16)) if self.readable(npiid_p, 16) else None
        if self.readable(modid_p, SIZEOF_NPI_MODULEID):
            ml, mt = struct.unpack("<HxxI", self.rd(modid_p, 8))
            c["ModuleId"] = dict(Length=ml, Type=mt,
                                 Guid=uuid.UUID(bytes_le=self.rd(modid_p + 8, 16)))
        else:
            c["ModuleId"] = None
        return c

    def _check_characteristics(self, c: dict):
        def chk(cond, msg):
            if not cond:
                self.violation("NPI_CLIENT_CHARACTERISTICS: " + msg)
        chk(c["Version"] == 0, "Version %d, expected 0" % c["Version"])
        chk(c["Length"] == SIZEOF_NPI_CLIENT_CHARACTERISTICS,
            "Length %d, expected 72" % c["Length"])
        chk(self.readable(c["ClientAttachProvider"]), "ClientAttachProvider is not code")
        chk(self.readable(c["ClientDetachProvider"]), "ClientDetachProvider is not code")
        chk(c["reg_Version"] == 0, "ClientRegistrationInstance.Version %d" % c["reg_Version"])
        chk(c["reg_Size"] == SIZEOF_NPI_REGISTRATION_INSTANCE,
            "ClientRegistrationInstance.Size %d, expected 40" % c["reg_Size"])
        chk(c["NpiId"] == NPI_WSK_INTERFACE_ID, "NpiId %s is not NPI_WSK_INTERFACE_ID" % c["NpiId"])
        chk(c["ModuleId"] is not None, "ModuleId not readable")
        if c["ModuleId"]:
            chk(c["ModuleId"]["Length"] == SIZEOF_NPI_MODULEID,
                "ModuleId.Length %d, expected 24" % c["ModuleId"]["Length"])
            chk(c["ModuleId"]["Type"] == 1, "ModuleId.Type %d, expected MIT_GUID"
                % c["ModuleId"]["Type"])
            chk(c["ModuleId"]["Guid"] == self.profile.module_id,
                "ModuleId.Guid {%s}, expected %s's {%s}" % (
                    str(c["ModuleId"]["Guid"]).upper(), self.profile.name,
                    str(self.profile.module_id).upper()))
        chk(c["reg_Number"] == 0, "ClientRegistrationInstance.Number %d" % c["reg_Number"])
        chk(self.in_image(c["address"]),
            "characteristics at 0x%x are not a static inside the image" % c["address"])

    def _make_registration_instance(self, p: Provider) -> int:
        ri = self.alloc(SIZEOF_NPI_REGISTRATION_INSTANCE, "provider.registration")
        npiid = self.alloc(16, "provider.npiid")
        self.wr(npiid, guid_bytes(p.npi_id))
        modid = self.alloc(SIZEOF_NPI_MODULEID, "provider.moduleid")
        self.wr(modid, struct.pack("<HxxI", SIZEOF_NPI_MODULEID, 1) + guid_bytes(PROVIDER_MODULE_ID))
        chars = 0
        if p.characteristics:
            chars = self.alloc(4, "provider.characteristics")
            self.wr(chars, struct.pack("<HH", p.highest & 0xFFFF, p.lowest & 0xFFFF))
        self.wr(ri, struct.pack("<HH4xQQI4xQ", 0, SIZEOF_NPI_REGISTRATION_INSTANCE, npiid, modid,
                                0, chars))
        return ri

    def _provider_dispatch(self, version: int) -> int:
        """A WSK_PROVIDER_DISPATCH of `version` whose functions are the harness's hooks; a
        client that reads the 1.1 members of a 1.0 table is reported."""
        pd = self.alloc(SIZEOF_WSK_PROVIDER_DISPATCH, "wsk.provider_dispatch")
        data = struct.pack("<HH4x", version, 0) + b"".join(
            struct.pack("<Q", self.wsk_funcs[n]) for n, _ in WSK_PROVIDER_DISPATCH_FUNCS)
        self.wr(pd, data)
        if version < WSK_1_1:
            # A WSK 1.0 dispatch is 32 bytes: the client must not read the 1.1 members.
            def on_read(emu_, access, addr, size, value, ctx, pd=pd, dv=version):
                self.violation("read of WSK_PROVIDER_DISPATCH+%d (a WSK 1.1 member) of a "
                               "WSK %s dispatch" % (addr - pd, version_name(dv)))
                return True
            self.emu.add_mem_read_hook(on_read, begin=pd + 32,
                                       end=pd + SIZEOF_WSK_PROVIDER_DISPATCH - 1)
        return pd

    def _attach_gen(self, p: Provider):
        b = Binding(handle=self._fake_handle("binding"), provider=p,
                    registration_instance=self._make_registration_instance(p))
        self.bindings.append(b)
        b.state = "attaching"
        st = yield from self.call(
            self.client["ClientAttachProvider"],
            [b.handle, self.client_context, b.registration_instance], "ClientAttachProvider",
            arg_names=("NmrBindingHandle", "ClientContext", "ProviderRegistrationInstance"))
        self.events[-1].args["provider"] = p.describe()
        b.attach_status = st
        ok_try = any(t.status == STATUS_SUCCESS for t in b.tries)
        if b.state in ("detached", "detach-pending"):  # detached during the attach call
            if st != STATUS_SUCCESS:
                self.violation("ClientAttachProvider returned %s after NmrClientAttachProvider "
                               "succeeded" % status_name(st))
            if b.state == "detached":
                yield from self._cleanup_gen(b)
        elif st == STATUS_SUCCESS:
            b.state = "attached"
            if not ok_try:
                self.violation("ClientAttachProvider returned STATUS_SUCCESS without a successful "
                               "NmrClientAttachProvider")
        else:
            b.state = "refused"
            if ok_try:
                self.violation("ClientAttachProvider returned %s after NmrClientAttachProvider "
                               "succeeded" % status_name(st))
            if b.tries and st != b.tries[-1].status:
                self.violation("ClientAttachProvider returned %s, not the status of the last "
                               "NmrClientAttachProvider (%s)" % (status_name(st),
                                                                 status_name(b.tries[-1].status)))
        return st

    def _detach_gen(self, b: Binding, why: str, cleanup: bool = True):
        b.state = "detaching"
        b.complete_called = False
        st = yield from self.call(self.client["ClientDetachProvider"], [b.client_context],
                                  "ClientDetachProvider", arg_names=("ClientBindingContext",))
        self.events[-1].args["why"] = why
        b.detach_status = st
        if st == STATUS_SUCCESS:
            if b.complete_called:
                self.violation("NmrClientDetachProviderComplete called although "
                               "ClientDetachProvider returned STATUS_SUCCESS")
        elif st == STATUS_PENDING:
            if not b.complete_called:
                b.state = "detach-pending"
                return
        else:
            self.violation("ClientDetachProvider returned %s (only STATUS_SUCCESS or "
                           "STATUS_PENDING are allowed)" % status_name(st))
        if cleanup:
            yield from self._cleanup_gen(b)
        else:
            b.state = "detached"

    def _cleanup_gen(self, b: Binding):
        fn = self.client["ClientCleanupBindingContext"]
        if fn:
            yield from self.call(fn, [b.client_context], "ClientCleanupBindingContext",
                                 returns=False, arg_names=("ClientBindingContext",))
        b.state = "cleaned"

    # hooks: the driver calls NMR ----------------------------------------------------------
    def _h_register(self, emu, api, func, argv):
        chars, ctx, phandle = argv
        e = self.ev("nmr", "NmrRegisterClient", {"ClientCharacteristics": chars,
                                                  "ClientContext": ctx,
                                                  "NmrClientHandle": phandle})
        if self.profile.backend != "nmr":
            self.violation("NmrRegisterClient: the %s profile is a %s client, not a raw NMR one"
                           % (self.profile.name, self.profile.backend))
        if self.client is not None:
            self.violation("NmrRegisterClient called twice")
        self.client = self._read_characteristics(chars)
        self.client_context = ctx
        self._check_characteristics(self.client)
        injected = self._inject("NmrRegisterClient")
        if injected is not None:
            e.status = injected
            return e.status
        if self.scenario.register_status != STATUS_SUCCESS:
            e.status = self.scenario.register_status
            return e.status
        self.client_handle = self._fake_handle("client")

        def gen():
            for p in self.scenario.providers:
                yield from self._attach_gen(p)
            # NMR writes the handle when NmrRegisterClient returns, i.e. after the attach calls.
            self.wr64(phandle, self.client_handle)
            e.status = STATUS_SUCCESS
            e.args["*NmrClientHandle"] = self.client_handle
            self.ev("nmr-return", "NmrRegisterClient", status=STATUS_SUCCESS,
                    text="NMR wrote client handle 0x%x" % self.client_handle)
            return STATUS_SUCCESS
        return self._start(gen())

    def _binding(self, handle) -> Optional[Binding]:
        for b in self.bindings:
            if b.handle == handle:
                return b
        return None

    def _h_client_attach(self, emu, api, func, argv):
        handle, ctx, disp, p_ctx, p_disp = argv
        e = self.ev("nmr", "NmrClientAttachProvider", {
            "NmrBindingHandle": handle, "ClientBindingContext": ctx, "ClientDispatch": disp,
            "ProviderBindingContext": p_ctx, "ProviderDispatch": p_disp})
        injected = self._inject("NmrClientAttachProvider")
        b = self._binding(handle)
        if b is None:
            self.violation("NmrClientAttachProvider with an unknown binding handle 0x%x" % handle)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if b.state != "attaching":
            self.violation("NmrClientAttachProvider outside ClientAttachProvider (binding %s)"
                           % b.state)
        if not self.readable(disp, SIZEOF_WSK_CLIENT_DISPATCH):
            self.violation("NmrClientAttachProvider: ClientDispatch 0x%x not readable" % disp)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        version, reserved, event = struct.unpack("<HHxxxxQ", self.rd(disp, 16))
        e.args["ClientDispatch.Version"] = version
        e.args["ClientDispatch.WskClientEvent"] = event
        status = b.provider.answer(version, len(b.tries)) & 0xFFFFFFFF
        if injected is not None:
            status = injected  # the provider did not attach: nothing written
        blk = self.pool_block(ctx)
        t = AttachTry(binding=handle, client_context=ctx, version=version, status=status,
                      client_dispatch=disp, reserved=reserved, client_event=event,
                      out_client_in_context=bool(blk and blk.address <= p_ctx < blk.address + blk.size),
                      out_dispatch_in_context=bool(blk and blk.address <= p_disp < blk.address + blk.size),
                      context_is_pool=blk is not None and blk.address == ctx)
        b.tries.append(t)
        if status == STATUS_SUCCESS:
            wsk_client = self.alloc(0x40, "wsk.client")
            pd = self._provider_dispatch(b.provider.dispatch_version or version)
            self.wr64(p_ctx, wsk_client)
            self.wr64(p_disp, pd)
            b.client_context = ctx
            b.wsk_client = wsk_client
            b.provider_dispatch = pd
            e.args["*ProviderBindingContext"] = wsk_client
            e.args["*ProviderDispatch"] = pd
        e.status = status
        if status == STATUS_SUCCESS and b.provider.detach_during_attach:
            def gen():
                self.ev("provider", "provider deregisters",
                        text="%s, while NmrClientAttachProvider is returning" % b.provider.name)
                yield from self._detach_gen(b, "provider deregistration during attach",
                                            cleanup=False)
                return status
            return self._start(gen())
        return status

    def _h_deregister(self, emu, api, func, argv):
        (handle,) = argv
        e = self.ev("nmr", "NmrDeregisterClient", {"NmrClientHandle": handle})
        if handle != self.client_handle:
            self.violation("NmrDeregisterClient(0x%x): not the handle NmrRegisterClient gave "
                           "(%s)" % (handle, hex(self.client_handle or 0)))
        if self.deregistered:
            self.violation("NmrDeregisterClient called twice")
        self.deregistered = True
        injected = self._inject("NmrDeregisterClient")
        if injected is not None:
            # NMR did not initiate the deregistration: no detach, the bindings stay attached.
            self.deregister_failed = True
            e.status = injected
            return injected

        def gen():
            for b in self.bindings:
                if b.state == "attached":
                    yield from self._detach_gen(b, "NmrDeregisterClient")
            e.status = STATUS_PENDING
            self.ev("nmr-return", "NmrDeregisterClient", status=STATUS_PENDING)
            return STATUS_PENDING
        return self._start(gen())

    def _h_detach_complete(self, emu, api, func, argv):
        (handle,) = argv
        self.ev("nmr", "NmrClientDetachProviderComplete", {"NmrBindingHandle": handle})
        b = self._binding(handle)
        if b is None:
            self.violation("NmrClientDetachProviderComplete with unknown handle 0x%x" % handle)
            return 0
        b.complete_calls += 1
        if b.state == "detaching":
            b.complete_called = True
            return 0
        if b.state == "detach-pending":
            b.complete_called = True
            attaching = any(c.name == "ClientAttachProvider"
                            for t in self.threads if t.state in ("running", "blocked")
                            for _, _, c, _ in t.pending)
            if attaching:
                b.state = "detached"  # cleaned up when ClientAttachProvider returns
                return 0

            def gen():
                yield from self._cleanup_gen(b)
                return 0
            return self._start(gen())
        self.violation("NmrClientDetachProviderComplete for a binding in state %s" % b.state)
        return 0

    def _h_wait(self, emu, api, func, argv):
        (handle,) = argv
        e = self.ev("nmr", "NmrWaitForClientDeregisterComplete", {"NmrClientHandle": handle})
        injected = self._inject("NmrWaitForClientDeregisterComplete")
        if self.deregister_failed:
            # No deregistration was initiated: what the documentation says of a wait before
            # NmrDeregisterClient (nothing to wait for).
            self.wait_done = True
            e.status = injected if injected is not None else STATUS_INVALID_PARAMETER
            return e.status
        if handle != self.client_handle:
            self.violation("NmrWaitForClientDeregisterComplete(0x%x): not the client handle"
                           % handle)
        if not self.deregistered:
            self.violation("NmrWaitForClientDeregisterComplete before NmrDeregisterClient")
        stuck = [b for b in self.bindings if b.state in ("attached", "detaching", "detach-pending")]
        if stuck:
            self.violation("NmrWaitForClientDeregisterComplete would wait forever: %d binding(s) "
                           "not detached and cleaned up" % len(stuck))
        self.wait_done = True
        e.status = STATUS_SUCCESS if injected is None else injected
        return e.status

    # hooks: the WskRegister layer ---------------------------------------------------------
    def _wsk_provider(self) -> Provider:
        return self.scenario.providers[0] if self.scenario.providers else Provider()

    def _wsk_ready_at(self) -> Optional[int]:
        """When WskCaptureProviderNPI finds the WSK subsystem ready (None: never)."""
        if self.scenario.providers:
            return 0
        if self.scenario.wsk_ready_after_ms is None:
            return None
        return self.scenario.wsk_ready_after_ms * TICKS_PER_MS

    def _wsk_reg(self, addr: int, api: str) -> Optional[WskRegistration]:
        for reg in reversed(self.wsk_regs):
            if reg.address == addr:
                return reg
        self.violation("%s(0x%x): not a WSK_REGISTRATION that WskRegister initialised"
                       % (api, addr))
        return None

    def _live_wsk_reg(self, addr: int) -> Optional[WskRegistration]:
        for reg in self.wsk_regs:
            if (reg.address == addr and reg.status == STATUS_SUCCESS
                    and reg.deregistered_seq is None):
                return reg
        return None

    def _h_wsk_register(self, emu, api, func, argv):
        npi, registration = argv
        e = self.ev("wskreg", "WskRegister", {"WskClientNpi": npi, "WskRegistration": registration})
        injected = self._inject("WskRegister")
        if self.profile.backend != "wskregister":
            self.violation("WskRegister: the %s profile is a raw NMR client, not a WskRegister one"
                           % self.profile.name)
        version = disp = ctx = 0
        if not self.readable(npi, SIZEOF_WSK_CLIENT_NPI):
            self.violation("WskRegister: WskClientNpi 0x%x not readable" % npi)
        else:
            ctx, disp = struct.unpack("<QQ", self.rd(npi, 16))
            if not self.readable(disp, SIZEOF_WSK_CLIENT_DISPATCH):
                self.violation("WskRegister: WSK_CLIENT_NPI.Dispatch 0x%x not readable" % disp)
            else:
                version, reserved, event = struct.unpack("<HHxxxxQ", self.rd(disp, 16))
                e.args["ClientDispatch.Version"] = version
                if reserved:
                    self.violation("WskRegister: WSK_CLIENT_DISPATCH.Reserved is %d" % reserved)
                if not self.in_image(disp):
                    self.violation("WskRegister: the WSK_CLIENT_DISPATCH at 0x%x is %s, not a "
                                   "static of the image (it must outlive the registration)"
                                   % (disp, self.where(disp)))
                if event and not self.in_image(event):
                    self.violation("WskRegister: WskClientEvent 0x%x is not code of the image"
                                   % event)
        for what, addr in (("WskClientNpi", npi), ("WskRegistration", registration)):
            if self.on_a_stack(addr):
                self.violation("WskRegister: %s 0x%x is %s: it must stay valid until WskDeregister "
                               "returns" % (what, addr, self.where(addr)))
        if not self.readable(registration, SIZEOF_WSK_REGISTRATION):
            self.violation("WskRegister: WskRegistration 0x%x not writable" % registration)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if self._live_wsk_reg(registration):
            self.violation("WskRegister(0x%x): that WSK_REGISTRATION is registered already (no "
                           "WskDeregister since)" % registration)
        status = self.scenario.register_status & 0xFFFFFFFF
        if injected is not None:
            status = injected
        reg = WskRegistration(address=registration, client_npi=npi, version=version,
                              client_dispatch=disp, client_context=ctx, status=status,
                              registered_seq=e.seq)
        self.wsk_regs.append(reg)
        if status == STATUS_SUCCESS:
            # What WskRegister keeps in the registration (opaque to the client).
            self.wr(registration, struct.pack("<QQQ", 1, self._fake_handle("wsk.registration"), 0))
        e.status = status
        return status

    def _capture_now(self, reg: WskRegistration, wait_ms: int, npi_out: int, e: Event) -> int:
        """The outcome of a capture, once it stops waiting (e: the call's event)."""
        out = e  # where the outcome is recorded: the call, or the return of a blocked call
        if e.args.get("blocked"):
            out = self.ev("wskreg-return", "WskCaptureProviderNPI",
                          text="after waiting %s" % seconds(self.now - e.time))
        ready = self._wsk_ready_at()
        if reg.deregistered_seq is not None or ready is None or self.now < ready:
            status = STATUS_DEVICE_NOT_READY
        else:
            p = self._wsk_provider()
            status = p.answer(reg.version, self.wsk_capture_answers) & 0xFFFFFFFF
            self.wsk_capture_answers += 1
            if status == STATUS_SUCCESS:
                if not self.readable(npi_out, SIZEOF_WSK_PROVIDER_NPI):
                    self.violation("WskCaptureProviderNPI: WskProviderNpi 0x%x not writable"
                                   % npi_out)
                    status = STATUS_INVALID_PARAMETER
                else:
                    if reg.wsk_client is None:
                        reg.wsk_client = self.alloc(0x40, "wsk.client")
                        reg.dispatch_version = p.dispatch_version or reg.version
                        reg.provider_dispatch = self._provider_dispatch(reg.dispatch_version)
                    self.wr(npi_out, struct.pack("<QQ", reg.wsk_client, reg.provider_dispatch))
                    reg.captures += 1
                    out.args["*Client"] = reg.wsk_client
                    out.args["*Dispatch"] = reg.provider_dispatch
                    out.args["*Dispatch.Version"] = reg.dispatch_version
        reg.capture_answers.append((wait_ms, status))
        e.status = out.status = status
        return status

    def _h_wsk_capture(self, emu, api, func, argv):
        registration, wait_ms, npi_out = argv
        wait_ms &= 0xFFFFFFFF
        e = self.ev("wskreg", "WskCaptureProviderNPI", {"WskRegistration": registration,
                                                         "WaitTimeout": wait_ms,
                                                         "WskProviderNpi": npi_out})
        injected = self._inject("WskCaptureProviderNPI")
        reg = self._live_wsk_reg(registration)
        if reg is None:
            self.violation("WskCaptureProviderNPI(0x%x): not a registered WSK_REGISTRATION"
                           % registration)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if injected is not None:
            # At once, whatever the wait: nothing captured.
            reg.capture_answers.append((wait_ms, injected))
            e.status = injected
            return injected
        ready = self._wsk_ready_at()
        if (ready is not None and self.now >= ready) or wait_ms == WSK_NO_WAIT:
            return self._capture_now(reg, wait_ms, npi_out, e)
        if self.current.kind == "run" and self.current.name == "DriverEntry":
            self.violation("WskCaptureProviderNPI waits (%s) in DriverEntry: the WSK subsystem "
                           "may load after the driver, so this can deadlock the boot"
                           % ("WSK_INFINITE_WAIT" if wait_ms == WSK_INFINITE_WAIT
                              else "%d ms" % wait_ms))
        deadline = None if wait_ms == WSK_INFINITE_WAIT else self.now + wait_ms * TICKS_PER_MS
        e.args["blocked"] = True
        return self._block(Wait("provider", "the WSK subsystem to become ready",
                                deadline=deadline, registration=reg),
                           lambda _v: self._capture_now(reg, wait_ms, npi_out, e))

    def _h_wsk_release(self, emu, api, func, argv):
        (registration,) = argv
        self.ev("wskreg", "WskReleaseProviderNPI", {"WskRegistration": registration})
        reg = self._live_wsk_reg(registration) or self._wsk_reg(registration,
                                                                 "WskReleaseProviderNPI")
        if reg is None:
            return None
        if reg.captures <= 0:
            self.violation("WskReleaseProviderNPI(0x%x) without a captured provider NPI"
                           % registration)
        else:
            reg.captures -= 1
            reg.releases += 1
        return None

    def _h_wsk_deregister(self, emu, api, func, argv):
        (registration,) = argv
        e = self.ev("wskreg", "WskDeregister", {"WskRegistration": registration})
        reg = self._live_wsk_reg(registration)
        if reg is None:
            self.violation("WskDeregister(0x%x): not a registered WSK_REGISTRATION (never "
                           "registered, or deregistered already)" % registration)
            return None
        reg.deregistered_seq = e.seq
        if reg.captures:
            # WskDeregister blocks until every captured NPI is released (and every socket
            # closed): the caller holds them, so it would wait forever.
            self.violation("WskDeregister would wait forever: %d captured provider NPI(s) not "
                           "released (WskReleaseProviderNPI)" % reg.captures)
        return None

    # hooks: WSK provider dispatch ---------------------------------------------------------
    def _make_wsk_hook(self, name, argc):
        if name == "WskSocket" and self.scenario.peer is not None:
            return self._h_wsk_socket

        def hook(emu, api, func, argv):
            e = self.ev("wsk", name, {"Client": argv[0] if argv else 0},
                        status=STATUS_NOT_SUPPORTED)
            injected = self._inject(name)
            if injected is not None:  # not modelled further (no IRP taken)
                e.status = injected
            return e.status
        return hook

    # hooks: IRPs and MDLs (the I/O manager) -----------------------------------------------------
    def _irp(self, addr: int, api: str) -> Optional[IrpRec]:
        rec = self.irp_by_addr.get(addr)
        if rec is None:
            self.violation("%s(0x%x): not an IRP from IoAllocateIrp" % (api, addr))
            return None
        if rec.state == "freed":
            self.violation("%s(0x%x): IRP %d was freed already (IoFreeIrp)" % (api, addr,
                                                                              rec.number))
            return None
        return rec

    def _h_ioallocateirp(self, emu, api, func, argv):
        stack_size, quota = argv[0] & 0xFF, argv[1] & 0xFF
        e = self.ev("io", "IoAllocateIrp", {"StackSize": stack_size, "ChargeQuota": quota})
        if self._inject("IoAllocateIrp") is not None or self.scenario.fail_irp_allocations:
            e.status = 0
            return 0
        if stack_size < 1:
            self.violation("IoAllocateIrp(StackSize=%d): a WSK request needs a stack location "
                           "for the provider" % stack_size)
        size = SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * max(stack_size, 1)
        addr = self.alloc(size, "irp")
        self.wr(addr, struct.pack("<hH", IO_TYPE_IRP, size))
        self.wr(addr + IRP_STACK_COUNT, bytes([stack_size, (stack_size + 1) & 0xFF]))
        # As IoAllocateIrp leaves it: the current location one past the last one (none yet).
        self.wr64(addr + IRP_CURRENT_STACK_LOCATION,
                  addr + SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * stack_size)
        rec = IrpRec(number=len(self.irps) + 1, address=addr, stack_size=stack_size,
                     allocated_seq=e.seq)
        self.irps.append(rec)
        self.irp_by_addr[addr] = rec
        e.status = addr
        e.args["*irp"] = rec.number
        return addr

    def _h_iofreeirp(self, emu, api, func, argv):
        (addr,) = argv
        rec = self.irp_by_addr.get(addr)
        e = self.ev("io", "IoFreeIrp", {"Irp": addr})
        if rec is None:
            self.violation("IoFreeIrp(0x%x): not an IRP from IoAllocateIrp" % addr)
            return None
        e.args["*irp"] = rec.number
        if rec.state == "freed":
            self.violation("IoFreeIrp(0x%x): IRP %d freed twice" % (addr, rec.number))
            return None
        if rec.state == "pending":
            self.violation("IoFreeIrp(0x%x): IRP %d is still pending in %s (the provider owns it "
                           "until it completes it)" % (addr, rec.number, rec.op))
        if rec.routine:
            # Not a violation here (a provider that never completes the IRP leaves the driver no
            # other choice), but on Windows the memory IoSetCompletionRoutineEx allocated (and
            # its device object reference) is only released when the routine runs.
            e.text = ("its IoSetCompletionRoutineEx routine never ran: Windows would leak the "
                      "memory it allocated for it")
        rec.state = "freed"
        rec.freed_seq = e.seq
        self.wr(addr, b"\xdd" * (SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * max(rec.stack_size, 1)))
        return None

    def _h_iosetcompletionroutineex(self, emu, api, func, argv):
        dev, irp, routine, ctx, on_success, on_error, on_cancel = argv
        invoke = (on_success & 0xFF, on_error & 0xFF, on_cancel & 0xFF)
        e = self.ev("io", "IoSetCompletionRoutineEx", {
            "DeviceObject": dev, "Irp": irp, "CompletionRoutine": routine, "Context": ctx,
            "InvokeOnSuccess": invoke[0], "InvokeOnError": invoke[1], "InvokeOnCancel": invoke[2]})
        injected = self._inject("IoSetCompletionRoutineEx")
        rec = self._irp(irp, "IoSetCompletionRoutineEx")
        if rec is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        e.args["*irp"] = rec.number
        if injected is not None:  # no routine set (and no device object reference taken)
            e.status = injected
            return injected
        d = self._device(dev)
        if d is None or d.deleted_seq is not None:
            # The I/O manager takes a reference on it until the routine has run.
            self.violation("IoSetCompletionRoutineEx: DeviceObject 0x%x is not a live device "
                           "object of the driver" % dev)
        if not self.in_image(routine):
            self.violation("IoSetCompletionRoutineEx: CompletionRoutine 0x%x is not in the "
                           "image" % routine)
        if rec.state != "allocated":
            self.violation("IoSetCompletionRoutineEx on IRP %d while it is %s (in %s)"
                           % (rec.number, rec.state, rec.op))
        rec.routine, rec.context, rec.device, rec.invoke = routine, ctx, dev, invoke
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    def _h_iocancelirp(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "IoCancelIrp", {"Irp": addr})
        rec = self._irp(addr, "IoCancelIrp")
        if rec is None:
            e.status = 0
            return 0
        e.args["*irp"] = rec.number
        rec.cancels += 1
        self.wr(addr + IRP_CANCEL, b"\x01")
        if rec.state != "pending":
            e.status, e.text = 0, "not pending"
            return 0
        if self.scenario.peer_ignores_cancel:
            e.status, e.text = 0, "the provider set no cancel routine: nothing happens"
            return 0
        e.text = "the provider's cancel routine completes it"

        def gen():
            yield from self._complete_gen(rec, STATUS_CANCELLED, 0)
            e.status = 1
            return 1
        return self._start(gen())

    def _h_iofcompleterequest(self, emu, api, func, argv):
        """IoCompleteRequest (IofCompleteRequest) of an IRP the driver allocated and never handed
        over (or got back): it made the location of its completion routine current
        (IoSetNextIrpStackLocation) and wrote IoStatus; the routine runs at once, as for a
        completion by the provider, and must give the IRP back (STATUS_MORE_PROCESSING_REQUIRED).
        """
        addr, boost = argv[0], argv[1] & 0xFF
        e = self.ev("io", "IofCompleteRequest", {"Irp": addr, "PriorityBoost": boost})
        rec = self._irp(addr, "IofCompleteRequest")
        if rec is None:
            return None
        e.args["*irp"] = rec.number
        if rec.state != "allocated":
            self.violation("IofCompleteRequest of IRP %d while it is %s (in %s): the %s owns it"
                           % (rec.number, rec.state, rec.op,
                              "provider" if rec.state == "pending" else "I/O manager"))
            return None
        location = self.rd(addr + IRP_CURRENT_LOCATION, 1)[0]
        current = self.rd64(addr + IRP_CURRENT_STACK_LOCATION)
        expected = addr + SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * (rec.stack_size - 1)
        if location != rec.stack_size or current != expected:
            self.violation("IofCompleteRequest of IRP %d: CurrentLocation %d / "
                           "CurrentStackLocation 0x%x, expected %d / 0x%x (IoSetNextIrpStackLocation once, to the "
                           "location of its completion routine)"
                           % (rec.number, location, current, rec.stack_size, expected))
        status, _, information = struct.unpack("<IIQ", self.rd(addr + IRP_IO_STATUS, 16))
        if status == STATUS_PENDING:
            self.violation("IofCompleteRequest of IRP %d with IoStatus.Status STATUS_PENDING"
                           % rec.number)
        rec.state = "pending"  # what _complete_gen completes
        if not rec.op.endswith("(completed by the driver)"):
            rec.op = "%s (completed by the driver)" % (rec.op or "never sent")

        def gen():
            yield from self._complete_gen(rec, status, information)
            if rec.state == "freed":  # the routine freed it
                return 0
            # The I/O manager has moved back up past the routine's location.
            self.wr(addr + IRP_CURRENT_LOCATION, bytes([(rec.stack_size + 1) & 0xFF]))
            self.wr64(addr + IRP_CURRENT_STACK_LOCATION,
                      addr + SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * rec.stack_size)
            return 0
        return self._start(gen())

    def _complete_gen(self, rec: IrpRec, status: int, information: int, before=None):
        """Generator: IoCompleteRequest of a pending IRP: IoStatus written, then the completion
        routine called (DeviceObject NULL: the driver allocated the IRP); it must return
        STATUS_MORE_PROCESSING_REQUIRED, which gives the IRP back to the driver."""
        if rec.state != "pending":
            raise HarnessError("completing IRP %d while %s" % (rec.number, rec.state))
        if before is not None:
            before()
        self.wr(rec.address + IRP_IO_STATUS, struct.pack("<IIQ", status & 0xFFFFFFFF, 0,
                                                         information))
        rec.state = "completing"
        rec.completions += 1
        rec.completed_status = status
        self.progress += 1
        self.ev("io", "IoCompleteRequest", {"op": rec.op, "Irp": rec.address, "*irp": rec.number,
                                            "Status": status, "Information": information})
        routine, ctx = rec.routine, rec.context
        if status == STATUS_CANCELLED:
            invoked = rec.invoke[2]
        elif status & 0x80000000 == 0:
            invoked = rec.invoke[0]
        else:
            invoked = rec.invoke[1]
        # The stack location is used up: a reuse of the IRP needs its routine set again.
        rec.routine = rec.context = 0
        if not routine or not invoked:
            self.violation("IRP %d (%s) completed with %s and no completion routine to call: "
                           "the I/O manager would go on completing the driver's own IRP"
                           % (rec.number, rec.op, status_name(status)))
            rec.state = "allocated"
            return
        st = yield from self.call(routine, [0, rec.address, ctx], "CompletionRoutine",
                                  arg_names=("DeviceObject", "Irp", "Context"), kind="io-callback")
        if st != STATUS_MORE_PROCESSING_REQUIRED:
            self.violation("the completion routine of IRP %d (%s) returned %s, not "
                           "STATUS_MORE_PROCESSING_REQUIRED: the I/O manager would go on "
                           "completing (and free) the driver's own IRP"
                           % (rec.number, rec.op, status_name(st)))
        if rec.state == "completing":
            rec.state = "allocated"

    def _queue_completion(self, rec: IrpRec, status: int, information: int = 0, before=None):
        """The provider completes `rec` later, on a thread of its own (a DPC, say)."""
        self.completion_queue.append((rec, rec.uses, status, information, before))
        self.progress += 1

    def _start_provider_thread(self, job):
        self.completion_queue.remove(job)
        rec, token, status, information, before = job
        top, size = self._stack_for_worker()
        t = self._new_thread("provider thread %d" % (sum(x.kind == "provider"
                                                         for x in self.threads) + 1),
                             "provider", top, size)
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="the WSK provider completes IRP %d (%s) on %s"
                % (rec.number, rec.op, t.name), depth=0)

        def gen():
            if rec.state == "pending" and rec.uses == token:
                yield from self._complete_gen(rec, status, information, before)
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _mdl(self, addr: int, api: str) -> Optional[MdlRec]:
        m = self.mdl_by_addr.get(addr)
        if m is None:
            self.violation("%s(0x%x): not an MDL from IoAllocateMdl" % (api, addr))
            return None
        if m.freed_seq is not None:
            self.violation("%s(0x%x): MDL %d was freed already (IoFreeMdl)" % (api, addr,
                                                                              m.number))
            return None
        return m

    def _h_ioallocatemdl(self, emu, api, func, argv):
        va, length, secondary, quota, irp = argv
        length &= 0xFFFFFFFF
        e = self.ev("io", "IoAllocateMdl", {"VirtualAddress": va, "Length": length,
                                            "SecondaryBuffer": secondary & 0xFF,
                                            "ChargeQuota": quota & 0xFF, "Irp": irp})
        self.mdl_requests.append(va)
        if self._inject("IoAllocateMdl") is not None or self.scenario.fail_mdl_allocations:
            e.status = 0
            return 0
        if irp:
            self.violation("IoAllocateMdl with Irp 0x%x: the MDL would belong to that IRP "
                           "(IoFreeIrp frees it)" % irp)
        block = self.pool_block(va)
        if length == 0 or block is None or va + length > block.address + block.size:
            self.violation("IoAllocateMdl(0x%x, %d): not within one live pool block (%s)"
                           % (va, length, self.where(va)))
        pages = ((va & (PAGE_SIZE - 1)) + length + PAGE_SIZE - 1) // PAGE_SIZE
        size = SIZEOF_MDL + 8 * pages
        addr = self.alloc(size, "mdl")
        self.wr(addr, struct.pack("<QhH4xQQQII", 0, size, 0, 0, 0, va & ~(PAGE_SIZE - 1), length,
                                  va & (PAGE_SIZE - 1)))
        m = MdlRec(number=len(self.mdls) + 1, address=addr, va=va, length=length,
                   allocated_seq=e.seq)
        self.mdls.append(m)
        self.mdl_by_addr[addr] = m
        e.status = addr
        e.args["*mdl"] = m.number
        return addr

    def _h_mmbuildmdlfornonpagedpool(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "MmBuildMdlForNonPagedPool", {"MemoryDescriptorList": addr})
        m = self._mdl(addr, "MmBuildMdlForNonPagedPool")
        if m is None:
            return None
        e.args["*mdl"] = m.number
        if self.pool_block(m.va) is None:
            self.violation("MmBuildMdlForNonPagedPool: MDL %d describes 0x%x, %s (not live "
                           "non-paged pool)" % (m.number, m.va, self.where(m.va)))
        flags = struct.unpack("<H", self.rd(addr + 10, 2))[0] | MDL_SOURCE_IS_NONPAGED_POOL
        self.wr(addr + 10, struct.pack("<H", flags))
        self.wr64(addr + MDL_MAPPED_SYSTEM_VA, m.va)
        m.built = True
        return None

    def _h_iofreemdl(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "IoFreeMdl", {"Mdl": addr})
        m = self.mdl_by_addr.get(addr)
        if m is None:
            self.violation("IoFreeMdl(0x%x): not an MDL from IoAllocateMdl" % addr)
            return None
        e.args["*mdl"] = m.number
        if m.freed_seq is not None:
            self.violation("IoFreeMdl(0x%x): MDL %d freed twice" % (addr, m.number))
            return None
        for rec in self.irps:
            if rec.state == "pending" and rec.buffer is not None and rec.buffer[2] is m:
                self.violation("IoFreeMdl(0x%x): MDL %d is in use by IRP %d, pending in %s"
                               % (addr, m.number, rec.number, rec.op))
        m.freed_seq = e.seq
        self.wr(addr, b"\xdd" * SIZEOF_MDL)
        return None

    # hooks: the WSK provider's sockets ---------------------------------------------------------
    def _wsk_buf(self, addr: int, op: str) -> Optional[Tuple[int, int, MdlRec]]:
        """A WSK_BUF {Mdl, Offset, Length}: (address, length, MDL), or None (reported) when it
        does not fit its MDL."""
        if not self.readable(addr, 24):
            self.violation("%s: WSK_BUF 0x%x not readable" % (op, addr))
            return None
        mdl_p, offset, length = struct.unpack("<QI4xQ", self.rd(addr, 24))
        m = self._mdl(mdl_p, op + " (WSK_BUF.Mdl)")
        if m is None:
            return None
        if not m.built:
            self.violation("%s: MDL %d of its WSK_BUF was never built (MmBuildMdlForNonPagedPool)"
                           % (op, m.number))
        count = self.rd32(mdl_p + MDL_BYTE_COUNT)
        if offset + length > count:
            self.violation("%s: WSK_BUF Offset %d + Length %d is beyond its MDL's ByteCount %d: "
                           "the provider would go past the buffer" % (op, offset, length, count))
            return None
        if self.pool_block(m.va) is None:
            self.violation("%s: the buffer of MDL %d (0x%x) is not live pool" % (op, m.number,
                                                                                m.va))
            return None
        return m.va + offset, length, m

    def _sockaddr(self, addr: int) -> str:
        if not self.readable(addr, 16):
            return "(unreadable 0x%x)" % addr
        family, port = struct.unpack("<HH", self.rd(addr, 4))
        if family != AF_INET:
            return "(family %d)" % family
        ip = self.rd(addr + 4, 4)
        return "%d.%d.%d.%d:%d" % (ip[0], ip[1], ip[2], ip[3], ((port & 0xFF) << 8) | (port >> 8))

    def _take_irp(self, addr: int, op: str, sock: Optional[SocketRec]) -> Optional[IrpRec]:
        """A WSK function takes the driver's IRP: it must be the driver's, not in use, with a
        completion routine set."""
        if not addr:
            self.violation("%s without an IRP" % op)
            return None
        rec = self._irp(addr, op)
        if rec is None:
            return None
        if rec.state != "allocated":
            self.violation("%s: IRP %d is %s (in %s)" % (op, rec.number, rec.state, rec.op))
            return None
        if not rec.routine:
            self.violation("%s: IRP %d has no completion routine (IoSetCompletionRoutineEx): "
                           "nothing would tell the driver it completed" % (op, rec.number))
        rec.state = "pending"
        rec.op = op
        rec.socket = sock
        rec.buffer = None
        rec.uses += 1
        return rec

    def _finish(self, e: Event, rec: Optional[IrpRec], status: int, information: int = 0,
                before=None):
        """The WSK function's result: by default it returns STATUS_PENDING and a provider thread
        completes the IRP; with Scenario.complete_inline it completes the IRP before returning
        (legal too) and returns the final status."""
        if rec is None:
            e.status = status
            return status
        if not self.scenario.complete_inline:
            e.status = STATUS_PENDING
            self._queue_completion(rec, status, information, before)
            return STATUS_PENDING
        e.status = status

        def gen():
            yield from self._complete_gen(rec, status, information, before)
            return status
        return self._start(gen())

    def _h_wsk_socket(self, emu, api, func, argv):
        (client, family, stype, proto, flags, sctx, disp, proc, thread, sd, irp) = argv
        family, stype, proto, flags = family & 0xFFFF, stype & 0xFFFF, proto & 0xFFFFFFFF, \
            flags & 0xFFFFFFFF
        e = self.ev("wsk", "WskSocket", {"Client": client, "AddressFamily": family,
                                         "SocketType": stype, "Protocol": proto, "Flags": flags,
                                         "Irp": irp})
        clients = {b.wsk_client: b for b in self.bindings if b.wsk_client}
        clients.update({reg.wsk_client: reg for reg in self.wsk_regs if reg.wsk_client})
        owner = clients.get(client)
        if owner is None:
            self.violation("WskSocket: Client 0x%x is not a WSK_CLIENT the provider gave" % client)
        elif isinstance(owner, Binding) and owner.state not in ("attached", "detaching",
                                                                "detach-pending"):
            self.violation("WskSocket through binding 0x%x, which is %s" % (owner.handle,
                                                                           owner.state))
        injected = self._inject("WskSocket")
        rec = self._take_irp(irp, "WskSocket", None)
        if injected is not None:
            return self._finish(e, rec, injected)
        if (family, stype, proto, flags) != (AF_INET, SOCK_STREAM, IPPROTO_TCP,
                                              WSK_FLAG_CONNECTION_SOCKET):
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        dispatch = self.alloc(SIZEOF_WSK_PROVIDER_CONNECTION_DISPATCH, "wsk.connection_dispatch")
        self.wr(dispatch, b"".join(struct.pack("<Q", self.conn_funcs[n])
                                   for n, _ in WSK_CONNECTION_DISPATCH_FUNCS))
        addr = self.alloc(8, "wsk.socket")
        self.wr64(addr, dispatch)
        sock = SocketRec(number=len(self.sockets) + 1, address=addr, dispatch=dispatch,
                         client=client)
        self.sockets.append(sock)
        self.socket_by_addr[addr] = sock
        e.args["*socket"] = sock.number
        if rec is not None:
            rec.socket = sock
        return self._finish(e, rec, STATUS_SUCCESS, addr)

    def _socket_call(self, name: str, sock_addr: int, args: dict):
        """Common start of a socket dispatch function: (event, SocketRec or None)."""
        e = self.ev("wsk", name, dict({"Socket": sock_addr}, **args))
        sock = self.socket_by_addr.get(sock_addr)
        if sock is None:
            self.violation("%s(0x%x): not a socket of the provider" % (name, sock_addr))
            return e, None
        e.args["*socket"] = sock.number
        if sock.state == "closed":
            self.violation("%s on socket %d after WskCloseSocket" % (name, sock.number))
            return e, None
        return e, sock

    def _h_sock_unsupported(self, name):
        def hook(emu, api, func, argv):
            e, sock = self._socket_call(name, argv[0], {})
            rec = self._take_irp(argv[-1], name, sock)
            return self._finish(e, rec, STATUS_NOT_SUPPORTED)
        return hook

    def _h_sock_bind(self, emu, api, func, argv):
        sock_addr, local, flags, irp = argv
        e, sock = self._socket_call("WskBind", sock_addr, {"LocalAddress": self._sockaddr(local),
                                                           "Flags": flags & 0xFFFFFFFF})
        injected = self._inject("WskBind")
        rec = self._take_irp(irp, "WskBind", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        if sock.state != "open":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        sock.state = "bound"
        return self._finish(e, rec, STATUS_SUCCESS)

    def _h_sock_connect(self, emu, api, func, argv):
        sock_addr, remote, flags, irp = argv
        e, sock = self._socket_call("WskConnect", sock_addr,
                                    {"RemoteAddress": self._sockaddr(remote),
                                     "Flags": flags & 0xFFFFFFFF})
        injected = self._inject("WskConnect")
        rec = self._take_irp(irp, "WskConnect", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        if sock.state != "bound":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        sock.remote = e.args["RemoteAddress"]
        if self.scenario.peer == "refuse":
            return self._finish(e, rec, STATUS_CONNECTION_REFUSED)
        sock.state = "connected"
        return self._finish(e, rec, STATUS_SUCCESS)

    def _deliver(self, sock: SocketRec):
        """Data from the peer meets a pending receive: its completion is queued."""
        if not sock.to_driver:
            return
        for rec in self.irps:
            if (rec.state == "pending" and rec.socket is sock and rec.op == "WskReceive"
                    and rec.buffer is not None
                    and not any(j[0] is rec for j in self.completion_queue)):
                va, length, _ = rec.buffer
                n = min(length, len(sock.to_driver), self.scenario.peer_chunk or length)
                data, sock.to_driver = sock.to_driver[:n], sock.to_driver[n:]
                self._queue_completion(rec, STATUS_SUCCESS, n, self._receive_copy(rec, va, data))
                return

    def _receive_copy(self, rec: IrpRec, va: int, data: bytes):
        """What completing a receive does first: the data goes into the driver's buffer."""
        def before():
            if self.pool_block(va) is None:
                self.violation("the receive buffer of IRP %d (0x%x) was freed while the receive "
                               "was pending" % (rec.number, va))
            else:
                self.wr(va, data)
        return before

    def _h_sock_send(self, emu, api, func, argv):
        sock_addr, buf, flags, irp = argv
        e, sock = self._socket_call("WskSend", sock_addr, {"Buffer": buf,
                                                           "Flags": flags & 0xFFFFFFFF})
        injected = self._inject("WskSend")
        rec = self._take_irp(irp, "WskSend", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:  # nothing sent
            return self._finish(e, rec, injected)
        wb = self._wsk_buf(buf, "WskSend")
        if wb is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        va, length, _ = wb
        e.args["Length"] = length
        if sock.state != "connected":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        data = self.rd(va, length) if length else b""
        e.args["*data"] = data
        sock.received_by_peer += data
        if self.scenario.peer == "echo":
            sock.to_driver += data
            self._deliver(sock)
        return self._finish(e, rec, STATUS_SUCCESS, length)

    def _h_sock_receive(self, emu, api, func, argv):
        sock_addr, buf, flags, irp = argv
        e, sock = self._socket_call("WskReceive", sock_addr, {"Buffer": buf,
                                                              "Flags": flags & 0xFFFFFFFF})
        injected = self._inject("WskReceive")
        rec = self._take_irp(irp, "WskReceive", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:  # nothing received (what the peer sent stays queued)
            return self._finish(e, rec, injected)
        wb = self._wsk_buf(buf, "WskReceive")
        if wb is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        e.args["Length"] = wb[1]
        if sock.state != "connected":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        if rec is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        rec.buffer = wb
        if sock.to_driver:
            va, length, _ = wb
            n = min(length, len(sock.to_driver), self.scenario.peer_chunk or length)
            data, sock.to_driver = sock.to_driver[:n], sock.to_driver[n:]
            return self._finish(e, rec, STATUS_SUCCESS, n, self._receive_copy(rec, va, data))
        e.status = STATUS_PENDING  # until data comes, a cancel, or the close
        return STATUS_PENDING

    def _h_sock_disconnect(self, emu, api, func, argv):
        sock_addr, buf, flags, irp = argv
        e, sock = self._socket_call("WskDisconnect", sock_addr, {"Buffer": buf,
                                                                 "Flags": flags & 0xFFFFFFFF})
        if self.scenario.disconnect_stub:
            # Wine's: answers at once and never touches (or completes) the IRP.
            e.status = STATUS_NOT_IMPLEMENTED
            e.text = "a stub: the IRP is not completed"
            return STATUS_NOT_IMPLEMENTED
        injected = self._inject("WskDisconnect")
        rec = self._take_irp(irp, "WskDisconnect", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        if buf and self._wsk_buf(buf, "WskDisconnect") is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        if sock.state != "connected":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        sock.state = "disconnected"
        return self._finish(e, rec, STATUS_SUCCESS)

    def _h_sock_closesocket(self, emu, api, func, argv):
        sock_addr, irp = argv
        e, sock = self._socket_call("WskCloseSocket", sock_addr, {"Irp": irp})
        injected = self._inject("WskCloseSocket")
        rec = self._take_irp(irp, "WskCloseSocket", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        # An injected failure: the socket is gone all the same (the WSK_SOCKET is the
        # provider's, freed by the close; the driver cannot close it twice), the IRP says the
        # failure.
        final = STATUS_SUCCESS if injected is None else injected
        sock.state = "closed"
        sock.closed_seq = e.seq
        # The close first completes the socket's pending requests (cancelled), at once.
        pending = [r for r in self.irps if r.state == "pending" and r.socket is sock
                   and r is not rec and not any(j[0] is r for j in self.completion_queue)]
        if not pending:
            return self._finish(e, rec, final)

        def gen():
            for r in pending:
                if r.state == "pending":
                    yield from self._complete_gen(r, STATUS_CANCELLED, 0)
            e.status = yield from self._finish_gen(rec, final)
            return e.status
        return self._start(gen())

    def _finish_gen(self, rec: Optional[IrpRec], status: int, information: int = 0):
        """_finish from inside a harness generator."""
        if rec is None:
            return status
        if not self.scenario.complete_inline:
            self._queue_completion(rec, status, information)
            return STATUS_PENDING
        yield from self._complete_gen(rec, status, information)
        return status

    # hooks: device objects ------------------------------------------------------------------
    def _h_iocreatedevice(self, emu, api, func, argv):
        drv, ext, name_p, dtype, chars, exclusive, out = argv
        # 32-bit (and BOOLEAN) arguments: the upper bits of their registers are undefined.
        ext, dtype, chars, exclusive = (ext & 0xFFFFFFFF, dtype & 0xFFFFFFFF, chars & 0xFFFFFFFF,
                                        exclusive & 0xFF)
        name = self._read_ustr(name_p, True) if name_p else None
        e = self.ev("device", "IoCreateDevice", {"DriverObject": drv, "DeviceExtensionSize": ext,
                                                 "DeviceName": name or "NULL",
                                                 "DeviceType": dtype, "Characteristics": chars,
                                                 "Exclusive": exclusive & 0xFF})
        if drv != self.driver_object:
            self.violation("IoCreateDevice: DriverObject 0x%x is not the driver's (0x%x)"
                           % (drv, self.driver_object))
        if not self.readable(out, 8):
            self.violation("IoCreateDevice: DeviceObject out-pointer 0x%x not writable" % out)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        status = self.scenario.create_device_status & 0xFFFFFFFF
        injected = self._inject("IoCreateDevice")
        if injected is not None:
            status = injected
        if status == STATUS_SUCCESS and name and any(
                d.name == name and d.deleted_seq is None for d in self.devices):
            status = STATUS_OBJECT_NAME_COLLISION
        if status != STATUS_SUCCESS:
            e.status = status
            return status
        dev = self.alloc(SIZEOF_DEVICE_OBJECT + ext, "io.device")
        head = self.rd64(drv + DRIVER_OBJECT_DEVICE_OBJECT) if drv else 0
        self.wr(dev, struct.pack("<hH", IO_TYPE_DEVICE, SIZEOF_DEVICE_OBJECT))
        self.wr64(dev + DEVICE_OBJECT_DRIVER_OBJECT, drv)
        self.wr64(dev + DEVICE_OBJECT_NEXT_DEVICE, head)
        if drv:
            self.wr64(drv + DRIVER_OBJECT_DEVICE_OBJECT, dev)  # the I/O manager links it in
        self.wr64(out, dev)
        self.devices.append(Device(address=dev, driver_object=drv, extension_size=ext, name=name,
                                   device_type=dtype, characteristics=chars,
                                   exclusive=exclusive & 0xFF, created_seq=e.seq))
        e.args["*DeviceObject"] = dev
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    def _device(self, addr: int) -> Optional[Device]:
        for d in self.devices:
            if d.address == addr:
                return d
        return None

    def _h_iodeletedevice(self, emu, api, func, argv):
        (dev,) = argv
        e = self.ev("device", "IoDeleteDevice", {"DeviceObject": dev})
        d = self._device(dev)
        if d is None:
            self.violation("IoDeleteDevice(0x%x): not a device object IoCreateDevice returned"
                           % dev)
            return None
        if d.deleted_seq is not None:
            self.violation("IoDeleteDevice(0x%x): deleted twice" % dev)
            return None
        d.deleted_seq = e.seq
        drv = d.driver_object
        if drv:  # unlink it from the driver object's list
            prev = drv + DRIVER_OBJECT_DEVICE_OBJECT
            cur = self.rd64(prev)
            while cur:
                nxt = self.rd64(cur + DEVICE_OBJECT_NEXT_DEVICE)
                if cur == dev:
                    self.wr64(prev, nxt)
                    break
                prev, cur = cur + DEVICE_OBJECT_NEXT_DEVICE, nxt
        return None

    # hooks: work items ------------------------------------------------------------------------
    def _work_item(self, addr: int, api: str) -> Optional[WorkItem]:
        for it in self.work_items:
            if it.address == addr:
                return it
        self.violation("%s(0x%x): not a work item IoAllocateWorkItem returned" % (api, addr))
        return None

    def _h_ioallocateworkitem(self, emu, api, func, argv):
        (dev,) = argv
        e = self.ev("work", "IoAllocateWorkItem", {"DeviceObject": dev})
        if self._inject("IoAllocateWorkItem") is not None:
            e.status = 0
            return 0
        d = self._device(dev)
        if d is None or d.deleted_seq is not None:
            self.violation("IoAllocateWorkItem(0x%x): %s" % (
                dev, "a deleted device object" if d else "not a device object of the driver"))
            e.status = 0
            return 0
        addr = self.alloc(SIZEOF_IO_WORKITEM, "io.workitem")
        it = WorkItem(number=len(self.work_items) + 1, address=addr, device=dev)
        self.work_items.append(it)
        e.args["item"] = it.number
        e.status = addr
        return addr

    def _h_ioqueueworkitem(self, emu, api, func, argv):
        item_p, routine, qtype, ctx = argv
        qtype &= 0xFFFFFFFF
        e = self.ev("work", "IoQueueWorkItem", {"IoWorkItem": item_p, "WorkerRoutine": routine,
                                                "QueueType": qtype, "Context": ctx})
        it = self._work_item(item_p, "IoQueueWorkItem")
        if it is None:
            return None
        e.args["item"] = it.number
        if it.freed:
            self.violation("IoQueueWorkItem: work item %d was freed (IoFreeWorkItem)" % it.number)
            return None
        if it.state == "queued":
            self.violation("IoQueueWorkItem: work item %d is queued already" % it.number)
            return None
        if not self.in_image(routine):
            self.violation("IoQueueWorkItem: WorkerRoutine 0x%x is not code of the image"
                           % routine)
            return None
        if qtype not in WORK_QUEUES:
            self.violation("IoQueueWorkItem: QueueType %d is not a WORK_QUEUE_TYPE" % qtype)
        d = self._device(it.device)
        if d is not None and d.deleted_seq is not None:
            self.violation("IoQueueWorkItem: work item %d's device object 0x%x was deleted"
                           % (it.number, it.device))
        it.routine, it.context, it.queue_type = routine, ctx, qtype
        it.state = "queued"
        it.queued_count += 1
        it.queued_at = self.now
        it.ready_at = self.now + self.scenario.work_delay_ms * TICKS_PER_MS
        self.work_queue.append(it)
        return None

    def _h_iofreeworkitem(self, emu, api, func, argv):
        (item_p,) = argv
        e = self.ev("work", "IoFreeWorkItem", {"IoWorkItem": item_p})
        it = self._work_item(item_p, "IoFreeWorkItem")
        if it is None:
            return None
        e.args["item"] = it.number
        if it.freed:
            self.violation("IoFreeWorkItem: work item %d freed twice" % it.number)
            return None
        if it.state == "queued":
            self.violation("IoFreeWorkItem: work item %d is still queued (its routine has not "
                           "run)" % it.number)
            self.work_queue.remove(it)
        it.freed = True
        if it.state != "running":
            it.state = "freed"
        self.wr(item_p, b"\xdd" * SIZEOF_IO_WORKITEM)
        return None

    # hooks: events and waits ------------------------------------------------------------------
    def _write_event(self, ke: KEvent):
        # DISPATCHER_HEADER: Type, Signalling, Size (in LONGs), Reserved1; SignalState;
        # WaitListHead (empty: pointing at itself).
        self.wr(ke.address, struct.pack("<BBBBiQQ", ke.type, 0, SIZEOF_KEVENT // 4, 0,
                                         1 if ke.signalled else 0, ke.address + 8, ke.address + 8))

    def _event(self, addr: int, api: str) -> Optional[KEvent]:
        ke = self.kevents.get(addr)
        if ke is None:
            self.violation("%s(0x%x): not an event initialised with KeInitializeEvent"
                           % (api, addr))
        return ke

    def _h_keinitializeevent(self, emu, api, func, argv):
        addr, etype, state = argv
        etype &= 0xFFFFFFFF
        state &= 0xFF
        self.ev("ke", "KeInitializeEvent", {"Event": addr, "Type": etype, "State": state})
        if not self.readable(addr, SIZEOF_KEVENT):
            self.violation("KeInitializeEvent: Event 0x%x not writable" % addr)
            return None
        if addr % 8:
            self.violation("KeInitializeEvent: Event 0x%x not 8-byte aligned" % addr)
        if etype not in EVENT_TYPES:
            self.violation("KeInitializeEvent: Type %d is neither NotificationEvent nor "
                           "SynchronizationEvent" % etype)
        # KeInitializeEvent (wdm.h): resident storage; "If you allocate the event on the stack,
        # you must specify a KernelMode wait" (checked by KeWaitForSingleObject): a stack is
        # resident during a KernelMode wait.
        if not (self.on_a_stack(addr) or self.in_image(addr) or self.pool_block(addr)):
            self.violation("KeInitializeEvent: Event 0x%x is %s (not non-paged memory of the "
                           "driver's, nor a stack)" % (addr, self.where(addr)))
        if any(t.state == "blocked" and t.wait.kind == "event" and t.wait.event == addr
               for t in self.threads):
            self.violation("KeInitializeEvent(0x%x) while a thread waits on it" % addr)
        ke = KEvent(address=addr, type=etype, signalled=bool(state), init_seq=len(self.events))
        self.kevents[addr] = ke
        self._write_event(ke)
        return None

    def _h_kesetevent(self, emu, api, func, argv):
        addr, increment, wait = argv
        e = self.ev("ke", "KeSetEvent", {"Event": addr})
        ke = self._event(addr, "KeSetEvent")
        if ke is None:
            return 0
        previous = 1 if ke.signalled else 0
        ke.signalled = True
        ke.sets += 1
        self.progress += 1
        self._write_event(ke)
        e.status = previous
        e.text = "previous state %d" % previous
        return previous

    def _h_keclearevent(self, emu, api, func, argv):
        (addr,) = argv
        self.ev("ke", "KeClearEvent", {"Event": addr})
        ke = self._event(addr, "KeClearEvent")
        if ke is not None:
            ke.signalled = False
            self._write_event(ke)
        return None

    def _h_keresetevent(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("ke", "KeResetEvent", {"Event": addr})
        ke = self._event(addr, "KeResetEvent")
        if ke is None:
            return 0
        previous = 1 if ke.signalled else 0
        ke.signalled = False
        self._write_event(ke)
        e.status = previous
        return previous

    def _h_kewaitforsingleobject(self, emu, api, func, argv):
        obj, reason, mode, alertable, timeout_p = argv
        timeout = None
        if timeout_p:
            timeout = struct.unpack("<q", self.rd(timeout_p, 8))[0]
        e = self.ev("ke", "KeWaitForSingleObject", {"Object": obj, "WaitReason": reason & 0xFF,
                                                    "WaitMode": mode & 0xFF,
                                                    "Alertable": alertable & 0xFF,
                                                    "Timeout": timeout})
        ke = self._event(obj, "KeWaitForSingleObject")
        if ke is None:
            e.status = STATUS_SUCCESS
            return STATUS_SUCCESS
        if self.on_a_stack(obj) and mode & 0xFF != 0:
            self.violation("KeWaitForSingleObject on event 0x%x, %s, with WaitMode %d: an event "
                           "on a stack needs a KernelMode wait (a UserMode wait may page the "
                           "stack out)" % (obj, self.where(obj), mode & 0xFF))
        if timeout != 0:
            inside = self.in_callback("ClientDetachProvider", "ClientCleanupBindingContext",
                                      "CompletionRoutine")
            if inside:
                self.violation("KeWaitForSingleObject with a wait inside %s (which may run at "
                               "DISPATCH_LEVEL)" % inside)
        e.args["*event"] = "%s, %s" % (EVENT_TYPES.get(ke.type, "?"),
                                       "signalled" if ke.signalled else "not signalled")

        def done(status):
            if status == STATUS_SUCCESS and ke.type == SYNCHRONIZATION_EVENT:
                ke.signalled = False  # a satisfied wait resets a synchronization event
                self._write_event(ke)
            e.status = status
            if e.args.get("blocked"):
                self.ev("ke-return", "KeWaitForSingleObject", status=status,
                        text="after %s" % seconds(self.now - e.time))
            return status

        if ke.signalled:
            ke.waits += 1
            return done(STATUS_SUCCESS)
        if timeout == 0:
            return done(STATUS_TIMEOUT)
        if timeout is None:
            deadline = None
        elif timeout < 0:
            deadline = self.now - timeout
        else:
            deadline = max(self.now, timeout)  # absolute: the clock starts at 0 at load
        e.args["blocked"] = True
        return self._block(Wait("event", "event 0x%x (%s)" % (obj, self.where(obj)),
                                deadline=deadline, event=obj), done)

    # hooks: pool and system routines -------------------------------------------------------
    def _new_alloc(self, api, size, tag, pool) -> int:
        self.allocation_attempts += 1
        sc = self.scenario
        if self._inject(api) is not None:
            return 0
        if (sc.fail_pool_allocations or self.allocation_attempts in sc.fail_allocations
                or (sc.fail_binding_allocations and tag == pool_tag(self.profile.binding_tag))):
            return 0
        addr = self.alloc(size, "pool.%08x" % tag)
        a = Allocation(addr, size, tag, api, pool)
        self.allocations[addr] = a
        self.alloc_list.append(a)
        return addr

    def _h_exallocatepool2(self, emu, api, func, argv):
        flags, size, tag = argv
        tag &= 0xFFFFFFFF
        addr = self._new_alloc("ExAllocatePool2", size, tag, flags)
        self.ev("pool", "ExAllocatePool2", {"Flags": flags, "NumberOfBytes": size, "Tag": tag},
                status=addr)
        return addr

    def _h_exallocatepoolwithtag(self, emu, api, func, argv):
        pool, size, tag = argv[0] & 0xFFFFFFFF, argv[1], argv[2] & 0xFFFFFFFF
        addr = self._new_alloc("ExAllocatePoolWithTag", size, tag, pool)
        if addr:  # real pool is not zeroed
            self.wr(addr, b"\xcd" * size)
        self.ev("pool", "ExAllocatePoolWithTag", {"PoolType": pool, "NumberOfBytes": size,
                                                  "Tag": tag}, status=addr)
        return addr

    def _h_exallocatepool(self, emu, api, func, argv):
        pool, size = argv[0] & 0xFFFFFFFF, argv[1]
        self.violation("ExAllocatePool (untagged) used")
        addr = self._new_alloc("ExAllocatePool", size, 0x656E6F4E, pool)  # 'None'
        self.ev("pool", "ExAllocatePool", {"PoolType": pool, "NumberOfBytes": size}, status=addr)
        return addr

    def _free(self, api, addr, tag):
        a = self.allocations.get(addr)
        if a is None:
            self.violation("%s(0x%x): not an allocation" % (api, addr))
            return
        if a.freed_by is not None:
            self.violation("%s(0x%x): double free" % (api, addr))
            return
        a.freed_by, a.free_tag = api, tag
        if tag is not None and tag != a.tag:
            self.violation("%s(0x%x, %s): allocated with tag %s" % (api, addr, tag_name(tag),
                                                                   tag_name(a.tag)))
        self.wr(addr, b"\xdd" * a.size)  # poison, as Driver Verifier's special pool would

    def _h_exfreepoolwithtag(self, emu, api, func, argv):
        addr, tag = argv[0], argv[1] & 0xFFFFFFFF
        self.ev("pool", "ExFreePoolWithTag", {"P": addr, "Tag": tag})
        self._free("ExFreePoolWithTag", addr, tag)
        return 0

    def _h_exfreepool(self, emu, api, func, argv):
        (addr,) = argv
        self.ev("pool", "ExFreePool", {"P": addr})
        self._free("ExFreePool", addr, None)
        return 0

    def _h_getroutine(self, emu, api, func, argv):
        (us,) = argv
        # UNICODE_STRING: Length bytes, not necessarily NUL-terminated (a Rust driver's is not),
        # so not Speakeasy's read_unicode_string, which reads up to a NUL.
        name = self._read_ustr(us, True) if us else ""
        length, maxlen, _ = struct.unpack("<HH4xQ", self.rd(us, 16)) if us else (0, 0, 0)
        if length % 2 or length > maxlen:
            self.violation("MmGetSystemRoutineAddress: malformed UNICODE_STRING (Length %d, "
                           "MaximumLength %d)" % (length, maxlen))
        if name == "ExAllocatePool2":
            addr = self.exallocatepool2_addr if self.scenario.exallocatepool2 else 0
        else:
            addr = 0
        self.ev("kernel", "MmGetSystemRoutineAddress", {"SystemRoutineName": name}, status=addr)
        return addr

    def _h_rtlgetversion(self, emu, api, func, argv):
        (info,) = argv
        major, minor, build = self.scenario.windows_version
        size = self.rd32(info) if self.readable(info, 4) else None
        # RTL_OSVERSIONINFOW is 276 bytes, RTL_OSVERSIONINFOEXW 284: the driver says which.
        if size not in (276, 284):
            self.violation("RtlGetVersion: dwOSVersionInfoSize %s, expected 276 or 284" % size)
            status = STATUS_INVALID_PARAMETER
        else:
            self.wr(info + 4, struct.pack("<IIII", major, minor, build, 2))  # VER_PLATFORM_WIN32_NT
            status = STATUS_SUCCESS
        self.ev("kernel", "RtlGetVersion", {"dwOSVersionInfoSize": size or 0}, status=status,
                text="Windows %d.%d build %d" % (major, minor, build))
        return status

    # hooks: the registry (the service key and the scenario's subkeys) -------------------------
    def _h_zwopenkey(self, emu, api, func, argv):
        handle_out, access, attributes = argv
        access &= 0xFFFFFFFF
        status, path = STATUS_OBJECT_NAME_NOT_FOUND, None
        length, root, name_us, attrs = struct.unpack("<I4xQQI", self.rd(attributes, 28))
        name = self._read_ustr(name_us, True) if name_us else ""
        if length != 48:
            self.violation("ZwOpenKey: OBJECT_ATTRIBUTES.Length %d, expected 48" % length)
            status = STATUS_INVALID_PARAMETER
        elif not attrs & 0x200:
            self.violation("ZwOpenKey: a kernel driver's handle without OBJ_KERNEL_HANDLE "
                           "(Attributes 0x%x) is the current process's" % attrs)
            status = STATUS_INVALID_PARAMETER
        elif root == 0:
            if self.registry_path and name.lower() == self.registry_path.lower():
                path = ""
        elif root in self.open_keys:
            parent = self.open_keys[root]
            candidate = (parent + "\\" + name) if parent else name
            path = next((k for k in self.scenario.registry
                         if k.lower() == candidate.lower()), None)
        else:
            self.violation("ZwOpenKey: RootDirectory 0x%x is not an open key" % root)
            status = STATUS_INVALID_HANDLE
        injected = self._inject("ZwOpenKey")
        if injected is not None:
            status, path = injected, None
        if path is not None:
            handle = self.next_key_handle
            self.next_key_handle += 4
            self.open_keys[handle] = path
            self.wr(handle_out, struct.pack("<Q", handle))
            status = STATUS_SUCCESS
        self.ev("kernel", "ZwOpenKey", {"RootDirectory": root, "ObjectName": name,
                                        "DesiredAccess": access}, status=status)
        return status

    def _h_zwqueryvaluekey(self, emu, api, func, argv):
        handle, name_us, klass, info, length, result_out = argv
        length &= 0xFFFFFFFF
        name = self._read_ustr(name_us, True) if name_us else ""
        status = STATUS_OBJECT_NAME_NOT_FOUND
        injected = self._inject("ZwQueryValueKey")
        if handle not in self.open_keys:
            self.violation("ZwQueryValueKey: 0x%x is not an open key" % handle)
            status = STATUS_INVALID_HANDLE
        elif injected is not None:
            status = injected  # nothing written
        elif klass != 2:
            self.violation("ZwQueryValueKey: class %d, the harness knows "
                           "KeyValuePartialInformation (2)" % klass)
            status = STATUS_INVALID_PARAMETER
        else:
            values = self.scenario.registry.get(self.open_keys[handle], {})
            found = next((v for k, v in values.items() if k.lower() == name.lower()), None)
            if found is not None:
                kind, data = found
                needed = 12 + len(data)
                self.wr(result_out, struct.pack("<I", needed))
                if length < 12:
                    status = STATUS_BUFFER_TOO_SMALL
                else:
                    self.wr(info, struct.pack("<III", 0, kind, len(data)))
                    room = min(len(data), length - 12)
                    if room:
                        self.wr(info + 12, data[:room])
                    status = STATUS_SUCCESS if room == len(data) else STATUS_BUFFER_OVERFLOW
        self.ev("kernel", "ZwQueryValueKey", {"KeyHandle": handle, "ValueName": name,
                                              "Length": length}, status=status)
        return status

    def _h_zwclose(self, emu, api, func, argv):
        (handle,) = argv
        if handle in self.open_keys:
            del self.open_keys[handle]
            status = STATUS_SUCCESS
        else:
            self.violation("ZwClose: 0x%x is not a handle the driver opened" % handle)
            status = STATUS_INVALID_HANDLE
        self.ev("kernel", "ZwClose", {"Handle": handle}, status=status)
        return status

    # hooks: debug output -------------------------------------------------------------------
    def _h_dbgprintex(self, emu, api, func, argv):
        cid, level, fmt = emu.get_func_argv(_cdecl(), 3)
        text = self._format(fmt, 3)
        self.ev("log", "DbgPrintEx", {"ComponentId": cid & 0xFFFFFFFF,
                                      "Level": level & 0xFFFFFFFF}, text=text)
        if self.current is not None:
            self.current.last_log = text
        return len(text)

    def _h_dbgprint(self, emu, api, func, argv):
        (fmt,) = emu.get_func_argv(_cdecl(), 1)
        text = self._format(fmt, 1)
        self.ev("log", "DbgPrint", {}, text=text)
        if self.current is not None:
            self.current.last_log = text
        return len(text)

    def _format(self, fmt_addr: int, first_vararg: int) -> str:
        fmt = self.emu.read_mem_string(fmt_addr, width=1)
        nslots = [first_vararg]

        def nxt():
            v = self.emu.get_func_argv(_cdecl(), nslots[0] + 1)[nslots[0]]
            nslots[0] += 1
            return v
        return format_printf(fmt, nxt, self._read_cstr, self._read_wstr, self._read_ustr)

    def _read_cstr(self, a):
        return self.emu.read_mem_string(a, width=1) if a else "(null)"

    def _read_wstr(self, a):
        return self.emu.read_mem_string(a, width=2) if a else "(null)"

    def _read_ustr(self, a, wide):
        if not a:
            return "(null)"
        length, _, buf = struct.unpack("<HH4xQ", self.rd(a, 16))
        raw = self.rd(buf, length) if buf and length else b""
        return raw.decode("utf-16-le" if wide else "latin-1", "replace")

    # -- run -----------------------------------------------------------------------------------
    def run(self) -> Result:
        self._build()
        self.se.run_module(self.module, all_entrypoints=True)
        for t in self.threads:
            if t.pending and t.state in ("running", "blocked"):
                self.violation("emulation ended inside %d driver callback(s) on %s"
                               % (len(t.pending), t.name))
        # (After a failed NmrDeregisterClient nothing was initiated: there is nothing to wait for.)
        if (self.client is not None and self.unload_ran and not self.wait_done
                and not self.deregister_failed):
            self.violation("DriverUnload did not call NmrWaitForClientDeregisterComplete")
        if self.client is not None and self.unload_ran and not self.deregistered:
            self.violation("DriverUnload did not call NmrDeregisterClient")
        failed_entry = self.entry_status is None or bool(self.entry_status & 0x80000000)
        if self.unload_ran or failed_entry:
            when = "unload" if self.unload_ran else "failed DriverEntry"
            for reg in self.wsk_regs:
                if reg.status == STATUS_SUCCESS and reg.deregistered_seq is None:
                    self.violation("WSK registration 0x%x left registered at %s (no WskDeregister)"
                                   % (reg.address, when))
                if reg.captures:
                    self.violation("%d captured WSK provider NPI(s) not released at %s"
                                   % (reg.captures, when))
            for d in self.devices:
                if d.deleted_seq is None:
                    self.violation("device object 0x%x (IoCreateDevice) not deleted at %s "
                                   "(IoDeleteDevice): the driver could never unload"
                                   % (d.address, when))
            for handle, path in self.open_keys.items():
                self.violation("registry key handle 0x%x (%s) not closed at %s (ZwClose)"
                               % (handle, path or "the service key", when))
            for it in self.work_items:
                if not it.freed:
                    self.violation("work item %d (IoAllocateWorkItem) not freed at %s "
                                   "(IoFreeWorkItem)" % (it.number, when))
            for a in self.alloc_list:
                if a.freed_by is None:
                    self.violation("pool leak at %s: %d bytes tag %s at 0x%x (%s)"
                                   % (when, a.size, tag_name(a.tag), a.address, a.api))
            for rec in self.irps:
                if rec.state != "freed":
                    self.violation("IRP %d (IoAllocateIrp) not freed at %s (IoFreeIrp)%s"
                                   % (rec.number, when, "; still pending in %s" % rec.op
                                      if rec.state == "pending" else ""))
            for m in self.mdls:
                if m.freed_seq is None:
                    self.violation("MDL %d (IoAllocateMdl) not freed at %s (IoFreeMdl)"
                                   % (m.number, when))
            for sock in self.sockets:
                if sock.state != "closed":
                    self.violation("socket %d (WskSocket) not closed at %s (WskCloseSocket)"
                                   % (sock.number, when))
        stack = max((t.stack_used for t in self.threads), default=0)
        return Result(scenario=self.scenario, image=self.image, profile=self.profile,
                      events=self.events,
                      bindings=self.bindings, allocations=self.alloc_list,
                      violations=self.violations, entry_status=self.entry_status,
                      unload_ran=self.unload_ran, unload_set=self.unload_ptr,
                      run_errors=self.run_errors, client_handle=self.client_handle,
                      characteristics=self.client, image_base=self.module.get_base(),
                      image_size=self.module.get_image_size(),
                      stack_used=stack, devices=self.devices, work_items=self.work_items,
                      kevents=list(self.kevents.values()), wsk_registrations=self.wsk_regs,
                      threads=self.threads, clock=self.now,
                      unload_completed=self.unload_completed, irps=self.irps, mdls=self.mdls,
                      sockets=self.sockets, mdl_requests=self.mdl_requests,
                      call_counts=self.call_counts, injected=self.injected)


def _cdecl():
    import speakeasy.winenv.arch as _arch
    return _arch.CALL_CONV_CDECL


# ---------------------------------------------------------------------------------------------
# printf, as DbgPrintEx formats (enough of it: flags, width, precision, h/l/ll/I64/z, %Z %wZ)
# ---------------------------------------------------------------------------------------------
def format_printf(fmt: str, next_arg, read_cstr, read_wstr, read_ustr) -> str:
    out = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        if i < n and fmt[i] == "%":
            out.append("%")
            i += 1
            continue
        flags = ""
        while i < n and fmt[i] in "-+ #0":
            flags += fmt[i]
            i += 1
        width = ""
        if i < n and fmt[i] == "*":
            width = str(_s32(next_arg()))
            i += 1
        else:
            while i < n and fmt[i].isdigit():
                width += fmt[i]
                i += 1
        prec = None
        if i < n and fmt[i] == ".":
            i += 1
            prec = ""
            if i < n and fmt[i] == "*":
                prec = str(max(0, _s32(next_arg())))
                i += 1
            else:
                while i < n and fmt[i].isdigit():
                    prec += fmt[i]
                    i += 1
            prec = prec or "0"
        bits = 32
        wide = False
        while i < n:
            if fmt.startswith("I64", i):
                bits, i = 64, i + 3
            elif fmt.startswith("I32", i):
                bits, i = 32, i + 3
            elif fmt.startswith("ll", i):
                bits, i = 64, i + 2
            elif fmt.startswith("hh", i):
                bits, i = 8, i + 2
            elif fmt[i] == "h":
                bits, i = 16, i + 1
            elif fmt[i] in "lL":
                i += 1  # long is 32-bit on Windows
            elif fmt[i] in "zjtI":
                bits, i = 64, i + 1
            elif fmt[i] == "w":
                wide, i = True, i + 1
            else:
                break
        if i >= n:
            out.append("%" + flags + width)
            break
        conv = fmt[i]
        i += 1
        spec = "%" + flags + width + ("" if prec is None else "." + prec)
        if conv in "diuxXoc":
            v = next_arg() & ((1 << bits) - 1)
            if conv in "di" and v >> (bits - 1):
                v -= 1 << bits
            if conv == "c":
                out.append((spec + "c") % chr(v & 0xFF))
            else:
                out.append((spec + ("d" if conv in "iu" else conv)) % v)
        elif conv == "p":
            out.append("%016X" % next_arg())
        elif conv == "s":
            s = (read_wstr if wide else read_cstr)(next_arg())
            out.append((spec + "s") % s)
        elif conv == "S":
            out.append((spec + "s") % read_wstr(next_arg()))
        elif conv == "Z":
            out.append((spec + "s") % read_ustr(next_arg(), wide))
        else:
            out.append("%" + flags + width + conv)  # unknown: shown as written
    return "".join(out)


def _s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def default_image() -> str:
    """The image under test: $WSK_DRIVER_SYS, else the seed driver's cargo xtask output."""
    return driver_profiles.image_from_env(_repo_root())


def _repo_root() -> str:
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def scenarios_for(profile: DriverProfile) -> Dict[str, Scenario]:
    """The named scenarios meant for this driver."""
    return {n: sc for n, sc in SCENARIOS.items() if sc.is_for(profile)}


def run_scenario(image: str, scenario: Union[str, Scenario] = "default",
                 verbose: bool = False) -> Result:
    """Runs `image` through `scenario`, with the driver profile of the image (profile_for)."""
    profile = profile_for(image)
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise HarnessError("unknown scenario %r (known: %s)" % (scenario, ", ".join(SCENARIOS)))
        scenario = SCENARIOS[scenario]
    if not scenario.is_for(profile):
        raise HarnessError("scenario %r is not for %s (%s)"
                           % (scenario.name, profile.name, scenario.applies_to()))
    return Harness(image, dataclasses.replace(scenario), verbose=verbose, profile=profile).run()


def _fmt_args(args: dict) -> str:
    parts = []
    for k, v in args.items():
        if k.startswith("*") or k in ("blocked", "item"):
            continue
        if v is None:
            v = "NULL" if k != "Timeout" else "NULL (no timeout)"
        elif isinstance(v, int):
            if k in ("ClientDispatch.Version", "Dispatch.Version"):
                v = "WSK " + version_name(v)
            elif k == "Tag":
                v = tag_name(v)
            elif k in ("NumberOfBytes", "ComponentId", "Level", "dwOSVersionInfoSize",
                       "DeviceExtensionSize", "WaitReason", "WaitMode", "Alertable", "Exclusive",
                       "State", "Length", "StackSize", "ChargeQuota", "SecondaryBuffer",
                       "Information", "InvokeOnSuccess", "InvokeOnError", "InvokeOnCancel",
                       "AddressFamily", "SocketType", "Protocol"):
                v = str(v)
            elif k == "Status":
                v = status_name(v)
            elif k == "Flags":
                v = "0x%x%s" % (v, " (POOL_FLAG_NON_PAGED)" if v == POOL_FLAG_NON_PAGED else "")
            elif k == "PoolType":
                v = "%d%s" % (v, {NON_PAGED_POOL_NX: " (NonPagedPoolNx)",
                                  NON_PAGED_POOL: " (NonPagedPool)"}.get(v, ""))
            elif k == "QueueType":
                v = "%d (%s)" % (v, WORK_QUEUES.get(v, "?"))
            elif k == "Type":
                v = "%d (%s)" % (v, EVENT_TYPES.get(v, "?"))
            elif k == "WaitTimeout":
                v = {WSK_NO_WAIT: "WSK_NO_WAIT", WSK_INFINITE_WAIT: "WSK_INFINITE_WAIT"}.get(
                    v, "%d ms" % v)
            elif k == "Timeout":
                v = ("%d (%s %s)" % (v, "relative" if v < 0 else "absolute",
                                     seconds(abs(v))) if v else "0 (poll)")
            else:
                v = "0x%x" % v
        elif isinstance(v, str):
            v = '"%s"' % v if k == "SystemRoutineName" else v
        parts.append("%s=%s" % (k, v))
    return ", ".join(parts)


def format_trace(r: Result) -> str:
    """A trace for someone who has never seen the driver run."""
    L = []
    sc = r.scenario
    backend = r.profile.backend
    L.append("=" * 78)
    L.append("%s under Speakeasy  --  scenario '%s'" % (r.profile.image_name, sc.name))
    L.append("  image:    %s" % r.image)
    L.append("  driver:   %s (log prefix '%s', service %s, %s backend)" % (
        r.profile.name, r.profile.prefix.rstrip(), r.profile.service,
        "raw NMR" if backend == "nmr" else "WskRegister"))
    L.append("  scenario: %s" % sc.describe_for(r.profile))
    if backend == "nmr":
        if sc.providers:
            for p in sc.providers:
                L.append("  provider registered before load: %s" % p.describe())
        else:
            L.append("  no provider registered when the driver loads")
        for action, what in sc.after_entry:
            L.append("  later: provider %s %s" % (action, what if isinstance(what, str)
                                                   else what.describe()))
    else:
        if sc.providers:
            L.append("  WSK subsystem ready at load: %s" % sc.providers[0].describe())
        elif sc.wsk_ready_after_ms is None:
            L.append("  WSK subsystem never ready (WskCaptureProviderNPI: "
                     "STATUS_DEVICE_NOT_READY)")
        else:
            L.append("  WSK subsystem ready %d ms after load: %s"
                     % (sc.wsk_ready_after_ms, Provider().describe()))
    L.append("  Windows version (RtlGetVersion): %d.%d build %d" % sc.windows_version)
    L.append("  ExAllocatePool2 available: %s" % ("yes" if sc.exallocatepool2 else
                                                 "no (pre-Windows 10 2004 kernel)"))
    if sc.fail_pool_allocations:
        L.append("  every pool allocation fails")
    if sc.fail_binding_allocations:
        L.append("  every allocation of a binding context (tag %s) fails"
                 % tag_name(pool_tag(r.profile.binding_tag)))
    if sc.fail_allocations:
        L.append("  pool allocation(s) number %s fail" % ", ".join(map(str, sc.fail_allocations)))
    if sc.register_status != STATUS_SUCCESS:
        L.append("  %s returns %s" % ("NmrRegisterClient" if backend == "nmr" else "WskRegister",
                                      status_name(sc.register_status)))
    if sc.create_device_status != STATUS_SUCCESS:
        L.append("  IoCreateDevice returns %s" % status_name(sc.create_device_status))
    if sc.work_delay_ms:
        L.append("  a work item starts %d ms after it is queued" % sc.work_delay_ms)
    if sc.unload_after_ms:
        L.append("  sc stop %d ms after the driver's start has settled" % sc.unload_after_ms)
    for key, values in sc.registry.items():
        shown = []
        for name, (kind, data) in values.items():
            if kind == REG_SZ:
                shown.append("%s=%r" % (name, data.decode("utf-16-le", "replace").rstrip("\0")))
            elif kind == REG_DWORD and len(data) == 4:
                shown.append("%s=%d" % (name, struct.unpack("<I", data)[0]))
            else:
                shown.append("%s=(type %d, %d bytes)" % (name, kind, len(data)))
        L.append("  registry: service key\\%s: %s" % (key, ", ".join(shown)))
    if sc.peer:
        extra = [x for x, on in (
            ("IoCancelIrp does nothing", sc.peer_ignores_cancel),
            ("WskDisconnect is a stub", sc.disconnect_stub),
            ("requests completed inside the call", sc.complete_inline),
            ("at most %d bytes per receive" % sc.peer_chunk, sc.peer_chunk)) if on]
        L.append("  sockets: the peer %s%s" % (
            {"echo": "echoes", "refuse": "refuses connections",
             "silent": "never answers"}[sc.peer], "; " + "; ".join(extra) if extra else ""))
    if sc.fail_irp_allocations:
        L.append("  IoAllocateIrp returns NULL")
    if sc.fail_mdl_allocations:
        L.append("  IoAllocateMdl returns NULL")
    L.append("")
    L.append("Legend: '->' NMR/kernel answers the driver; '<=' NMR calls into the driver and the "
             "driver returns; 'log' is the driver's own DbgPrintEx output; '~~' the harness "
             "switches threads or lets time pass (t = emulated time since load).")
    L.append("-" * 78)
    prev_thread = None
    for e in r.events:
        ind = "  " * (e.depth + 1)
        if e.kind not in ("run", "thread") and e.thread != prev_thread and prev_thread is not None:
            L.append("  ~~ on %s, t = %s" % (e.thread, seconds(e.time)))
        if e.kind != "thread":
            prev_thread = e.thread
        if e.kind == "run":
            if e.name.endswith(("returned", "done", "abandoned")):
                extra = ""
                if e.status is not None:
                    extra = " -> %s" % status_name(e.status)
                if e.name in ("DriverEntry returned", "DriverEntry abandoned"):
                    extra += ("; DriverObject->DriverUnload = 0x%x" % e.args["DriverUnload"]
                              if e.args.get("DriverUnload") else "; DriverUnload NOT set")
                L.append("%s%s%s" % (ind, e.name, extra))
                L.append("")
            else:
                L.append("[%s] %s (t = %s)" % (e.name, _fmt_args(e.args) or e.text,
                                               seconds(e.time)))
        elif e.kind == "thread":
            L.append("  ~~ %s" % e.text)
            prev_thread = e.thread
        elif e.kind == "log":
            lvl = e.args.get("Level")
            L.append("%slog%s: %s" % (ind, "" if lvl is None else "[%d]" % lvl,
                                      e.text.rstrip("\n")))
        elif e.kind == "nmr":
            st = " -> %s" % status_name(e.status) if e.status is not None else ""
            if any(x.kind == "nmr-return" and x.name == e.name for x in r.events):
                st = "  ..."  # its status follows, after the callbacks NMR makes meanwhile
            if e.name == "NmrClientAttachProvider" and "ClientDispatch.Version" in e.args:
                a = e.args
                L.append("%sNmrClientAttachProvider(ClientDispatch->Version = WSK %s)%s" % (
                    ind, version_name(a["ClientDispatch.Version"]), st))
                L.append("%s   NmrBindingHandle=0x%x ClientBindingContext=0x%x ClientDispatch=0x%x"
                         " out-pointers: ProviderBindingContext at 0x%x, ProviderDispatch at 0x%x"
                         % (ind, a["NmrBindingHandle"], a["ClientBindingContext"],
                            a["ClientDispatch"], a["ProviderBindingContext"],
                            a["ProviderDispatch"]))
            else:
                L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
            if e.args.get("*ProviderBindingContext"):
                L.append("%s   (NMR wrote WSK_CLIENT 0x%x and WSK_PROVIDER_DISPATCH 0x%x)" % (
                    ind, e.args["*ProviderBindingContext"], e.args["*ProviderDispatch"]))
        elif e.kind == "callback":
            prov = e.args.get("provider")
            args = {k: v for k, v in e.args.items() if k not in ("provider", "why")}
            why = " [%s]" % e.args["why"] if "why" in e.args else ""
            L.append("%sNMR => driver %s(%s)%s" % (ind, e.name, _fmt_args(args), why))
            if prov:
                L.append("%s   provider: %s" % (ind, prov))
        elif e.kind == "return":
            if e.name == "ClientCleanupBindingContext":
                L.append("%s<= %s returned" % (ind, e.name))
            else:
                L.append("%s<= %s returned %s" % (ind, e.name, status_name(e.status)))
        elif e.kind in ("nmr-return", "ke-return", "wskreg-return"):
            L.append("%s%s returned %s%s" % (ind, e.name, status_name(e.status),
                                             " (%s)" % e.text if e.text else ""))
            if e.args.get("*Dispatch"):
                L.append("%s   (wrote WSK_PROVIDER_NPI: Client 0x%x, Dispatch 0x%x with Version "
                         "WSK %s)" % (ind, e.args["*Client"], e.args["*Dispatch"],
                                      version_name(e.args["*Dispatch.Version"])))
        elif e.kind == "pool":
            if e.name.startswith("ExFree"):
                L.append("%spool: %s(%s)" % (ind, e.name, _fmt_args(e.args)))
            else:
                L.append("%spool: %s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                                   "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "kernel" and e.name.startswith("Zw"):
            L.append("%s%s(%s) -> %s" % (ind, e.name, _fmt_args(e.args), status_name(e.status)))
        elif e.kind == "kernel" and e.name == "RtlGetVersion":
            L.append("%s%s(%s) -> %s: %s" % (ind, e.name, _fmt_args(e.args), status_name(e.status),
                                            e.text))
        elif e.kind == "kernel":
            L.append("%s%s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                         "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "device":
            if e.name == "IoCreateDevice":
                out = ("STATUS_SUCCESS, DeviceObject 0x%x" % e.args["*DeviceObject"]
                       if e.status == STATUS_SUCCESS else status_name(e.status))
                L.append("%sIoCreateDevice(%s) -> %s" % (ind, _fmt_args(e.args), out))
            else:
                L.append("%s%s(%s)" % (ind, e.name, _fmt_args(e.args)))
        elif e.kind == "work":
            item = e.args.get("item")
            tag = " [work item %d]" % item if item else ""
            if e.name == "IoAllocateWorkItem":
                L.append("%sIoAllocateWorkItem(%s) -> %s%s" % (
                    ind, _fmt_args(e.args), "0x%x" % e.status if e.status else "NULL", tag))
            elif e.name == "work item runs":
                L.append("%swork item %d: WorkerRoutine 0x%x(DeviceObject=0x%x, Context=0x%x)"
                         % (ind, item, e.args["WorkerRoutine"], e.args["DeviceObject"],
                            e.args["Context"]))
            elif e.name == "work item done":
                L.append("%swork item %d: WorkerRoutine returned" % (ind, item))
            else:
                L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), tag))
        elif e.kind == "ke":
            st = ""
            if e.name == "KeWaitForSingleObject":
                st = ("  ... blocks: %s" % e.args.get("*event") if e.args.get("blocked")
                      else " -> %s" % status_name(e.status))
            elif e.name in ("KeSetEvent", "KeResetEvent") and e.status is not None:
                st = " -> %d (previous state)" % e.status
            L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
        elif e.kind == "wskreg":
            if e.args.get("blocked"):
                st = "  ... waits"
            elif e.status is not None:
                st = " -> %s" % status_name(e.status)
            else:
                st = ""
            L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
            if e.args.get("*Dispatch"):
                L.append("%s   (wrote WSK_PROVIDER_NPI: Client 0x%x, Dispatch 0x%x with Version "
                         "WSK %s)" % (ind, e.args["*Client"], e.args["*Dispatch"],
                                      version_name(e.args["*Dispatch.Version"])))
        elif e.kind == "wsk":
            where = "provider dispatch" if "Socket" not in e.args else \
                "socket %s" % e.args.get("*socket", "?")
            L.append("%sWSK %s: %s(%s) -> %s%s" % (ind, where, e.name, _fmt_args(e.args),
                                                 status_name(e.status),
                                                 " (%s)" % e.text if e.text else ""))
            if e.args.get("*data") is not None:
                L.append("%s   data: %r" % (ind, e.args["*data"]))
        elif e.kind == "io":
            tag = ""
            if "*irp" in e.args:
                tag = " [IRP %d]" % e.args["*irp"]
            elif "*mdl" in e.args:
                tag = " [MDL %d]" % e.args["*mdl"]
            if e.name == "IoCompleteRequest":
                L.append("%sprovider completes the IRP of %s%s: IoStatus = {%s, %d}" % (
                    ind, e.args["op"], tag, status_name(e.args["Status"]),
                    e.args["Information"]))
            elif e.name in ("IoAllocateIrp", "IoAllocateMdl"):
                L.append("%s%s(%s) -> %s%s" % (ind, e.name, _fmt_args(e.args),
                                               "0x%x" % e.status if e.status else "NULL", tag))
            elif e.name == "IoCancelIrp":
                L.append("%sIoCancelIrp(%s) -> %s%s%s" % (
                    ind, _fmt_args(e.args), {1: "TRUE", 0: "FALSE"}.get(e.status, "?"), tag,
                    " (%s)" % e.text if e.text else ""))
            elif e.name == "IoSetCompletionRoutineEx":
                L.append("%s%s(%s) -> %s%s" % (ind, e.name, _fmt_args(e.args),
                                               status_name(e.status), tag))
            else:
                L.append("%s%s(%s)%s%s" % (ind, e.name, _fmt_args(e.args), tag,
                                           " (%s)" % e.text if e.text else ""))
        elif e.kind == "io-callback":
            L.append("%sI/O manager => driver %s(%s)" % (ind, e.name, _fmt_args(e.args)))
        elif e.kind == "io-return":
            L.append("%s<= %s returned %s" % (ind, e.name, status_name(e.status)))
        elif e.kind == "provider":
            L.append("%s%s: %s" % (ind, e.name, e.text))
        elif e.kind == "violation":
            L.append("%s!! %s" % (ind, e.text))
    L.append("-" * 78)
    L.append("Summary")
    L.append("  DriverEntry returned %s" % status_name(r.entry_status))
    for b in r.bindings:
        tries = ", ".join("WSK %s -> %s" % (version_name(t.version), status_name(t.status))
                          for t in b.tries) or "none"
        L.append("  binding 0x%x (%s): attach tries: %s; ClientAttachProvider returned %s; "
                 "final state %s" % (b.handle, b.provider.name, tries,
                                     status_name(b.attach_status), b.state))
    for reg in r.wsk_registrations:
        answers = ", ".join("%s -> %s" % (
            {WSK_NO_WAIT: "no wait", WSK_INFINITE_WAIT: "infinite"}.get(w, "%d ms" % w),
            status_name(s)) for w, s in reg.capture_answers) or "none"
        L.append("  WskRegister at WSK %s -> %s; captures: %s; %s" % (
            version_name(reg.version), status_name(reg.status), answers,
            "deregistered" if reg.deregistered_seq is not None else
            ("NOT deregistered" if reg.status == STATUS_SUCCESS else "not registered")))
    bal = r.pool_balance()
    if not bal:
        L.append("  pool: nothing allocated")
    for tag, d in bal.items():
        L.append("  pool tag %s: %d allocated, %d freed, %d outstanding (%d bytes)"
                 % (tag, d["allocated"], d["freed"], d["outstanding"], d["bytes_outstanding"]))
    L.append("  device objects: %d created, %d deleted" % (
        len(r.devices), sum(d.deleted_seq is not None for d in r.devices)))
    L.append("  work items: %d allocated, %d queued, %d ran, %d freed" % (
        len(r.work_items), sum(it.queued_count for it in r.work_items),
        sum(it.runs for it in r.work_items), sum(it.freed for it in r.work_items)))
    L.append("  events: %d initialised, %d set, %d waits (%d timed out)" % (
        len(r.kevents), sum(k.sets for k in r.kevents),
        sum(1 for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"),
        sum(1 for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"
            and e.status == STATUS_TIMEOUT)))
    if r.irps or r.mdls or r.sockets or r.mdl_requests:
        L.append("  IRPs: %d allocated, %d freed, %d completions; MDLs: %d allocated (%d asked "
                 "for), %d freed; sockets: %d created, %d closed" % (
                     len(r.irps), sum(x.state == "freed" for x in r.irps),
                     sum(x.completions for x in r.irps), len(r.mdls), len(r.mdl_requests),
                     sum(m.freed_seq is not None for m in r.mdls), len(r.sockets),
                     sum(x.state == "closed" for x in r.sockets)))
    L.append("  DriverUnload ran: %s" % ("yes" if r.unload_completed else
                                         ("ABANDONED (it would hang)" if r.unload_ran else "no")))
    L.append("  emulated time at the end: %s" % seconds(r.clock))
    L.append("  stack: %d bytes deep at the deepest API call (of a %d KiB kernel stack)"
             % (r.stack_used, KERNEL_STACK_SIZE // 1024))
    if r.violations:
        L.append("  PROBLEMS (%d):" % len(r.violations))
        for v in r.violations:
            L.append("    - %s" % v)
    if r.run_errors:
        L.append("  EMULATION ERRORS:")
        for err in r.run_errors:
            L.append("    - %s: %s at %s %s" % (err.get("run"), err.get("type"), err.get("pc"),
                                                err.get("api_name", "")))
    if not r.violations and not r.run_errors:
        L.append("  no problems found")
    L.append("=" * 78)
    return "\n".join(L)
