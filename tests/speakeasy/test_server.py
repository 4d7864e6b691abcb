"""The echo server's images (wsk_echo_server.sys, wsk_echo_server_wskregister.sys), served under
Speakeasy: the listening socket (SO_EXCLUSIVEADDRUSE, bind, accept with receive events), a remote
client that connects, sends (indicated to the driver's WskReceiveEvent at DISPATCH_LEVEL, as a
WSK_DATA_INDICATION over a real MDL) and closes (WskDisconnectEvent), the echo with WskSend, the
UDP echo (WskReceiveFrom, WskSendTo to the sender), and the stop closing every socket; then the
same against a Wine-like provider (no socket options, no events, no datagram sockets): the
connection served with WskReceive IRPs.

Scenarios `server` and `server-wine-like` (harness/scenario.py: Scenario.client is the remote
client's script); for other images these tests are deselected (expected.server_only).
Run: WSK_DRIVER_SYS=target/x86_64-pc-windows-msvc/release/wsk_echo_server.sys
     target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_server.py
"""
import pytest

import harness
from harness import (DISPATCH_LEVEL, STATUS_NOT_IMPLEMENTED, STATUS_PENDING, STATUS_SUCCESS,
                     status_name)
from expected import PROFILE, log_index, server_only

pytestmark = server_only

S = status_name
DATA = harness.SERVER_DATA
DATAGRAM = harness.SERVER_DATAGRAM
SENDER = harness.DATAGRAM_SENDER
SOL_SOCKET = 0xFFFF
SO_EXCLUSIVEADDRUSE = 0xFFFFFFFB
IPPROTO_TCP = 6
TCP_NODELAY = 1
SO_WSK_EVENT_CALLBACK = 0x4002
WSK_EVENT_RECEIVE, WSK_EVENT_DISCONNECT = 0x40, 0x80
CLOSED = "connection #1 closed: %d bytes echoed" % len(DATA)
UNLOADED = "unloaded, live pool allocations: 0"


def first(r, what, pred, after=-1):
    """The first event after seq `after` for which pred(e) holds (asserted to exist)."""
    for e in r.events:
        if e.seq > after and pred(e):
            return e
    raise AssertionError("%s: not seen after event %d; the trace:\n%s"
                         % (what, after, harness.format_trace(r)))


def wsk(name, socket=None, **args):
    """A predicate: the driver's call of WSK function `name` (on socket number `socket`) whose
    arguments include `args`."""
    def pred(e):
        return (e.kind == "wsk" and e.name == name
                and (socket is None or e.args.get("*socket") == socket)
                and all(e.args.get(k) == v for k, v in args.items()))
    return pred


def completion(op, irp_address):
    return lambda e: (e.kind == "io" and e.name == "IoCompleteRequest" and e.args["op"] == op
                      and e.args["Irp"] == irp_address)


def callback(name):
    return lambda e: e.kind == "wsk-callback" and e.name == name


def assert_served_clean(r):
    """No problem the harness checks (IRQL, IRPs, MDLs, sockets, NMR/WskRegister), the unload
    ran to its end, the pool balanced per tag, every socket, IRP and MDL gone, and the driver's
    last line says no pool is left."""
    assert r.run_errors == [], r.run_errors
    assert r.violations == [], r.violations
    assert r.entry_status == STATUS_SUCCESS, S(r.entry_status)
    assert r.unload_ran and r.unload_completed, "DriverUnload did not run to its end"
    assert r.outstanding == [], "pool left allocated at unload: %r" % r.outstanding
    assert all(b["outstanding"] == 0 for b in r.pool_balance().values()), r.pool_balance()
    assert r.sockets and all(s.state == "closed" for s in r.sockets), r.sockets
    assert all(rec.state == "freed" for rec in r.irps), r.irps
    assert all(m.freed_seq is not None for m in r.mdls), r.mdls
    assert r.logs[-1] == PROFILE.log(UNLOADED) + "\n", r.logs[-3:]


@pytest.fixture(scope="module")
def served(run):
    return run("server")


@pytest.fixture(scope="module")
def wine_like(run):
    return run("server-wine-like")


def test_the_server_scenarios_are_for_the_server_images_only():
    for name in ("server", "server-wine-like"):
        sc = harness.SCENARIOS[name]
        assert sc.is_for(PROFILE)
        assert not sc.is_for(harness.driver_profiles.WSK_ECHO)
        assert not sc.is_for(harness.driver_profiles.WSK_ATTACH)


