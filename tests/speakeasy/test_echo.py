"""Section 14 (images with a connection): the echo exchange over the provider's sockets — IRPs,
completion routines, MDLs — with an echoing, refusing, silent or trickling peer, a Wine-like
provider, failed allocations, requests completed inside the call, and the harness's own reports
of a receive that never ends, a WSK_BUF beyond its MDL and an IRP a provider keeps.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""
import struct

import harness
from harness import STATUS_SUCCESS, TICKS_PER_MS
from expected import (CLOSE_ITEM, CONN_TAG, NMR, OPEN_ITEM, PROFILE, S, assert_clean,
                      connection_only, event_index, log_index)


# ---------------------------------------------------------------------------------------------
# 14. The echo exchange over the provider's sockets (IRPs, completion routines, MDLs)
# ---------------------------------------------------------------------------------------------
ECHO_BYTES = harness.ECHO_MESSAGE.encode("utf-8")
ECHO_OK = "echo ok, %d bytes" % len(ECHO_BYTES)
STATUS_CANCELLED = harness.STATUS_CANCELLED
STATUS_CONNECTION_REFUSED = harness.STATUS_CONNECTION_REFUSED
STATUS_NOT_IMPLEMENTED = harness.STATUS_NOT_IMPLEMENTED
STATUS_MORE_PROCESSING_REQUIRED = harness.STATUS_MORE_PROCESSING_REQUIRED
# The thread of the connection's task's work item, on which the exchange runs.
OPEN_THREAD = "work item %d" % OPEN_ITEM


def socket_ops(r):
    """The driver's calls of the provider's socket functions ("WskSend -> STATUS_PENDING"), the
    provider's completions of their IRPs ("  WskSend: STATUS_SUCCESS, 11") and the driver's
    IoCancelIrp calls ("IoCancelIrp(WskReceive) -> TRUE"), in order."""
    ops = {rec.number: rec.op for rec in r.irps}
    out = []
    for e in r.events:
        if e.kind == "wsk":
            out.append("%s -> %s" % (e.name, S(e.status)))
        elif e.kind == "io" and e.name == "IoCompleteRequest":
            out.append("  %s: %s, %d" % (e.args["op"], S(e.args["Status"]), e.args["Information"]))
        elif e.kind == "io" and e.name == "IoCancelIrp":
            out.append("IoCancelIrp(%s) -> %s" % (ops.get(e.args.get("*irp"), "?"),
                                                   {1: "TRUE", 0: "FALSE"}.get(e.status)))
    return out


def pended(op, status=STATUS_SUCCESS, information=0):
    """A socket call that returned STATUS_PENDING, then its completion on a provider thread."""
    return ["%s -> STATUS_PENDING" % op, "  %s: %s, %d" % (op, S(status), information)]


CONNECT = [*pended("WskSocket", information=-1), *pended("WskBind"), *pended("WskConnect")]
EXCHANGE = [*CONNECT, *pended("WskSend", information=len(ECHO_BYTES)),
            *pended("WskReceive", information=len(ECHO_BYTES))]


# An IRP no provider took, sent by the library to its own device (irp.rs send_to_self), as the
# harness names it in a completion.
SENT_TO_SELF = "IRP_MJ_INTERNAL_DEVICE_CONTROL (IofCallDriver to the driver's device)"


def with_socket(r, expected):
    """`expected`, with the WskSocket completion's Information (the socket) filled in."""
    out = list(expected)
    for i, line in enumerate(out):
        if line.startswith("  WskSocket: STATUS_SUCCESS, -1"):
            out[i] = "  WskSocket: STATUS_SUCCESS, %d" % r.sockets[0].address
    return out


def echo_results(r):
    """The exchange's result lines (`echo ok, N bytes` / `echo failed: ...`)."""
    return [t.rstrip("\n")[len(PROFILE.prefix):] for t in r.logs
            if t.startswith(PROFILE.prefix + "echo ")]


