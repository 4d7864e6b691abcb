"""wsk_echo.sys under Wine exchanging real bytes over TCP: the echo driver's interface (issue 10)
against a peer on 127.0.0.1 that this test runs, through a WSK provider nobody in this project
wrote — Wine's own netio.sys, whose WskSocket / WskBind / WskConnect / WskSend / WskReceive /
WskCloseSocket / WskGetAddressInfo are real and go to host sockets. Both images get it through
the `bridge` test NETIO.SYS (tests/wine/netio-provider), which loads Wine's netio.sys (copied in
as wnetio.sys): the raw NMR image through its NMR, which hands the client Wine's provider with a
dispatch that says the version attached (1.1, so names resolve through Wine's resolver); the
WskRegister image through Wine's own WskRegister family, passed through unchanged (dispatch 1.0).
The bridge is needed for both: Wine 8's ntoskrnl.exe only stubs IoSetCompletionRoutineEx (a call
aborts the process), which the library uses for every request; the test NETIO.SYS patches the
stub with an emulation of Windows', and keeps the driver's image loaded while its work item and
completion routines run, as Windows does and Wine's winedevice.exe does not (see its `lifetime`
module); every test checks that emulation's log lines (wine_harness.image_pinning_problems).

    tests/wine/run.sh        (setup + pytest; see tests/wine/README.md)

For each test: the service's `Parameters` key (Host, Port, Message) written with Wine's reg.exe,
`sc start`, the driver's one result line (`wsk_echo: echo ok, N bytes` or `wsk_echo: echo
failed: <step> 0x<NTSTATUS>`), what the peer received, `sc stop`, and the unload's own count of
live pool allocations at 0. Cases: the exchange (the peer got exactly `Message`, and saw the
connection closed at stop, after the driver's own `WskCloseSocket`); 20 start/stop cycles with an
exchange each; a refused connection; a peer that resets the connection mid-exchange; a silent
peer and a stop while the receive is pending (Wine ignores IoCancelIrp: the driver's bounded
wait and its close end the receive), which must unload without hanging.

Applies to the echo images (profiles with a connection); for wsk_attach.sys these tests are
deselected, never skipped (see conftest.py).
"""
import os
import re
import socket
import threading
import time

import pytest

import wine_harness as wh
from test_wine import _check_clean, _delete, live_allocations

ECHO = pytest.mark.applies(
    lambda profile: profile.connection,
    "the echo exchange through Wine's own WSK provider (the echo images)")

MESSAGE = "hello through Wine's WSK, from wsk_echo"
CYCLES = 20
# STATUS_* the driver reports in `echo failed` lines.
CONNECTION_REFUSED = "0xC0000236"
NOT_SUPPORTED = "0xC00000BB"


class Peer:
    """A TCP peer on 127.0.0.1 (random port), in a thread, bounded in time. `mode`:
    echo: sends back what it receives, connection after connection;
    silent: receives, never answers;
    reset: receives the first bytes, then resets the connection (SO_LINGER 0)."""

    def __init__(self, mode="echo", timeout=120.0):
        self.mode = mode
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(1.0)
        self.port = self.listener.getsockname()[1]
        self.deadline = time.monotonic() + timeout
        self.lock = threading.Lock()
        self.connections = []  # [{"received": bytearray, "closed": bool}]
        self.changed = threading.Condition(self.lock)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping and time.monotonic() < self.deadline:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = {"received": bytearray(), "closed": False}
            with self.changed:
                self.connections.append(record)
                self.changed.notify_all()
            threading.Thread(target=self._handle, args=(conn, record), daemon=True).start()

    def _handle(self, conn, record):
        conn.settimeout(1.0)
        seen = 0
        try:
            while not self.stopping and time.monotonic() < self.deadline:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                with self.changed:
                    if not data:
                        break
                    record["received"] += data
                    self.changed.notify_all()
                if self.mode == "echo":
                    conn.sendall(self.answer(data, seen))
                elif self.mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    bytes([1, 0, 0, 0, 0, 0, 0, 0]))
                    break
                seen += len(data)
        except OSError:  # the driver reset or closed the connection
            pass
        finally:
            conn.close()
            with self.changed:
                record["closed"] = True
                self.changed.notify_all()

    def answer(self, data, offset):
        """What an echo peer sends back for `data`, found at `offset` of its connection's
        stream: the same bytes."""
        return data

    def wait(self, predicate, timeout=20.0):
        """Waits until predicate(connections) holds; returns whether it did."""
        end = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.connections):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            return True

    def snapshot(self):
        with self.lock:
            return [{"received": bytes(c["received"]), "closed": c["closed"]}
                    for c in self.connections]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.stopping = True
        self.listener.close()
        self.thread.join(timeout=5)


