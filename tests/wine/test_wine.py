"""A driver image (wsk_attach.sys, wsk_echo.sys or wsk_echo_wskregister.sys) under Wine, loaded by
Wine's real sc.exe / services.exe / winedevice.exe, with a WSK provider: for a raw NMR image the
test NETIO.SYS (tests/wine/netio-provider) standing in for NMR and the WSK provider, in its two
variants (`wsk11`, `noif11`); for the WskRegister image Wine's own netio.sys (`wine-netio`),
whose WskRegister / WskCaptureProviderNPI are real and whose provider dispatch says WSK 1.0.

    tests/wine/run.sh        (setup + pytest; see tests/wine/README.md)

The service name, the image's file name, the log prefix, the backend, the driver's extra log
lines and its connection come from the image's driver profile (tests/driver_profiles.py; the
`profile` fixture).

What is checked, from the DbgPrintEx output (WINEDEBUG=+debugstr) and sc's own answers:
- sc create / start (RUNNING) / query (RUNNING) / stop (STOPPED) / delete of the profile's
  service, whose binPath is the image under the service's file name;
- the driver takes the ExAllocatePoolWithTag(NonPagedPoolNx) fallback (Wine has no
  ExAllocatePool2; the prefix says Windows 10), logs its own set-up lines (wsk_echo) before it
  registers, attaches at WSK 1.1 to the `wsk11` provider and falls back from 1.1 to 1.0 with the
  `noif11` one, or registers through WskRegister at 1.1 and is attached at WSK 1.0 by Wine's
  provider; its connection (wsk_echo) takes a binding reference from a work item;
- on stop: the unload's reference count, the connection's reference released by its work item,
  then deregistration, detach and cleanup of the binding context (NMR) or the binding context
  freed, WskReleaseProviderNPI and WskDeregister (WskRegister), the driver's own teardown lines
  and the unload, in that order, with the driver's own count of live pool allocations (all of
  its allocations) at 0;
- no NMR rule broken as seen by the provider (`netio-provider: ERROR`), no failure logged by the
  driver, no crash or unbound import in any Wine process;
- 20 start/stop cycles in one prefix, each complete;
- with the test NETIO.SYS: its emulation of Windows' image lifetime installed in each
  winedevice.exe and, for a driver with work items, the client's IoQueueWorkItem import patched
  and its work items queued through it (see wine_harness.image_pinning_problems).
"""
import os
import re

import pytest

import wine_harness as wh
from driver_profiles import CONNECTION_CLOSE_LOG, CONNECTION_OPEN_LOG


def _profile_at_collection():
    try:
        return wh.driver_profile(wh.driver_image_path())
    except wh.UnknownDriver:
        return None  # the `profile` fixture fails the tests with the reason


# The provider variants of this image (parametrisation is decided at collection).
VARIANTS = wh.variants_for(_profile_at_collection())