def assert_clean_exchange(r):
    """assert_clean, plus: every use of an IRP (its first, and each after an IoReuseIrp: a
    socket's kept requests) gave it a completion routine (IoSetCompletionRoutineEx on the
    driver's device object, invoked on success, error and cancel) before a WSK function got it,
    and was completed once (or never sent); every IRP given back
    (STATUS_MORE_PROCESSING_REQUIRED) and freed once; every MDL built and freed; every socket
    closed; one request context per IoAllocateIrp; the only blocks besides the usual ones are
    request contexts and buffers."""
    assert_clean(r)
    device = r.devices[0].address
    sets = [e for e in r.events if e.kind == "io" and e.name == "IoSetCompletionRoutineEx"]
    allocs = [e for e in r.events if e.kind == "io" and e.name == "IoAllocateIrp"]
    assert all(e.args["StackSize"] == 1 and e.args["ChargeQuota"] == 0 for e in allocs), allocs
    assert len(r.request_allocations) == len(allocs)
    for rec in r.irps:
        # Each use completed once when sent, or once by the driver itself when never sent (a
        # request dropped unused, or answered without its IRP being completed).
        uses = rec.reuses + 1
        assert rec.state == "freed" and rec.completions == uses and rec.uses <= uses, rec
        irp_sets = [e for e in sets if e.args["*irp"] == rec.number]
        assert len(irp_sets) == uses, (rec, irp_sets)
        for s in irp_sets:
            assert s.args["DeviceObject"] == device, s
            assert (s.args["InvokeOnSuccess"], s.args["InvokeOnError"],
                    s.args["InvokeOnCancel"]) == (1, 1, 1), s
            assert r.in_image(s.args["CompletionRoutine"]), s
    routines = [e for e in r.events if e.kind == "io-return" and e.name == "CompletionRoutine"]
    assert len(routines) == sum(rec.completions for rec in r.irps)
    assert all(e.status == STATUS_MORE_PROCESSING_REQUIRED for e in routines), routines
    for m in r.mdls:
        assert m.built and m.freed_seq is not None, m
    assert all(sock.state == "closed" for sock in r.sockets), r.sockets
    for a in r.request_allocations + r.buffer_allocations:
        assert a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag, a


@connection_only
def test_echo_exchange_then_disconnect_and_close_at_unload(run):
    """Parameters Host=127.0.0.1 Port=7 Message="hello, echo", an echoing peer: socket, bind to
    0.0.0.0:0, connect to 127.0.0.1:7, send the message, receive it back — each request
    STATUS_PENDING, completed on a provider thread, each completion waking the connection's task
    — `echo ok, 11 bytes`, once; the task keeps the socket until the unload cancels it, then
    disconnects (within its grace) and closes it, before the deregistration; everything
    balanced."""
    r = run("echo")
    assert_clean_exchange(r)
    assert echo_results(r) == [ECHO_OK]
    assert socket_ops(r) == with_socket(r, [*EXCHANGE, *pended("WskDisconnect"),
                                            *pended("WskCloseSocket")])
    (sock,) = r.sockets
    assert sock.received_by_peer == ECHO_BYTES and sock.to_driver == b""
    calls = {e.name: e for e in r.socket_calls}
    assert calls["WskBind"].args["LocalAddress"] == "0.0.0.0:0"
    assert calls["WskConnect"].args["RemoteAddress"] == "%s:%d" % (harness.ECHO_HOST,
                                                                   harness.ECHO_PORT)
    assert calls["WskSend"].args["Length"] == calls["WskReceive"].args["Length"] == len(ECHO_BYTES)
    for name in ("WskSocket", "WskBind", "WskConnect", "WskSend", "WskReceive"):
        assert calls[name].thread == "work item %d" % OPEN_ITEM, calls[name]
    # Kept until the unload: the disconnect and the close come from the task's work item, run
    # again for the cancel, after DriverUnload began and before the deregistration.
    unload = event_index(r, "run", "DriverUnload")
    deregistration = event_index(r, "nmr", "NmrDeregisterClient") if NMR else \
        event_index(r, "wskreg", "WskReleaseProviderNPI")
    for name in ("WskDisconnect", "WskCloseSocket"):
        assert calls[name].thread == "work item %d" % CLOSE_ITEM, calls[name]
        assert unload < calls[name].seq < deregistration
    (kept,) = r.connection_allocations
    assert kept.freed_by and log_index(r, ECHO_OK) < unload
    # Every completion routine ran on a provider thread, none inside the WSK call.
    runs_on = {e.thread for e in r.events if e.kind == "io-callback"
               and e.name == "CompletionRoutine"}
    assert runs_on and all(t.startswith("provider thread") for t in runs_on), runs_on
    assert r.clock == 0


