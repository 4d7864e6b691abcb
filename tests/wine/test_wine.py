"""wsk_attach.sys under Wine, loaded by Wine's real sc.exe / services.exe / winedevice.exe, with
the test NETIO.SYS (tests/wine/netio-provider) standing in for NMR and the WSK provider.

    tests/wine/run.sh        (setup + pytest; see tests/wine/README.md)

What is checked, from the DbgPrintEx output (WINEDEBUG=+debugstr) and sc's own answers:
- sc create / start (RUNNING) / query (RUNNING) / stop (STOPPED) / delete;
- the driver takes the ExAllocatePoolWithTag fallback (Wine has no ExAllocatePool2), attaches at
  WSK 1.1 to the `wsk11` provider and falls back from 1.1 to 1.0 with the `noif11` one; on stop:
  deregistration, detach, cleanup of the binding context and unload, in that order, with the
  driver's own count of live pool allocations at 0;
- no NMR rule broken as seen by the provider (`netio-provider: ERROR`), no failure logged by the
  driver, no crash or unbound import in any Wine process;
- 20 start/stop cycles in one prefix, each complete.
"""
import os
import re

import pytest

import wine_harness as wh

POOL = "wsk_attach: pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"

START = {
    "wsk11": [
        POOL,
        "netio-provider: NmrRegisterClient(",
        "netio-provider: client characteristics: Version 0 Length 72, instance Version 0 Size 40 "
        "Number 0, NPI is WSK: 1",
        "): client asks for WSK 1.1",
        "netio-provider: NmrClientAttachProvider: accepted WSK 1.1",
        "wsk_attach: attach tried WSK 1.1: 0x00000000",
        "wsk_attach: attached at WSK 1.1",
        "netio-provider: ClientAttachProvider returned 0x00000000",
        "netio-provider: binding attached at WSK 1.1",
        "netio-provider: NmrRegisterClient: handle",
        "wsk_attach: registered as WSK NPI client",
    ],
    "noif11": [
        POOL,
        "netio-provider: NmrRegisterClient(",
        "netio-provider: client characteristics: Version 0 Length 72, instance Version 0 Size 40 "
        "Number 0, NPI is WSK: 1",
        "): client asks for WSK 1.1",
        "netio-provider: NmrClientAttachProvider: WSK 1.1 refused: STATUS_NOINTERFACE",
        "wsk_attach: attach tried WSK 1.1: 0xC00002B9",
        "wsk_attach: fallback from WSK 1.1 to WSK 1.0",
        "): client asks for WSK 1.0",
        "netio-provider: NmrClientAttachProvider: accepted WSK 1.0",
        "wsk_attach: attach tried WSK 1.0: 0x00000000",
        "wsk_attach: attached at WSK 1.0",
        "netio-provider: ClientAttachProvider returned 0x00000000",
        "netio-provider: binding attached at WSK 1.0",
        "netio-provider: NmrRegisterClient: handle",
        "wsk_attach: registered as WSK NPI client",
    ],
}

STOP = [
    "netio-provider: NmrDeregisterClient(",
    "netio-provider: calling ClientDetachProvider(",
    "wsk_attach: detach: no call in flight, detached",
    "netio-provider: ClientDetachProvider returned 0x00000000",
    "netio-provider: calling ClientCleanupBindingContext(",
    "wsk_attach: cleanup: binding context freed",
    "netio-provider: ClientCleanupBindingContext returned: binding cleaned up",
    "netio-provider: NmrDeregisterClient: STATUS_PENDING",
    "netio-provider: NmrWaitForClientDeregisterComplete(",
    "netio-provider: NmrWaitForClientDeregisterComplete: deregistration complete, 0x00000000",
    "wsk_attach: unloaded, live pool allocations: 0",
]

# Lines that must never appear: a broken NMR rule seen by the provider, a failure the driver logs.
FORBIDDEN = re.compile(
    r"netio-provider: ERROR|wsk_attach: .*(failed|declined|NULL|unexpected|slot is in use)")
LIVE = re.compile(r"wsk_attach: unloaded, live pool allocations: (\d+)")
CYCLES = 20


def _check_clean(text, what):
    """No forbidden line, no crash, and every unload reported 0 live pool allocations."""
    lines = wh.events(text)
    bad = [line for line in lines if FORBIDDEN.search(line)]
    assert not bad, "%s: failures logged:\n  %s" % (what, "\n  ".join(bad))
    crashes = wh.crash_lines(text)
    assert not crashes, "%s: a Wine process crashed or an import is unbound:\n  %s" % (
        what, "\n  ".join(crashes[:20]))
    leaks = [m.group(0) for m in LIVE.finditer(text) if m.group(1) != "0"]
    assert not leaks, "%s: pool allocations still live at unload (a leak):\n  %s" % (
        what, "\n  ".join(leaks))