def test_listen_accept_with_events_echo_and_close_in_order(served):
    r = served
    # The listening socket, its option before the bind, the bind, the accept.
    listen = first(r, "WskSocket of a listening TCP socket",
                   wsk("WskSocket", Flags=1, SocketType=1, Protocol=IPPROTO_TCP,
                       AddressFamily=2))
    ls = listen.args["*socket"]
    option = first(r, "SO_EXCLUSIVEADDRUSE on the listening socket",
                   wsk("WskControlSocket", ls, RequestType=0, Level=SOL_SOCKET,
                       ControlCode=SO_EXCLUSIVEADDRUSE, Value=1), listen.seq)
    assert option.args["Irp"] != 0 and option.status == STATUS_PENDING, option
    bind = first(r, "WskBind of the listening socket",
                 wsk("WskBind", ls, LocalAddress="0.0.0.0:%d" % harness.SERVER_PORT), option.seq)
    accept = first(r, "WskAccept", wsk("WskAccept", ls), bind.seq)
    assert accept.args["AcceptSocketContext"] != 0, accept
    assert accept.args["AcceptSocketDispatch"] != 0, accept
    assert r.in_image(accept.args["*WskReceiveEvent"]), accept
    assert r.in_image(accept.args["*WskDisconnectEvent"]), accept
    assert accept.args["*WskSendBacklogEvent"] == 0, accept
    context = accept.args["AcceptSocketContext"]
    # The client connects: the accept completes with the new socket.
    accepted = [s for s in r.sockets if s.accepted_by == ls]
    assert len(accepted) == 1, r.sockets
    conn = accepted[0]
    done = first(r, "the accept's completion", completion("WskAccept", accept.args["Irp"]),
                 accept.seq)
    assert (done.args["Status"], done.args["Information"]) == (STATUS_SUCCESS, conn.address)
    accepted_log = first(r, "the accept's log line", lambda e: e.kind == "log" and e.text
                         == PROFILE.log("accepted #1 from %s" % harness.CLIENT_ADDRESS) + "\n",
                         done.seq)
    # TCP_NODELAY with an IRP, then the events on: SO_WSK_EVENT_CALLBACK without an IRP,
    # answered by the call itself.
    nodelay = first(r, "TCP_NODELAY on the connection",
                    wsk("WskControlSocket", conn.number, RequestType=0, Level=IPPROTO_TCP,
                        ControlCode=TCP_NODELAY, Value=1), accepted_log.seq)
    assert nodelay.args["Irp"] != 0, nodelay
    events = first(r, "SO_WSK_EVENT_CALLBACK on the connection",
                   wsk("WskControlSocket", conn.number, RequestType=0, Level=SOL_SOCKET,
                       ControlCode=SO_WSK_EVENT_CALLBACK), nodelay.seq)
    assert events.args["InputSize"] == 16, events
    assert events.args["NpiId"] == str(harness.NPI_WSK_INTERFACE_ID), events
    assert events.args["EventMask"] == WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT, events
    assert events.args["Irp"] == 0 and events.status == STATUS_SUCCESS, events
    assert conn.events_mask == WSK_EVENT_RECEIVE | WSK_EVENT_DISCONNECT
    # The client's bytes, indicated at DISPATCH_LEVEL, taken whole.
    indication = first(r, "WskReceiveEvent", callback("WskReceiveEvent"), events.seq)
    assert indication.irql == DISPATCH_LEVEL, indication
    assert indication.args["SocketContext"] == context, indication
    assert indication.args["Flags"] == 0, indication
    assert indication.args["BytesIndicated"] == len(DATA), indication
    assert indication.status == STATUS_SUCCESS, indication
    assert conn.to_driver == b"", "bytes the driver did not take: %r" % conn.to_driver
    # The echo: WskSend of exactly those bytes.
    send = first(r, "the echo's WskSend", wsk("WskSend", conn.number), indication.seq)
    assert send.args["*data"] == DATA, send
    assert conn.received_by_peer == DATA, conn.received_by_peer
    assert [e.args["*data"] for e in r.events if wsk("WskSend")(e)] == [DATA]
    # The client's close, at DISPATCH_LEVEL; the driver disconnects and closes its side.
    disconnect_event = first(r, "WskDisconnectEvent", callback("WskDisconnectEvent"), send.seq)
    assert disconnect_event.irql == DISPATCH_LEVEL, disconnect_event
    assert disconnect_event.args == {"SocketContext": context, "Flags": 0}, disconnect_event
    assert disconnect_event.status == STATUS_SUCCESS, disconnect_event
    disconnect = first(r, "WskDisconnect", wsk("WskDisconnect", conn.number),
                       disconnect_event.seq)
    close = first(r, "WskCloseSocket of the connection", wsk("WskCloseSocket", conn.number),
                  disconnect.seq)
    assert log_index(r, CLOSED) > close.seq
    unload = first(r, "DriverUnload", lambda e: e.kind == "run" and e.name == "DriverUnload")
    assert conn.closed_seq < unload.seq, "the connection was closed by the unload, not the peer"