@connection_only
def test_echo_buffers_are_mdls_within_their_pool(run):
    """The message goes out of, and comes back into, a non-paged pool block described by an MDL
    (IoAllocateMdl over the whole block, MmBuildMdlForNonPagedPool) whose WSK_BUF never claims
    more than the MDL's ByteCount; the received bytes are the message; both MDLs are freed (and
    their blocks) once the round trip is over (the answer checked against the message's buffer),
    before its result line and while the connection is kept (its block, its task's, was allocated
    before the exchange)."""
    r = run("echo")
    assert_clean_exchange(r)
    assert len(r.mdls) == 2 and len(r.buffer_allocations) == 2
    for m, a in zip(r.mdls, r.buffer_allocations):
        assert (m.va, m.length) == (a.address, len(ECHO_BYTES)) == (a.address, a.size), (m, a)
    kept = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG][0]
    frees = [e for e in r.events if e.kind == "io" and e.name == "IoFreeMdl"]
    assert len(frees) == 2
    assert kept.seq < frees[0].seq < frees[1].seq < log_index(r, ECHO_OK)


@connection_only
def test_echo_comes_back_in_pieces(run):
    """A peer that returns at most 4 bytes per receive: the driver receives again until the whole
    message is back (4 + 4 + 3 bytes, each piece compared), then `echo ok, 11 bytes`."""
    r = run("echo-trickle")
    assert_clean_exchange(r)
    assert echo_results(r) == [ECHO_OK]
    assert socket_ops(r) == with_socket(r, [
        *CONNECT, *pended("WskSend", information=len(ECHO_BYTES)),
        *pended("WskReceive", information=4), *pended("WskReceive", information=4),
        *pended("WskReceive", information=3), *pended("WskDisconnect"),
        *pended("WskCloseSocket")])
    receives = [e for e in r.socket_calls if e.name == "WskReceive"]
    assert [e.args["Length"] for e in receives] == [len(ECHO_BYTES)] * 3
    assert len(r.mdls) == 2  # one receive buffer, reused


def assert_connection_not_kept(r, task_freed_in="DriverUnload"):
    """The exchange failed: the connection's task ended with it (its parameters block freed
    then, by its work item), no connection kept. The task's block goes with its last reference:
    its handle, which Client::on_detach lets go at the unload, or — when the stop itself ended
    the exchange — the task's own, in its last run (`task_freed_in`)."""
    (block,) = r.connection_allocations
    frees = [e for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")
             and e.args.get("P") == block.address]
    assert len(frees) == 1 and frees[0].thread == task_freed_in, frees
    (parameters,) = r.parameters_allocations
    frees = [e for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")
             and e.args.get("P") == parameters.address]
    assert len(frees) == 1 and frees[0].thread == OPEN_THREAD, frees
    assert all(it.queued_count == 0 for it in r.work_items[OPEN_ITEM:]), r.work_items


@connection_only
def test_echo_refused_closes_the_socket_at_once(run):
    """WskConnect completes with STATUS_CONNECTION_REFUSED: `echo failed: connect 0xC0000236`;
    no send, receive or disconnect; the socket is closed by the connection's task as the
    exchange fails (no connection kept), so the unload has nothing to close."""
    r = run("echo-refused")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: connect 0xC0000236"]
    assert socket_ops(r) == with_socket(r, [
        *pended("WskSocket", information=-1), *pended("WskBind"),
        *pended("WskConnect", STATUS_CONNECTION_REFUSED), *pended("WskCloseSocket")])
    (close,) = [e for e in r.socket_calls if e.name == "WskCloseSocket"]
    assert close.thread == OPEN_THREAD and close.seq < event_index(r, "run", "DriverUnload")
    assert_connection_not_kept(r)
    assert r.mdls == []


