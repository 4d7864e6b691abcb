"""Run a driver image built on wsk-client (wsk_attach.sys, wsk_echo.sys) under Mandiant's Speakeasy,
with this file playing NMR and the WSK provider.

Speakeasy (pinned in requirements.txt) emulates an x64 kernel driver with unicorn. It implements
DbgPrintEx, ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress, ... but neither
ExAllocatePool2 nor any Nmr* function. This module adds them as API hooks and models:

* NMR: NmrRegisterClient / NmrDeregisterClient / NmrWaitForClientDeregisterComplete /
  NmrClientAttachProvider / NmrClientDetachProviderComplete, including NMR calling the driver's
  ClientAttachProvider / ClientDetachProvider / ClientCleanupBindingContext callbacks, which it
  reads out of the NPI_CLIENT_CHARACTERISTICS that DriverEntry passed to NmrRegisterClient;
* the WSK provider: an NPI_REGISTRATION_INSTANCE (NpiId, ModuleId, WSK_PROVIDER_CHARACTERISTICS)
  in emulated memory, an answer per requested WSK version, and a WSK_PROVIDER_DISPATCH whose six
  functions are hooks;
* the pool: every allocation and free, per tag, for the balance check at unload;
* RtlGetVersion: the Windows version of the scenario (the driver picks its pool type by it).

What is expected of the image (log prefix, pool tags, NMR module id, ...) is its driver profile
(tests/driver_profiles.py), chosen by the image's file name.

How a hook makes the emulated CPU call into the driver (see ``_CallEngine``): a hook for a function
Speakeasy does not implement ends with Speakeasy "returning" to the address found at [RSP]. The
hook points RSP at a scratch frame ``[callee, stub, home space...]``, so that return lands on the
driver's callback with return address ``stub``; ``stub`` is a real code stub ``jmp [rip+0]`` to a
reserved address hooked as ``harness.CallbackReturn`` (a ``ret`` straight into Speakeasy's reserved
range executes nothing, hence the stub). That hook reads RAX, and either sets up the next call or
puts RSP back on the original frame, so Speakeasy returns to the driver's original call site.
The NMR behaviour is written as Python generators that ``yield Call(...)`` and get the RAX back.

Use ``run_scenario(path, scenario)`` -> ``Result``; ``format_trace(result)`` renders a trace.
"""
from __future__ import annotations

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
STATUS_PENDING = 0x00000103
STATUS_UNSUCCESSFUL = 0xC0000001
STATUS_NOT_IMPLEMENTED = 0xC0000002
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
STATUS_NOT_SUPPORTED = 0xC00000BB
STATUS_NOINTERFACE = 0xC00002B9
STATUS_DEVICE_NOT_READY = 0xC00000A3

STATUS_NAMES = {
    STATUS_SUCCESS: "STATUS_SUCCESS",
    STATUS_PENDING: "STATUS_PENDING",
    STATUS_UNSUCCESSFUL: "STATUS_UNSUCCESSFUL",
    STATUS_NOT_IMPLEMENTED: "STATUS_NOT_IMPLEMENTED",
    STATUS_INVALID_PARAMETER: "STATUS_INVALID_PARAMETER",
    STATUS_INSUFFICIENT_RESOURCES: "STATUS_INSUFFICIENT_RESOURCES",
    STATUS_NOT_SUPPORTED: "STATUS_NOT_SUPPORTED",
    STATUS_NOINTERFACE: "STATUS_NOINTERFACE",
    STATUS_DEVICE_NOT_READY: "STATUS_DEVICE_NOT_READY",
}

WSK_1_0 = 0x0100
WSK_1_1 = 0x0101

NPI_WSK_INTERFACE_ID = uuid.UUID("2227E803-8D8B-11D4-ABAD-009027719E09")
# The NPI id of the network-layer NPI, used as a "wrong NpiId" in tests.
NPI_OTHER_INTERFACE_ID = uuid.UUID("2227E804-8D8B-11D4-ABAD-009027719E09")
# The provider's own module id (any GUID; Windows' afd.sys uses its own).
PROVIDER_MODULE_ID = uuid.UUID("7B2D5A54-9C3E-4A8B-8C3E-5F1A2B3C4D5E")

