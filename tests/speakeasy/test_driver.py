"""End-to-end tests of the real wsk_attach.sys image under Speakeasy (see harness.py).

Each scenario asserts the exact sequence of calls between NMR and the driver (both directions),
the WSK version named by the client dispatch of every NmrClientAttachProvider try, and every
status returned; plus the pool balance per tag and the absence of contract violations that the
harness's NMR model detects (bad handles, callbacks in the wrong state, leaks, double frees, ...).

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
Image: $WSK_ATTACH_SYS, default target/x86_64-pc-windows-msvc/release/wsk_attach.sys (a missing
image FAILS the tests).
"""
import os
import re

import pytest

import harness
from harness import (NON_PAGED_POOL_NX, POOL_FLAG_NON_PAGED, POOL_TAG_WSKA, STATUS_INSUFFICIENT_RESOURCES,
                     STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_PENDING, STATUS_SUCCESS,
                     STATUS_UNSUCCESSFUL, WSK_1_0, WSK_1_1, Provider, Scenario, status_name)

S = status_name


def test_image_exists():
    """FAILS when the image is missing (every other test then errors in the image fixture)."""
    image = harness.default_image()
    assert os.path.isfile(image), ("driver image not found: %s (build it with `cargo xtask "
                                   "build-sys`, or set WSK_ATTACH_SYS)" % image)
    with open(image, "rb") as f:
        assert f.read(2) == b"MZ", "%s is not a PE image" % image

REGISTER = "NmrRegisterClient -> STATUS_SUCCESS"
UNLOAD = [
    "NmrDeregisterClient -> STATUS_PENDING",
    "ClientDetachProvider -> STATUS_SUCCESS",
    "ClientCleanupBindingContext",
    "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
]
UNLOAD_NOTHING_ATTACHED = [
    "NmrDeregisterClient -> STATUS_PENDING",
    "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
]


def attach(st):
    return "ClientAttachProvider -> %s" % S(st)


def nmr_attach(version, st):
    return "NmrClientAttachProvider(WSK %d.%d) -> %s" % (version >> 8, version & 0xFF, S(st))


def sequence(r):
    """The calls between NMR and the driver, in the order they started, as readable strings."""
    out = []
    for e in r.nmr_calls:
        if e.name == "NmrClientAttachProvider":
            v = e.args.get("ClientDispatch.Version", 0)
            out.append("NmrClientAttachProvider(WSK %d.%d) -> %s" % (v >> 8, v & 0xFF, S(e.status)))
        elif e.name == "ClientCleanupBindingContext":
            out.append(e.name)
        else:
            out.append("%s -> %s" % (e.name, S(e.status)))
    return out


def assert_clean(r):
    """No contract violation seen by the NMR model, no emulation error, pool balanced, unloaded."""
    assert r.run_errors == [], r.run_errors
    assert r.violations == [], r.violations
    assert r.entry_status == STATUS_SUCCESS, S(r.entry_status)
    assert r.unload_set, "DriverEntry did not set DriverObject->DriverUnload"
    assert r.unload_ran, "DriverUnload did not run"
    assert r.outstanding == [], "pool left allocated at unload: %r" % r.outstanding
    for a in r.allocations:
        assert a.tag == POOL_TAG_WSKA, "allocation with tag %s" % harness.tag_name(a.tag)
        assert a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag, a


def wska_allocations(r):
    return [a for a in r.allocations if a.tag == POOL_TAG_WSKA]


def first(events, name):
    """The first event called `name`, or a readable failure."""
    for e in events:
        if e.name == name:
            return e
    raise AssertionError("no %s among %r" % (name, [e.name for e in events]))


def event_index(r, kind, name, nth=0):
    hits = [e.seq for e in r.events if e.kind == kind and e.name == name]
    assert len(hits) > nth, "no %s event %s (#%d)" % (kind, name, nth)
    return hits[nth]


