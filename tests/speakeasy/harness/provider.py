"""The WSK provider: its WSK_PROVIDER_DISPATCH (WskSocket .. WskGetNameInfo) and, for
connection sockets, each socket's WSK_PROVIDER_CONNECTION_DISPATCH (WskCloseSocket, WskBind,
WskConnect, WskSend, WskReceive, WskDisconnect, ...), all of them hooks, over a simulated peer
(Scenario.peer: echo, refuse, silent). A request takes the driver's IRP (irp.py) and returns
STATUS_PENDING, a provider thread completing it later, or completes it inside the call
(Scenario.complete_inline); WskCloseSocket first completes the socket's pending requests
(STATUS_CANCELLED); `disconnect_stub` answers like Wine's stub. A WSK 1.0 dispatch is 32 bytes:
reading its 1.1 members is reported.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/ :
ns-wsk-_wsk_provider_dispatch, ns-wsk-_wsk_provider_connection_dispatch, nc-wsk-pfn_wsk_socket,
nc-wsk-pfn_wsk_bind, nc-wsk-pfn_wsk_connect, nc-wsk-pfn_wsk_send, nc-wsk-pfn_wsk_receive, nc-wsk-pfn_wsk_disconnect,
nc-wsk-pfn_wsk_close_socket, and ns-wsk-_wsk_buf.
"""
import struct
import uuid
from typing import Dict, List, Optional, Tuple

from .abi import (AF_INET, IPPROTO_TCP, IPPROTO_UDP, MDL_BYTE_COUNT,
                  MDL_SOURCE_IS_NONPAGED_POOL, NPI_WSK_INTERFACE_ID, PAGE_SIZE,
                  SIZEOF_MDL, SIZEOF_WSK_DATA_INDICATION, SIZEOF_WSK_EVENT_CALLBACK_CONTROL,
                  SIZEOF_WSK_PROVIDER_DISPATCH, SO_EXCLUSIVEADDRUSE, SO_WSK_EVENT_CALLBACK,
                  SOCK_DGRAM, SOCK_STREAM, SOL_SOCKET, STATUS_CANCELLED,
                  STATUS_CONNECTION_REFUSED, STATUS_DATA_NOT_ACCEPTED,
                  STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_HANDLE,
                  STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED,
                  STATUS_PENDING, STATUS_SUCCESS, TCP_NODELAY, WSK_1_1,
                  WSK_CONNECTION_DISPATCH_FUNCS, WSK_DATAGRAM_DISPATCH_FUNCS,
                  WSK_EVENT_DISCONNECT, WSK_EVENT_RECEIVE, WSK_FLAG_CONNECTION_SOCKET,
                  WSK_FLAG_DATAGRAM_SOCKET, WSK_FLAG_LISTEN_SOCKET, WSK_LISTEN_DISPATCH_FUNCS,
                  WSK_PROVIDER_DISPATCH_FUNCS, WSK_SET_OPTION, status_name, version_name)
from .machine import hook
from .records import Binding, Event, HarnessError, IrpRec, MdlRec, SocketRec
from .scenario import CLIENT_ADDRESS, DATAGRAM_SENDER

# The socket kinds WskSocket makes: (AddressFamily, SocketType, Protocol, Flags) -> kind; the
# listening and datagram kinds only for a remote client (Scenario.peer "client").
_CONNECTION = (AF_INET, SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_CONNECTION_SOCKET)
_SERVER_KINDS = {(AF_INET, SOCK_STREAM, IPPROTO_TCP, WSK_FLAG_LISTEN_SOCKET): "listen",
                 (AF_INET, SOCK_DGRAM, IPPROTO_UDP, WSK_FLAG_DATAGRAM_SOCKET): "datagram"}
_DISPATCH_FUNCS = {"connection": WSK_CONNECTION_DISPATCH_FUNCS,
                   "listen": WSK_LISTEN_DISPATCH_FUNCS,
                   "datagram": WSK_DATAGRAM_DISPATCH_FUNCS}