class FullBacklog:
    """A listener on 127.0.0.1 whose accept queue is full (listen(0) and one connection never
    accepted): Linux drops the SYN of any further connect, which stays pending (SYN_SENT,
    retransmitted for about two minutes)."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def syn_sent(self):
        """How many sockets on this host wait in SYN_SENT for this listener (/proc/net/tcp)."""
        port = "%04X" % self.port
        with open("/proc/net/tcp") as table:
            rows = [line.split() for line in table.readlines()[1:]]
        return sum(1 for row in rows if row[2] == "0100007F:" + port and row[3] == "02")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.filler.close()
        self.listener.close()


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def reg_add(prefix, profile, name, kind, value):
    """`wine reg add` of one value of the service's `Parameters` key."""
    key = r"HKLM\System\CurrentControlSet\Services\%s\Parameters" % profile.service
    code, out = prefix.run(["wine", "reg", "add", key, "/v", name, "/t", kind, "/d", value,
                            "/f"], check=False)
    assert code == 0, "reg add %s\\%s exited %d:\n%s" % (key, name, code, out)


def set_parameters(prefix, profile, host, port, message):
    for name, kind, value in (("Host", "REG_SZ", host), ("Port", "REG_DWORD", str(port)),
                              ("Message", "REG_SZ", message)):
        reg_add(prefix, profile, name, kind, value)


RESULT = re.compile(r"(echo ok, \d+ bytes|echo failed: \w+ 0x[0-9A-F]{8})")


def start_and_wait_result(prefix, profile, what, count=1, timeout=30.0):
    """sc start, then the driver's `count`-th result line; returns that line (without prefix)."""
    offset = len(prefix.log())
    code, out = prefix.sc("start", profile.service)
    assert code == 0 and "RUNNING" in out, "%s: sc start exited %d:\n%s\n%s" % (
        what, code, out, prefix.log_since(offset))
    end = time.monotonic() + timeout
    while True:
        results = [m.group(1) for line in wh.events(prefix.log())
                   if line.startswith(profile.prefix) for m in [RESULT.search(line)] if m]
        if len(results) >= count:
            return results[count - 1]
        assert time.monotonic() < end, "%s: no echo result line within %d s:\n%s" % (
            what, timeout, prefix.log_since(offset))
        time.sleep(0.1)


def stop(prefix, profile, what, count=1, timeout=30.0):
    """sc stop; STOPPED and the `count`-th unload line within `timeout` (a hang fails)."""
    offset = len(prefix.log())
    code, out = prefix.sc("stop", profile.service)
    state = prefix.wait_state(profile.service, "STOPPED", timeout=timeout)
    seen = prefix.wait_log(profile.log("unloaded, live pool allocations:"), count,
                           timeout=timeout)
    assert code == 0 and state == "STOPPED" and seen == count, (
        "%s: sc stop exited %d, state %s, unload lines %d of %d:\n%s"
        % (what, code, state, seen, count, prefix.log_since(offset)))


def check_unloads_clean(text, profile, what):
    crashes = wh.crash_lines(text)
    assert not crashes, "%s: a Wine process crashed:\n  %s" % (what, "\n  ".join(crashes[:20]))
    errors = [line for line in wh.events(text) if "netio-provider: ERROR" in line]
    assert not errors, "%s: the test NETIO.SYS logged errors:\n  %s" % (
        what, "\n  ".join(errors[:20]))
    counts = [m.group(1) for m in live_allocations(profile).finditer(text)]
    assert counts and all(c == "0" for c in counts), (
        "%s: live pool allocations at unload %r (a leak)" % (what, counts))


@pytest.fixture
def echo_service(bridged_prefix, driver_image, profile):
    """The driver (the echo client, or the server: test_wine_server.py) installed and created
    in a fresh prefix with Wine's own WSK provider behind the bridge test NETIO.SYS."""
    prefix = bridged_prefix
    if not os.path.isfile(wh.WINE_BUILTIN_NETIO):
        pytest.fail("Wine's own netio.sys is not at %s: run tests/wine/setup.sh"
                    % wh.WINE_BUILTIN_NETIO, pytrace=False)
    try:
        bridge = wh.provider_images([wh.BRIDGE_VARIANT])[wh.BRIDGE_VARIANT]
    except wh.HarnessError as error:
        pytest.fail("bridge test NETIO.SYS: %s" % error, pytrace=False)
    prefix.install(bridge, driver_image, profile, bridged=True)
    code, out = prefix.sc("create", profile.service, "type=", "kernel", "start=", "demand",
                          "binPath=", wh.bin_path(profile))
    assert code == 0, "sc create exited %d:\n%s\n%s" % (code, out, prefix.log_tail())
    yield prefix
    _delete(prefix, profile)