# ---------------------------------------------------------------------------------------------
# 1. Attach during registration, at the highest common version
# ---------------------------------------------------------------------------------------------
def test_attach_during_registration_at_highest_common_version(run):
    r = run("default")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    # The attach happened inside NmrRegisterClient, before NMR wrote the client handle.
    reg = event_index(r, "nmr", "NmrRegisterClient")
    reg_ret = event_index(r, "nmr-return", "NmrRegisterClient")
    att = event_index(r, "callback", "ClientAttachProvider")
    assert reg < att < reg_ret
    (b,) = r.bindings
    assert b.state == "cleaned"
    assert [(t.version, t.status) for t in b.tries] == [(WSK_1_1, STATUS_SUCCESS)]
    # One binding context, from ExAllocatePool2(POOL_FLAG_NON_PAGED, ..., 'WskA').
    (a,) = r.allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePool2", POOL_FLAG_NON_PAGED, POOL_TAG_WSKA)
    (t,) = b.tries
    assert t.context_is_pool and t.client_context == a.address
    # NMR's out-values go straight into the binding context (no window where they are elsewhere).
    assert t.out_client_in_context and t.out_dispatch_in_context
    assert t.reserved == 0
    # The WSK_CLIENT_DISPATCH is a static of the image (it must outlive the attach call).
    assert r.in_image(t.client_dispatch)
    assert t.client_event == 0 or r.in_image(t.client_event)


def test_client_characteristics_and_system_routine(run):
    r = run("default")
    c = r.characteristics
    assert (c["Version"], c["Length"]) == (0, 72)
    assert (c["reg_Version"], c["reg_Size"], c["reg_Number"]) == (0, 40, 0)
    assert c["NpiId"] == harness.NPI_WSK_INTERFACE_ID
    assert c["ModuleId"]["Length"] == 24 and c["ModuleId"]["Type"] == 1
    assert c["ClientCleanupBindingContext"], "no cleanup callback: the context would leak"
    lookups = [e for e in r.events if e.name == "MmGetSystemRoutineAddress"]
    assert [e.args["SystemRoutineName"] for e in lookups] == ["ExAllocatePool2"]
    # ... looked up in DriverEntry, before the registration.
    assert lookups[0].seq < event_index(r, "nmr", "NmrRegisterClient")


# ---------------------------------------------------------------------------------------------
# 2. Fallback 1.1 -> 1.0 on STATUS_NOINTERFACE
# ---------------------------------------------------------------------------------------------
def test_fallback_from_1_1_to_1_0_on_nointerface(run):
    r = run("fallback")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_SUCCESS), *UNLOAD]
    assert_clean(r)
    (b,) = r.bindings
    # Both tries with the same binding handle and the same, single, context.
    assert {t.binding for t in b.tries} == {b.handle}
    assert len({t.client_context for t in b.tries}) == 1
    assert len(r.allocations) == 1


# ---------------------------------------------------------------------------------------------
# 3. A 1.0-only provider: 1.1 is never tried
# ---------------------------------------------------------------------------------------------
def test_wsk_1_0_only_provider_never_sees_1_1(run):
    r = run("wsk10-only")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_0, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    assert all(t.version == WSK_1_0 for t in r.attach_tries)