POOL_FLAG_NON_PAGED = 0x40
NON_PAGED_POOL = 0  # before Windows 8
NON_PAGED_POOL_NX = 512

# Sizes / offsets (x64)
SIZEOF_NPI_CLIENT_CHARACTERISTICS = 72
SIZEOF_NPI_REGISTRATION_INSTANCE = 40
SIZEOF_NPI_MODULEID = 24
SIZEOF_WSK_CLIENT_DISPATCH = 16
SIZEOF_WSK_PROVIDER_DISPATCH = 56
DRIVER_OBJECT_DRIVER_UNLOAD = 0x68
KERNEL_STACK_SIZE = 0x6000  # x64

WSK_PROVIDER_DISPATCH_FUNCS = [  # (name, argc), in table order from +8
    ("WskSocket", 11),
    ("WskSocketConnect", 12),
    ("WskControlClient", 8),
    ("WskGetAddressInfo", 10),
    ("WskFreeAddressInfo", 2),
    ("WskGetNameInfo", 9),
]

DEFAULT_IMAGE = driver_profiles.DEFAULT_IMAGE


def status_name(st: Optional[int]) -> str:
    if st is None:
        return "(no value)"
    st &= 0xFFFFFFFF
    return STATUS_NAMES.get(st, "0x%08X" % st)


def version_name(v: Optional[int]) -> str:
    if v is None:
        return "?"
    return "%d.%d (0x%04x)" % (v >> 8, v & 0xFF, v)


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


# ---------------------------------------------------------------------------------------------
# Scenario description
# ---------------------------------------------------------------------------------------------
AttachAnswer = Union[None, Dict[int, int], Callable[[int, int], int]]


@dataclass
class Provider:
    """One WSK provider registration, as NMR presents it to the client.

    highest/lowest: WSK_PROVIDER_CHARACTERISTICS. characteristics=False makes
    NpiSpecificCharacteristics NULL. answers: how NmrClientAttachProvider answers a request for a
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
        return "%s: %s" % (self.name, "; ".join(parts))


@dataclass
class Scenario:
    """What the emulated system looks like and does, from driver load to unload.

    providers: registered with NMR before the driver loads, so NMR attaches them from inside
      NmrRegisterClient (before it has written the client handle).
    after_entry: provider events after DriverEntry returned, before DriverUnload, as
      ("register", Provider) or ("deregister", provider_name).
    exallocatepool2: whether MmGetSystemRoutineAddress(L"ExAllocatePool2") finds it.
    windows_version: (major, minor, build) that RtlGetVersion reports; from 6.2 (Windows 8) on,
      the driver's ExAllocatePoolWithTag fallback asks for NonPagedPoolNx, before it NonPagedPool.
    fail_pool_allocations: every pool allocation returns NULL.
    fail_binding_allocations: every allocation with the driver's binding tag (a binding context)
      returns NULL; the driver's own allocations succeed.
    fail_allocations: the pool allocations with these numbers (1: the first) return NULL.
    register_status: what NmrRegisterClient returns (non-success: no attach happens).
    drivers: the driver profiles (names) the scenario is meant for; empty: every driver.
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
    drivers: Tuple[str, ...] = ()

    def is_for(self, profile: DriverProfile) -> bool:
        return not self.drivers or profile.name in self.drivers


def _inverted(h, l):
    return Provider(name="WSK provider (inverted range)", highest=h, lowest=l)