def check_provider(text, profile, starts=1):
    """The driver really used Wine's provider, through the bridge, with the emulated
    IoSetCompletionRoutineEx in place and its image kept loaded while its routines run, in a log
    section of `starts` service starts."""
    if profile.backend == "nmr":
        assert "netio-provider: bridge: Wine's WSK provider captured" in text, text[-3000:]
    else:
        assert "netio-provider: bridge: WskRegister passed to Wine's netio.sys: 0x00000000" \
            in text, text[-3000:]
    assert "now runs an emulation of Windows'" in text, text[-3000:]
    assert "netio-provider: ERROR" not in text
    problems = wh.image_pinning_problems(text, starts, queues_work_items=profile.connection)
    assert not problems, "\n".join(problems)


@ECHO
def test_echo_exchange_through_wines_provider(echo_service, profile):
    prefix = echo_service
    with Peer("echo") as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        result = start_and_wait_result(prefix, profile, "echo")
        assert result == "echo ok, %d bytes" % len(MESSAGE), prefix.log_since(base)
        assert peer.wait(lambda cs: len(cs) == 1 and bytes(cs[0]["received"]) == MESSAGE.encode())
        assert not peer.snapshot()[0]["closed"], "the connection stays open until sc stop"
        stop(prefix, profile, "echo")
        # The driver closed its socket itself (WskCloseSocket completed), then the peer saw EOF.
        assert peer.wait(lambda cs: cs[0]["closed"]), "the peer never saw the connection close"
        text = prefix.log()[base:]
        lines = [line for line in wh.events(text) if line.startswith(profile.prefix)]
        assert profile.log("socket: closed") in lines, "\n".join(lines)
        assert peer.snapshot()[0]["received"] == MESSAGE.encode(), "exactly Message, once"
        check_provider(text, profile)
        _check_clean(text, "echo", profile)


@ECHO
def test_echo_start_stop_cycles(echo_service, profile):
    prefix = echo_service
    with Peer("echo", timeout=600) as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        for cycle in range(1, CYCLES + 1):
            what = "cycle %d of %d" % (cycle, CYCLES)
            result = start_and_wait_result(prefix, profile, what, count=cycle)
            assert result == "echo ok, %d bytes" % len(MESSAGE), what
            stop(prefix, profile, what, count=cycle)
            assert peer.wait(lambda cs, n=cycle: len(cs) == n and cs[-1]["closed"]), what
        text = prefix.log()[base:]
        assert all(c["received"] == MESSAGE.encode() for c in peer.snapshot())
        assert text.count(profile.log("socket: closed")) == CYCLES
        check_provider(text, profile, CYCLES)
        _check_clean(text, "%d cycles" % CYCLES, profile)


@ECHO
def test_a_refused_connection_is_logged_and_the_driver_unloads(echo_service, profile):
    prefix = echo_service
    set_parameters(prefix, profile, "127.0.0.1", closed_port(), MESSAGE)
    base = len(prefix.log())
    result = start_and_wait_result(prefix, profile, "refused")
    assert result == "echo failed: connect %s" % CONNECTION_REFUSED, prefix.log_since(base)
    stop(prefix, profile, "refused")
    text = prefix.log()[base:]
    check_provider(text, profile)
    check_unloads_clean(text, profile, "refused")


@ECHO
def test_a_reset_mid_exchange_is_logged_and_the_driver_unloads(echo_service, profile):
    prefix = echo_service
    with Peer("reset") as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        result = start_and_wait_result(prefix, profile, "reset")
        # Wine reports a reset as a 0-byte receive (the driver: STATUS_CONNECTION_ABORTED) or
        # as the receive's error status.
        assert result.startswith("echo failed: receive 0x"), prefix.log_since(base)
        stop(prefix, profile, "reset")
        text = prefix.log()[base:]
        check_provider(text, profile)
        check_unloads_clean(text, profile, "reset")