@connection_only
def test_echo_silent_peer_stop_during_the_receive(run):
    """The peer never answers; sc stop comes at 1 s, while the receive is pending. The stop
    cancels the connection's task: at once (not at the step's 5 s) its receive cancels its IRP,
    which IoCancelIrp completes (STATUS_CANCELLED), and closes the socket: `echo failed: receive
    0xC0000120`, the last reference goes and the unload ends at 1 s — no hang, nothing left."""
    r = run("echo-silent-stop")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: receive 0xC0000120"]
    assert socket_ops(r) == with_socket(r, [
        *CONNECT, *pended("WskSend", information=len(ECHO_BYTES)),
        "WskReceive -> STATUS_PENDING", "IoCancelIrp(WskReceive) -> TRUE",
        "  WskReceive: STATUS_CANCELLED, 0", *pended("WskCloseSocket")])
    ms = TICKS_PER_MS
    (receive,) = [e for e in r.socket_calls if e.name == "WskReceive"]
    (cancel,) = [e for e in r.events if e.kind == "io" and e.name == "IoCancelIrp"]
    unload = r.events[event_index(r, "run", "DriverUnload")]
    assert receive.time == 0 and unload.time == 1000 * ms
    assert receive.seq < unload.seq < cancel.seq and cancel.time == 1000 * ms
    assert cancel.thread == OPEN_THREAD
    assert r.clock == 1000 * ms
    assert_connection_not_kept(r, task_freed_in=OPEN_THREAD)


@connection_only
def test_echo_wine_like_provider_disconnect_stub(run):
    """A Wine-like provider: WskDisconnect answers STATUS_NOT_IMPLEMENTED and never takes (nor
    completes) its IRP. The exchange works (`echo ok`); at the unload the driver logs the stub
    and, the IRP's stack location being untouched, sends it to its own device object
    (IofCallDriver, IRP_MJ_INTERNAL_DEVICE_CONTROL): the library's dispatch routine, which
    Registration::register put in the DRIVER_OBJECT, completes it with the stub's answer
    (IofCompleteRequest by the driver it was sent to), so its completion routine runs and
    nothing IoSetCompletionRoutineEx allocated is left; it is freed and the socket closed
    anyway."""
    r = run("echo-wine-like")
    assert_clean_exchange(r)
    assert echo_results(r) == [ECHO_OK]
    assert socket_ops(r) == with_socket(r, [*EXCHANGE, "WskDisconnect -> STATUS_NOT_IMPLEMENTED",
                                            "  %s: STATUS_NOT_IMPLEMENTED, 0" % SENT_TO_SELF,
                                            *pended("WskCloseSocket")])
    (stub,) = [rec for rec in r.irps if rec.uses == 0]
    assert stub.completions == 1 and stub.state == "freed"
    assert stub.completed_status == harness.STATUS_NOT_IMPLEMENTED
    (sent,) = [e for e in r.events if e.kind == "io" and e.name == "IofCallDriver"]
    (dispatch,) = [e for e in r.events if e.kind == "io-callback" and e.name == "DriverDispatch"]
    (own,) = [e for e in r.events if e.kind == "io" and e.name == "IofCompleteRequest"]
    (routine,) = [e for e in r.events if e.kind == "io-callback" and e.name == "CompletionRoutine"
                  and e.args["Irp"] == stub.address]
    assert sent.args["*irp"] == own.args["*irp"] == stub.number
    assert sent.args["DeviceObject"] == dispatch.args["DeviceObject"] == r.devices[0].address
    assert sent.args["MajorFunction"] == harness.IRP_MJ_INTERNAL_DEVICE_CONTROL
    assert sent.status == harness.STATUS_NOT_IMPLEMENTED
    # Sent, dispatched (at the sender's IRQL, on its thread), completed there, routine run.
    assert sent.seq < dispatch.seq < own.seq < routine.seq
    assert sent.thread == dispatch.thread == own.thread == routine.thread
    assert dispatch.irql == sent.irql
    # Every IRP's routine ran: no IoFreeIrp is noted for a routine that never did.
    frees = [e for e in r.events if e.kind == "io" and e.name == "IoFreeIrp"]
    assert [e.args["*irp"] for e in frees if e.text] == [], frees
    assert log_index(r, "request: answered 0xC0000002 without taking its IRP; completed by "
                     "the client's device") < event_index(r, "wsk", "WskCloseSocket")


