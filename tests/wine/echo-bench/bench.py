"""The Wine side of `cargo xtask echo-bench` (figures, never a test): the echo driver moving
`--bytes` through a loopback echo server, beside the user-mode Winsock client doing the same in
the same prefix, and beside the C echo driver (`--c`, baseline/wsk_echo_baseline.c); with
`--round-trips N`, the latency of the Rust and C drivers too.

One fresh prefix set up as the Wine echo tests set theirs up (wine_harness.Prefix: Wine's real
sc.exe / services.exe / winedevice.exe, the `bridge` test NETIO.SYS in front of Wine's own WSK
provider), one echo server on 127.0.0.1 in this process (a thread per connection, 64 KiB reads,
everything sent back), and `--runs` rounds of: `sc start` the driver with Parameters\\Host, Port,
Message and Bytes pointing at the server, its result line `echo ok, N bytes in M ms` read from its
log, `sc stop`; then `wine winsock_echo.exe` against the same server, its line `winsock ok, N
bytes in M ms`. Driver and client alternate, so that a slow patch of the machine hits both.

The C echo image (`--c`, raw NMR) is installed under the same service and file name, with the
same parameters, and runs in the same alternation (driver, before, c, winsock).

Latency (`--round-trips N`): after the throughput rounds, `--runs` more rounds with
Parameters\\RoundTrips = N instead of Bytes and a 1-byte Message ("x"): each driver makes N
round trips of it and logs `echo ok, N round trips, p50 A us, p99 B us`. A driver that echoes
the one message instead (`echo ok, 1 bytes`: no RoundTrips mode) fails the bench.

Each run's figures go to `--out` as lines `driver N_BYTES MS`, `before N_BYTES MS`, `c N_BYTES
MS`, `winsock N_BYTES MS`, and `driver-latency N P50 P99` / `c-latency N P50 P99`; the server
checks it echoed exactly what each connection should have. Any failure (a start that does not
come back with `echo ok`, the wrong byte count, a client that fails, a stop that hangs, a leak at
unload, a crashed Wine process) raises and exits non-zero.

    python bench.py --image wsk_echo.sys [--before OLD/wsk_echo.sys] [--c C/wsk_echo.sys]
        --client winsock_echo.exe --out FILE [--bytes N] [--runs N] [--round-trips N]
"""
import argparse
import os
import re
import shutil
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/wine
import wine_harness as wh  # noqa: E402

MESSAGE = "wsk-attach echo bench: 0123456789abcdefghijklmnopqrstuvwxyz"
LATENCY_MESSAGE = "x"
DRIVER_RESULT = re.compile(
    r"echo (ok, (?P<bytes>\d+) bytes in (?P<ms>\d+) ms"
    r"|ok, (?P<trips>\d+) round trips, p50 (?P<p50>\d+) us, p99 (?P<p99>\d+) us"
    r"|ok, (?P<one>\d+) bytes$"
    r"|ok, \d+ (bytes|round trips) \(no clock\)|failed: \w+ 0x[0-9A-F]{8})")
CLIENT_RESULT = re.compile(r"winsock ok, (\d+) bytes in ([0-9.]+) ms")
CLIENT_IN_PREFIX = r"C:\winsock_echo.exe"


class BenchError(Exception):
    pass


