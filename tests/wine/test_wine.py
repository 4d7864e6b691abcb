"""A driver image (wsk_attach.sys or wsk_echo.sys) under Wine, loaded by Wine's real sc.exe /
services.exe / winedevice.exe, with the test NETIO.SYS (tests/wine/netio-provider) standing in
for NMR and the WSK provider.

    tests/wine/run.sh        (setup + pytest; see tests/wine/README.md)

The service name, the image's file name, the log prefix and the driver's extra log lines come
from the image's driver profile (tests/driver_profiles.py; the `profile` fixture).

What is checked, from the DbgPrintEx output (WINEDEBUG=+debugstr) and sc's own answers:
- sc create / start (RUNNING) / query (RUNNING) / stop (STOPPED) / delete of the profile's
  service, whose binPath is the image under the profile's file name;
- the driver takes the ExAllocatePoolWithTag(NonPagedPoolNx) fallback (Wine has no
  ExAllocatePool2; the prefix says Windows 10), logs its own set-up lines (wsk_echo) before it
  registers, attaches at WSK 1.1 to the `wsk11` provider and falls back from 1.1 to 1.0 with the
  `noif11` one; on stop: deregistration, detach, cleanup of the binding context, the driver's own
  teardown lines (wsk_echo) and unload, in that order, with the driver's own count of live pool
  allocations (all of its allocations) at 0;
- no NMR rule broken as seen by the provider (`netio-provider: ERROR`), no failure logged by the
  driver, no crash or unbound import in any Wine process;
- 20 start/stop cycles in one prefix, each complete.
"""
import os
import re

import pytest

import wine_harness as wh


def start_lines(profile, variant):
    """What `sc start` logs, in order, with the `variant` test NETIO.SYS."""
    d = profile.log
    register = [
        d("pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"),
        *(d(line) for line in profile.setup_logs),
        "netio-provider: NmrRegisterClient(",
        "netio-provider: client characteristics: Version 0 Length 72, instance Version 0 Size 40 "
        "Number 0, NPI is WSK: 1",
        "): client asks for WSK 1.1",
    ]
    attach = {
        "wsk11": [
            "netio-provider: NmrClientAttachProvider: accepted WSK 1.1",
            d("attach tried WSK 1.1: 0x00000000"),
            d("attached at WSK 1.1"),
            "netio-provider: ClientAttachProvider returned 0x00000000",
            "netio-provider: binding attached at WSK 1.1",
        ],
        "noif11": [
            "netio-provider: NmrClientAttachProvider: WSK 1.1 refused: STATUS_NOINTERFACE",
            d("attach tried WSK 1.1: 0xC00002B9"),
            d("fallback from WSK 1.1 to WSK 1.0"),
            "): client asks for WSK 1.0",
            "netio-provider: NmrClientAttachProvider: accepted WSK 1.0",
            d("attach tried WSK 1.0: 0x00000000"),
            d("attached at WSK 1.0"),
            "netio-provider: ClientAttachProvider returned 0x00000000",
            "netio-provider: binding attached at WSK 1.0",
        ],
    }[variant]
    return register + attach + [
        "netio-provider: NmrRegisterClient: handle",
        d("registered as WSK NPI client"),
    ]


def stop_lines(profile):
    """What `sc stop` logs, in order."""
    d = profile.log
    return [
        "netio-provider: NmrDeregisterClient(",
        "netio-provider: calling ClientDetachProvider(",
        d("detach: no call in flight, detached"),
        "netio-provider: ClientDetachProvider returned 0x00000000",
        "netio-provider: calling ClientCleanupBindingContext(",
        d("cleanup: binding context freed"),
        "netio-provider: ClientCleanupBindingContext returned: binding cleaned up",
        "netio-provider: NmrDeregisterClient: STATUS_PENDING",
        "netio-provider: NmrWaitForClientDeregisterComplete(",
        "netio-provider: NmrWaitForClientDeregisterComplete: deregistration complete, 0x00000000",
        *(d(line) for line in profile.teardown_logs),
        d("unloaded, live pool allocations: 0"),
    ]


def once_per_cycle(profile):
    """Lines each start/stop cycle logs exactly once."""
    return [profile.log(line) for line in (
        "attached at", "cleanup: binding context freed", "unloaded, live pool allocations:",
        *profile.setup_logs, *profile.teardown_logs)]


def forbidden(profile):
    """Lines that must never appear: a broken NMR rule seen by the provider, a failure the driver
    logs."""
    return re.compile(r"netio-provider: ERROR|%s.*(failed|declined|NULL|unexpected|slot is in use)"
                      % re.escape(profile.prefix))


def live_allocations(profile):
    return re.compile(r"%sunloaded, live pool allocations: (\d+)" % re.escape(profile.prefix))


CYCLES = 20


def _check_clean(text, what, profile):
    """No forbidden line, no crash, and every unload reported 0 live pool allocations."""
    lines = wh.events(text)
    bad = [line for line in lines if forbidden(profile).search(line)]
    assert not bad, "%s: failures logged:\n  %s" % (what, "\n  ".join(bad))
    crashes = wh.crash_lines(text)
    assert not crashes, "%s: a Wine process crashed or an import is unbound:\n  %s" % (
        what, "\n  ".join(crashes[:20]))
    leaks = [m.group(0) for m in live_allocations(profile).finditer(text) if m.group(1) != "0"]
    assert not leaks, "%s: pool allocations still live at unload (a leak):\n  %s" % (
        what, "\n  ".join(leaks))