@ECHO
def test_a_stop_during_a_pending_receive_unloads_without_hanging(echo_service, profile):
    prefix = echo_service
    with Peer("silent") as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        code, out = prefix.sc("start", profile.service)
        assert code == 0 and "RUNNING" in out, out
        # The driver sent its message and now waits for the answer that never comes.
        assert peer.wait(lambda cs: cs and bytes(cs[0]["received"]) == MESSAGE.encode()), \
            prefix.log_since(base)
        started = time.monotonic()
        stop(prefix, profile, "silent peer", timeout=30)
        took = time.monotonic() - started
        text = prefix.log()[base:]
        lines = [line for line in wh.events(text) if line.startswith(profile.prefix)]
        results = [line for line in lines if RESULT.search(line)]
        assert len(results) == 1 and "echo failed: receive 0x" in results[0], "\n".join(lines)
        assert peer.wait(lambda cs: cs[0]["closed"]), "the peer never saw the connection close"
        check_provider(text, profile)
        check_unloads_clean(text, profile, "silent peer")
        print("stop during a pending receive took %.1f s" % took)


@ECHO
def test_a_stop_during_a_pending_connect_unloads_at_once(echo_service, profile):
    """The peer's accept queue is full: the driver's WskConnect stays pending (its SYN dropped).
    sc stop then: the stop cancels the connection's task, whose pending connect cancels its IRP
    and closes its socket (Wine ignores the cancel; the close completes the connect): one
    `echo failed: connect 0x...` line, a clean unload, and the time it took, printed."""
    prefix = echo_service
    with FullBacklog() as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        code, out = prefix.sc("start", profile.service)
        assert code == 0 and "RUNNING" in out, out
        end = time.monotonic() + 20
        while peer.syn_sent() == 0:
            assert time.monotonic() < end, "no pending connect:\n" + prefix.log_since(base)
            time.sleep(0.05)
        started = time.monotonic()
        stop(prefix, profile, "pending connect", timeout=30)
        took = time.monotonic() - started
        text = prefix.log()[base:]
        lines = [line for line in wh.events(text) if line.startswith(profile.prefix)]
        results = [line for line in lines if RESULT.search(line)]
        assert len(results) == 1 and "echo failed: connect 0x" in results[0], "\n".join(lines)
        check_provider(text, profile)
        check_unloads_clean(text, profile, "pending connect")
        print("stop during a pending connect took %.1f s" % took)


@ECHO
def test_a_name_resolves_through_wines_resolver_at_1_1(echo_service, profile):
    """`Host` = localhost: the bridge hands the raw NMR image a 1.1 dispatch and the name goes
    through Wine's real WskGetAddressInfo; Wine's own dispatch says 1.0, so the WskRegister image
    refuses names with a clear STATUS_NOT_SUPPORTED."""
    prefix = echo_service
    with Peer("echo") as peer:
        set_parameters(prefix, profile, "localhost", peer.port, MESSAGE)
        base = len(prefix.log())
        result = start_and_wait_result(prefix, profile, "localhost")
        if profile.backend == "nmr":
            assert result == "echo ok, %d bytes" % len(MESSAGE), prefix.log_since(base)
            assert peer.wait(lambda cs: cs and bytes(cs[0]["received"]) == MESSAGE.encode())
        else:
            assert result == "echo failed: resolve %s" % NOT_SUPPORTED, prefix.log_since(base)
        stop(prefix, profile, "localhost")
        text = prefix.log()[base:]
        check_provider(text, profile)
        check_unloads_clean(text, profile, "localhost")


SOAK_CYCLES = int(os.environ.get("WSK_WINE_SOAK_CYCLES", "12"))


@ECHO
def test_echo_soak_with_resets_and_silent_peers(echo_service, profile):
    """Start/stop cycles with live connections, the peer's behaviour rotating: echo, echo, reset
    mid-exchange, silent (the stop comes during the pending receive). Every cycle: its result
    line, a stop that finishes, the driver's own close of its socket; in all: 0 leaks, 0 hangs,
    no crash. $WSK_WINE_SOAK_CYCLES cycles (CI: 12; the note's figure: 200)."""
    prefix = echo_service
    pattern = ["echo", "echo", "reset", "silent"]
    with Peer("echo", timeout=3600) as peer:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        base = len(prefix.log())
        started = time.monotonic()
        for cycle in range(1, SOAK_CYCLES + 1):
            mode = pattern[(cycle - 1) % len(pattern)]
            peer.mode = mode
            what = "soak cycle %d of %d (%s)" % (cycle, SOAK_CYCLES, mode)
            if mode == "silent":
                code, out = prefix.sc("start", profile.service)
                assert code == 0 and "RUNNING" in out, what
                assert peer.wait(lambda cs, n=cycle: len(cs) == n
                                 and bytes(cs[-1]["received"]) == MESSAGE.encode()), what
                stop(prefix, profile, what, count=cycle, timeout=30)
            else:
                result = start_and_wait_result(prefix, profile, what, count=cycle)
                want = "echo ok" if mode == "echo" else "echo failed: receive 0x"
                assert result.startswith(want), "%s: %s" % (what, result)
                stop(prefix, profile, what, count=cycle)
            assert peer.wait(lambda cs, n=cycle: len(cs) == n and cs[-1]["closed"]), what
        took = time.monotonic() - started
        text = prefix.log()[base:]
        results = [m.group(1) for line in wh.events(text) if line.startswith(profile.prefix)
                   for m in [RESULT.search(line)] if m]
        assert len(results) == SOAK_CYCLES, results
        assert text.count(profile.log("socket: closed")) == SOAK_CYCLES
        check_provider(text, profile, SOAK_CYCLES)
        check_unloads_clean(text, profile, "soak")
        print("soak: %d cycles in %.0f s: %d echo ok, %d failed as the peer made them, "
              "0 leaks, 0 hangs" % (SOAK_CYCLES, took,
                                    sum(r.startswith("echo ok") for r in results),
                                    sum(r.startswith("echo failed") for r in results)))