@connection_only
def test_echo_wine_like_silent_peer_last_resort_close(run):
    """A Wine-like provider (IoCancelIrp does nothing) and a silent peer, sc stop at 0.5 s: the
    stop cancels the connection's task, whose pending receive cancels its IRP (FALSE: no cancel
    routine) and closes its socket at once; the close completes the receive (STATUS_CANCELLED)
    and itself; `echo failed: receive 0xC0000120`, and the unload ends at 0.5 s with nothing
    left."""
    r = run("echo-wine-silent")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: receive 0xC0000120"]
    assert socket_ops(r) == with_socket(r, [
        *CONNECT, *pended("WskSend", information=len(ECHO_BYTES)),
        "WskReceive -> STATUS_PENDING", "IoCancelIrp(WskReceive) -> FALSE",
        "WskCloseSocket -> STATUS_PENDING", "  WskReceive: STATUS_CANCELLED, 0",
        "  WskCloseSocket: STATUS_SUCCESS, 0"])
    ms = TICKS_PER_MS
    (cancel,) = [e for e in r.events if e.kind == "io" and e.name == "IoCancelIrp"]
    (close,) = [e for e in r.socket_calls if e.name == "WskCloseSocket"]
    assert cancel.time == close.time == 500 * ms
    assert cancel.thread == close.thread == OPEN_THREAD and cancel.seq < close.seq
    # The receive's completion came from the close, inside the WskCloseSocket call.
    (done_receive,) = [e for e in r.completions if e.args["op"] == "WskReceive"]
    assert done_receive.thread == OPEN_THREAD and done_receive.seq > close.seq
    assert r.clock == 500 * ms


@connection_only
def test_echo_irp_allocation_failure(run):
    """IoAllocateIrp returns NULL: the first request (WskSocket) cannot be made — `echo failed:
    socket 0xC000009A` — the provider is never called, the request's context is freed."""
    r = run("echo-irp-fails")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: socket 0xC000009A"]
    assert socket_ops(r) == [] and r.irps == [] and r.sockets == []
    (alloc,) = [e for e in r.events if e.kind == "io" and e.name == "IoAllocateIrp"]
    assert alloc.status == 0 and len(r.request_allocations) == 1


@connection_only
def test_echo_mdl_allocation_failure(run):
    """IoAllocateMdl returns NULL after the connect: `echo failed: buffer 0xC000009A`; the
    buffer's block is freed, nothing is sent, the socket closed at once."""
    r = run("echo-mdl-fails")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: buffer 0xC000009A"]
    assert socket_ops(r) == with_socket(r, [*CONNECT, *pended("WskCloseSocket")])
    (alloc,) = [e for e in r.events if e.kind == "io" and e.name == "IoAllocateMdl"]
    assert alloc.status == 0 and r.mdls == []
    (block,) = r.buffer_allocations
    assert block.freed_by == "ExFreePoolWithTag"


@connection_only
def test_harness_reports_a_receive_that_never_ends():
    """The harness itself: a provider that neither cancels nor closes a pending receive (its
    IoCancelIrp does nothing, its WskCloseSocket leaves it pending) leaves the unload waiting for
    ever for the request's reference: reported — the wait nothing can satisfy, DriverUnload
    abandoned, and the IRP still pending in WskReceive at the unload."""
    class NeverEnds(harness.Harness):
        def _h_sock_closesocket(self, emu, api, func, argv):
            parked = [x for x in self.irps if x.state == "pending"]
            for x in parked:
                x.state = "parked"
            try:
                return super()._h_sock_closesocket(emu, api, func, argv)
            finally:
                for x in parked:
                    x.state = "pending"
    r = NeverEnds(harness.default_image(), harness.SCENARIOS["echo-wine-silent"],
                  profile=PROFILE).run()
    assert r.unload_ran and not r.unload_completed
    assert any("nothing can ever" in v and "DriverUnload waits" in v for v in r.violations), \
        r.violations
    (receive,) = [x for x in r.irps if x.op == "WskReceive"]
    assert ("IRP %d (IoAllocateIrp) not freed at unload (IoFreeIrp); still pending in WskReceive"
            % receive.number) in r.violations, r.violations
    assert "DriverUnload ran: ABANDONED" in harness.format_trace(r)