SCENARIOS: Dict[str, Scenario] = {
    "default": Scenario(),
    "wsk10-only": Scenario(
        name="wsk10-only",
        description="a provider that only speaks WSK 1.0 (Windows Vista): 1.1 is never asked for",
        providers=[Provider(name="WSK 1.0 provider", highest=WSK_1_0, lowest=WSK_1_0)]),
    "fallback": Scenario(
        name="fallback",
        description="the provider advertises 1.0..1.1 but refuses 1.1 with STATUS_NOINTERFACE",
        providers=[Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_SUCCESS})]),
    "wsk12-only": Scenario(
        name="wsk12-only",
        description="a provider offering only WSK 1.2: no version in common, nothing allocated",
        providers=[Provider(name="WSK 1.2 provider", highest=0x0102, lowest=0x0102)]),
    "all-nointerface": Scenario(
        name="all-nointerface",
        description="the provider advertises 1.0..1.1 but refuses every version",
        providers=[Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_NOINTERFACE})]),
    "nmr-error": Scenario(
        name="nmr-error",
        description="NmrClientAttachProvider fails with STATUS_INSUFFICIENT_RESOURCES: no retry",
        providers=[Provider(answers={WSK_1_1: STATUS_INSUFFICIENT_RESOURCES,
                                     WSK_1_0: STATUS_SUCCESS})]),
    "no-pool": Scenario(
        name="no-pool",
        description="every allocation of a binding context fails (the driver's own ones do not)",
        fail_binding_allocations=True),
    "setup-no-pool": Scenario(
        name="setup-no-pool",
        description="the first pool allocation, wsk_echo's own context in DriverEntry, fails: "
                    "the load fails before NmrRegisterClient",
        fail_allocations=(1,),
        drivers=("wsk_echo",)),
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
        providers=[Provider(name="provider without characteristics", characteristics=False)]),
    "wrong-npiid": Scenario(
        name="wrong-npiid",
        description="a registration instance of another NPI",
        providers=[Provider(name="non-WSK provider", npi_id=NPI_OTHER_INTERFACE_ID)]),
    "inverted-range": Scenario(
        name="inverted-range",
        description="a provider whose LowestVersion (1.1) is above its HighestVersion (1.0)",
        providers=[_inverted(WSK_1_0, WSK_1_1)]),
    "late-provider": Scenario(
        name="late-provider",
        description="no provider at load; WSK registers later, deregisters, registers again",
        providers=[],
        after_entry=[("register", Provider()), ("deregister", "WSK provider"),
                     ("register", Provider())]),
    "register-fails": Scenario(
        name="register-fails",
        description="NmrRegisterClient fails (STATUS_INSUFFICIENT_RESOURCES): the load fails",
        register_status=STATUS_INSUFFICIENT_RESOURCES),
    "detach-during-attach": Scenario(
        name="detach-during-attach",
        description="the provider deregisters while NmrClientAttachProvider is still returning",
        providers=[Provider(detach_during_attach=True)]),
    "provider-detach": Scenario(
        name="provider-detach",
        description="attach at load, then the WSK provider deregisters before the driver unloads",
        after_entry=[("deregister", "WSK provider")]),
}


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass
class Event:
    """One thing that happened, in order.

    kind: 'run' (Speakeasy starts/ends a driver entry point), 'log' (DbgPrintEx), 'nmr' (the driver
    calls NMR), 'callback' (NMR calls the driver; status = what the callback returned), 'pool',
    'kernel' (other ntoskrnl calls we model), 'wsk' (a provider dispatch function), 'violation'.
    """

    seq: int
    kind: str
    name: str
    args: dict = field(default_factory=dict)
    status: Optional[int] = None
    depth: int = 0
    text: str = ""

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
    stack_used: int = 0  # deepest RSP seen at an API call, from the top of the 24 KiB stack

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
        return [e for e in self.events if e.name == name and e.kind in ("nmr", "callback")]

    @property
    def binding_allocations(self) -> List[Allocation]:
        """The binding contexts: the allocations with the driver's binding tag."""
        tag = pool_tag(self.profile.binding_tag)
        return [a for a in self.allocations if a.tag == tag]

    @property
    def own_allocations(self) -> List[Allocation]:
        """Everything else the driver allocated (its own context, for wsk_echo)."""
        tag = pool_tag(self.profile.binding_tag)
        return [a for a in self.allocations if a.tag != tag]


class HarnessError(Exception):
    pass