class EchoServer:
    """Echoes everything, connection after connection, on 127.0.0.1 (random port); counts what
    each connection echoed."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.echoed = []  # bytes per connection, in accept order
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                index = len(self.echoed)
                self.echoed.append(0)
            threading.Thread(target=self._echo, args=(conn, index), daemon=True).start()

    def _echo(self, conn, index):
        buffer = bytearray(64 * 1024)
        view = memoryview(buffer)
        try:
            while True:
                n = conn.recv_into(buffer)
                if n == 0:
                    break
                conn.sendall(view[:n])
                with self.lock:
                    self.echoed[index] += n
        except OSError:
            pass
        finally:
            conn.close()

    def connections(self):
        with self.lock:
            return list(self.echoed)

    def close(self):
        self.stopping = True
        self.listener.close()


def driver_results(prefix, profile):
    return [m for line in wh.events(prefix.log()) if line.startswith(profile.prefix)
            for m in [DRIVER_RESULT.search(line)] if m]


def run_driver(prefix, profile, run, timeout):
    """One `sc start` / result line / `sc stop`; returns the driver's result line (a match of
    DRIVER_RESULT)."""
    offset = len(prefix.log())
    code, out = prefix.sc("start", profile.service)
    if code != 0 or "RUNNING" not in out:
        raise BenchError("driver run %d: sc start exited %d:\n%s\n%s"
                         % (run, code, out, prefix.log_since(offset)))
    end = time.monotonic() + timeout
    while len(driver_results(prefix, profile)) < run:
        if time.monotonic() > end:
            raise BenchError("driver run %d: no result line within %d s:\n%s"
                             % (run, timeout, prefix.log_since(offset)))
        time.sleep(0.05)
    result = driver_results(prefix, profile)[run - 1]
    code, out = prefix.sc("stop", profile.service)
    state = prefix.wait_state(profile.service, "STOPPED", timeout=60)
    unloads = prefix.wait_log(profile.log("unloaded, live pool allocations:"), run, timeout=60)
    if state != "STOPPED" or unloads != run:
        raise BenchError("driver run %d: sc stop exited %d, state %s:\n%s"
                         % (run, code, state, prefix.log_since(offset)))
    return result


def throughput(result, side, run, total):
    """The milliseconds of a bulk run's result line."""
    if result.group("ms") is None:
        raise BenchError("%s run %d: %s" % (side, run, result.group(0)))
    if int(result.group("bytes")) != total:
        raise BenchError("%s run %d: %s bytes, not %d" % (side, run, result.group("bytes"), total))
    return int(result.group("ms"))


def latency(result, side, run, trips):
    """(p50, p99) of a latency run's result line."""
    if result.group("one") is not None:
        raise BenchError("%s latency run %d: one message echoed (%s): no RoundTrips mode"
                         % (side, run, result.group(0)))
    if result.group("p50") is None:
        raise BenchError("%s latency run %d: %s" % (side, run, result.group(0)))
    if int(result.group("trips")) != trips:
        raise BenchError("%s latency run %d: %s round trips, not %d"
                         % (side, run, result.group("trips"), trips))
    return int(result.group("p50")), int(result.group("p99"))


def set_parameters(prefix, key, values, absent):
    """Writes `values` [(name, REG_TYPE, data)] under `key` and deletes the `absent` ones."""
    for name, kind, value in values:
        prefix.run(["wine", "reg", "add", key, "/v", name, "/t", kind, "/d", value, "/f"])
    for name in absent:
        prefix.run(["wine", "reg", "delete", key, "/v", name, "/f"], check=False)