@connection_only
def test_harness_reports_a_wsk_buf_beyond_its_mdl():
    """The harness itself: were the driver's WSK_BUF longer than its MDL (here the MDL's
    ByteCount is made one byte short), the provider would go past the buffer: reported, and the
    send is refused (STATUS_INVALID_PARAMETER), so the exchange fails."""
    class ShortMdl(harness.Harness):
        def _h_ioallocatemdl(self, emu, api, func, argv):
            addr = super()._h_ioallocatemdl(emu, api, func, argv)
            self.wr(addr + harness.MDL_BYTE_COUNT, struct.pack("<I", argv[1] - 1))
            return addr
    r = ShortMdl(harness.default_image(), harness.SCENARIOS["echo"], profile=PROFILE).run()
    n = len(ECHO_BYTES)
    assert r.violations == ["WskSend: WSK_BUF Offset 0 + Length %d is beyond its MDL's ByteCount "
                            "%d: the provider would go past the buffer" % (n, n - 1)]
    assert echo_results(r) == ["echo failed: send 0xC000000D"]


@connection_only
def test_an_irp_a_provider_keeps_after_answering_is_not_freed_while_it_holds_it():
    """A provider whose WskDisconnect keeps the IRP (pending: its stack location used) yet
    answers STATUS_NOT_IMPLEMENTED breaks the contract the driver relies on (a request not
    answered STATUS_PENDING is complete, or never will be). The driver sees the IRP's stack
    location consumed — the provider took it — and leaves it alone (no IofCallDriver, no
    IofCompleteRequest: only the provider may complete it); it waits for the routine, as for any
    request: its timeout cancels the IRP, the provider's cancel routine completes it, and only
    then is it freed — never while the provider holds it. No rule is broken."""
    class KeepsDisconnect(harness.Harness):
        def _h_sock_disconnect(self, emu, api, func, argv):
            e, sock = self._socket_call("WskDisconnect", argv[0], {})
            self._take_irp(argv[3], "WskDisconnect", sock)
            e.status = harness.STATUS_NOT_IMPLEMENTED
            return e.status
    r = KeepsDisconnect(harness.default_image(), harness.SCENARIOS["echo"], profile=PROFILE).run()
    (irp,) = [x for x in r.irps if x.op == "WskDisconnect"]
    assert r.violations == []
    assert not any(e.kind == "io" and e.name in ("IofCallDriver", "IofCompleteRequest")
                   for e in r.events)
    assert irp.cancels == 1 and irp.completions == 1, irp
    assert irp.completed_status == harness.STATUS_CANCELLED and irp.state == "freed", irp
    (complete,) = [e for e in r.completions if e.args["*irp"] == irp.number]
    (free,) = [e for e in r.events if e.kind == "io" and e.name == "IoFreeIrp"
               and e.args["*irp"] == irp.number]
    assert complete.seq < free.seq
    assert log_index(r, "request: answered 0xC0000002 but kept its IRP; waiting for its "
                     "completion") < complete.seq
    assert echo_results(r) == [ECHO_OK] and r.unload_completed


@connection_only
def test_echo_with_requests_completed_inline(run):
    """The same exchange, the provider completing each request inside the call (the completion
    routine runs before the WSK function returns the final status: legal). The result must be
    the same: `echo ok`, everything balanced. (It was not: irp::call_or dropped the IRP's
    IoStatus.Information of a request completed inside the call, so the new socket was lost.)"""
    r = run("echo-inline")
    assert echo_results(r) == [ECHO_OK]
    assert_clean_exchange(r)