@dataclass
class Call:
    """Request, from an NMR generator, that the emulated CPU call a driver function."""

    fn: int
    args: list
    name: str
    returns: bool = True  # False for VOID functions (RAX is meaningless)


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
        self.pending_calls: list = []  # (generator, frame_rsp, Call, depth)
        self.run_errors: List[dict] = []
        self.entry_status: Optional[int] = None
        self.unload_ran = False
        self.unload_ptr = 0
        self.driver_object = 0
        self._fake_next = 0
        self.skipped_exports: List[str] = []
        self.stack_top = self.min_rsp = 0
        self.allocation_attempts = 0

    # -- small helpers ---------------------------------------------------------------------
    def ev(self, kind, name, args=None, status=None, text="", depth=None) -> Event:
        try:
            self.min_rsp = min(self.min_rsp, self.emu.get_stack_ptr())
        except Exception:
            pass
        e = Event(len(self.events), kind, name, dict(args or {}), status,
                  self.depth if depth is None else depth, text)
        self.events.append(e)
        return e

    def violation(self, msg: str):
        self.violations.append(msg)
        self.ev("violation", "violation", text=msg)

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

    def pool_block(self, addr: int) -> Optional[Allocation]:
        for a in self.allocations.values():
            if a.freed_by is None and a.address <= addr < a.address + a.size:
                return a
        return None

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
        # Speakeasy sizes the kernel stack from the image's SizeOfStackCommit (4 KiB for a
        # usual link); Windows x64 gives a thread KERNEL_STACK_SIZE, 24 KiB. Use that.
        self.stack_top, _ = self.emu.alloc_stack(KERNEL_STACK_SIZE)
        self.emu.stack_base = self.stack_top
        self.emu.reset_stack(self.stack_top)
        self.min_rsp = self.stack_top

        # Code stub: jmp [rip+0] ; dq harness.CallbackReturn
        self.cont_addr = self.emu.get_proc("harness", "CallbackReturn")
        self.trigger_addr = self.emu.get_proc("harness", "ProviderEvents")
        self.stub = self.alloc(32, "stub")
        self.wr(self.stub, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self.cont_addr))
        self.trigger_stub = self.alloc(32, "trigger_stub")
        self.wr(self.trigger_stub, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", self.trigger_addr))
        self.exallocatepool2_addr = self.emu.get_proc("ntoskrnl", "ExAllocatePool2")
        self.wsk_funcs = {name: self.emu.get_proc("harness", name)
                          for name, _ in WSK_PROVIDER_DISPATCH_FUNCS}

        add = self.se.add_api_hook
        add(self._h_cont, "harness", "CallbackReturn", argc=0)
        add(self._h_provider_events, "harness", "ProviderEvents", argc=0)
        for name, argc in WSK_PROVIDER_DISPATCH_FUNCS:
            add(self._make_wsk_hook(name, argc), "harness", name, argc=argc)
        add(self._h_register, "netio", "NmrRegisterClient", argc=3)
        add(self._h_deregister, "netio", "NmrDeregisterClient", argc=1)
        add(self._h_wait, "netio", "NmrWaitForClientDeregisterComplete", argc=1)
        add(self._h_client_attach, "netio", "NmrClientAttachProvider", argc=5)
        add(self._h_detach_complete, "netio", "NmrClientDetachProviderComplete", argc=1)
        add(self._h_exallocatepool2, "ntoskrnl", "ExAllocatePool2", argc=3)
        add(self._h_exallocatepoolwithtag, "ntoskrnl", "ExAllocatePoolWithTag", argc=3)
        add(self._h_exallocatepool, "ntoskrnl", "ExAllocatePool", argc=2)
        add(self._h_exfreepoolwithtag, "ntoskrnl", "ExFreePoolWithTag", argc=2)
        add(self._h_exfreepool, "ntoskrnl", "ExFreePool", argc=1)
        add(self._h_getroutine, "ntoskrnl", "MmGetSystemRoutineAddress", argc=1)
        add(self._h_rtlgetversion, "ntoskrnl", "RtlGetVersion", argc=1)
        add(self._h_dbgprintex, "ntoskrnl", "DbgPrintEx", argc=3)
        add(self._h_dbgprint, "ntoskrnl", "DbgPrint", argc=1)

        # Observe Speakeasy's runs (DriverEntry, DriverUnload, ours) start and end.
        emu = self.emu
        orig_exec_run, orig_complete = emu._exec_run, emu.on_run_complete

        def exec_run(run):
            self._run_started(run)
            return orig_exec_run(run)

        def on_run_complete():
            self._run_completed(emu.curr_run)
            return orig_complete()

        emu._exec_run = exec_run
        emu.on_run_complete = on_run_complete

    # -- Speakeasy runs ----------------------------------------------------------------------
    def _run_name(self, run) -> str:
        from speakeasy.windows.kernel import EP_DRIVER_ENTRY, EP_DRIVER_UNLOAD
        return {EP_DRIVER_ENTRY: "DriverEntry", EP_DRIVER_UNLOAD: "DriverUnload"}.get(
            run.type, str(run.type))

    def _run_started(self, run):
        name = self._run_name(run)
        self.depth = 0
        if name == "DriverEntry":
            self.driver_object = run.args[0]
            self.ev("run", "DriverEntry", {"DriverObject": run.args[0],
                                           "RegistryPath": run.args[1]})
        elif name == "DriverUnload":
            self.unload_ran = True
            self.ev("run", "DriverUnload", {"DriverObject": run.args[0]})
        elif name == "provider-events":
            self.ev("run", "provider-events", text="the WSK provider side acts, after DriverEntry")
        else:
            self.ev("run", name)

    def _run_completed(self, run):
        if run is None:
            return
        name = self._run_name(run)
        if getattr(run, "error", None):
            err = dict(run.error)
            err.pop("regs", None)
            err["run"] = name
            self.run_errors.append(err)
            self.ev("violation", "emulation-error", text="%s: %s at %s (%s)" % (
                name, err.get("type"), err.get("pc"), err.get("api_name", err.get("instr", ""))))
        if name == "DriverEntry":
            st = self.emu.get_return_val() & 0xFFFFFFFF
            self.entry_status = st
            if self.driver_object:
                self.unload_ptr = self.rd64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD)
                if st & 0x80000000 and self.unload_ptr:
                    # The I/O manager never calls DriverUnload after DriverEntry failed.
                    self.wr64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD, 0)
            self.ev("run", "DriverEntry returned", status=st,
                    args={"DriverUnload": self.unload_ptr})
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
            if st == STATUS_SUCCESS and self.scenario.after_entry:
                from speakeasy.profiler import Run
                r = Run()
                r.type = "provider-events"
                r.start_addr = self.trigger_stub
                r.args = []
                self.emu.add_run(r)
        elif name == "DriverUnload":
            self.ev("run", "DriverUnload returned")
        elif name == "provider-events":
            self.ev("run", "provider-events done")

    # -- calling into the driver -------------------------------------------------------------
    def _drive(self, gen: Generator, send_value, frame_rsp: int):
        """Advance an NMR generator from inside an unimplemented-API hook.

        Returns the value the hook must return. Either the generator finished (RSP back on
        frame_rsp, whose [RSP] is the original return address), or it asked for a call: RSP now
        on a scratch frame [fn, stub, home space], so Speakeasy's return lands on fn.
        """
        try:
            req = gen.send(send_value)
        except StopIteration as stop:
            self.emu.reg_write("rsp", frame_rsp)
            return STATUS_SUCCESS if stop.value is None else stop.value
        if not isinstance(req, Call):
            raise HarnessError("NMR model yielded %r" % (req,))
        sp = (frame_rsp - 0x80) & ~0xF  # below the hooked call's return address
        self.wr64(sp, req.fn)
        self.wr64(sp + 8, self.stub)
        self.wr(sp + 16, b"\0" * 0x20)  # home space
        regs = ["rcx", "rdx", "r8", "r9"]
        for i, a in enumerate(req.args):
            self.emu.reg_write(regs[i], a)
        self.emu.reg_write("rsp", sp)
        self.pending_calls.append((gen, frame_rsp, req, self.depth))
        self.depth += 1
        return 0

    def _start(self, gen: Generator):
        return self._drive(gen, None, self.emu.get_stack_ptr())

    def _h_cont(self, emu, api, func, argv):
        if not self.pending_calls:
            raise HarnessError("CallbackReturn hook without a pending call")
        gen, frame_rsp, req, depth = self.pending_calls.pop()
        self.depth = depth
        rax = emu.get_return_val()
        value = (rax & 0xFFFFFFFF) if req.returns else None
        return self._drive(gen, value, frame_rsp)

    def call(self, fn: int, args: list, name: str, returns: bool = True, arg_names=()):
        """Generator helper: call a driver callback, log it, return its status."""
        e = self.ev("callback", name, dict(zip(arg_names, args)))
        st = yield Call(fn, list(args), name, returns)
        e.status = st
        e.text = "returned"
        self.ev("return", name, status=st)
        return st

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
        base, size = self.module.get_base(), self.module.get_image_size()
        chk(base <= c["address"] < base + size,
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
        if self.client is not None:
            self.violation("NmrRegisterClient called twice")
        self.client = self._read_characteristics(chars)
        self.client_context = ctx
        self._check_characteristics(self.client)
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

    def _h_provider_events(self, emu, api, func, argv):
        def gen():
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
            return 0
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
        blk = self.pool_block(ctx)
        t = AttachTry(binding=handle, client_context=ctx, version=version, status=status,
                      client_dispatch=disp, reserved=reserved, client_event=event,
                      out_client_in_context=bool(blk and blk.address <= p_ctx < blk.address + blk.size),
                      out_dispatch_in_context=bool(blk and blk.address <= p_disp < blk.address + blk.size),
                      context_is_pool=blk is not None and blk.address == ctx)
        b.tries.append(t)
        if status == STATUS_SUCCESS:
            wsk_client = self.alloc(0x40, "wsk.client")
            pd = self.alloc(SIZEOF_WSK_PROVIDER_DISPATCH, "wsk.provider_dispatch")
            dv = b.provider.dispatch_version or version
            data = struct.pack("<HH4x", dv, 0) + b"".join(
                struct.pack("<Q", self.wsk_funcs[n]) for n, _ in WSK_PROVIDER_DISPATCH_FUNCS)
            self.wr(pd, data)
            self.wr64(p_ctx, wsk_client)
            self.wr64(p_disp, pd)
            b.client_context = ctx
            b.wsk_client = wsk_client
            b.provider_dispatch = pd
            e.args["*ProviderBindingContext"] = wsk_client
            e.args["*ProviderDispatch"] = pd
            if dv < WSK_1_1:
                # A WSK 1.0 dispatch is 32 bytes: the client must not read the 1.1 members.
                def on_read(emu_, access, addr, size, value, ctx, pd=pd, dv=dv):
                    self.violation("read of WSK_PROVIDER_DISPATCH+%d (a WSK 1.1 member) of a "
                                   "WSK %s dispatch" % (addr - pd, version_name(dv)))
                    return True
                self.emu.add_mem_read_hook(on_read, begin=pd + 32,
                                           end=pd + SIZEOF_WSK_PROVIDER_DISPATCH - 1)
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
        if b.state == "detaching":
            b.complete_called = True
            return 0
        if b.state == "detach-pending":
            b.complete_called = True
            if any(c.name == "ClientAttachProvider" for _, _, c, _ in self.pending_calls):
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
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    # hooks: WSK provider dispatch ---------------------------------------------------------
    def _make_wsk_hook(self, name, argc):
        def hook(emu, api, func, argv):
            self.ev("wsk", name, {"Client": argv[0] if argv else 0}, status=STATUS_NOT_SUPPORTED)
            return STATUS_NOT_SUPPORTED
        return hook

    # hooks: pool and system routines -------------------------------------------------------
    def _new_alloc(self, api, size, tag, pool) -> int:
        self.allocation_attempts += 1
        sc = self.scenario
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

    # hooks: debug output -------------------------------------------------------------------
    def _h_dbgprintex(self, emu, api, func, argv):
        cid, level, fmt = emu.get_func_argv(_cdecl(), 3)
        text = self._format(fmt, 3)
        self.ev("log", "DbgPrintEx", {"ComponentId": cid & 0xFFFFFFFF,
                                      "Level": level & 0xFFFFFFFF}, text=text)
        return len(text)

    def _h_dbgprint(self, emu, api, func, argv):
        (fmt,) = emu.get_func_argv(_cdecl(), 1)
        text = self._format(fmt, 1)
        self.ev("log", "DbgPrint", {}, text=text)
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
        if self.pending_calls:
            self.violation("emulation ended inside %d driver callback(s)" % len(self.pending_calls))
        if self.client is not None and self.unload_ran and not self.wait_done:
            self.violation("DriverUnload did not call NmrWaitForClientDeregisterComplete")
        if self.client is not None and self.unload_ran and not self.deregistered:
            self.violation("DriverUnload did not call NmrDeregisterClient")
        failed_entry = self.entry_status is not None and self.entry_status & 0x80000000
        if self.unload_ran or failed_entry:
            for a in self.alloc_list:
                if a.freed_by is None:
                    self.violation("pool leak at %s: %d bytes tag %s at 0x%x (%s)"
                                   % ("unload" if self.unload_ran else "failed DriverEntry",
                                      a.size, tag_name(a.tag), a.address, a.api))
        return Result(scenario=self.scenario, image=self.image, profile=self.profile,
                      events=self.events,
                      bindings=self.bindings, allocations=self.alloc_list,
                      violations=self.violations, entry_status=self.entry_status,
                      unload_ran=self.unload_ran, unload_set=self.unload_ptr,
                      run_errors=self.run_errors, client_handle=self.client_handle,
                      characteristics=self.client, image_base=self.module.get_base(),
                      image_size=self.module.get_image_size(),
                      stack_used=self.stack_top - self.min_rsp)


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
        raise HarnessError("scenario %r is for %s only, not %s"
                           % (scenario.name, ", ".join(scenario.drivers), profile.name))
    return Harness(image, dataclasses.replace(scenario), verbose=verbose, profile=profile).run()


def _fmt_args(args: dict) -> str:
    parts = []
    for k, v in args.items():
        if k.startswith("*"):
            continue
        if isinstance(v, int):
            if k == "ClientDispatch.Version":
                v = "WSK " + version_name(v)
            elif k == "Tag":
                v = tag_name(v)
            elif k in ("NumberOfBytes", "ComponentId", "Level", "dwOSVersionInfoSize"):
                v = str(v)
            elif k == "Flags":
                v = "0x%x%s" % (v, " (POOL_FLAG_NON_PAGED)" if v == POOL_FLAG_NON_PAGED else "")
            elif k == "PoolType":
                v = "%d%s" % (v, {NON_PAGED_POOL_NX: " (NonPagedPoolNx)",
                                  NON_PAGED_POOL: " (NonPagedPool)"}.get(v, ""))
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
    L.append("=" * 78)
    L.append("%s under Speakeasy  --  scenario '%s'" % (r.profile.image_name, sc.name))
    L.append("  image:    %s" % r.image)
    L.append("  scenario: %s" % sc.description)
    if sc.providers:
        for p in sc.providers:
            L.append("  provider registered before load: %s" % p.describe())
    else:
        L.append("  no provider registered when the driver loads")
    for action, what in sc.after_entry:
        L.append("  later: provider %s %s" % (action, what if isinstance(what, str)
                                               else what.describe()))
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
    L.append("")
    L.append("Legend: '->' NMR/kernel answers the driver; '<=' NMR calls into the driver and the "
             "driver returns; 'log' is the driver's own DbgPrintEx output.")
    L.append("-" * 78)
    for e in r.events:
        ind = "  " * (e.depth + 1)
        if e.kind == "run":
            if e.name.endswith("returned") or e.name.endswith("done"):
                extra = ""
                if e.status is not None:
                    extra = " -> %s" % status_name(e.status)
                if e.name == "DriverEntry returned":
                    extra += ("; DriverObject->DriverUnload = 0x%x" % e.args["DriverUnload"]
                              if e.args.get("DriverUnload") else "; DriverUnload NOT set")
                L.append("%s%s%s" % (ind, e.name, extra))
                L.append("")
            else:
                L.append("[%s] %s" % (e.name, _fmt_args(e.args) or e.text))
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
        elif e.kind == "nmr-return":
            L.append("%s%s returned %s%s" % (ind, e.name, status_name(e.status),
                                             " (%s)" % e.text if e.text else ""))
        elif e.kind == "pool":
            if e.name.startswith("ExFree"):
                L.append("%spool: %s(%s)" % (ind, e.name, _fmt_args(e.args)))
            else:
                L.append("%spool: %s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                                   "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "kernel" and e.name == "RtlGetVersion":
            L.append("%s%s(%s) -> %s: %s" % (ind, e.name, _fmt_args(e.args), status_name(e.status),
                                            e.text))
        elif e.kind == "kernel":
            L.append("%s%s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                         "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "wsk":
            L.append("%sWSK provider dispatch: %s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                                                status_name(e.status)))
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
    bal = r.pool_balance()
    if not bal:
        L.append("  pool: nothing allocated")
    for tag, d in bal.items():
        L.append("  pool tag %s: %d allocated, %d freed, %d outstanding (%d bytes)"
                 % (tag, d["allocated"], d["freed"], d["outstanding"], d["bytes_outstanding"]))
    L.append("  DriverUnload ran: %s" % ("yes" if r.unload_ran else "no"))
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