def _assert_order(text, expected, what):
    ok, message = wh.find_in_order(wh.events(text), expected)
    assert ok, "%s: %s" % (what, message)


def _install_and_create(prefix, provider, driver, profile):
    prefix.install(provider, driver, profile)
    code, out = prefix.sc("create", profile.service, "type=", "kernel", "start=", "demand",
                          "binPath=", wh.bin_path(profile))
    assert code == 0, "sc create exited %d:\n%s\n%s" % (code, out, prefix.log_tail())


def _start(prefix, profile, what, expect_count=1):
    offset = len(prefix.log())
    code, out = prefix.sc("start", profile.service)
    seen = prefix.wait_log(profile.log("registered as WSK NPI client"), expect_count,
                           timeout=20 if code == 0 else 2)
    assert code == 0 and "RUNNING" in out, (
        "%s: sc start exited %d:\n%s\n--- log since sc start ---\n%s"
        % (what, code, out, prefix.log_since(offset)))
    assert seen == expect_count, "%s: the driver did not register (%d of %d):\n%s" % (
        what, seen, expect_count, prefix.log_since(offset))


def _stop(prefix, profile, what, expect_count=1):
    offset = len(prefix.log())
    code, out = prefix.sc("stop", profile.service)
    state = prefix.wait_state(profile.service, "STOPPED")
    seen = prefix.wait_log(profile.log("unloaded, live pool allocations:"), expect_count,
                           timeout=20)
    assert code == 0 and state == "STOPPED", (
        "%s: sc stop exited %d, state %s:\n%s\n--- log since sc stop ---\n%s"
        % (what, code, state, out, prefix.log_since(offset)))
    assert seen == expect_count, "%s: no unload line (%d of %d):\n%s" % (
        what, seen, expect_count, prefix.log_since(offset))


def _delete(prefix, profile):
    code, out = prefix.sc("delete", profile.service)
    assert code == 0, "sc delete exited %d:\n%s" % (code, out)
    code, out = prefix.sc("query", profile.service)
    assert code != 0, "the service is still there after sc delete:\n%s" % out


def test_images_and_tools(request):
    """Wine, the driver image (with a driver profile) and both provider variants are there: a
    FAILED test (not only fixture errors in the others) when one is missing. Fixtures resolved in
    the test body fail the test itself."""
    request.getfixturevalue("wine_tools")
    assert os.path.isfile(request.getfixturevalue("driver_image"))
    request.getfixturevalue("profile")
    assert set(request.getfixturevalue("providers")) == {"wsk11", "noif11"}


@pytest.mark.parametrize("variant", ["wsk11", "noif11"])
def test_sc_lifecycle(prefix, driver_image, profile, providers, variant):
    _install_and_create(prefix, providers[variant], driver_image, profile)
    base = len(prefix.log())

    _start(prefix, profile, variant)
    code, out = prefix.sc("query", profile.service)
    assert code == 0 and "RUNNING" in out, "sc query after start:\n%s" % out
    started = len(prefix.log())

    _stop(prefix, profile, variant)
    stopped = len(prefix.log())
    _delete(prefix, profile)

    log = prefix.log()
    start_text, stop_text = log[base:started], log[started:stopped]
    _assert_order(start_text, start_lines(profile, variant), "%s, sc start" % variant)
    _assert_order(stop_text, stop_lines(profile), "%s, sc stop" % variant)
    # Nothing of the stop in the start phase, and the other way round.
    assert "netio-provider: NmrDeregisterClient(" not in start_text
    for line in profile.teardown_logs:
        assert profile.log(line) not in start_text, line
    assert profile.log("attached at") not in stop_text
    for line in profile.setup_logs:
        assert profile.log(line) not in stop_text, line
    whole = log[base:]
    for once in once_per_cycle(profile):
        assert whole.count(once) == 1, "%s: %r seen %d times" % (variant, once, whole.count(once))
    _check_clean(whole, variant, profile)


@pytest.mark.parametrize("variant", ["wsk11", "noif11"])
def test_start_stop_cycles(prefix, driver_image, profile, providers, variant):
    _install_and_create(prefix, providers[variant], driver_image, profile)
    base = len(prefix.log())
    for cycle in range(1, CYCLES + 1):
        what = "%s, cycle %d of %d" % (variant, cycle, CYCLES)
        _start(prefix, profile, what, expect_count=cycle)
        _stop(prefix, profile, what, expect_count=cycle)
        # Fail at the first bad cycle, not after twenty.
        _check_clean(prefix.log()[base:], what, profile)
    _delete(prefix, profile)

    whole = prefix.log()[base:]
    _assert_order(whole, (start_lines(profile, variant) + stop_lines(profile)) * CYCLES,
                  "%s, %d cycles" % (variant, CYCLES))
    for line in once_per_cycle(profile) + [profile.log("unloaded, live pool allocations: 0"),
                                           "deregistration complete, 0x00000000"]:
        assert whole.count(line) == CYCLES, "%s: %r seen %d times, want %d" % (
            variant, line, whole.count(line), CYCLES)
    _check_clean(whole, variant, profile)
