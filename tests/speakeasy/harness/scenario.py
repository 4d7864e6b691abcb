"""What the emulated system looks like and does, from driver load to unload: the WSK providers
(as NMR presents them, or the WSK subsystem behind WskCaptureProviderNPI), the kernel's answers
(pool, device objects, registry, Windows version), the peer at the other end of a socket, the
failure to inject (tests/failure-matrix.txt), and the named scenarios run_driver.py lists.

The answers a provider may give are those of NmrClientAttachProvider
and WskCaptureProviderNPI, https://learn.microsoft.com/windows-hardware/drivers/ddi/ :
netioddk/nf-netioddk-nmrclientattachprovider, wsk/nf-wsk-wskcaptureprovidernpi.
"""
import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

from driver_profiles import DriverProfile

from .abi import (BACKENDS, IRQL_LEVELS, NPI_WSK_INTERFACE_ID, NPI_OTHER_INTERFACE_ID, PEERS,
                  REG_DWORD, REG_SZ, STATUS_INSUFFICIENT_RESOURCES, STATUS_NOINTERFACE, STATUS_SUCCESS,
                  WSK_1_0, WSK_1_1, status_name, version_name)


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
    detach_irql: the IRQL at which NMR calls ClientDetachProvider and ClientCleanupBindingContext
      ("PASSIVE_LEVEL", or "DISPATCH_LEVEL": their pages allow IRQL <= DISPATCH_LEVEL, and
      tests/irql-rules.txt lists both); every other callback runs at its table's default.
    client: with peer "client", the remote client's script, run after DriverEntry (once its
      work items settled, each step followed by a settle), before `sc stop`: ("connect",) (the
      driver's pending WskAccept completes with a new connection socket, its peer CLIENT_ADDRESS),
      ("send", bytes) (indicated to the accepted socket's WskReceiveEvent at DISPATCH_LEVEL when
      the driver turned receive events on, else queued for its WskReceive), ("close",) (the
      client's graceful close: WskDisconnectEvent(SocketContext, 0), else a WskReceive completes
      with 0 bytes), ("datagram", bytes) (the driver's pending WskReceiveFrom completes with it,
      from DATAGRAM_SENDER). What the driver sends is recorded (SocketRec.received_by_peer,
      SocketRec.datagrams_sent), never echoed back.
    control_stub: WskControlSocket answers STATUS_NOT_IMPLEMENTED without taking its IRP (Wine's
      stub; for SO_WSK_EVENT_CALLBACK, which has no IRP, it just returns that status).
    datagram_sockets: WskSocket makes datagram sockets (False: it completes the IRP of a
      datagram WskSocket with STATUS_NOT_IMPLEMENTED, like Wine's provider).
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
    detach_irql: str = "PASSIVE_LEVEL"
    client: Tuple[tuple, ...] = ()
    control_stub: bool = False
    datagram_sockets: bool = True

    def __post_init__(self):
        if self.peer not in PEERS:
            raise ValueError("%s: unknown peer %r (known: %s)" % (self.name, self.peer, PEERS))
        if self.detach_irql not in IRQL_LEVELS:
            raise ValueError("%s: detach_irql %r is not an IRQL (%s)"
                             % (self.name, self.detach_irql, ", ".join(IRQL_LEVELS)))

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


# The echo server's parameters and its remote clients in the server scenarios
# (examples/wsk-echo-server/src/parameters.rs).
SERVER_PORT = 7
SERVER_DRIVERS = ("wsk_echo_server", "wsk_echo_server_wskregister")
CLIENT_ADDRESS = "192.0.2.10:49152"
DATAGRAM_SENDER = "192.0.2.20:40000"
SERVER_DATA = b"hello, echo server"
SERVER_DATAGRAM = b"ping over udp"


def server_parameters(port: int = SERVER_PORT, max_connections: Optional[int] = None,
                      address: Optional[str] = None) -> Dict[str, Dict[str, Tuple[int, bytes]]]:
    """The service key's Parameters subkey the echo server reads: Port, and optionally
    MaxConnections and Address."""
    values = {"Port": reg_dword(port)}
    if max_connections is not None:
        values["MaxConnections"] = reg_dword(max_connections)
    if address is not None:
        values["Address"] = reg_sz(address)
    return {"Parameters": values}


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
    "detach-at-dispatch": Scenario(
        name="detach-at-dispatch",
        description="as 'default', but NMR calls ClientDetachProvider and "
                    "ClientCleanupBindingContext at DISPATCH_LEVEL during the unload",
        detach_irql="DISPATCH_LEVEL",
        backends=("nmr",)),
    "provider-detach-at-dispatch": Scenario(
        name="provider-detach-at-dispatch",
        description="as 'provider-detach', but NMR calls ClientDetachProvider and "
                    "ClientCleanupBindingContext at DISPATCH_LEVEL",
        after_entry=[("deregister", "WSK provider")], detach_irql="DISPATCH_LEVEL",
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
                    "captured by the capture task at its try of t = 3 s; sc stop at 5 s",
        providers=[], wsk_ready_after_ms=2500, unload_after_ms=5000,
        backends=("wskregister",)),
    "wsk-never": Scenario(
        name="wsk-never",
        description="the WSK subsystem never becomes ready: the capture task tries every "
                    "second until the unload (sc stop at 3.5 s) cancels it",
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
    "server": Scenario(
        name="server",
        description="Parameters say Port %d: the server listens (SO_EXCLUSIVEADDRUSE, bind, "
                    "accept with receive events); a client connects, sends %d bytes (indicated "
                    "to WskReceiveEvent at DISPATCH_LEVEL, echoed with WskSend) and closes "
                    "(WskDisconnectEvent); a datagram is echoed to its sender; sc stop 1 s later"
                    % (SERVER_PORT, len(SERVER_DATA)),
        registry=server_parameters(), peer="client", unload_after_ms=1000,
        client=(("connect",), ("send", SERVER_DATA), ("close",),
                ("datagram", SERVER_DATAGRAM)),
        drivers=SERVER_DRIVERS),
    "server-wine-like": Scenario(
        name="server-wine-like",
        description="as 'server', with a provider like Wine's: WskControlSocket is a stub "
                    "(STATUS_NOT_IMPLEMENTED: no options, no receive events), no datagram "
                    "sockets, WskDisconnect a stub, IoCancelIrp does nothing; the connection is "
                    "served with WskReceive IRPs",
        registry=server_parameters(), peer="client", unload_after_ms=1000,
        client=(("connect",), ("send", SERVER_DATA), ("close",)),
        control_stub=True, datagram_sockets=False, disconnect_stub=True,
        peer_ignores_cancel=True, drivers=SERVER_DRIVERS),
}