def run_client(prefix, server_port, run, total, timeout):
    code, out = prefix.run(["wine", CLIENT_IN_PREFIX, "127.0.0.1", str(server_port), MESSAGE,
                            str(total)], timeout=timeout, check=False)
    match = CLIENT_RESULT.search(out)
    if code != 0 or not match:
        raise BenchError("winsock run %d: exit %d:\n%s\n%s" % (run, code, out, prefix.log_tail()))
    if int(match.group(1)) != total:
        raise BenchError("winsock run %d: %s bytes, not %d" % (run, match.group(1), total))
    return float(match.group(2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="the echo driver image (raw NMR)")
    parser.add_argument("--before", help="the same driver from before a change, run beside it")
    parser.add_argument("--c", help="the C echo driver image (raw NMR), run beside it")
    parser.add_argument("--client", required=True, help="winsock_echo.exe")
    parser.add_argument("--out", required=True, help="where the figures go")
    parser.add_argument("--bytes", type=int, default=16 << 20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--round-trips", type=int, default=0,
                        help="then latency rounds of this many round trips (0: none)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per run")
    args = parser.parse_args()
    if not 1 <= args.bytes <= 0xFFFFFFFF or args.runs < 1 or not 0 <= args.round_trips <= 1000000:
        raise BenchError("--bytes must be 1 to 4294967295, --runs at least 1, --round-trips 0 "
                         "to 1000000")

    profile = wh.driver_profile(args.image)
    if profile.backend != "nmr" or not profile.connection:
        raise BenchError("%s: the bench runs the raw NMR echo image (wsk_echo)" % args.image)
    if not os.path.isfile(wh.WINE_BUILTIN_NETIO):
        raise BenchError("Wine's own netio.sys is not at %s" % wh.WINE_BUILTIN_NETIO)
    bridge = wh.provider_images([wh.BRIDGE_VARIANT])[wh.BRIDGE_VARIANT]
    server = EchoServer()
    prefix = wh.Prefix(test_netio=True)
    figures = []
    try:
        print("echo-bench: booting a Wine prefix in %s" % prefix.dir, flush=True)
        prefix.boot()
        prefix.install(bridge, args.image, profile, bridged=True)
        shutil.copyfile(args.client, os.path.join(prefix.path, "drive_c", "winsock_echo.exe"))
        code, out = prefix.sc("create", profile.service, "type=", "kernel", "start=", "demand",
                              "binPath=", wh.bin_path(profile))
        if code != 0:
            raise BenchError("sc create exited %d:\n%s" % (code, out))
        key = r"HKLM\System\CurrentControlSet\Services\%s\Parameters" % profile.service
        set_parameters(prefix, key, (("Host", "REG_SZ", "127.0.0.1"),
                                     ("Port", "REG_DWORD", str(server.port)),
                                     ("Message", "REG_SZ", MESSAGE),
                                     ("Bytes", "REG_DWORD", str(args.bytes))), ("RoundTrips",))
        drivers = ([("driver", args.image)] + ([("before", args.before)] if args.before else [])
                   + ([("c", args.c)] if args.c else []))
        starts = 0
        expected = []  # what the server must have echoed, per connection, in order

        def start(side, image):
            """One run of `image`, installed as the service's file (the service is stopped)."""
            nonlocal starts
            shutil.copyfile(image, os.path.join(prefix.drivers, profile.sys_name))
            starts += 1
            return run_driver(prefix, profile, starts, args.timeout)

        for run in range(1, args.runs + 1):
            for side, image in drivers:
                ms = throughput(start(side, image), side, run, args.bytes)
                expected.append(args.bytes)
                figures.append("%s %d %d" % (side, args.bytes, ms))
                print("echo-bench: %s run %d: %d bytes in %d ms" % (side, run, args.bytes, ms),
                      flush=True)
            ms = run_client(prefix, server.port, run, args.bytes, args.timeout)
            expected.append(args.bytes)
            figures.append("winsock %d %.3f" % (args.bytes, ms))
            print("echo-bench: winsock run %d: %d bytes in %.3f ms" % (run, args.bytes, ms),
                  flush=True)
        if args.round_trips:
            set_parameters(prefix, key, (("Message", "REG_SZ", LATENCY_MESSAGE),
                                         ("RoundTrips", "REG_DWORD", str(args.round_trips))),
                           ("Bytes",))
            sides = [("driver", args.image)] + ([("c", args.c)] if args.c else [])
            for run in range(1, args.runs + 1):
                for side, image in sides:
                    figure = latency(start(side, image), side, run, args.round_trips)
                    expected.append(args.round_trips * len(LATENCY_MESSAGE))
                    figures.append("%s-latency %d %d %d" % ((side, args.round_trips) + figure))
                    print("echo-bench: %s latency run %d: %d round trips, p50 %d us, p99 %d us"
                          % ((side, run, args.round_trips) + figure), flush=True)
        text = prefix.log()
        crashes = wh.crash_lines(text)
        if crashes:
            raise BenchError("a Wine process crashed:\n  " + "\n  ".join(crashes[:20]))
        leaks = re.findall(r"unloaded, live pool allocations: (\d+)", text)
        if len(leaks) != starts or any(n != "0" for n in leaks):
            raise BenchError("live pool allocations at unload: %r" % leaks)
        echoed = server.connections()
        if echoed != expected:
            raise BenchError("the server echoed %r bytes per connection, not %r"
                             % (echoed, expected))
    finally:
        prefix.close()
        server.close()
    with open(args.out, "w") as f:
        f.write("\n".join(figures) + "\n")


if __name__ == "__main__":
    try:
        main()
    except (BenchError, wh.HarnessError) as error:
        print("echo-bench: error: %s" % error, file=sys.stderr)
        sys.exit(1)
