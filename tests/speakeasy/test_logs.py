"""Section 13: the driver's log lines — well formed, present, in order, and telling the
fallbacks and failures at their levels.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""
import re

from expected import (CONN, CONNECTION_CLOSE, CONNECTION_OPEN, NMR, PROFILE, assert_in_order,
                      deregistered_index, log_events, nmr_only, registration_index,
                      wskregister_only)


# ---------------------------------------------------------------------------------------------
# 13. Log lines
# ---------------------------------------------------------------------------------------------
def test_log_lines_are_well_formed_and_present(run):
    r = run("default")
    logs = log_events(r)
    assert logs, "the driver logged nothing"
    for e in logs:
        assert e.name == "DbgPrintEx", e
        assert e.args["ComponentId"] == 77, e  # DPFLTR_IHVDRIVER_ID
        assert 0 <= e.args["Level"] <= 3, e
        assert e.text.startswith(PROFILE.prefix) and e.text.endswith("\n"), e.text
        assert "\n" not in e.text[:-1], e.text
        assert not re.search(r"%[-+ #0-9.]*[a-zA-Z]", e.text), "unformatted: %r" % e.text
    text = "".join(e.text for e in logs)
    # The attach says which version it got.
    assert re.search(r"attach.*WSK 1\.1", text), text
    # Unload is visible too: detach and cleanup log (NMR), release and deregister (WskRegister).
    if NMR:
        assert re.search(r"detach", text), text
        assert re.search(r"cleanup", text), text
    else:
        assert re.search(r"WskReleaseProviderNPI", text), text
        assert re.search(r"WskDeregister", text), text


def unload_logs():
    """The library's unload lines before the deregistration."""
    if CONN:
        return ["unload: 1 reference(s) outstanding", "unload: waiting for 1 reference(s)",
                CONNECTION_CLOSE]
    return ["unload: 0 reference(s) outstanding"]


def test_log_lines_of_load_and_unload(run):
    """The lines of a load, attach and unload come in this order (other lines may come between),
    the driver's own set-up and teardown lines in their place, each once; those sit before the
    registration and after the deregistration completed (and the driver's own frees)."""
    r = run("default")
    lines = [t.rstrip("\n") for t in r.logs]
    if NMR:
        attach_lines = ["attach tried WSK 1.1: 0x00000000", "attached at WSK 1.1",
                        "registered as WSK NPI client"]
        detach_lines = ["detach: no call in flight, detached", "cleanup: binding context freed"]
    else:
        attach_lines = ["WskRegister with WSK 1.1: 0x00000000",
                        "captured the WSK provider NPI, attached at WSK 1.1",
                        "registered as WSK client (WskRegister)"]
        detach_lines = ["WskReleaseProviderNPI: binding context freed", "WskDeregister returned"]
    expected = [PROFILE.log(t) for t in [
        "pool: ExAllocatePool2",
        *PROFILE.setup_logs,
        *attach_lines,
        *([CONNECTION_OPEN] if CONN else []),
        *unload_logs(),
        *detach_lines,
        *PROFILE.teardown_logs,
        "unloaded, live pool allocations: 0",
    ]]
    assert_in_order(lines, expected)
    logs = log_events(r)
    register = registration_index(r)
    dereg = deregistered_index(r)
    last_free = max((e.seq for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")),
                    default=0)
    for line in PROFILE.setup_logs:
        (e,) = [e for e in logs if e.text == PROFILE.log(line) + "\n"]
        assert e.seq < register, e
    for line in PROFILE.teardown_logs:
        (e,) = [e for e in logs if e.text == PROFILE.log(line) + "\n"]
        assert e.seq > dereg and e.seq > last_free, e
    # Nothing above INFO level in a clean run.
    assert all(e.args["Level"] == 3 for e in logs), [(e.args["Level"], e.text) for e in logs]


@nmr_only
def test_log_lines_tell_fallback_and_declines(run):
    fallback = "".join(e.text for e in log_events(run("fallback")))
    assert re.search(r"WSK 1\.1", fallback) and re.search(r"attached at WSK 1\.0", fallback), \
        fallback
    for scenario in ["wsk12-only", "null-characteristics", "wrong-npiid", "inverted-range",
                     "all-nointerface", "no-pool"]:
        r = run(scenario)
        warnings = [e for e in log_events(r) if e.args["Level"] <= 2 and "attach" in e.text]
        assert warnings, "%s: no warning/error line about the attach: %r" % (
            scenario, [e.text for e in log_events(r)])


@wskregister_only
def test_log_lines_tell_capture_fallback_and_failures(run):
    # DPFLTR_ERROR_LEVEL 0, DPFLTR_WARNING_LEVEL 1.
    for scenario, level, line in [
            ("fallback", 1, "WskCaptureProviderNPI: STATUS_NOINTERFACE, falling back"),
            ("wsk12-only", 0, "WskCaptureProviderNPI failed: 0xC00002B9"),
            ("nmr-error", 0, "WskCaptureProviderNPI failed: 0xC000009A"),
            ("no-pool", 0, "capture: no pool for the binding context")]:
        r = run(scenario)
        got = [(e.args["Level"], e.text) for e in log_events(r)]
        assert (level, PROFILE.log(line) + "\n") in got, (scenario, got)