def start_lines(profile, variant):
    """What `sc start` logs, in order, with the `variant` provider."""
    d = profile.log
    setup = [
        d("pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"),
        *(d(line) for line in profile.setup_logs),
    ]
    connection = [d(CONNECTION_OPEN_LOG)] if profile.connection else []
    if variant == wh.BUILTIN_VARIANT:
        return setup + [
            d("WskRegister with WSK 1.1: 0x00000000"),
            # Wine's WSK_PROVIDER_DISPATCH says 1.0: the client uses no more than that.
            d("captured the WSK provider NPI, attached at WSK 1.0"),
            d("registered as WSK client (WskRegister)"),
        ] + connection
    register = [
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
    return setup + register + attach + [
        "netio-provider: NmrRegisterClient: handle",
        d("registered as WSK NPI client"),
    ] + connection


def stop_lines(profile):
    """What `sc stop` logs, in order. (`unload: waiting for 1 reference(s)` is logged too, but
    the work item may release the reference before or after it: once_per_cycle counts it.)"""
    d = profile.log
    if profile.connection:
        references = [d("unload: 1 reference(s) outstanding"), d(CONNECTION_CLOSE_LOG)]
    else:
        references = [d("unload: 0 reference(s) outstanding")]
    if profile.backend == "wskregister":
        deregister = [
            d("WskReleaseProviderNPI: binding context freed"),
            d("WskDeregister returned"),
        ]
    else:
        deregister = [
            "netio-provider: NmrDeregisterClient(",
            "netio-provider: calling ClientDetachProvider(",
            d("detach: no call in flight, detached"),
            "netio-provider: ClientDetachProvider returned 0x00000000",
            "netio-provider: calling ClientCleanupBindingContext(",
            d("cleanup: binding context freed"),
            "netio-provider: ClientCleanupBindingContext returned: binding cleaned up",
            "netio-provider: NmrDeregisterClient: STATUS_PENDING",
            "netio-provider: NmrWaitForClientDeregisterComplete(",
            "netio-provider: NmrWaitForClientDeregisterComplete: deregistration complete, "
            "0x00000000",
        ]
    return references + deregister + [
        *(d(line) for line in profile.teardown_logs),
        d("unloaded, live pool allocations: 0"),
    ]


def attached_line(profile):
    """The start of the line that says at which version the driver is attached."""
    return profile.log("attached at" if profile.backend == "nmr"
                       else "captured the WSK provider NPI, attached at")


def once_per_cycle(profile):
    """Lines each start/stop cycle logs exactly once."""
    lines = ["unloaded, live pool allocations:",
             *profile.setup_logs, *profile.teardown_logs]
    if profile.backend == "wskregister":
        lines += ["WskRegister with WSK", "WskReleaseProviderNPI: binding context freed",
                  "WskDeregister returned"]
    else:
        lines += ["cleanup: binding context freed"]
    if profile.connection:
        lines += [CONNECTION_OPEN_LOG, "unload: 1 reference(s) outstanding",
                  "unload: waiting for 1 reference(s)", CONNECTION_CLOSE_LOG]
    return [attached_line(profile)] + [profile.log(line) for line in lines]


def forbidden(profile):
    """Lines that must never appear: a broken NMR rule seen by the provider, a failure the driver
    logs (including a connection without a provider, a work item refused or not queued, a capture
    given up)."""
    return re.compile(r"netio-provider: ERROR|%s.*(failed|declined|NULL|unexpected|slot is in use"
                      r"|no provider|not queued|refused|given up|no pool)"
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


def _check_pinning(text, profile, starts, what):
    """The test NETIO.SYS kept Windows' image lifetime (raw NMR images; the WskRegister image's
    `wine-netio` variant has no test NETIO.SYS)."""
    if profile.backend != "nmr":
        return
    problems = wh.image_pinning_problems(text, starts, queues_work_items=profile.connection)
    assert not problems, "%s:\n  %s" % (what, "\n  ".join(problems))


def _assert_order(text, expected, what):
    ok, message = wh.find_in_order(wh.events(text), expected)
    assert ok, "%s: %s" % (what, message)


def _install_and_create(prefix, provider, driver, profile):
    prefix.install(provider, driver, profile)
    code, out = prefix.sc("create", profile.service, "type=", "kernel", "start=", "demand",
                          "binPath=", wh.bin_path(profile))
    assert code == 0, "sc create exited %d:\n%s\n%s" % (code, out, prefix.log_tail())


def _start(prefix, profile, what, expect_count=1):
    """sc start, then wait for the start's last line (the connection's, when the driver has one:
    its work item runs after DriverEntry returned; stopping earlier would race it)."""
    offset = len(prefix.log())
    code, out = prefix.sc("start", profile.service)
    seen = prefix.wait_log(profile.log(profile.started_log), expect_count,
                           timeout=20 if code == 0 else 2)
    assert code == 0 and "RUNNING" in out, (
        "%s: sc start exited %d:\n%s\n--- log since sc start ---\n%s"
        % (what, code, out, prefix.log_since(offset)))
    assert seen == expect_count, "%s: the driver did not log %r (%d of %d):\n%s" % (
        what, profile.started_log, seen, expect_count, prefix.log_since(offset))


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
    """Wine, the driver image (with a driver profile) and the provider(s) of its backend are
    there: a FAILED test (not only fixture errors in the others) when one is missing. Fixtures
    resolved in the test body fail the test itself."""
    request.getfixturevalue("wine_tools")
    assert os.path.isfile(request.getfixturevalue("driver_image"))
    profile = request.getfixturevalue("profile")
    assert set(request.getfixturevalue("providers")) == set(wh.variants_for(profile))
    assert tuple(VARIANTS) == tuple(wh.variants_for(profile))


@pytest.mark.parametrize("variant", VARIANTS)
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
    assert profile.log("unload:") not in start_text
    for line in profile.teardown_logs:
        assert profile.log(line) not in start_text, line
    assert attached_line(profile) not in stop_text
    assert profile.log(CONNECTION_OPEN_LOG) not in stop_text
    for line in profile.setup_logs:
        assert profile.log(line) not in stop_text, line
    # The WSK provider the driver got: Wine's own netio.sys (builtin) for the WskRegister
    # image, the test NETIO.SYS (native) otherwise.
    loads = wh.netio_loads(log[base:])
    want = "builtin" if variant == wh.BUILTIN_VARIANT else "native"
    assert loads and set(loads) == {want}, "netio.sys loaded as %r, want %s" % (loads, want)
    if profile.backend == "wskregister":
        # No test NETIO.SYS in the prefix, and Wine's provider was ready at once (no capture
        # from a work item).
        assert "netio-provider:" not in log
        assert profile.log("WSK provider not ready") not in log
    whole = log[base:]
    for once in once_per_cycle(profile):
        assert whole.count(once) == 1, "%s: %r seen %d times" % (variant, once, whole.count(once))
    _check_clean(whole, variant, profile)
    _check_pinning(whole, profile, 1, variant)


@pytest.mark.parametrize("variant", VARIANTS)
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
    per_cycle = once_per_cycle(profile) + [profile.log("unloaded, live pool allocations: 0")]
    if profile.backend == "nmr":
        per_cycle.append("deregistration complete, 0x00000000")
    for line in per_cycle:
        assert whole.count(line) == CYCLES, "%s: %r seen %d times, want %d" % (
            variant, line, whole.count(line), CYCLES)
    _check_clean(whole, variant, profile)
    _check_pinning(whole, profile, CYCLES, variant)