def test_the_datagram_is_echoed_to_its_sender(served):
    r = served
    udp = first(r, "WskSocket of a datagram socket",
                wsk("WskSocket", Flags=4, SocketType=2, Protocol=17, AddressFamily=2))
    us = udp.args["*socket"]
    bind = first(r, "WskBind of the datagram socket",
                 wsk("WskBind", us, LocalAddress="0.0.0.0:%d" % harness.SERVER_PORT), udp.seq)
    log_index(r, "udp: echoing on 0.0.0.0:%d" % harness.SERVER_PORT)
    receive = first(r, "WskReceiveFrom", wsk("WskReceiveFrom", us), bind.seq)
    assert receive.status == STATUS_PENDING and receive.args["RemoteAddress"] != 0, receive
    done = first(r, "the datagram's arrival", completion("WskReceiveFrom", receive.args["Irp"]),
                 receive.seq)
    assert (done.args["Status"], done.args["Information"]) == (STATUS_SUCCESS, len(DATAGRAM))
    send_to = first(r, "WskSendTo", wsk("WskSendTo", us), done.seq)
    assert send_to.args["RemoteAddress"] == SENDER, send_to
    assert send_to.args["*data"] == DATAGRAM, send_to
    sock = next(s for s in r.sockets if s.number == us)
    assert sock.datagrams_sent == [(SENDER, DATAGRAM)], sock.datagrams_sent
    # The next receive pends until the stop closes the socket.
    first(r, "the next WskReceiveFrom", wsk("WskReceiveFrom", us), send_to.seq)
    unload = first(r, "DriverUnload", lambda e: e.kind == "run" and e.name == "DriverUnload")
    first(r, "the stop's WskCloseSocket of the datagram socket", wsk("WskCloseSocket", us),
          unload.seq)
    assert log_index(r, "udp: closed: 1 datagrams echoed") > unload.seq


def test_the_stop_closes_every_socket_and_frees_everything(served):
    r = served
    unload = first(r, "DriverUnload", lambda e: e.kind == "run" and e.name == "DriverUnload")
    listening = [s for s in r.sockets if s.kind == "listen"]
    assert len(listening) == 1
    first(r, "the stop's WskCloseSocket of the listening socket",
          wsk("WskCloseSocket", listening[0].number), unload.seq)
    assert [s.kind for s in r.sockets] == ["listen", "datagram", "connection"], r.sockets
    assert all(s.closed_seq is not None for s in r.sockets)
    assert_served_clean(r)
    assert harness.format_trace(r).rstrip().splitlines()[-2].strip() == "no problems found"


def test_a_wine_like_provider_serves_the_connection_with_irps(wine_like):
    r = wine_like
    for line in ("options: SO_EXCLUSIVEADDRUSE not set (0xC0000002): no socket options, no "
                 "TCP_NODELAY",
                 "events: no receive events (0xC0000002): accepting and receiving with IRPs",
                 "udp: not served: socket 0xC0000002",
                 CLOSED):
        log_index(r, line)
    # The stubs: options and events answered STATUS_NOT_IMPLEMENTED; no TCP_NODELAY asked; the
    # datagram socket refused.
    controls = [e for e in r.events if wsk("WskControlSocket")(e)]
    assert [(e.args["ControlCode"], e.status) for e in controls] == [
        (SO_EXCLUSIVEADDRUSE, STATUS_NOT_IMPLEMENTED),
        (SO_WSK_EVENT_CALLBACK, STATUS_NOT_IMPLEMENTED)], controls
    udp = [e for e in r.socket_calls if e.name == "WskSocket" and e.args["Flags"] == 4]
    assert len(udp) == 1 and not any(s.kind == "datagram" for s in r.sockets), udp
    # No event callback: the bytes came through a WskReceive, the echo went out with WskSend,
    # and the client's close ended the next receive with 0 bytes.
    assert not any(e.kind == "wsk-callback" for e in r.events)
    conn = next(s for s in r.sockets if s.accepted_by is not None)
    receives = [e for e in r.completions if e.args["op"] == "WskReceive"]
    assert [(e.args["Status"], e.args["Information"]) for e in receives] == [
        (STATUS_SUCCESS, len(DATA)), (STATUS_SUCCESS, 0)], receives
    send = first(r, "the echo's WskSend", wsk("WskSend", conn.number), receives[0].seq)
    assert send.args["*data"] == DATA and send.seq < receives[1].seq, send
    assert conn.received_by_peer == DATA, conn.received_by_peer
    assert log_index(r, CLOSED) > receives[1].seq
    assert_served_clean(r)