# The options WskControlSocket (WskSetOption, a ULONG value, with an IRP) takes: (level, name).
_OPTIONS = {(SOL_SOCKET, SO_EXCLUSIVEADDRUSE): "SO_EXCLUSIVEADDRUSE",
            (SOL_SOCKET, 0x0004): "SO_REUSEADDR", (SOL_SOCKET, 0x0008): "SO_KEEPALIVE",
            (SOL_SOCKET, 0x0020): "SO_BROADCAST", (IPPROTO_TCP, TCP_NODELAY): "TCP_NODELAY"}


def sockaddr_in(text: str) -> bytes:
    """A SOCKADDR_IN (16 bytes) of "a.b.c.d:port": family (little-endian), port (network order),
    address, zeros."""
    host, port = text.rsplit(":", 1)
    return (struct.pack("<H", AF_INET) + struct.pack(">H", int(port))
            + bytes(int(x) for x in host.split(".")) + bytes(8))


class ProviderModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets: List[SocketRec] = []
        self.socket_by_addr: Dict[int, SocketRec] = {}
        # A pending request's addresses, by IRP number: WskAccept's (AcceptSocketContext,
        # callbacks, RemoteAddress), WskReceiveFrom's RemoteAddress.
        self.accepts: Dict[int, tuple] = {}
        self.receive_from_senders: Dict[int, int] = {}

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

    def _client_of(self, name: str, client: int):
        """The binding (or WskRegister registration) whose WSK_CLIENT a provider dispatch
        function `name` is called with, checked: a WSK_CLIENT the provider gave, and — but for
        WskFreeAddressInfo, which gives back what the provider handed out — not through a binding
        whose ClientDetachProvider has returned: "After ClientDetachProvider has been called, the
        client module should not make any more calls to any of the provider module's NPI
        functions" (NPI_CLIENT_DETACH_PROVIDER_FN; checked from the callback's return on, as a
        call that checked the binding before the detach began may still race the callback)."""
        clients = {b.wsk_client: b for b in self.bindings if b.wsk_client}
        clients.update({reg.wsk_client: reg for reg in self.wsk_regs if reg.wsk_client})
        owner = clients.get(client)
        if owner is None:
            self.violation("%s: Client 0x%x is not a WSK_CLIENT the provider gave" % (name, client))
        elif (isinstance(owner, Binding) and name != "WskFreeAddressInfo"
              and owner.state not in ("attaching", "attached", "detaching")):
            self.violation("%s called through binding 0x%x whose detach began "
                           "(ClientDetachProvider returned %s; the binding is %s): no provider NPI "
                           "call after the detach" % (name, owner.handle,
                                                      status_name(owner.detach_status),
                                                      owner.state))
        return owner

    def _wsk_not_supported(self, name: str, argv) -> int:
        """A provider dispatch function the harness does not model: STATUS_NOT_SUPPORTED (or the
        failure matrix's status), no IRP taken."""
        e = self.ev("wsk", name, {"Client": argv[0] if argv else 0}, status=STATUS_NOT_SUPPORTED)
        self._client_of(name, argv[0])
        injected = self._inject(name)
        if injected is not None:  # not modelled further (no IRP taken)
            e.status = injected
        return e.status

    @hook("harness", "WskSocketConnect", 12)
    def _h_wsk_socketconnect(self, emu, api, func, argv):
        return self._wsk_not_supported("WskSocketConnect", argv)

    @hook("harness", "WskControlClient", 8)
    def _h_wsk_controlclient(self, emu, api, func, argv):
        return self._wsk_not_supported("WskControlClient", argv)

    @hook("harness", "WskGetAddressInfo", 10)
    def _h_wsk_getaddressinfo(self, emu, api, func, argv):
        return self._wsk_not_supported("WskGetAddressInfo", argv)

    @hook("harness", "WskFreeAddressInfo", 2)
    def _h_wsk_freeaddressinfo(self, emu, api, func, argv):
        return self._wsk_not_supported("WskFreeAddressInfo", argv)

    @hook("harness", "WskGetNameInfo", 9)
    def _h_wsk_getnameinfo(self, emu, api, func, argv):
        return self._wsk_not_supported("WskGetNameInfo", argv)

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
        completion routine set. The provider passes it down its own stack (as IoCallDriver does),
        which uses up the IRP's next stack location — the one holding the driver's completion
        routine — until it completes it: that is how the driver tells an IRP a provider took from
        one a stub answered without taking."""
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
        self.consume_location(rec, op)
        rec.completed_since_use = False
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

    def _finish_gen(self, rec: Optional[IrpRec], status: int, information: int = 0):
        """_finish from inside a harness generator."""
        if rec is None:
            return status
        if not self.scenario.complete_inline:
            self._queue_completion(rec, status, information)
            return STATUS_PENDING
        yield from self._complete_gen(rec, status, information)
        return status

    @hook("harness", "WskSocket", 11)
    def _h_wsk_socket(self, emu, api, func, argv):
        if self.scenario.peer is None:  # a provider without sockets
            return self._wsk_not_supported("WskSocket", argv)
        (client, family, stype, proto, flags, sctx, disp, proc, thread, sd, irp) = argv
        family, stype, proto, flags = family & 0xFFFF, stype & 0xFFFF, proto & 0xFFFFFFFF, \
            flags & 0xFFFFFFFF
        e = self.ev("wsk", "WskSocket", {"Client": client, "AddressFamily": family,
                                         "SocketType": stype, "Protocol": proto, "Flags": flags,
                                         "Irp": irp})
        self._client_of("WskSocket", client)
        injected = self._inject("WskSocket")
        rec = self._take_irp(irp, "WskSocket", None)
        if injected is not None:
            return self._finish(e, rec, injected)
        key = (family, stype, proto, flags)
        kind = "connection" if key == _CONNECTION else (
            _SERVER_KINDS.get(key) if self.scenario.peer == "client" else None)
        if kind is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        if kind == "datagram" and not self.scenario.datagram_sockets:
            e.text = "no datagram sockets (like Wine's provider)"
            return self._finish(e, rec, STATUS_NOT_IMPLEMENTED)
        sock = self._new_socket(kind, client)
        e.args["*socket"] = sock.number
        if kind != "connection":
            e.text = "a %s socket" % ("listening" if kind == "listen" else "datagram")
        if rec is not None:
            rec.socket = sock
        return self._finish(e, rec, STATUS_SUCCESS, sock.address)

    def _socket_function(self, name: str) -> int:
        """The hooked address of a socket dispatch function (harness!Socket<name>)."""
        return self.emu.get_proc("harness", "Socket" + name)

    def _new_socket(self, kind: str, client: int) -> SocketRec:
        """A WSK_SOCKET of `kind` whose dispatch (connection, listen or datagram) is hooks."""
        funcs = _DISPATCH_FUNCS[kind]
        dispatch = self.alloc(8 * len(funcs), "wsk.%s_dispatch" % kind)
        self.wr(dispatch, b"".join(struct.pack("<Q", self._socket_function(n)) for n, _ in funcs))
        addr = self.alloc(8, "wsk.socket")
        self.wr64(addr, dispatch)
        sock = SocketRec(number=len(self.sockets) + 1, address=addr, dispatch=dispatch,
                         client=client, kind=kind)
        self.sockets.append(sock)
        self.socket_by_addr[addr] = sock
        return sock

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

    def _sock_unsupported(self, name: str, argv) -> int:
        """A socket function the harness does not model: its IRP completes with
        STATUS_NOT_SUPPORTED."""
        e, sock = self._socket_call(name, argv[0], {})
        rec = self._take_irp(argv[-1], name, sock)
        return self._finish(e, rec, STATUS_NOT_SUPPORTED)

    @hook("harness", "SocketWskControlSocket", 10, rule="WskControlSocket")
    def _h_sock_controlsocket(self, emu, api, func, argv):
        """WskControlSocket. Without a remote client (Scenario.peer "client") a function the
        harness does not model. With one: WskSetOption of a ULONG option (_OPTIONS) with an IRP,
        completed with STATUS_SUCCESS; SO_WSK_EVENT_CALLBACK (a WSK_EVENT_CALLBACK_CONTROL: NpiId
        must be NPI_WSK_INTERFACE_ID; no IRP: enabling events returns its status) turns on the
        events of an accepted socket whose WskAccept gave their callbacks. `control_stub`:
        Wine's stub (STATUS_NOT_IMPLEMENTED, the IRP untouched)."""
        if self.scenario.peer != "client":
            return self._sock_unsupported("WskControlSocket", argv)
        (sock_addr, req, code, level, in_size, in_buf, out_size, out_buf, out_ret, irp) = argv
        req, code, level = req & 0xFFFFFFFF, code & 0xFFFFFFFF, level & 0xFFFFFFFF
        args = {"RequestType": req, "ControlCode": code, "Level": level, "InputSize": in_size}
        value = None
        events = code == SO_WSK_EVENT_CALLBACK
        if events and in_size == SIZEOF_WSK_EVENT_CALLBACK_CONTROL and self.readable(in_buf, 16):
            npi_p, mask = struct.unpack("<QI4x", self.rd(in_buf, 16))
            args["NpiId"] = (str(uuid.UUID(bytes_le=self.rd(npi_p, 16)))
                             if self.readable(npi_p, 16) else "(unreadable 0x%x)" % npi_p)
            args["EventMask"] = mask
        elif in_size == 4 and self.readable(in_buf, 4):
            value = self.rd32(in_buf)
            args["Value"] = value
        args["Irp"] = irp
        e, sock = self._socket_call("WskControlSocket", sock_addr, args)
        if self.scenario.control_stub:
            # Wine's: answers at once and never touches (or completes) the IRP.
            e.status = STATUS_NOT_IMPLEMENTED
            e.text = "a stub: %s" % ("no events" if events else "the IRP is not completed")
            return STATUS_NOT_IMPLEMENTED
        if events:
            e.status = self._enable_events(e, sock, req, level, irp, args)
            return e.status
        rec = self._take_irp(irp, "WskControlSocket", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        name = _OPTIONS.get((level, code))
        if req != WSK_SET_OPTION or name is None or value is None:
            return self._finish(e, rec, STATUS_NOT_SUPPORTED)
        e.text = name
        if name in ("SO_EXCLUSIVEADDRUSE", "SO_REUSEADDR") and sock.state != "open":
            self.violation("WskControlSocket: %s on socket %d after its WskBind: an address "
                           "option takes effect only before the bind" % (name, sock.number))
        sock.options.append((level, code, value))
        return self._finish(e, rec, STATUS_SUCCESS, 0)

    def _enable_events(self, e: Event, sock: Optional[SocketRec], req: int, level: int,
                       irp: int, args: dict) -> int:
        """SO_WSK_EVENT_CALLBACK: its status (returned by the call: no IRP)."""
        if irp:
            self.violation("WskControlSocket(SO_WSK_EVENT_CALLBACK) with IRP 0x%x: enabling "
                           "event callbacks takes no IRP (Irp must be NULL)" % irp)
            return STATUS_INVALID_PARAMETER
        if sock is None:
            return STATUS_INVALID_HANDLE
        mask = args.get("EventMask")
        if req != WSK_SET_OPTION or level != SOL_SOCKET or mask is None:
            self.violation("WskControlSocket(SO_WSK_EVENT_CALLBACK) on socket %d: RequestType %d, "
                           "Level 0x%x, InputSize %d (expected WskSetOption, SOL_SOCKET and a "
                           "16-byte WSK_EVENT_CALLBACK_CONTROL)"
                           % (sock.number, req, level, args["InputSize"]))
            return STATUS_INVALID_PARAMETER
        if args["NpiId"] != str(NPI_WSK_INTERFACE_ID):
            self.violation("SO_WSK_EVENT_CALLBACK on socket %d: NpiId %s, not NPI_WSK_INTERFACE_ID"
                           % (sock.number, args["NpiId"]))
            return STATUS_INVALID_PARAMETER
        wanted = {WSK_EVENT_RECEIVE: sock.receive_event, WSK_EVENT_DISCONNECT:
                  sock.disconnect_event}
        for bit, fn in wanted.items():
            if mask & bit and not fn:
                self.violation("SO_WSK_EVENT_CALLBACK on socket %d: event 0x%x asked for, but its "
                               "WSK_CLIENT_CONNECTION_DISPATCH has no such callback"
                               % (sock.number, bit))
                return STATUS_INVALID_PARAMETER
        if mask & ~(WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT):
            return STATUS_NOT_SUPPORTED
        sock.events_mask |= mask
        e.text = "events on: returns its status, no IRP"
        return STATUS_SUCCESS

    @hook("harness", "SocketWskGetLocalAddress", 3, rule="WskGetLocalAddress")
    def _h_sock_getlocaladdress(self, emu, api, func, argv):
        return self._sock_unsupported("WskGetLocalAddress", argv)

    @hook("harness", "SocketWskGetRemoteAddress", 3, rule="WskGetRemoteAddress")
    def _h_sock_getremoteaddress(self, emu, api, func, argv):
        return self._sock_unsupported("WskGetRemoteAddress", argv)

    @hook("harness", "SocketWskBind", 4, rule="WskBind")
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
        # A listening socket listens once bound (WSK has no separate listen).
        sock.state = "listening" if sock.kind == "listen" else "bound"
        sock.local = e.args["LocalAddress"]
        return self._finish(e, rec, STATUS_SUCCESS)

    @hook("harness", "SocketWskConnect", 4, rule="WskConnect")
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
        """Data from the peer meets a pending receive: its completion is queued (after the
        remote client's close, with nothing left: 0 bytes, the end of the stream)."""
        if not sock.to_driver and not sock.peer_closed:
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
            elif data:
                self.wr(va, data)
        return before

    @hook("harness", "SocketWskSend", 4, rule="WskSend")
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

    @hook("harness", "SocketWskReceive", 4, rule="WskReceive")
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
        if sock.peer_closed:  # the remote client closed its side: the end of the stream
            return self._finish(e, rec, STATUS_SUCCESS, 0)
        e.status = STATUS_PENDING  # until data comes, a cancel, or the close
        return STATUS_PENDING

    @hook("harness", "SocketWskDisconnect", 4, rule="WskDisconnect")
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

    @hook("harness", "SocketWskCloseSocket", 2, rule="WskCloseSocket")
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

    # The server side: listening sockets' accepts, datagram sockets, and the remote client ----

    @hook("harness", "SocketWskAccept", 7, rule="WskAccept")
    def _h_sock_accept(self, emu, api, func, argv):
        """WskAccept(ListenSocket, Flags, AcceptSocketContext, AcceptSocketDispatch,
        LocalAddress, RemoteAddress, Irp): pends until the remote client connects (Scenario.client
        "connect"), a cancel, or the listening socket's close."""
        sock_addr, flags, ctx, disp, local, remote, irp = argv
        e, sock = self._socket_call("WskAccept", sock_addr, {
            "Flags": flags & 0xFFFFFFFF, "AcceptSocketContext": ctx,
            "AcceptSocketDispatch": disp, "LocalAddress": local, "RemoteAddress": remote,
            "Irp": irp})
        injected = self._inject("WskAccept")
        rec = self._take_irp(irp, "WskAccept", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        if sock.kind != "listen" or sock.state != "listening":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        callbacks = (0, 0, 0)
        if disp:
            if not self.readable(disp, 24):
                self.violation("WskAccept: AcceptSocketDispatch 0x%x not readable" % disp)
                return self._finish(e, rec, STATUS_INVALID_PARAMETER)
            callbacks = struct.unpack("<QQQ", self.rd(disp, 24))
            e.args.update({"*WskReceiveEvent": callbacks[0], "*WskDisconnectEvent": callbacks[1],
                           "*WskSendBacklogEvent": callbacks[2]})
            for name, fn in zip(("WskReceiveEvent", "WskDisconnectEvent",
                                 "WskSendBacklogEvent"), callbacks):
                if fn and not self.in_image(fn):
                    self.violation("WskAccept: the dispatch's %s 0x%x is not in the image"
                                   % (name, fn))
        if rec is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        self.accepts[rec.number] = (ctx, callbacks, remote)
        e.status = STATUS_PENDING  # until a client connects, a cancel, or the close
        return STATUS_PENDING

    @hook("harness", "SocketWskInspectComplete", 4, rule="WskInspectComplete")
    def _h_sock_inspectcomplete(self, emu, api, func, argv):
        return self._sock_unsupported("WskInspectComplete", argv)

    @hook("harness", "SocketWskRelease", 2, rule="WskRelease")
    def _h_sock_release(self, emu, api, func, argv):
        e, _ = self._socket_call("WskRelease", argv[0], {"DatagramIndication": argv[1]})
        self.violation("WskRelease: no datagram indication was ever given to the driver")
        e.status = STATUS_INVALID_PARAMETER
        return e.status

    @hook("harness", "SocketWskSendTo", 7, rule="WskSendTo")
    def _h_sock_sendto(self, emu, api, func, argv):
        """WskSendTo(Socket, Buffer, Flags, RemoteAddress, ControlInfoLength, ControlInfo, Irp):
        the datagram goes to its address (recorded in SocketRec.datagrams_sent)."""
        sock_addr, buf, flags, remote, ctl_len, ctl_info, irp = argv
        e, sock = self._socket_call("WskSendTo", sock_addr, {
            "Buffer": buf, "Flags": flags & 0xFFFFFFFF, "RemoteAddress": self._sockaddr(remote),
            "ControlInfoLength": ctl_len & 0xFFFFFFFF, "Irp": irp})
        injected = self._inject("WskSendTo")
        rec = self._take_irp(irp, "WskSendTo", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        wb = self._wsk_buf(buf, "WskSendTo")
        if wb is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        va, length, _ = wb
        e.args["Length"] = length
        if sock.kind != "datagram" or sock.state != "bound":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        data = self.rd(va, length) if length else b""
        e.args["*data"] = data
        sock.datagrams_sent.append((e.args["RemoteAddress"], data))
        return self._finish(e, rec, STATUS_SUCCESS, length)

    @hook("harness", "SocketWskReceiveFrom", 8, rule="WskReceiveFrom")
    def _h_sock_receivefrom(self, emu, api, func, argv):
        """WskReceiveFrom(Socket, Buffer, Flags, RemoteAddress, ControlLength, ControlInfo,
        ControlFlags, Irp): pends until a datagram comes (Scenario.client "datagram"); its sender
        is written to RemoteAddress."""
        sock_addr, buf, flags, remote, ctl_len, ctl_info, ctl_flags, irp = argv
        e, sock = self._socket_call("WskReceiveFrom", sock_addr, {
            "Buffer": buf, "Flags": flags & 0xFFFFFFFF, "RemoteAddress": remote,
            "ControlLength": ctl_len, "ControlInfo": ctl_info, "ControlFlags": ctl_flags,
            "Irp": irp})
        injected = self._inject("WskReceiveFrom")
        rec = self._take_irp(irp, "WskReceiveFrom", sock)
        if sock is None:
            return self._finish(e, rec, STATUS_INVALID_HANDLE)
        if injected is not None:
            return self._finish(e, rec, injected)
        wb = self._wsk_buf(buf, "WskReceiveFrom")
        if wb is None:
            return self._finish(e, rec, STATUS_INVALID_PARAMETER)
        e.args["Length"] = wb[1]
        if sock.kind != "datagram" or sock.state != "bound":
            return self._finish(e, rec, STATUS_INVALID_DEVICE_STATE)
        if rec is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        rec.buffer = wb
        self.receive_from_senders[rec.number] = remote
        if sock.datagrams_to_driver:
            sender, data = sock.datagrams_to_driver.pop(0)
            n = min(len(data), wb[1])
            return self._finish(e, rec, STATUS_SUCCESS, n,
                                self._datagram_copy(rec, data[:n], sender))
        e.status = STATUS_PENDING  # until a datagram comes, a cancel, or the close
        return STATUS_PENDING

    def _datagram_copy(self, rec: IrpRec, data: bytes, sender: str):
        """What completing a WskReceiveFrom does first: the datagram into the driver's buffer,
        its sender into RemoteAddress."""
        receive = self._receive_copy(rec, rec.buffer[0], data)
        remote = self.receive_from_senders.pop(rec.number, 0)

        def before():
            receive()
            if remote:
                self.wr(remote, sockaddr_in(sender))
        return before

    def _pending(self, sock: SocketRec, op: str) -> Optional[IrpRec]:
        """The socket's first pending `op` request not completed already."""
        for rec in self.irps:
            if (rec.state == "pending" and rec.socket is sock and rec.op == op
                    and not any(j[0] is rec for j in self.completion_queue)):
                return rec
        return None

    def _client_socket(self, what: str) -> Optional[SocketRec]:
        """The connection the remote client has: the last accepted socket, not closed."""
        for sock in reversed(self.sockets):
            if sock.accepted_by is not None and sock.state != "closed":
                return sock
        self.violation("the remote client %s: it has no open connection to the driver" % what)
        return None

    def _client_script_gen(self):
        """Generator (the harness's run after DriverEntry): the remote client's steps
        (Scenario.client), each followed by a settle."""
        for step in self.scenario.client:
            action = step[0]
            if action == "connect":
                self._client_connect()
            elif action == "send":
                yield from self._client_send_gen(step[1])
            elif action == "close":
                yield from self._client_close_gen()
            elif action == "datagram":
                self._client_datagram(step[1])
            else:
                raise HarnessError("unknown client step %r" % (step,))
            yield from self._settle()

    def _client_connect(self):
        """The client connects: a pending WskAccept completes with the new connection socket
        (its AcceptSocketContext and callbacks; the client's address in RemoteAddress)."""
        listening = [s for s in self.sockets if s.kind == "listen" and s.state == "listening"]
        rec = next((r for r in (self._pending(s, "WskAccept") for s in listening) if r), None)
        if rec is None:
            self.violation("the remote client connects to %s: no WskAccept pending on a listening "
                           "socket" % (", ".join("socket %d (%s)" % (s.number, s.local)
                                                 for s in listening) or "no listening socket"))
            return
        ctx, callbacks, remote = self.accepts.pop(rec.number)
        sock = self._new_socket("connection", rec.socket.client)
        sock.state = "connected"
        sock.remote = CLIENT_ADDRESS
        sock.local = rec.socket.local
        sock.accepted_by = rec.socket.number
        sock.context = ctx
        sock.receive_event, sock.disconnect_event, sock.send_backlog_event = callbacks
        self.ev("provider", "client connects",
                text="the remote client %s connects to socket %d (%s): its WskAccept (IRP %d) "
                     "completes with socket %d" % (CLIENT_ADDRESS, rec.socket.number,
                                                   rec.socket.local, rec.number, sock.number))
        if remote:
            self.wr(remote, sockaddr_in(CLIENT_ADDRESS))
        self._queue_completion(rec, STATUS_SUCCESS, sock.address)

    def _indication(self, data: bytes) -> Tuple[int, int, int]:
        """A WSK_DATA_INDICATION list of one entry over one MDL (a real x64 MDL of non-paged
        pool, MappedSystemVa at the bytes), and a BytesAccepted: (list, its bytes, BytesAccepted
        address)."""
        buf = self.alloc(len(data), "wsk.indicated_bytes")
        self.wr(buf, data)
        mdl = self.alloc(SIZEOF_MDL, "wsk.indication_mdl")
        self.wr(mdl, struct.pack("<QhH4xQQQII", 0, SIZEOF_MDL, MDL_SOURCE_IS_NONPAGED_POOL, 0,
                                 buf, buf & ~(PAGE_SIZE - 1), len(data), buf & (PAGE_SIZE - 1)))
        ind = self.alloc(SIZEOF_WSK_DATA_INDICATION, "wsk.data_indication")
        self.wr(ind, struct.pack("<QQI4xQ", 0, mdl, 0, len(data)))
        accepted = self.alloc(8, "wsk.bytes_accepted")
        self.wr64(accepted, len(data))
        return ind, buf, accepted

    def _client_send_gen(self, data: bytes):
        """The client sends `data`: with the socket's receive events on, the provider indicates
        it (WskReceiveEvent at the IRQL of its '@' line: DISPATCH_LEVEL); what the driver does not
        take (STATUS_DATA_NOT_ACCEPTED, or BytesAccepted below the count) waits for a
        WskReceive, as does everything without events."""
        sock = self._client_socket("sends")
        if sock is None:
            return
        self.ev("provider", "client sends", text="the remote client sends %d bytes on socket %d: "
                "%r" % (len(data), sock.number, data))
        if not (sock.events_mask & WSK_EVENT_RECEIVE and sock.receive_event):
            sock.to_driver += data
            self._deliver(sock)
            return
        ind, buf, accepted = self._indication(data)
        st = yield from self.call(sock.receive_event, [sock.context, 0, ind, len(data), accepted],
                                  "WskReceiveEvent", kind="wsk-callback",
                                  arg_names=("SocketContext", "Flags", "DataIndication",
                                             "BytesIndicated", "BytesAccepted"))
        if st == STATUS_SUCCESS:
            taken = self.rd64(accepted)
            if taken > len(data):
                self.violation("WskReceiveEvent: BytesAccepted %d is more than the %d bytes "
                               "indicated" % (taken, len(data)))
                taken = len(data)
        elif st == STATUS_DATA_NOT_ACCEPTED:
            taken = 0
        else:
            self.violation("WskReceiveEvent returned %s (STATUS_SUCCESS or "
                           "STATUS_DATA_NOT_ACCEPTED expected)" % status_name(st))
            taken = 0
        # The provider's buffers are its own again: a driver that kept a pointer reads garbage.
        self.wr(buf, b"\xdd" * len(data))
        sock.to_driver += data[taken:]
        self._deliver(sock)

    def _client_close_gen(self):
        """The client closes its side gracefully: WskDisconnectEvent(SocketContext, 0) when the
        socket's disconnect event is on, and the end of the stream (a receive gets 0 bytes)."""
        sock = self._client_socket("closes")
        if sock is None:
            return
        sock.peer_closed = True
        self.ev("provider", "client closes", text="the remote client closes socket %d (graceful)"
                % sock.number)
        if sock.events_mask & WSK_EVENT_DISCONNECT and sock.disconnect_event:
            st = yield from self.call(sock.disconnect_event, [sock.context, 0],
                                      "WskDisconnectEvent", kind="wsk-callback",
                                      arg_names=("SocketContext", "Flags"))
            if st != STATUS_SUCCESS:
                self.violation("WskDisconnectEvent returned %s (STATUS_SUCCESS expected)"
                               % status_name(st))
        self._deliver(sock)

    def _client_datagram(self, data: bytes):
        """A datagram from DATAGRAM_SENDER to the driver's bound datagram socket: a pending
        WskReceiveFrom completes with it (else the next one takes it)."""
        bound = [s for s in self.sockets if s.kind == "datagram" and s.state == "bound"]
        if not bound:
            self.violation("a datagram from %s: the driver has no bound datagram socket"
                           % DATAGRAM_SENDER)
            return
        sock = bound[0]
        self.ev("provider", "datagram", text="%s sends a datagram of %d bytes to socket %d (%s): "
                "%r" % (DATAGRAM_SENDER, len(data), sock.number, sock.local, data))
        rec = self._pending(sock, "WskReceiveFrom")
        if rec is None:
            sock.datagrams_to_driver.append((DATAGRAM_SENDER, data))
            return
        n = min(len(data), rec.buffer[1])
        self._queue_completion(rec, STATUS_SUCCESS, n,
                               self._datagram_copy(rec, data[:n], DATAGRAM_SENDER))

    def _sockets_left(self, when: str):
        for sock in self.sockets:
            if sock.state != "closed":
                self.violation("socket %d (WskSocket) not closed at %s (WskCloseSocket)"
                               % (sock.number, when))
