"""What the harness records of a run: the events in order (Event), the kernel objects it models
(pool allocations, NMR bindings, device objects, work items, events, WskRegister registrations,
IRPs, MDLs, sockets), the emulated threads and what they wait for, and the Result the tests read.
Also the two requests a harness generator yields to the machine: Call (run a driver function)
and Block (make the current thread wait).
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from driver_profiles import DriverProfile

from .abi import pool_tag, status_name, tag_name
from .scenario import Provider, Scenario


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
    irql: int = 0  # the thread's IRQL when it happened

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
    # The driver callback (or run) IoAllocateWorkItem, and the last IoQueueWorkItem, came from.
    allocated_in: str = ""
    queued_in: str = ""


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
    took it: the provider's until it completes it), sent (IofCallDriver sent it to a device of
    the driver: its dispatch routine's, which completes it), completing (its completion routine
    runs), freed. Who holds it uses a stack location (irp.py: consume_location)."""

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
    completed_since_use: bool = False  # completed since it was last taken or sent
    cancels: int = 0
    reuses: int = 0  # IoReuseIrp calls
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
    # The server side (Scenario.peer "client"): "connection", "listen" (state "listening" once
    # bound) or "datagram"; an accepted socket's listening socket, AcceptSocketContext and
    # WSK_CLIENT_CONNECTION_DISPATCH callbacks; the events SO_WSK_EVENT_CALLBACK turned on; the
    # options set ((level, name, value)); the client's close seen; the datagrams the driver sent
    # ((to, bytes)) and those the senders sent it that no receive took yet ((from, bytes)).
    kind: str = "connection"
    local: str = ""
    accepted_by: Optional[int] = None
    context: int = 0
    receive_event: int = 0
    disconnect_event: int = 0
    send_backlog_event: int = 0
    events_mask: int = 0
    options: List[tuple] = field(default_factory=list)
    peer_closed: bool = False
    datagrams_sent: List[tuple] = field(default_factory=list)
    datagrams_to_driver: List[tuple] = field(default_factory=list)


@dataclass
class Wait:
    """What a blocked thread waits for."""

    kind: str  # 'event' | 'objects' | 'provider' | 'settle' | 'time' | 'dpcs'
    what: str
    deadline: Optional[int] = None  # emulated time; None: no timeout
    event: int = 0
    # 'objects': the dispatcher objects waited on (events, thread objects: sync.py), and whether
    # all of them must be signalled (WaitAll) or any one (WaitAny).
    objects: Tuple[int, ...] = ()
    wait_all: bool = False
    registration: Optional[WskRegistration] = None
    since: int = 0  # order of blocking (FIFO among waiters)
    timed_out: bool = False


@dataclass
class Thread:
    """A thread of the emulated system: a Speakeasy run ('run'), a work item ('worker'), a
    provider completion ('provider'), a DPC ('dpc') or a system thread the driver created
    ('system': ps.py)."""

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
    irql: int = 0  # its current IRQL (irql.py)

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
    # DriverUnload returned with a device object of the driver left: the image stayed mapped
    # until the system's shutdown (machine.py).
    image_kept: bool = False
    irps: List[IrpRec] = field(default_factory=list)
    mdls: List[MdlRec] = field(default_factory=list)
    sockets: List[SocketRec] = field(default_factory=list)
    mdl_requests: List[int] = field(default_factory=list)
    # The work item rule's breaks the run allowed (io.py: long_work_items_allowed).
    long_work_items: List[str] = field(default_factory=list)
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
    def task_allocations(self) -> List[Allocation]:
        """The library's tasks (crates/wsk-client/src/kernel/task.rs: the binding tag with 'T' last),
        one per task spawned, each with a work item of its own."""
        return self._tagged(self.profile.binding_tag[:3] + "T")

    @property
    def connection_allocations(self) -> List[Allocation]:
        """The connection's blocks (the profile's connection tag; none for wsk_attach)."""
        return self._tagged(self.profile.connection_tag)

    @property
    def parameters_allocations(self) -> List[Allocation]:
        """The connection's parameters block (the profile's parameters tag), when it has any."""
        return self._tagged(self.profile.parameters_tag)

    @property
    def request_allocations(self) -> List[Allocation]:
        """The library's request contexts (crates/wsk-client/src/kernel/irp.rs: the binding tag with
        'I' last), one per IRP it sends."""
        return self._tagged(self.profile.binding_tag[:3] + "I")

    @property
    def buffer_allocations(self) -> List[Allocation]:
        """The blocks an IoAllocateMdl was asked to describe (crates/wsk-client/src/net/buffer.rs;
        their tag, the binding tag with 'D' last, is also the echo driver's own context's)."""
        vas = set(self.mdl_requests)
        return [a for a in self.allocations if a.address in vas]

    @property
    def own_allocations(self) -> List[Allocation]:
        """Everything else the driver allocated (its own context, for wsk_echo)."""
        known = {pool_tag(t) for t in (self.profile.binding_tag, self.profile.work_item_tag,
                                       self.profile.connection_tag,
                                       self.profile.parameters_tag,
                                       self.profile.binding_tag[:3] + "I",
                                       self.profile.binding_tag[:3] + "T") if t}
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