def _assert_order(text, expected, what):
    ok, message = wh.find_in_order(wh.events(text), expected)
    assert ok, "%s: %s" % (what, message)


def _install_and_create(prefix, provider, driver):
    prefix.install(provider, driver)
    code, out = prefix.sc("create", wh.SERVICE, "type=", "kernel", "start=", "demand",
                          "binPath=", wh.BIN_PATH)
    assert code == 0, "sc create exited %d:\n%s\n%s" % (code, out, prefix.log_tail())


def _start(prefix, what, expect_count=1):
    offset = len(prefix.log())
    code, out = prefix.sc("start", wh.SERVICE)
    seen = prefix.wait_log("wsk_attach: registered as WSK NPI client", expect_count,
                           timeout=20 if code == 0 else 2)
    assert code == 0 and "RUNNING" in out, (
        "%s: sc start exited %d:\n%s\n--- log since sc start ---\n%s"
        % (what, code, out, prefix.log_since(offset)))
    assert seen == expect_count, "%s: the driver did not register (%d of %d):\n%s" % (
        what, seen, expect_count, prefix.log_since(offset))


def _stop(prefix, what, expect_count=1):
    offset = len(prefix.log())
    code, out = prefix.sc("stop", wh.SERVICE)
    state = prefix.wait_state("STOPPED")
    seen = prefix.wait_log("wsk_attach: unloaded, live pool allocations:", expect_count, timeout=20)
    assert code == 0 and state == "STOPPED", (
        "%s: sc stop exited %d, state %s:\n%s\n--- log since sc stop ---\n%s"
        % (what, code, state, out, prefix.log_since(offset)))
    assert seen == expect_count, "%s: no unload line (%d of %d):\n%s" % (
        what, seen, expect_count, prefix.log_since(offset))


def _delete(prefix):
    code, out = prefix.sc("delete", wh.SERVICE)
    assert code == 0, "sc delete exited %d:\n%s" % (code, out)
    code, out = prefix.sc("query", wh.SERVICE)
    assert code != 0, "the service is still there after sc delete:\n%s" % out


def test_images_and_tools(request):
    """Wine, the driver image and both provider variants are there: a FAILED test (not only
    fixture errors in the others) when one is missing. Fixtures resolved in the test body fail
    the test itself."""
    request.getfixturevalue("wine_tools")
    assert os.path.isfile(request.getfixturevalue("driver_image"))
    assert set(request.getfixturevalue("providers")) == {"wsk11", "noif11"}


@pytest.mark.parametrize("variant", ["wsk11", "noif11"])
def test_sc_lifecycle(prefix, driver_image, providers, variant):
    _install_and_create(prefix, providers[variant], driver_image)
    base = len(prefix.log())

    _start(prefix, variant)
    code, out = prefix.sc("query", wh.SERVICE)
    assert code == 0 and "RUNNING" in out, "sc query after start:\n%s" % out
    started = len(prefix.log())

    _stop(prefix, variant)
    stopped = len(prefix.log())
    _delete(prefix)

    log = prefix.log()
    start_text, stop_text = log[base:started], log[started:stopped]
    _assert_order(start_text, START[variant], "%s, sc start" % variant)
    _assert_order(stop_text, STOP, "%s, sc stop" % variant)
    # Nothing of the stop in the start phase, and the other way round.
    assert "netio-provider: NmrDeregisterClient(" not in start_text
    assert "wsk_attach: attached at" not in stop_text
    whole = log[base:]
    for once in ("wsk_attach: attached at", "wsk_attach: cleanup: binding context freed",
                 "wsk_attach: unloaded, live pool allocations:"):
        assert whole.count(once) == 1, "%s: %r seen %d times" % (variant, once, whole.count(once))
    _check_clean(whole, variant)


@pytest.mark.parametrize("variant", ["wsk11", "noif11"])
def test_start_stop_cycles(prefix, driver_image, providers, variant):
    _install_and_create(prefix, providers[variant], driver_image)
    base = len(prefix.log())
    for cycle in range(1, CYCLES + 1):
        what = "%s, cycle %d of %d" % (variant, cycle, CYCLES)
        _start(prefix, what, expect_count=cycle)
        _stop(prefix, what, expect_count=cycle)
        # Fail at the first bad cycle, not after twenty.
        _check_clean(prefix.log()[base:], what)
    _delete(prefix)

    whole = prefix.log()[base:]
    _assert_order(whole, (START[variant] + STOP) * CYCLES, "%s, %d cycles" % (variant, CYCLES))
    for line in ("wsk_attach: attached at", "wsk_attach: cleanup: binding context freed",
                 "wsk_attach: unloaded, live pool allocations: 0",
                 "deregistration complete, 0x00000000"):
        assert whole.count(line) == CYCLES, "%s: %r seen %d times, want %d" % (
            variant, line, whole.count(line), CYCLES)
    _check_clean(whole, variant)
