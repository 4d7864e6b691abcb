"""End-to-end tests of a real driver image (wsk_attach.sys or wsk_echo.sys) under Speakeasy
(see harness.py).

Each scenario asserts the exact sequence of calls between NMR and the driver (both directions)
with the driver's own pool allocations and frees where they happen, the WSK version named by the
client dispatch of every NmrClientAttachProvider try, and every status returned; plus the pool
balance per tag and the absence of contract violations that the harness's NMR model detects (bad
handles, callbacks in the wrong state, a foreign NMR module id, leaks, double frees, ...).

What differs between the images (log prefix, binding tag, the driver's own allocations and log
lines, module id) comes from the image's driver profile, PROFILE (tests/driver_profiles.py).

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
Image: $WSK_DRIVER_SYS, default target/x86_64-pc-windows-msvc/release/wsk_attach.sys (a missing
image FAILS the tests; an image name without a profile fails the collection).
"""
import os
import re

import pytest

import harness
from harness import (NON_PAGED_POOL, NON_PAGED_POOL_NX, POOL_FLAG_NON_PAGED,
                     STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE,
                     STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, WSK_1_0, WSK_1_1,
                     Provider, Scenario, status_name, tag_name)

S = status_name

# The driver under test, by the image's file name (or $WSK_DRIVER_PROFILE).
PROFILE = harness.profile_for(harness.default_image())
BINDING_TAG = harness.pool_tag(PROFILE.binding_tag)
OWN_TAGS = [harness.pool_tag(t) for t in PROFILE.own_tags]
# Named scenarios in which DriverEntry fails, by design.
LOAD_FAILS = {"register-fails", "setup-no-pool"}


def test_image_exists():
    """FAILS when the image is missing (every other test then errors in the image fixture)."""
    image = harness.default_image()
    assert os.path.isfile(image), ("driver image not found: %s (build it with `cargo xtask "
                                   "sys`, or set WSK_DRIVER_SYS)" % image)
    with open(image, "rb") as f:
        assert f.read(2) == b"MZ", "%s is not a PE image" % image


# The driver's own allocations (none for wsk_attach) in sequence(): made in DriverEntry before it
# registers, freed in DriverUnload once deregistration is complete.
SETUP = ["allocate %s" % tag_name(t) for t in OWN_TAGS]
TEARDOWN = ["free %s" % tag_name(t) for t in OWN_TAGS]
LOAD = [*SETUP, "NmrRegisterClient -> STATUS_SUCCESS"]
UNLOAD = [
    "NmrDeregisterClient -> STATUS_PENDING",
    "ClientDetachProvider -> STATUS_SUCCESS",
    "ClientCleanupBindingContext",
    "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
    *TEARDOWN,
]
UNLOAD_NOTHING_ATTACHED = [
    "NmrDeregisterClient -> STATUS_PENDING",
    "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
    *TEARDOWN,
]


def attach(st):
    return "ClientAttachProvider -> %s" % S(st)


def nmr_attach(version, st):
    return "NmrClientAttachProvider(WSK %d.%d) -> %s" % (version >> 8, version & 0xFF, S(st))


def sequence(r):
    """The calls between NMR and the driver, in the order they started, and the driver's own
    pool allocations ("allocate 'EchD'", "... -> NULL" when it failed) and frees ("free 'EchD'")
    where they happen, as readable strings. Binding contexts are checked by the tests instead."""
    out = []
    for e in r.events:
        if e.kind == "pool" and e.args.get("Tag") in OWN_TAGS:
            if e.name.startswith("ExFree"):
                out.append("free %s" % tag_name(e.args["Tag"]))
            else:
                out.append("allocate %s%s" % (tag_name(e.args["Tag"]),
                                              "" if e.status else " -> NULL"))
        elif e.kind not in ("nmr", "callback"):
            continue
        elif e.name == "NmrClientAttachProvider":
            v = e.args.get("ClientDispatch.Version", 0)
            out.append("NmrClientAttachProvider(WSK %d.%d) -> %s" % (v >> 8, v & 0xFF, S(e.status)))
        elif e.name == "ClientCleanupBindingContext":
            out.append(e.name)
        else:
            out.append("%s -> %s" % (e.name, S(e.status)))
    return out


def assert_clean(r):
    """No contract violation seen by the NMR model, no emulation error, pool balanced, unloaded;
    every allocation is a binding context (the binding tag) or one of the driver's own, which are
    exactly the profile's (one block per tag)."""
    assert r.run_errors == [], r.run_errors
    assert r.violations == [], r.violations
    assert r.entry_status == STATUS_SUCCESS, S(r.entry_status)
    assert r.unload_set, "DriverEntry did not set DriverObject->DriverUnload"
    assert r.unload_ran, "DriverUnload did not run"
    assert r.outstanding == [], "pool left allocated at unload: %r" % r.outstanding
    own = sorted(tag_name(a.tag) for a in r.own_allocations)
    assert own == sorted(tag_name(t) for t in OWN_TAGS), (
        "allocations other than binding contexts (%s): %s, expected %s's own: %s"
        % (tag_name(BINDING_TAG), own, PROFILE.name, [tag_name(t) for t in OWN_TAGS]))
    for a in r.allocations:
        assert a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag, a


