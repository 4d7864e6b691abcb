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
from typing import Dict, List, Optional, Tuple

from .abi import (AF_INET, IPPROTO_TCP, MDL_BYTE_COUNT, SIZEOF_WSK_PROVIDER_CONNECTION_DISPATCH,
                  SIZEOF_WSK_PROVIDER_DISPATCH, SOCK_STREAM, STATUS_CANCELLED,
                  STATUS_CONNECTION_REFUSED, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_HANDLE,
                  STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED, STATUS_NOT_SUPPORTED,
                  STATUS_PENDING, STATUS_SUCCESS, WSK_1_1, WSK_CONNECTION_DISPATCH_FUNCS,
                  WSK_FLAG_CONNECTION_SOCKET, WSK_PROVIDER_DISPATCH_FUNCS, status_name,
                  version_name)
from .machine import hook
from .records import Binding, Event, IrpRec, MdlRec, SocketRec


class ProviderModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sockets: List[SocketRec] = []
        self.socket_by_addr: Dict[int, SocketRec] = {}

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

    def _sock_unsupported(self, name: str, argv) -> int:
        """A socket function the harness does not model: its IRP completes with
        STATUS_NOT_SUPPORTED."""
        e, sock = self._socket_call(name, argv[0], {})
        rec = self._take_irp(argv[-1], name, sock)
        return self._finish(e, rec, STATUS_NOT_SUPPORTED)

    @hook("harness", "SocketWskControlSocket", 10, rule="WskControlSocket")
    def _h_sock_controlsocket(self, emu, api, func, argv):
        return self._sock_unsupported("WskControlSocket", argv)

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
        sock.state = "bound"
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

    def _sockets_left(self, when: str):
        for sock in self.sockets:
            if sock.state != "closed":
                self.violation("socket %d (WskSocket) not closed at %s (WskCloseSocket)"
                               % (sock.number, when))