def test_provider_above_1_1_attaches_at_1_1(run):
    r = run(Scenario(name="wsk10-12", providers=[Provider(highest=0x0102, lowest=WSK_1_0)]))
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 4. No fitting version: STATUS_NOINTERFACE, nothing allocated, no NMR call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("low,high", [(0x0102, 0x0102), (0x0200, 0x0203), (0x0001, 0x00FF)])
def test_no_common_version_declines_without_allocating(run, low, high):
    r = run(Scenario(name="no-common", providers=[Provider(highest=high, lowest=low)]))
    assert sequence(r) == [REGISTER, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert r.allocations == []


def test_named_scenario_wsk12_only(run):
    r = run("wsk12-only")
    assert sequence(r) == [REGISTER, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert r.allocations == []
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 5. STATUS_NOINTERFACE for every version: context freed, STATUS_NOINTERFACE returned
# ---------------------------------------------------------------------------------------------
def test_nointerface_for_all_versions_frees_context(run):
    r = run("all-nointerface")
    assert sequence(r) == [REGISTER, attach(STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    (a,) = r.allocations
    # Freed inside ClientAttachProvider, before it returned.
    free = first(r.events, "ExFreePoolWithTag")
    ret = event_index(r, "return", "ClientAttachProvider")
    assert free.seq < ret and free.args == {"P": a.address, "Tag": POOL_TAG_WSKA}


# ---------------------------------------------------------------------------------------------
# 6. Another NMR error: no retry, that status returned, context freed
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [STATUS_INSUFFICIENT_RESOURCES, STATUS_UNSUCCESSFUL,
                                   STATUS_INVALID_PARAMETER], ids=status_name)
def test_other_nmr_error_is_not_retried(run, error):
    r = run(Scenario(name="nmr-error", providers=[
        Provider(answers={WSK_1_1: error, WSK_1_0: STATUS_SUCCESS})]))
    assert sequence(r) == [REGISTER, attach(error), nmr_attach(WSK_1_1, error),
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert len(r.allocations) == 1


def test_error_after_fallback_returns_last_status(run):
    r = run(Scenario(name="nointerface-then-error", providers=[
        Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_UNSUCCESSFUL})]))
    assert sequence(r) == [REGISTER, attach(STATUS_UNSUCCESSFUL),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_UNSUCCESSFUL), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 7. Allocation failure: STATUS_INSUFFICIENT_RESOURCES, no NMR call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool2", [True, False], ids=["ExAllocatePool2", "ExAllocatePoolWithTag"])
def test_allocation_failure(run, pool2):
    r = run(Scenario(name="no-pool", fail_pool_allocations=True, exallocatepool2=pool2))
    assert sequence(r) == [REGISTER, attach(STATUS_INSUFFICIENT_RESOURCES),
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    tried = [e for e in r.events if e.kind == "pool" and e.name.startswith("ExAllocate")]
    assert [e.name for e in tried] == ["ExAllocatePool2" if pool2 else "ExAllocatePoolWithTag"]
    assert tried[0].status == 0


def test_fallback_allocator_without_exallocatepool2(run):
    r = run("no-exallocatepool2")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    (a,) = r.allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePoolWithTag", NON_PAGED_POOL_NX, POOL_TAG_WSKA)
    assert not any(e.name == "ExAllocatePool2" for e in r.events)


# ---------------------------------------------------------------------------------------------
# 8. Malformed registration instances: STATUS_NOINTERFACE, nothing allocated
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["null-characteristics", "wrong-npiid", "inverted-range"])
def test_malformed_registration_instance_is_declined(run, scenario):
    r = run(scenario)
    assert sequence(r) == [REGISTER, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert r.allocations == []


# ---------------------------------------------------------------------------------------------
# 9. Detach and cleanup (provider side) and re-attach
# ---------------------------------------------------------------------------------------------
def test_provider_detach_then_cleanup_frees_in_cleanup(run):
    r = run("provider-detach")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext",
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    (b,) = r.bindings
    (a,) = r.allocations
    detach = first(r.nmr_calls, "ClientDetachProvider")
    cleanup = first(r.nmr_calls, "ClientCleanupBindingContext")
    assert detach.args["ClientBindingContext"] == b.client_context == a.address
    assert cleanup.args["ClientBindingContext"] == a.address
    # Freed in cleanup, not in detach.
    free = first(r.events, "ExFreePoolWithTag")
    assert event_index(r, "return", "ClientDetachProvider") < cleanup.seq < free.seq
    assert free.seq < event_index(r, "return", "ClientCleanupBindingContext")
    assert not any(e.name == "NmrClientDetachProviderComplete" for e in r.events)


def test_late_provider_attach_detach_reattach(run):
    r = run("late-provider")
    assert sequence(r) == [REGISTER,
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext",
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    assert len(r.bindings) == 2 and all(b.state == "cleaned" for b in r.bindings)
    assert len(r.allocations) == 2


def test_detach_during_attach_call(run):
    """NMR detaches the binding before NmrClientAttachProvider has returned (the race of
    ebpf-for-windows #4982): attach must still return STATUS_SUCCESS, and the context must be
    freed exactly once, by cleanup, with nothing left for unload."""
    r = run("detach-during-attach")
    assert sequence(r) == [REGISTER, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext",
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    (b,) = r.bindings
    assert b.state == "cleaned"
    detach = r.calls("ClientDetachProvider")[0]
    assert detach.args["ClientBindingContext"] == b.client_context


# ---------------------------------------------------------------------------------------------
# 10. Unload order and handles
# ---------------------------------------------------------------------------------------------
def test_unload_order_and_handles(run):
    r = run("default")
    names = r.call_names
    i = names.index("NmrDeregisterClient")
    assert names[i:] == ["NmrDeregisterClient", "ClientDetachProvider",
                         "ClientCleanupBindingContext", "NmrWaitForClientDeregisterComplete"]
    dereg, detach, cleanup, wait = r.nmr_calls[i:]
    # All of it inside DriverUnload.
    assert event_index(r, "run", "DriverUnload") < dereg.seq < wait.seq < \
        event_index(r, "run", "DriverUnload returned")
    # The client handle NMR wrote is the one given back, to both calls.
    assert r.client_handle
    assert dereg.args["NmrClientHandle"] == r.client_handle
    assert wait.args["NmrClientHandle"] == r.client_handle
    assert dereg.status == STATUS_PENDING and wait.status == STATUS_SUCCESS
    # The binding handle passed to NmrClientAttachProvider is the one NMR gave at attach.
    (b,) = r.bindings
    att = r.calls("ClientAttachProvider")[0]
    nmr = r.calls("NmrClientAttachProvider")[0]
    assert att.args["NmrBindingHandle"] == b.handle == nmr.args["NmrBindingHandle"]
    assert att.args["ClientContext"] == r.calls("NmrRegisterClient")[0].args["ClientContext"]
    # Detach and cleanup get the context given to NmrClientAttachProvider.
    assert detach.args["ClientBindingContext"] == nmr.args["ClientBindingContext"]
    assert cleanup.args["ClientBindingContext"] == nmr.args["ClientBindingContext"]
    # The context is freed by cleanup, before the wait.
    free = first(r.events, "ExFreePoolWithTag")
    assert cleanup.seq < free.seq < wait.seq
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 11. Log lines
# ---------------------------------------------------------------------------------------------
def log_events(r):
    return [e for e in r.events if e.kind == "log"]


def test_log_lines_are_well_formed_and_present(run):
    r = run("default")
    logs = log_events(r)
    assert logs, "the driver logged nothing"
    for e in logs:
        assert e.name == "DbgPrintEx", e
        assert e.args["ComponentId"] == 77, e  # DPFLTR_IHVDRIVER_ID
        assert 0 <= e.args["Level"] <= 3, e
        assert e.text.startswith("wsk_attach: ") and e.text.endswith("\n"), e.text
        assert "\n" not in e.text[:-1], e.text
        assert not re.search(r"%[-+ #0-9.]*[a-zA-Z]", e.text), "unformatted: %r" % e.text
    text = "".join(e.text for e in logs)
    # The attach says which version it got.
    assert re.search(r"attach.*WSK 1\.1", text), text
    # Unload is visible too: detach and cleanup log.
    assert re.search(r"detach", text), text
    assert re.search(r"cleanup", text), text


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


# ---------------------------------------------------------------------------------------------
# Every named scenario (as run_driver.py shows them) runs clean
# ---------------------------------------------------------------------------------------------
def test_registration_failure_fails_the_load(run):
    r = run("register-fails")
    assert sequence(r) == ["NmrRegisterClient -> STATUS_INSUFFICIENT_RESOURCES"]
    assert r.entry_status is not None and r.entry_status & 0x80000000, S(r.entry_status)
    assert r.violations == [] and r.run_errors == []
    assert r.outstanding == []
    assert not r.unload_ran


@pytest.mark.parametrize("scenario", sorted(set(harness.SCENARIOS) - {"register-fails"}))
def test_every_named_scenario_is_clean(run, scenario):
    r = run(scenario)
    assert_clean(r)
    text = harness.format_trace(r)
    assert "no problems found" in text