def binding_pool_events(r):
    """The pool calls with the binding tag (allocations and frees of binding contexts)."""
    return [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == BINDING_TAG]


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
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
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
    # One binding context, from ExAllocatePool2(POOL_FLAG_NON_PAGED, ..., binding tag); the
    # driver's own allocations come from there too.
    (a,) = r.binding_allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePool2", POOL_FLAG_NON_PAGED, BINDING_TAG)
    assert {(x.api, x.pool) for x in r.allocations} == {("ExAllocatePool2", POOL_FLAG_NON_PAGED)}
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
    # The driver's own module id (the NMR model reports any other as a violation, too).
    assert c["ModuleId"]["Guid"] == PROFILE.module_id, c["ModuleId"]
    assert c["ClientCleanupBindingContext"], "no cleanup callback: the context would leak"
    lookups = [e for e in r.events if e.name == "MmGetSystemRoutineAddress"]
    assert [e.args["SystemRoutineName"] for e in lookups] == ["ExAllocatePool2"]
    # ... looked up in DriverEntry with the Windows version, before any allocation and before
    # the registration.
    (version,) = [e for e in r.events if e.name == "RtlGetVersion"]
    first_pool = min(e.seq for e in r.events if e.kind == "pool")
    register = event_index(r, "nmr", "NmrRegisterClient")
    assert max(lookups[0].seq, version.seq) < min(first_pool, register)


# ---------------------------------------------------------------------------------------------
# 2. Fallback 1.1 -> 1.0 on STATUS_NOINTERFACE
# ---------------------------------------------------------------------------------------------
def test_fallback_from_1_1_to_1_0_on_nointerface(run):
    r = run("fallback")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_SUCCESS), *UNLOAD]
    assert_clean(r)
    (b,) = r.bindings
    # Both tries with the same binding handle and the same, single, context.
    assert {t.binding for t in b.tries} == {b.handle}
    assert len({t.client_context for t in b.tries}) == 1
    assert len(r.binding_allocations) == 1


# ---------------------------------------------------------------------------------------------
# 3. A 1.0-only provider: 1.1 is never tried
# ---------------------------------------------------------------------------------------------
def test_wsk_1_0_only_provider_never_sees_1_1(run):
    r = run("wsk10-only")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_0, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    assert all(t.version == WSK_1_0 for t in r.attach_tries)