@ECHO
def test_a_multi_chunk_bytes_transfer_echoes_every_byte(echo_service, profile):
    """`Parameters\\Bytes` = 1 MiB + 3: the driver streams `Message` repeated, cut at Bytes, in
    64 KiB chunks of whole messages (17 here, the last one short), two in flight, through Wine's
    provider and checks every byte that comes back. The peer must receive exactly that stream, once; the
    driver logs one `echo ok, N bytes in M ms` (the time is not judged) and closes its socket at
    stop. Then a peer that flips one bit of its answer, deep in the stream: the driver's check
    catches it (`echo failed: compare 0xC0000001`) and still unloads clean."""
    prefix = echo_service
    total = (1 << 20) + 3
    stream = (MESSAGE.encode() * (total // len(MESSAGE) + 1))[:total]
    flip_at = 700_001

    class Corrupting(Peer):
        """Echoes everything but the byte at stream offset `flip_at`, which it sends back with
        its lowest bit flipped."""

        def answer(self, data, offset):
            if offset <= flip_at < offset + len(data):
                data = bytearray(data)
                data[flip_at - offset] ^= 0x01
            return data

    def results_since(offset):
        return [line for line in wh.events(prefix.log()[offset:])
                if line.startswith(profile.prefix) and RESULT.search(line)]

    with Peer("echo", timeout=300) as peer, Corrupting("echo", timeout=300) as corrupting:
        set_parameters(prefix, profile, "127.0.0.1", peer.port, MESSAGE)
        reg_add(prefix, profile, "Bytes", "REG_DWORD", str(total))
        base = len(prefix.log())
        result = start_and_wait_result(prefix, profile, "1 MiB", timeout=60)
        lines = results_since(base)
        assert result == "echo ok, %d bytes" % total and len(lines) == 1 and re.fullmatch(
            re.escape(profile.log("echo ok, %d bytes in " % total)) + r"\d+ ms", lines[0]), (
            "\n".join(lines) + "\n" + prefix.log_since(base))
        assert peer.wait(lambda cs: len(cs) == 1 and len(cs[0]["received"]) >= total), \
            prefix.log_since(base)
        got = peer.snapshot()[0]["received"]
        assert got == stream, "the peer got %d bytes, first difference at %s" % (
            len(got), next((i for i, (a, b) in enumerate(zip(got, stream)) if a != b), "the end"))
        assert not peer.snapshot()[0]["closed"], "the connection stays open until sc stop"
        stop(prefix, profile, "1 MiB")
        assert peer.wait(lambda cs: cs[0]["closed"]), "the peer never saw the connection close"
        text = prefix.log()[base:]
        assert profile.log("socket: closed") in wh.events(text)
        check_provider(text, profile)
        check_unloads_clean(text, profile, "1 MiB")

        # The same transfer, answered with one bit flipped at byte 700001.
        reg_add(prefix, profile, "Port", "REG_DWORD", str(corrupting.port))
        base = len(prefix.log())
        result = start_and_wait_result(prefix, profile, "corrupted", count=2, timeout=60)
        assert result == "echo failed: compare 0xC0000001", prefix.log_since(base)
        assert len(results_since(base)) == 1, prefix.log_since(base)
        # The driver sent up to two chunks past the bad byte (two chunks in flight), no more.
        assert corrupting.wait(lambda cs: len(cs) == 1 and cs[0]["closed"]), \
            prefix.log_since(base)
        got = corrupting.snapshot()[0]["received"]
        assert stream.startswith(got) and flip_at < len(got) <= flip_at + 2 * 65536, len(got)
        stop(prefix, profile, "corrupted", count=2)
        text = prefix.log()[base:]
        check_provider(text, profile)
        check_unloads_clean(text, profile, "corrupted")