def test_provider_above_1_1_attaches_at_1_1(run):
    r = run(Scenario(name="wsk10-12", providers=[Provider(highest=0x0102, lowest=WSK_1_0)]))
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 4. No fitting version: STATUS_NOINTERFACE, nothing allocated, no NMR call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("low,high", [(0x0102, 0x0102), (0x0200, 0x0203), (0x0001, 0x00FF)])
def test_no_common_version_declines_without_allocating(run, low, high):
    r = run(Scenario(name="no-common", providers=[Provider(highest=high, lowest=low)]))
    assert sequence(r) == [*LOAD, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert r.binding_allocations == []


def test_named_scenario_wsk12_only(run):
    r = run("wsk12-only")
    assert sequence(r) == [*LOAD, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert r.binding_allocations == []
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 5. STATUS_NOINTERFACE for every version: context freed, STATUS_NOINTERFACE returned
# ---------------------------------------------------------------------------------------------
def test_nointerface_for_all_versions_frees_context(run):
    r = run("all-nointerface")
    assert sequence(r) == [*LOAD, attach(STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    (a,) = r.binding_allocations
    # Freed inside ClientAttachProvider, before it returned.
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    ret = event_index(r, "return", "ClientAttachProvider")
    assert free.seq < ret and free.args == {"P": a.address, "Tag": BINDING_TAG}


# ---------------------------------------------------------------------------------------------
# 6. Another NMR error: no retry, that status returned, context freed
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [STATUS_INSUFFICIENT_RESOURCES, STATUS_UNSUCCESSFUL,
                                   STATUS_INVALID_PARAMETER], ids=status_name)
def test_other_nmr_error_is_not_retried(run, error):
    r = run(Scenario(name="nmr-error", providers=[
        Provider(answers={WSK_1_1: error, WSK_1_0: STATUS_SUCCESS})]))
    assert sequence(r) == [*LOAD, attach(error), nmr_attach(WSK_1_1, error),
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert len(r.binding_allocations) == 1


def test_error_after_fallback_returns_last_status(run):
    r = run(Scenario(name="nointerface-then-error", providers=[
        Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_UNSUCCESSFUL})]))
    assert sequence(r) == [*LOAD, attach(STATUS_UNSUCCESSFUL),
                           nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                           nmr_attach(WSK_1_0, STATUS_UNSUCCESSFUL), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 7. Allocation failure: STATUS_INSUFFICIENT_RESOURCES, no NMR call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool2", [True, False], ids=["ExAllocatePool2", "ExAllocatePoolWithTag"])
def test_allocation_failure(run, pool2):
    """The binding context's allocation fails (the driver's own ones, if any, succeed)."""
    r = run(Scenario(name="no-pool", fail_binding_allocations=True, exallocatepool2=pool2))
    assert sequence(r) == [*LOAD, attach(STATUS_INSUFFICIENT_RESOURCES),
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    tried = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    assert [e.name for e in tried] == ["ExAllocatePool2" if pool2 else "ExAllocatePoolWithTag"]
    assert tried[0].status == 0
    assert r.binding_allocations == []


@pytest.mark.skipif("setup-no-pool" not in harness.scenarios_for(PROFILE),
                    reason="%s allocates nothing of its own in DriverEntry" % PROFILE.name)
def test_setup_allocation_failure_fails_the_load(run):
    """The driver's own allocation in DriverEntry (the first pool allocation) fails: DriverEntry
    logs it and returns STATUS_INSUFFICIENT_RESOURCES without registering; nothing is left."""
    r = run("setup-no-pool")
    assert sequence(r) == ["allocate %s -> NULL" % tag_name(OWN_TAGS[0])]
    assert r.calls("NmrRegisterClient") == []
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert r.violations == [] and r.run_errors == []
    assert r.allocations == [] and r.outstanding == []
    assert not r.unload_ran
    logs = [(e.args["Level"], e.text) for e in log_events(r)]
    assert (0, PROFILE.log(PROFILE.setup_failure_log) + "\n") in logs, logs  # DPFLTR_ERROR_LEVEL
    assert not any(t in text for text in r.logs for t in PROFILE.setup_logs), r.logs


@pytest.mark.parametrize("scenario,pool_type,line", [
    ("no-exallocatepool2", NON_PAGED_POOL_NX, "pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"),
    ("windows-7", NON_PAGED_POOL,
     "pool: ExAllocatePoolWithTag(NonPagedPool) fallback, before Windows 8"),
])
def test_fallback_allocator_without_exallocatepool2(run, scenario, pool_type, line):
    """No ExAllocatePool2: ExAllocatePoolWithTag, with NonPagedPoolNx from Windows 8 on and
    NonPagedPool before, for every allocation of the driver."""
    r = run(scenario)
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    (a,) = r.binding_allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePoolWithTag", pool_type, BINDING_TAG)
    assert {(x.api, x.pool) for x in r.allocations} == {("ExAllocatePoolWithTag", pool_type)}
    assert not any(e.name == "ExAllocatePool2" for e in r.events)
    assert PROFILE.log(line) + "\n" in r.logs, r.logs


# ---------------------------------------------------------------------------------------------
# 8. Malformed registration instances: STATUS_NOINTERFACE, nothing allocated
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", ["null-characteristics", "wrong-npiid", "inverted-range"])
def test_malformed_registration_instance_is_declined(run, scenario):
    r = run(scenario)
    assert sequence(r) == [*LOAD, attach(STATUS_NOINTERFACE), *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    assert r.binding_allocations == []


# ---------------------------------------------------------------------------------------------
# 9. Detach and cleanup (provider side) and re-attach
# ---------------------------------------------------------------------------------------------
def test_provider_detach_then_cleanup_frees_in_cleanup(run):
    r = run("provider-detach")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext",
                           *UNLOAD_NOTHING_ATTACHED]
    assert_clean(r)
    (b,) = r.bindings
    (a,) = r.binding_allocations
    detach = first(r.nmr_calls, "ClientDetachProvider")
    cleanup = first(r.nmr_calls, "ClientCleanupBindingContext")
    assert detach.args["ClientBindingContext"] == b.client_context == a.address
    assert cleanup.args["ClientBindingContext"] == a.address
    # Freed in cleanup, not in detach.
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    assert event_index(r, "return", "ClientDetachProvider") < cleanup.seq < free.seq
    assert free.seq < event_index(r, "return", "ClientCleanupBindingContext")
    assert not any(e.name == "NmrClientDetachProviderComplete" for e in r.events)


def test_late_provider_attach_detach_reattach(run):
    r = run("late-provider")
    assert sequence(r) == [*LOAD,
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext",
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *UNLOAD]
    assert_clean(r)
    assert len(r.bindings) == 2 and all(b.state == "cleaned" for b in r.bindings)
    assert len(r.binding_allocations) == 2


def test_detach_during_attach_call(run):
    """NMR detaches the binding before NmrClientAttachProvider has returned (the race of
    ebpf-for-windows #4982): attach must still return STATUS_SUCCESS, and the context must be
    freed exactly once, by cleanup, with nothing left for unload."""
    r = run("detach-during-attach")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
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
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    assert cleanup.seq < free.seq < wait.seq
    assert_clean(r)


def test_driver_own_allocations_span_the_registration(run):
    """The driver's own blocks (exactly the profile's; none for wsk_attach): allocated in
    DriverEntry before NmrRegisterClient, freed with their tag in DriverUnload after
    NmrWaitForClientDeregisterComplete (no binding can use them any more)."""
    r = run("default")
    assert_clean(r)
    own = r.own_allocations
    assert sorted(a.tag for a in own) == sorted(OWN_TAGS)
    entry = event_index(r, "run", "DriverEntry")
    register = event_index(r, "nmr", "NmrRegisterClient")
    wait = event_index(r, "nmr", "NmrWaitForClientDeregisterComplete")
    unload_end = event_index(r, "run", "DriverUnload returned")
    pool = [e for e in r.events if e.kind == "pool"]
    for a in own:
        (alloc,) = [e for e in pool if e.name.startswith("ExAllocate") and e.status == a.address]
        (free,) = [e for e in pool if e.name.startswith("ExFree") and e.args["P"] == a.address]
        assert entry < alloc.seq < register, (tag_name(a.tag), alloc)
        assert wait < free.seq < unload_end, (tag_name(a.tag), free)
        assert free.args["Tag"] == a.tag


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
        assert e.text.startswith(PROFILE.prefix) and e.text.endswith("\n"), e.text
        assert "\n" not in e.text[:-1], e.text
        assert not re.search(r"%[-+ #0-9.]*[a-zA-Z]", e.text), "unformatted: %r" % e.text
    text = "".join(e.text for e in logs)
    # The attach says which version it got.
    assert re.search(r"attach.*WSK 1\.1", text), text
    # Unload is visible too: detach and cleanup log.
    assert re.search(r"detach", text), text
    assert re.search(r"cleanup", text), text


def test_log_lines_of_load_and_unload(run):
    """The lines of a load, attach and unload come in this order (other lines may come between),
    the driver's own set-up and teardown lines in their place, each once; those sit before
    NmrRegisterClient and after the deregistration completed (and the driver's own frees)."""
    r = run("default")
    lines = [t.rstrip("\n") for t in r.logs]
    expected = [PROFILE.log(t) for t in [
        "pool: ExAllocatePool2",
        *PROFILE.setup_logs,
        "attach tried WSK 1.1: 0x00000000",
        "attached at WSK 1.1",
        "registered as WSK NPI client",
        "detach: no call in flight, detached",
        "cleanup: binding context freed",
        *PROFILE.teardown_logs,
        "unloaded, live pool allocations: 0",
    ]]
    positions = [i for want in expected for i, line in enumerate(lines) if line == want]
    assert positions == sorted(positions) and len(positions) == len(expected), (
        "expected, in this order and once each:\n  %s\nlogged:\n  %s"
        % ("\n  ".join(expected), "\n  ".join(lines)))
    logs = log_events(r)
    register = event_index(r, "nmr", "NmrRegisterClient")
    wait = event_index(r, "nmr", "NmrWaitForClientDeregisterComplete")
    last_free = max((e.seq for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")),
                    default=0)
    for line in PROFILE.setup_logs:
        (e,) = [e for e in logs if e.text == PROFILE.log(line) + "\n"]
        assert e.seq < register, e
    for line in PROFILE.teardown_logs:
        (e,) = [e for e in logs if e.text == PROFILE.log(line) + "\n"]
        assert e.seq > wait and e.seq > last_free, e


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
    """NmrRegisterClient fails: DriverEntry fails, its own allocations freed before it returns."""
    r = run("register-fails")
    assert sequence(r) == [*SETUP, "NmrRegisterClient -> STATUS_INSUFFICIENT_RESOURCES",
                           *TEARDOWN]
    assert r.entry_status is not None and r.entry_status & 0x80000000, S(r.entry_status)
    assert r.violations == [] and r.run_errors == []
    assert r.binding_allocations == []
    assert sorted(a.tag for a in r.own_allocations) == sorted(OWN_TAGS), r.allocations
    assert all(a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag for a in r.allocations)
    assert r.outstanding == []
    assert not r.unload_ran


@pytest.mark.parametrize("scenario", sorted(set(harness.scenarios_for(PROFILE)) - LOAD_FAILS))
def test_every_named_scenario_is_clean(run, scenario):
    r = run(scenario)
    assert_clean(r)
    text = harness.format_trace(r)
    assert "no problems found" in text
