"""End-to-end tests of a real driver image (wsk_attach.sys, wsk_echo.sys or
wsk_echo_wskregister.sys) under Speakeasy (see harness.py).

Each scenario asserts the exact sequence of calls between the driver and NMR or the WskRegister
layer (both directions), with the driver's device object, its work items (queued, run, done), the
events its unload waits on and sets, and its own pool allocations and frees where they happen;
the WSK version of every NmrClientAttachProvider try and WskRegister, and every status returned;
plus the pool balance per tag and the absence of contract violations that the harness detects
(bad handles, callbacks in the wrong state, a foreign NMR module id, leaks, double frees, a device
object or work item left behind, a wait nothing can satisfy, ...).

What differs between the images (backend, log prefix, tags, the driver's own allocations and log
lines, its connection, module id) comes from the image's driver profile, PROFILE
(tests/driver_profiles.py). Tests of one backend are deselected for the other (never skipped).

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
Image: $WSK_DRIVER_SYS, default target/x86_64-pc-windows-msvc/release/wsk_attach.sys (a missing
image FAILS the tests; an image name without a profile fails the collection).
"""
import dataclasses
import os
import re
import struct

import pytest

import harness
from harness import (NON_PAGED_POOL, NON_PAGED_POOL_NX, POOL_FLAG_NON_PAGED,
                     STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
                     STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_PENDING, STATUS_SUCCESS,
                     STATUS_TIMEOUT, STATUS_UNSUCCESSFUL, TICKS_PER_MS, WSK_1_0, WSK_1_1,
                     WSK_NO_WAIT, Provider, Scenario, status_name, tag_name)

S = status_name

# The driver under test, by the image's file name (or $WSK_DRIVER_PROFILE).
PROFILE = harness.profile_for(harness.default_image())
NMR = PROFILE.backend == "nmr"
CONN = PROFILE.connection
BINDING_TAG = harness.pool_tag(PROFILE.binding_tag)
WORK_TAG = harness.pool_tag(PROFILE.work_item_tag)
CONN_TAG = harness.pool_tag(PROFILE.connection_tag) if CONN else None
OWN_TAGS = [harness.pool_tag(t) for t in PROFILE.own_tags]
# Named scenarios in which DriverEntry fails, by design, for this driver.
LOAD_FAILS = {n for n, sc in harness.scenarios_for(PROFILE).items() if sc.load_fails(PROFILE)}

# Tests that do not apply to this image are deselected (conftest.py), never skipped.
nmr_only = pytest.mark.applies(NMR, reason="%s attaches through WskRegister, not raw NMR"
                               % PROFILE.name)
wskregister_only = pytest.mark.applies(not NMR, reason="%s attaches through raw NMR, not "
                                       "WskRegister" % PROFILE.name)
connection_only = pytest.mark.applies(CONN, reason="%s holds no connection (queues no work "
                                      "item, never waits)" % PROFILE.name)

# The Wait of the library's unload: 5 s, relative (crates/wsk-client/src/runtime.rs).
UNLOAD_WAIT = -5000 * TICKS_PER_MS
FILE_DEVICE_UNKNOWN = 0x22
FILE_DEVICE_SECURE_OPEN = 0x100


def test_image_exists():
    """FAILS when the image is missing (every other test then errors in the image fixture)."""
    image = harness.default_image()
    assert os.path.isfile(image), ("driver image not found: %s (build it with `cargo xtask "
                                   "sys`, or set WSK_DRIVER_SYS)" % image)
    with open(image, "rb") as f:
        assert f.read(2) == b"MZ", "%s is not a PE image" % image


# ---------------------------------------------------------------------------------------------
# The sequence of a run, and its pieces
# ---------------------------------------------------------------------------------------------
def sequence(r):
    """What the driver and the system did to each other, in the order the calls started, as
    readable strings: the calls between NMR (or the WskRegister layer) and the driver; the device
    object; work items queued, starting ("work item 2 runs") and returning ("work item 2 done");
    KeSetEvent and KeWaitForSingleObject with the status the wait ended with; the driver's own
    pool allocations and its connection's ("allocate 'EchG'", "... -> NULL" when it failed) and
    frees ("free 'EchG'"). Binding contexts, work item contexts, IoAllocateWorkItem /
    IoFreeWorkItem and KeInitializeEvent are checked by the tests instead."""
    tracked = set(OWN_TAGS) | ({CONN_TAG} if CONN else set())
    out = []
    for e in r.events:
        if e.kind == "pool" and e.args.get("Tag") in tracked:
            if e.name.startswith("ExFree"):
                out.append("free %s" % tag_name(e.args["Tag"]))
            else:
                out.append("allocate %s%s" % (tag_name(e.args["Tag"]),
                                              "" if e.status else " -> NULL"))
        elif e.kind == "device":
            out.append("IoCreateDevice -> %s" % S(e.status) if e.name == "IoCreateDevice"
                       else e.name)
        elif e.kind == "work" and e.name == "IoQueueWorkItem":
            out.append(queue(e.args["item"]))
        elif e.kind == "work" and e.name == "work item runs":
            out.append(runs(e.args["item"]))
        elif e.kind == "work" and e.name == "work item done":
            out.append(done(e.args["item"]))
        elif e.kind == "ke" and e.name == "KeSetEvent":
            out.append(SET)
        elif e.kind == "ke" and e.name == "KeWaitForSingleObject":
            out.append("KeWaitForSingleObject -> %s" % S(e.status))
        elif e.kind == "wskreg":
            if e.name == "WskRegister":
                v = e.args.get("ClientDispatch.Version", 0)
                out.append(wsk_register(v, e.status))
            elif e.name == "WskCaptureProviderNPI":
                out.append(capture(e.args["WaitTimeout"], e.status))
            else:
                out.append(e.name)
        elif e.kind not in ("nmr", "callback"):
            continue
        elif e.name == "NmrClientAttachProvider":
            v = e.args.get("ClientDispatch.Version", 0)
            out.append(nmr_attach(v, e.status))
        elif e.name in ("ClientCleanupBindingContext", "NmrClientDetachProviderComplete"):
            out.append(e.name)  # VOID
        else:
            out.append("%s -> %s" % (e.name, S(e.status)))
    return out


def attach(st):
    return "ClientAttachProvider -> %s" % S(st)


def nmr_attach(version, st):
    return "NmrClientAttachProvider(WSK %d.%d) -> %s" % (version >> 8, version & 0xFF, S(st))


def wsk_register(version, st=STATUS_SUCCESS):
    return "WskRegister(WSK %d.%d) -> %s" % (version >> 8, version & 0xFF, S(st))


def capture(wait_ms, st):
    return "WskCaptureProviderNPI(%s) -> %s" % ("no wait" if wait_ms == WSK_NO_WAIT
                                                else "%d ms" % wait_ms, S(st))


def queue(n):
    return "queue work item %d" % n


def runs(n):
    return "work item %d runs" % n


def done(n):
    return "work item %d done" % n


SET = "KeSetEvent"
WAITED = "KeWaitForSingleObject -> STATUS_SUCCESS"
DEVICE = "IoCreateDevice -> STATUS_SUCCESS"
DELETE = "IoDeleteDevice"
RELEASE = "WskReleaseProviderNPI"
DEREGISTER = "WskDeregister"
CONN_ALLOC = "allocate %s" % tag_name(CONN_TAG) if CONN else None
CONN_FREE = "free %s" % tag_name(CONN_TAG) if CONN else None

# The driver's own allocations (none for wsk_attach): made in DriverEntry before it registers,
# freed in DriverUnload once deregistration is complete.
SETUP = ["allocate %s" % tag_name(t) for t in OWN_TAGS]
TEARDOWN = ["free %s" % tag_name(t) for t in OWN_TAGS]


def open_connection(item=1, holding=True):
    """The connection's work item, queued by DriverEntry once registered, run once DriverEntry
    returned: it takes a binding reference into its pool block (holding), or finds no provider."""
    if not CONN:
        return []
    return [queue(item), runs(item), *([CONN_ALLOC] if holding else []), done(item)]


def close_connection(item=2, holding=True):
    """The unload's first step when the driver holds a connection: its close work item —
    allocated with the connection, so the stop allocates nothing — queued by Client::on_detach,
    the unload's wait for the reference, the work item releasing it (KeSetEvent by the last
    reference, then the pool block freed). No connection: nothing to close, nothing queued."""
    if not CONN or not holding:
        return []
    return [queue(item), WAITED, runs(item), SET, CONN_FREE, done(item)]


# NMR backend
LOAD = [*SETUP, DEVICE, "NmrRegisterClient -> STATUS_SUCCESS"]


def unload(attached=True, holding=None, item=2):
    holding = attached if holding is None else holding
    return [*close_connection(item, holding),
            "NmrDeregisterClient -> STATUS_PENDING",
            *(["ClientDetachProvider -> STATUS_SUCCESS", "ClientCleanupBindingContext"]
              if attached else []),
            "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
            DELETE,
            *TEARDOWN]


UNLOAD = unload(attached=True)
UNLOAD_NOTHING_ATTACHED = unload(attached=False)


def attached_at(*attach_calls):
    """A whole run that attached at load (the NMR calls in the attach given) and unloaded."""
    return [*LOAD, *attach_calls, *open_connection(1, True), *UNLOAD]


def not_attached(*attach_calls):
    """A whole run in which the attach at load was declined or failed."""
    return [*LOAD, *attach_calls, *open_connection(1, False), *UNLOAD_NOTHING_ATTACHED]


# WskRegister backend
WSK_LOAD = [*SETUP, DEVICE]
WSK_UNLOAD = [*close_connection(2, True), RELEASE, DEREGISTER, DELETE, *TEARDOWN]


def wsk_attached(*registration):
    """A whole WskRegister run: `registration` (WskRegister and captures) in DriverEntry, then
    the connection, then the unload."""
    return [*WSK_LOAD, *registration, *open_connection(1, True), *WSK_UNLOAD]


def default_run():
    """The sequence of the default scenario for this driver."""
    if NMR:
        return attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS))
    return wsk_attached(wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_SUCCESS))


# ---------------------------------------------------------------------------------------------
# Checks every clean run passes
# ---------------------------------------------------------------------------------------------
def assert_clean(r):
    """No contract violation seen by the harness, no emulation error, pool balanced, device
    objects deleted, work items freed (none queued or running), registrations undone, unloaded;
    every allocation is a binding context, a work item context (one per queued work item), the
    connection's block, or one of the driver's own, which are exactly the profile's (one block
    per tag)."""
    assert r.run_errors == [], r.run_errors
    assert r.violations == [], r.violations
    assert r.entry_status == STATUS_SUCCESS, S(r.entry_status)
    assert r.unload_set, "DriverEntry did not set DriverObject->DriverUnload"
    assert r.unload_ran and r.unload_completed, "DriverUnload did not run to its end"
    assert r.outstanding == [], "pool left allocated at unload: %r" % r.outstanding
    own = sorted(tag_name(a.tag) for a in r.own_allocations)
    assert own == sorted(tag_name(t) for t in OWN_TAGS), (
        "allocations other than binding contexts (%s), work items (%s) and the connection (%s): "
        "%s, expected %s's own: %s"
        % (tag_name(BINDING_TAG), tag_name(WORK_TAG), PROFILE.connection_tag, own, PROFILE.name,
           [tag_name(t) for t in OWN_TAGS]))
    for a in r.allocations:
        assert a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag, a
    # One device object, created and deleted once.
    assert len(r.devices) == 1 and r.devices[0].deleted_seq is not None, r.devices
    # Every work item allocated was queued once, ran once, and was freed — or, prepared for a
    # connection's close that never came to be (the exchange failed), freed unqueued; one
    # context each.
    for it in r.work_items:
        assert (it.queued_count, it.runs, it.freed, it.state) in (
            (1, 1, True, "freed"), (0, 0, True, "freed")), it
    assert len(r.work_allocations) == len(r.work_items)
    if not CONN:
        assert r.work_items == [] and r.connection_allocations == []
    assert len(r.connection_allocations) <= 1
    for reg in r.wsk_registrations:
        assert reg.captures == 0, reg
        assert reg.status != STATUS_SUCCESS or reg.deregistered_seq is not None, reg
    assert all(t.state == "done" for t in r.threads), [(t.name, t.state) for t in r.threads]


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


def log_events(r):
    return [e for e in r.events if e.kind == "log"]


def log_index(r, text, nth=0):
    """The event index of the driver's log line `text` (without the prefix)."""
    hits = [e.seq for e in log_events(r) if e.text == PROFILE.log(text) + "\n"]
    assert len(hits) > nth, "log line %r not seen (#%d) in:\n  %s" % (
        text, nth, "\n  ".join(x.rstrip("\n") for x in r.logs))
    return hits[nth]


def registration_index(r):
    """Where the driver registers: NmrRegisterClient, or its first WskRegister."""
    return event_index(r, "nmr", "NmrRegisterClient") if NMR else \
        event_index(r, "wskreg", "WskRegister")


def deregistered_index(r):
    """Where deregistration is complete: NmrWaitForClientDeregisterComplete, or the last
    WskDeregister."""
    if NMR:
        return event_index(r, "nmr", "NmrWaitForClientDeregisterComplete")
    return max(e.seq for e in r.events if e.kind == "wskreg" and e.name == "WskDeregister")


def assert_in_order(lines, expected):
    positions = [i for want in expected for i, line in enumerate(lines) if line == want]
    assert positions == sorted(positions) and len(positions) == len(expected), (
        "expected, in this order and once each:\n  %s\nlogged:\n  %s"
        % ("\n  ".join(expected), "\n  ".join(lines)))


# ---------------------------------------------------------------------------------------------
# 1. Attach during registration, at the highest common version (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_attach_during_registration_at_highest_common_version(run):
    r = run("default")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS))
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
    # driver's other allocations come from there too.
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


@nmr_only
def test_client_characteristics(run):
    r = run("default")
    c = r.characteristics
    assert (c["Version"], c["Length"]) == (0, 72)
    assert (c["reg_Version"], c["reg_Size"], c["reg_Number"]) == (0, 40, 0)
    assert c["NpiId"] == harness.NPI_WSK_INTERFACE_ID
    assert c["ModuleId"]["Length"] == 24 and c["ModuleId"]["Type"] == 1
    # The driver's own module id (the NMR model reports any other as a violation, too).
    assert c["ModuleId"]["Guid"] == PROFILE.module_id, c["ModuleId"]
    assert c["ClientCleanupBindingContext"], "no cleanup callback: the context would leak"


def test_system_routine_looked_up_first(run):
    r = run("default")
    lookups = [e for e in r.events if e.name == "MmGetSystemRoutineAddress"]
    assert [e.args["SystemRoutineName"] for e in lookups] == ["ExAllocatePool2"]
    # ... looked up in DriverEntry with the Windows version, before any allocation, before the
    # device object and before the registration.
    (version,) = [e for e in r.events if e.name == "RtlGetVersion"]
    first_pool = min(e.seq for e in r.events if e.kind == "pool")
    device = event_index(r, "device", "IoCreateDevice")
    assert max(lookups[0].seq, version.seq) < min(first_pool, device, registration_index(r))


# ---------------------------------------------------------------------------------------------
# 2. Fallback 1.1 -> 1.0 on STATUS_NOINTERFACE (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_fallback_from_1_1_to_1_0_on_nointerface(run):
    r = run("fallback")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS),
                                      nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                      nmr_attach(WSK_1_0, STATUS_SUCCESS))
    assert_clean(r)
    (b,) = r.bindings
    # Both tries with the same binding handle and the same, single, context.
    assert {t.binding for t in b.tries} == {b.handle}
    assert len({t.client_context for t in b.tries}) == 1
    assert len(r.binding_allocations) == 1


# ---------------------------------------------------------------------------------------------
# 3. A 1.0-only provider: 1.1 is never tried (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_wsk_1_0_only_provider_never_sees_1_1(run):
    r = run("wsk10-only")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_0, STATUS_SUCCESS))
    assert_clean(r)
    assert all(t.version == WSK_1_0 for t in r.attach_tries)


@nmr_only
def test_provider_above_1_1_attaches_at_1_1(run):
    r = run(Scenario(name="wsk10-12", providers=[Provider(highest=0x0102, lowest=WSK_1_0)]))
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS))
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 4. No fitting version: STATUS_NOINTERFACE, nothing allocated, no NMR call
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("low,high", [(0x0102, 0x0102), (0x0200, 0x0203), (0x0001, 0x00FF)])
def test_no_common_version_declines_without_allocating(run, low, high):
    r = run(Scenario(name="no-common", providers=[Provider(highest=high, lowest=low)]))
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert_clean(r)
    assert r.binding_allocations == []


@nmr_only
def test_named_scenario_wsk12_only(run):
    r = run("wsk12-only")
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert r.binding_allocations == []
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 5. STATUS_NOINTERFACE for every version: context freed, STATUS_NOINTERFACE returned
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_nointerface_for_all_versions_frees_context(run):
    r = run("all-nointerface")
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_0, STATUS_NOINTERFACE))
    assert_clean(r)
    (a,) = r.binding_allocations
    # Freed inside ClientAttachProvider, before it returned.
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    ret = event_index(r, "return", "ClientAttachProvider")
    assert free.seq < ret and free.args == {"P": a.address, "Tag": BINDING_TAG}


# ---------------------------------------------------------------------------------------------
# 6. Another NMR error: no retry, that status returned, context freed
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("error", [STATUS_INSUFFICIENT_RESOURCES, STATUS_UNSUCCESSFUL,
                                   STATUS_INVALID_PARAMETER], ids=status_name)
def test_other_nmr_error_is_not_retried(run, error):
    r = run(Scenario(name="nmr-error", providers=[
        Provider(answers={WSK_1_1: error, WSK_1_0: STATUS_SUCCESS})]))
    assert sequence(r) == not_attached(attach(error), nmr_attach(WSK_1_1, error))
    assert_clean(r)
    assert len(r.binding_allocations) == 1


@nmr_only
def test_error_after_fallback_returns_last_status(run):
    r = run(Scenario(name="nointerface-then-error", providers=[
        Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_UNSUCCESSFUL})]))
    assert sequence(r) == not_attached(attach(STATUS_UNSUCCESSFUL),
                                       nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_0, STATUS_UNSUCCESSFUL))
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 7. Allocation failure: STATUS_INSUFFICIENT_RESOURCES, no NMR call
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("pool2", [True, False], ids=["ExAllocatePool2", "ExAllocatePoolWithTag"])
def test_allocation_failure(run, pool2):
    """The binding context's allocation fails (the driver's own ones, if any, succeed)."""
    r = run(Scenario(name="no-pool", fail_binding_allocations=True, exallocatepool2=pool2))
    assert sequence(r) == not_attached(attach(STATUS_INSUFFICIENT_RESOURCES))
    assert_clean(r)
    tried = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    assert [e.name for e in tried] == ["ExAllocatePool2" if pool2 else "ExAllocatePoolWithTag"]
    assert tried[0].status == 0
    assert r.binding_allocations == []


@pytest.mark.applies("setup-no-pool" in harness.scenarios_for(PROFILE),
                     reason="%s allocates nothing of its own in DriverEntry" % PROFILE.name)
def test_setup_allocation_failure_fails_the_load(run):
    """The driver's own allocation in DriverEntry (the first pool allocation) fails: DriverEntry
    logs it and returns STATUS_INSUFFICIENT_RESOURCES without registering (no device object
    either); nothing is left."""
    r = run("setup-no-pool")
    assert sequence(r) == ["allocate %s -> NULL" % tag_name(OWN_TAGS[0])]
    assert r.calls("NmrRegisterClient") == [] and r.wsk_calls == []
    assert r.devices == [] and r.work_items == []
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
    NonPagedPool before, for every allocation of the driver (work items and connection too)."""
    r = run(scenario)
    assert sequence(r) == default_run()
    assert_clean(r)
    (a,) = r.binding_allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePoolWithTag", pool_type, BINDING_TAG)
    assert {(x.api, x.pool) for x in r.allocations} == {("ExAllocatePoolWithTag", pool_type)}
    assert not any(e.name == "ExAllocatePool2" for e in r.events)
    assert PROFILE.log(line) + "\n" in r.logs, r.logs


# ---------------------------------------------------------------------------------------------
# 8. Malformed registration instances: STATUS_NOINTERFACE, nothing allocated (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("scenario", ["null-characteristics", "wrong-npiid", "inverted-range"])
def test_malformed_registration_instance_is_declined(run, scenario):
    r = run(scenario)
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert_clean(r)
    assert r.binding_allocations == []


# ---------------------------------------------------------------------------------------------
# 9. Detach and cleanup (provider side) and re-attach (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_provider_detach_then_cleanup_frees_in_cleanup(run):
    """The provider deregisters after DriverEntry. Without a connection the detach completes at
    once. With one (its work item holds a binding reference), ClientDetachProvider returns
    STATUS_PENDING and queues the close work item; that work item drops the reference, which
    calls NmrClientDetachProviderComplete exactly once; NMR cleans up from there. Either way the
    context is freed in cleanup, never in detach, and the unload afterwards is clean."""
    r = run("provider-detach")
    if CONN:
        assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                               *open_connection(1, True),
                               "ClientDetachProvider -> STATUS_PENDING", queue(2),
                               runs(2), "NmrClientDetachProviderComplete",
                               "ClientCleanupBindingContext", CONN_FREE, done(2),
                               *unload(attached=False, item=3)]
    else:
        assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                               "ClientDetachProvider -> STATUS_SUCCESS",
                               "ClientCleanupBindingContext", *UNLOAD_NOTHING_ATTACHED]
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
    completes = r.calls("NmrClientDetachProviderComplete")
    if not CONN:
        assert completes == [] and b.detach_status == STATUS_SUCCESS
        return
    assert b.detach_status == STATUS_PENDING and b.complete_calls == 1
    (complete,) = completes
    assert complete.args["NmrBindingHandle"] == b.handle
    # The close work item was queued by ClientDetachProvider (Client::on_detach) ...
    (close_q,) = [e for e in r.events if e.name == "IoQueueWorkItem" and e.args["item"] == 2]
    assert detach.seq < close_q.seq < event_index(r, "return", "ClientDetachProvider")
    assert close_q.thread == "after DriverEntry"
    # ... and completes the detach from that work item, after the detach returned, before the
    # reference's block is freed and the work item returns; cleanup happens inside that call.
    assert complete.thread == cleanup.thread == "work item 2"
    item_done = [e for e in r.events if e.name == "work item done" and e.args["item"] == 2][0]
    conn_free = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG
                 and e.name.startswith("ExFree")][0]
    assert event_index(r, "return", "ClientDetachProvider") < complete.seq < cleanup.seq < \
        conn_free.seq < item_done.seq
    assert detach.seq < log_index(r, "detach: 1 call(s) in flight, pending") < close_q.seq
    assert log_index(r, "detach completed: last call in flight returned") < complete.seq
    assert log_index(r, "connection: reference released") > complete.seq
    # The unload later finds nothing attached, no reference and no connection: nothing to close.
    assert log_index(r, "unload: 0 reference(s) outstanding") > item_done.seq
    assert r.calls("ClientDetachProvider") == [detach]


@nmr_only
def test_late_provider_attach_detach_reattach(run):
    r = run("late-provider")
    assert sequence(r) == [*LOAD,
                           *open_connection(1, holding=False),
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS",
                           # No connection was kept: the detach has nothing to close.
                           "ClientCleanupBindingContext",
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *unload(attached=True, holding=False)]
    assert_clean(r)
    assert len(r.bindings) == 2 and all(b.state == "cleaned" for b in r.bindings)
    assert len(r.binding_allocations) == 2
    if CONN:
        # The connection's work item ran before any provider was there: it holds nothing (the
        # example opens its connection once, at load).
        assert log_index(r, "connection: no provider: 0xC00000A3") < \
            event_index(r, "callback", "ClientAttachProvider")


@nmr_only
def test_detach_during_attach_call(run):
    """NMR detaches the binding before NmrClientAttachProvider has returned (the race of
    ebpf-for-windows #4982): attach must still return STATUS_SUCCESS, and the context must be
    freed exactly once, by cleanup, with nothing left for unload."""
    r = run("detach-during-attach")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           "ClientDetachProvider -> STATUS_SUCCESS",
                           # No connection yet: the detach has nothing to close; the connection's
                           # work item then finds no provider.
                           "ClientCleanupBindingContext",
                           *([queue(1), runs(1), done(1)] if CONN else []),
                           *unload(attached=False)]
    assert_clean(r)
    (b,) = r.bindings
    assert b.state == "cleaned"
    detach = r.calls("ClientDetachProvider")[0]
    assert detach.args["ClientBindingContext"] == b.client_context


# ---------------------------------------------------------------------------------------------
# 10. Unload order and handles (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
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
    # The context is freed by cleanup, before the wait; the device object is deleted after it.
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    assert cleanup.seq < free.seq < wait.seq < event_index(r, "device", "IoDeleteDevice")
    # The detach finds no call in flight: the connection let its reference go before.
    assert detach.status == STATUS_SUCCESS
    if CONN:
        assert log_index(r, "connection: reference released") < dereg.seq
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 11. WskRegister backend: registration, capture, fallback, provider not ready, unload order
# ---------------------------------------------------------------------------------------------
@wskregister_only
def test_wskregister_lifecycle(run):
    """DriverEntry: WskRegister at WSK 1.1, one capture without waiting, the binding context;
    the connection's reference; the unload: the reference released, the binding context freed,
    WskReleaseProviderNPI, WskDeregister, the device object deleted, the driver's teardown."""
    r = run("default")
    assert sequence(r) == wsk_attached(wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_SUCCESS))
    assert_clean(r)
    assert r.nmr_calls == [] and r.bindings == []
    (reg,) = r.wsk_registrations
    register, cap, release, dereg = r.wsk_calls
    # The client NPI, its dispatch and the WSK_REGISTRATION are statics of the image (they must
    # outlive the registration), the same registration for every call.
    assert r.in_image(reg.client_npi) and r.in_image(reg.client_dispatch)
    assert r.in_image(reg.address)
    assert {e.args["WskRegistration"] for e in (register, cap, release, dereg)} == {reg.address}
    assert reg.version == WSK_1_1 and reg.capture_answers == [(WSK_NO_WAIT, STATUS_SUCCESS)]
    assert (reg.releases, reg.captures) == (1, 0) and reg.deregistered_seq == dereg.seq
    # All of the registration in DriverEntry, all of the deregistration in DriverUnload.
    entry_end = event_index(r, "run", "DriverEntry returned")
    unload = event_index(r, "run", "DriverUnload")
    assert register.thread == cap.thread == "DriverEntry" and cap.seq < entry_end
    assert release.thread == dereg.thread == "DriverUnload" and unload < release.seq
    # One binding context, allocated after the capture, freed after the reference is gone and
    # before the NPI is released.
    (a,) = r.binding_allocations
    (alloc,) = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    (free,) = [e for e in binding_pool_events(r) if e.name.startswith("ExFree")]
    assert cap.seq < alloc.seq < entry_end
    assert log_index(r, CONNECTION_CLOSE) < free.seq < release.seq < dereg.seq
    assert log_index(r, "captured the WSK provider NPI, attached at WSK 1.1") > alloc.seq


CONNECTION_CLOSE = "connection: reference released"
CONNECTION_OPEN = "connection: holding a binding reference"


@wskregister_only
def test_wskregister_unload_order(run):
    """Reference released -> WskReleaseProviderNPI -> WskDeregister -> IoDeleteDevice ->
    teardown, with each of the library's log lines right after its call."""
    r = run("default")
    released = log_index(r, CONNECTION_CLOSE)
    freed_log = log_index(r, "WskReleaseProviderNPI: binding context freed")
    release = event_index(r, "wskreg", "WskReleaseProviderNPI")
    dereg = event_index(r, "wskreg", "WskDeregister")
    dereg_log = log_index(r, "WskDeregister returned")
    delete = event_index(r, "device", "IoDeleteDevice")
    teardown = log_index(r, PROFILE.teardown_logs[0])
    assert released < freed_log < release < dereg < dereg_log < delete < teardown
    assert_clean(r)


@wskregister_only
@pytest.mark.parametrize("scenario", ["fallback", "wsk10-only"])
def test_wskregister_nointerface_falls_back_to_1_0(run, scenario):
    """The capture at WSK 1.1 is refused with STATUS_NOINTERFACE: the driver deregisters and
    registers the same WSK_REGISTRATION again at WSK 1.0, and the capture then succeeds."""
    r = run(scenario)
    assert sequence(r) == wsk_attached(wsk_register(WSK_1_1),
                                       capture(WSK_NO_WAIT, STATUS_NOINTERFACE), DEREGISTER,
                                       wsk_register(WSK_1_0),
                                       capture(WSK_NO_WAIT, STATUS_SUCCESS))
    assert_clean(r)
    first_reg, second_reg = r.wsk_registrations
    assert (first_reg.version, second_reg.version) == (WSK_1_1, WSK_1_0)
    assert first_reg.address == second_reg.address
    assert first_reg.deregistered_seq < second_reg.registered_seq
    assert second_reg.dispatch_version == WSK_1_0
    lines = [t.rstrip("\n") for t in r.logs]
    assert_in_order(lines, [PROFILE.log(x) for x in [
        "WskRegister with WSK 1.1: 0x00000000",
        "WskCaptureProviderNPI: STATUS_NOINTERFACE, falling back",
        "WskRegister with WSK 1.0: 0x00000000",
        "captured the WSK provider NPI, attached at WSK 1.0",
        "registered as WSK client (WskRegister)"]])


@wskregister_only
@pytest.mark.parametrize("scenario", ["wsk12-only", "all-nointerface"])
def test_wskregister_no_common_version_fails_the_load(run, scenario):
    r = run(scenario)
    assert sequence(r) == [*WSK_LOAD, wsk_register(WSK_1_1),
                           capture(WSK_NO_WAIT, STATUS_NOINTERFACE), DEREGISTER,
                           wsk_register(WSK_1_0), capture(WSK_NO_WAIT, STATUS_NOINTERFACE),
                           DEREGISTER, DELETE, *TEARDOWN]
    assert r.entry_status == STATUS_NOINTERFACE, S(r.entry_status)
    assert_failed_load_clean(r)


@wskregister_only
def test_wskregister_capture_error_fails_the_load(run):
    """Another error from WskCaptureProviderNPI: no retry, deregistered, that status returned."""
    r = run("nmr-error")
    assert sequence(r) == [*WSK_LOAD, wsk_register(WSK_1_1),
                           capture(WSK_NO_WAIT, STATUS_INSUFFICIENT_RESOURCES), DEREGISTER,
                           DELETE, *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert PROFILE.log("WskCaptureProviderNPI failed: 0xC000009A") + "\n" in r.logs


@wskregister_only
def test_wskregister_binding_allocation_failure_fails_the_load(run):
    """The binding context cannot be allocated after the capture: the NPI is released, the
    registration undone, the load fails."""
    r = run("no-pool")
    assert sequence(r) == [*WSK_LOAD, wsk_register(WSK_1_1),
                           capture(WSK_NO_WAIT, STATUS_SUCCESS), RELEASE, DEREGISTER, DELETE,
                           *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert r.binding_allocations == []
    assert PROFILE.log("capture: no pool for the binding context") + "\n" in r.logs


@wskregister_only
def test_wskregister_dispatch_version_1_0(run):
    """A WSK subsystem like Wine's: the registration at 1.1 is accepted but its dispatch says
    1.0: the client uses 1.0 (and never reads the dispatch's 1.1 members: the harness reports
    such a read)."""
    r = run("wsk-dispatch-1.0")
    assert sequence(r) == default_run()
    assert_clean(r)
    (reg,) = r.wsk_registrations
    assert (reg.version, reg.dispatch_version) == (WSK_1_1, WSK_1_0)
    log_index(r, "captured the WSK provider NPI, attached at WSK 1.0")


@wskregister_only
def test_wskregister_provider_ready_later(run):
    """The WSK subsystem is not ready at load: DriverEntry's capture without waiting gets
    STATUS_DEVICE_NOT_READY, DriverEntry queues the capture work item and succeeds; the work
    item waits 1000 ms at a time and captures when the subsystem is ready (2.5 s)."""
    r = run("wsk-late")
    assert sequence(r) == [
        *WSK_LOAD, wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_DEVICE_NOT_READY),
        queue(1),  # the capture work item, from DriverEntry
        queue(2),  # the connection
        runs(1), capture(1000, STATUS_DEVICE_NOT_READY),
        runs(2), done(2),  # the connection finds no provider yet (see below)
        capture(1000, STATUS_DEVICE_NOT_READY), capture(1000, STATUS_SUCCESS), done(1),
        *close_connection(3, holding=False), RELEASE, DEREGISTER, DELETE, *TEARDOWN]
    assert_clean(r)
    caps = r.calls("WskCaptureProviderNPI")
    assert [(e.time, e.thread) for e in caps] == [
        (0, "DriverEntry"), (0, "work item 1"), (1000 * TICKS_PER_MS, "work item 1"),
        (2000 * TICKS_PER_MS, "work item 1")]
    (reg,) = r.wsk_registrations
    assert reg.capture_answers[-1] == (1000, STATUS_SUCCESS) and reg.releases == 1
    # The capture work item is queued before DriverEntry says it registered.
    not_ready = log_index(r, "WSK provider not ready (0xC00000A3): capturing from a work item")
    registered = log_index(r, "registered as WSK client (WskRegister)")
    (q1,) = [e for e in r.events if e.name == "IoQueueWorkItem" and e.args["item"] == 1]
    assert not_ready < q1.seq < registered < event_index(r, "run", "DriverEntry returned")
    # The capture, and the binding context, on the work item's thread at t = 2.5 s.
    line = PROFILE.log("captured the WSK provider NPI, attached at WSK 1.1") + "\n"
    captured = [e for e in log_events(r) if e.text == line]
    assert [(e.thread, e.time) for e in captured] == [("work item 1", 2500 * TICKS_PER_MS)]
    (alloc,) = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    assert alloc.thread == "work item 1"
    # The example's connection work item ran while the capture waited, found no provider
    # (STATUS_DEVICE_NOT_READY) and is not retried: the driver runs without a connection.
    assert log_index(r, "connection: no provider: 0xC00000A3") < captured[0].seq
    assert r.connection_allocations == []
    assert log_index(r, "unload: 0 reference(s) outstanding") > captured[0].seq


@wskregister_only
def test_wskregister_provider_never_ready_gives_up_at_unload(run):
    """The WSK subsystem never becomes ready: the capture work item retries every 1000 ms until
    sc stop (3.5 s); the unload waits for it (it is still in a capture wait when the unload's
    wait begins), it gives up when that capture returns, and only then does the unload go on:
    WskDeregister (no WskReleaseProviderNPI: nothing was captured), device deleted."""
    r = run("wsk-never")
    assert sequence(r) == [
        *WSK_LOAD, wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_DEVICE_NOT_READY),
        queue(1), queue(2),
        runs(1), capture(1000, STATUS_DEVICE_NOT_READY),
        runs(2), done(2),
        capture(1000, STATUS_DEVICE_NOT_READY), capture(1000, STATUS_DEVICE_NOT_READY),
        capture(1000, STATUS_DEVICE_NOT_READY),  # at t = 3 s, returns at 4 s, after sc stop
        # No connection: nothing to close, nothing queued; the unload waits for the capture work
        # item, which leaves last and wakes it.
        WAITED, SET, done(1),
        DEREGISTER, DELETE, *TEARDOWN]
    assert_clean(r)
    assert r.binding_allocations == [] and r.calls("WskReleaseProviderNPI") == []
    unload = event_index(r, "run", "DriverUnload")
    outstanding = log_index(r, "unload: 1 work item(s) outstanding")
    wait = [e for e in r.events if e.name == "KeWaitForSingleObject" and e.kind == "ke"]
    (wait,) = wait
    gave_up = log_index(r, "capture: given up, the unload began")
    (item1_done,) = [e for e in r.events if e.name == "work item done" and e.args["item"] == 1]
    wait_over = event_index(r, "ke-return", "KeWaitForSingleObject")
    dereg = event_index(r, "wskreg", "WskDeregister")
    assert unload < outstanding < wait.seq < gave_up < item1_done.seq < wait_over < dereg
    assert wait.time == 3500 * TICKS_PER_MS and r.events[gave_up].time == 4000 * TICKS_PER_MS
    assert wait.status == STATUS_SUCCESS and wait.args["Timeout"] == UNLOAD_WAIT
    assert r.events[gave_up].thread == "work item 1"


# ---------------------------------------------------------------------------------------------
# 12. Device object, events and work items (every image)
# ---------------------------------------------------------------------------------------------
def test_device_object_and_events(run):
    """One unnamed device object (FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, no extension,
    not exclusive) on the driver's DRIVER_OBJECT, created in DriverEntry before the registration
    and deleted in DriverUnload once deregistration is complete, before the driver's teardown;
    two notification events, not signalled, in the image's static data, initialised right after
    it; every KeSetEvent and KeWaitForSingleObject on one of those two."""
    r = run("default")
    assert_clean(r)
    (dev,) = r.devices
    create = r.events[dev.created_seq]
    assert create.thread == "DriverEntry"
    assert (dev.name, dev.device_type, dev.characteristics, dev.exclusive, dev.extension_size) \
        == (None, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN, 0, 0)
    assert dev.driver_object == r.events[0].args["DriverObject"]
    assert create.seq < registration_index(r)
    assert r.events[dev.deleted_seq].thread == "DriverUnload"
    assert deregistered_index(r) < dev.deleted_seq
    own_frees = [e.seq for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")
                 and e.args["Tag"] in OWN_TAGS]
    assert all(dev.deleted_seq < s for s in own_frees)
    assert len(r.kevents) == 2
    inits = [e for e in r.events if e.name == "KeInitializeEvent"]
    assert [(e.args["Type"], e.args["State"]) for e in inits] == [(0, 0), (0, 0)]
    assert all(r.in_image(k.address) for k in r.kevents)
    assert all(create.seq < e.seq < registration_index(r) for e in inits)
    addresses = {k.address for k in r.kevents}
    for e in r.events:
        if e.kind == "ke" and e.name in ("KeSetEvent", "KeWaitForSingleObject"):
            key = "Event" if e.name == "KeSetEvent" else "Object"
            assert e.args[key] in addresses, e


def test_work_items(run):
    """Each work item: its context allocated with the work item tag, then IoAllocateWorkItem on
    the driver's device object, IoQueueWorkItem on the DelayedWorkQueue with that context and a
    routine of the image; the routine frees the context first and its own work item last (while
    it runs); nothing queued or running when DriverUnload returns. wsk_attach queues none and
    never waits."""
    r = run("default")
    assert_clean(r)
    if not CONN:
        assert r.work_items == [] and r.work_allocations == []
        assert not any(e.kind == "ke" and e.name in ("KeWaitForSingleObject", "KeSetEvent")
                       for e in r.events)
        return
    assert len(r.work_items) == 2  # open and close the connection
    (dev,) = r.devices
    pool = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == WORK_TAG]
    for it in r.work_items:
        (alloc_ev,) = [e for e in r.events if e.name == "IoAllocateWorkItem"
                       and e.args.get("item") == it.number]
        (queue_ev,) = [e for e in r.events if e.name == "IoQueueWorkItem"
                       and e.args.get("item") == it.number]
        (free_ev,) = [e for e in r.events if e.name == "IoFreeWorkItem"
                      and e.args.get("item") == it.number]
        (runs_ev,) = [e for e in r.events if e.name == "work item runs"
                      and e.args.get("item") == it.number]
        (done_ev,) = [e for e in r.events if e.name == "work item done"
                      and e.args.get("item") == it.number]
        assert alloc_ev.args["DeviceObject"] == dev.address == it.device
        assert queue_ev.args["QueueType"] == harness.DELAYED_WORK_QUEUE
        assert r.in_image(it.routine)
        (ctx_alloc,) = [e for e in pool if e.name.startswith("ExAllocate")
                        and e.status == it.context]
        (ctx_free,) = [e for e in pool if e.name.startswith("ExFree") and e.args["P"] == it.context]
        assert ctx_alloc.seq < alloc_ev.seq < queue_ev.seq < runs_ev.seq < ctx_free.seq < \
            free_ev.seq < done_ev.seq
        assert ctx_free.thread == free_ev.thread == "work item %d" % it.number
    # The open work item: queued by DriverEntry, run after it; the close work item: queued and
    # run inside DriverUnload.
    opened, closed = r.work_items
    assert [e.thread for e in r.events if e.name == "IoQueueWorkItem"] == ["DriverEntry",
                                                                           "DriverUnload"]
    assert opened.routine != closed.routine


@connection_only
def test_unload_waits_for_the_connection(run):
    """The unload, while the connection holds its reference: `unload: 1 reference(s)
    outstanding`, the close work item queued, `unload: waiting for 1 reference(s)`, a 5 s wait
    on the references' event that blocks; the work item drops the reference (KeSetEvent on that
    event, `connection: reference released`); the wait returns STATUS_SUCCESS; then the
    deregistration, and no second wait (no work item outstanding any more)."""
    r = run("default")
    assert_clean(r)
    outstanding = log_index(r, "unload: 1 reference(s) outstanding")
    (close_q,) = [e for e in r.events if e.name == "IoQueueWorkItem" and e.args["item"] == 2]
    waiting = log_index(r, "unload: waiting for 1 reference(s)")
    (wait,) = [e for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"]
    (setev,) = [e for e in r.events if e.kind == "ke" and e.name == "KeSetEvent"]
    released = log_index(r, CONNECTION_CLOSE)
    wait_over = event_index(r, "ke-return", "KeWaitForSingleObject")
    dereg = event_index(r, "nmr", "NmrDeregisterClient") if NMR else \
        event_index(r, "wskreg", "WskReleaseProviderNPI")
    assert outstanding < close_q.seq < waiting < wait.seq < setev.seq < released < wait_over < dereg
    assert wait.args["Object"] == setev.args["Event"]
    assert wait.args["Timeout"] == UNLOAD_WAIT and wait.status == STATUS_SUCCESS
    assert wait.thread == "DriverUnload" and setev.thread == "work item 2"
    assert not any("work item(s) outstanding" in t for t in r.logs), r.logs


def test_busy_workers_unload_times_out_and_keeps_waiting(run):
    """Work items start 12 s after they are queued and sc stop comes at 20 s: the connection's
    work item runs at 12 s; the unload's close work item starts at 32 s, so the unload's 5 s
    wait times out twice (STATUS_TIMEOUT, `unload: still waiting for reference(s)` each time)
    and its third wait returns STATUS_SUCCESS once the reference is released. Without a
    connection nothing waits."""
    r = run("busy-workers")
    assert_clean(r)
    seq = default_run()
    if CONN:
        i = seq.index(WAITED)
        seq[i:i + 1] = ["KeWaitForSingleObject -> STATUS_TIMEOUT"] * 2 + [WAITED]
    assert sequence(r) == seq
    if not CONN:
        assert not any(e.name == "KeWaitForSingleObject" for e in r.events)
        return
    waits = [e for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"]
    ms = 1000 * TICKS_PER_MS
    assert [(e.time, e.status) for e in waits] == [(20 * ms, STATUS_TIMEOUT),
                                                   (25 * ms, STATUS_TIMEOUT),
                                                   (30 * ms, STATUS_SUCCESS)]
    assert len({e.args["Object"] for e in waits}) == 1
    still = [e for e in log_events(r)
             if e.text == PROFILE.log("unload: still waiting for reference(s)") + "\n"]
    assert [(e.time, e.args["Level"]) for e in still] == [(25 * ms, 1), (30 * ms, 1)]  # WARNING
    (opened,) = [e for e in log_events(r) if e.text == PROFILE.log(CONNECTION_OPEN) + "\n"]
    (closed,) = [e for e in log_events(r) if e.text == PROFILE.log(CONNECTION_CLOSE) + "\n"]
    assert (opened.time, closed.time) == (12 * ms, 32 * ms)
    assert r.clock == 32 * ms


@connection_only
def test_harness_reports_a_wait_nothing_can_satisfy():
    """The harness itself: if the system never ran the driver's work items, the unload's wait
    could never be satisfied. That must be a reported violation, DriverUnload abandoned (not an
    endless loop of 5 s timeouts), and what is left behind reported too."""
    class NoWorkers(harness.Harness):
        def _h_ioqueueworkitem(self, emu, api, func, argv):
            self.ev("work", "IoQueueWorkItem (dropped by this test)", {})
            return None
    image = harness.default_image()
    r = NoWorkers(image, dataclasses.replace(harness.SCENARIOS["default"]),
                  profile=PROFILE).run()
    hang = [v for v in r.violations if "nothing can ever signal it" in v]
    assert len(hang) == 1 and "DriverUnload waits for event" in hang[0], r.violations
    # The connection's work item never ran (so it prepared no close): the unload waits for it.
    assert "unload: waiting for 1 work item(s)" in hang[0], hang
    assert r.unload_ran and not r.unload_completed
    assert any("device object" in v and "not deleted" in v for v in r.violations), r.violations
    assert any("work item 1 (IoAllocateWorkItem) not freed" in v for v in r.violations)
    assert "DriverUnload ran: ABANDONED" in harness.format_trace(r)
    # One wait, not a loop of timeouts.
    assert sum(1 for e in r.events if e.name == "KeWaitForSingleObject" and e.kind == "ke") == 1


def test_driver_own_allocations_span_the_registration(run):
    """The driver's own blocks (exactly the profile's; none for wsk_attach): allocated in
    DriverEntry before it registers (and before its device object), freed with their tag in
    DriverUnload once deregistration is complete (no binding can use them any more)."""
    r = run("default")
    assert_clean(r)
    own = r.own_allocations
    assert sorted(a.tag for a in own) == sorted(OWN_TAGS)
    entry = event_index(r, "run", "DriverEntry")
    register = min(registration_index(r), event_index(r, "device", "IoCreateDevice"))
    dereg = deregistered_index(r)
    unload_end = event_index(r, "run", "DriverUnload returned")
    pool = [e for e in r.events if e.kind == "pool"]
    for a in own:
        (alloc,) = [e for e in pool if e.name.startswith("ExAllocate") and e.status == a.address]
        (free,) = [e for e in pool if e.name.startswith("ExFree") and e.args["P"] == a.address]
        assert entry < alloc.seq < register, (tag_name(a.tag), alloc)
        assert dereg < free.seq < unload_end, (tag_name(a.tag), free)
        assert free.args["Tag"] == a.tag


@connection_only
def test_connection_block_lives_from_open_to_close(run):
    """The connection's block: allocated by the open work item once DriverEntry returned, freed
    by the close work item inside DriverUnload, before the deregistration."""
    r = run("default")
    (a,) = r.connection_allocations
    pool = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG]
    alloc, free = pool
    assert alloc.status == a.address and free.args == {"P": a.address, "Tag": CONN_TAG}
    assert alloc.thread == "work item 1" and free.thread == "work item 2"
    assert event_index(r, "run", "DriverEntry returned") < alloc.seq < log_index(r, CONNECTION_OPEN)
    deregistration = event_index(r, "nmr", "NmrDeregisterClient") if NMR else \
        event_index(r, "wskreg", "WskReleaseProviderNPI")
    assert event_index(r, "run", "DriverUnload") < free.seq < log_index(r, CONNECTION_CLOSE) < \
        deregistration


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


# ---------------------------------------------------------------------------------------------
# 14. The echo exchange over the provider's sockets (IRPs, completion routines, MDLs)
# ---------------------------------------------------------------------------------------------
ECHO_BYTES = harness.ECHO_MESSAGE.encode("utf-8")
ECHO_OK = "echo ok, %d bytes" % len(ECHO_BYTES)
STATUS_CANCELLED = harness.STATUS_CANCELLED
STATUS_CONNECTION_REFUSED = harness.STATUS_CONNECTION_REFUSED
STATUS_NOT_IMPLEMENTED = harness.STATUS_NOT_IMPLEMENTED
STATUS_MORE_PROCESSING_REQUIRED = harness.STATUS_MORE_PROCESSING_REQUIRED
# A step of the exchange waits 5 s, then 1 s after a cancel (crates/wsk-client/src/irp.rs).
STEP_MS, AFTER_CANCEL_MS = 5000, 1000


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
    """assert_clean, plus: every IRP was given a completion routine (IoSetCompletionRoutineEx
    on the driver's device object, invoked on success, error and cancel) before a WSK function
    got it, was completed once (or never sent), given back (STATUS_MORE_PROCESSING_REQUIRED) and
    freed once; every MDL built and freed; every socket closed; one request context per
    IoAllocateIrp; the only blocks besides the usual ones are request contexts and buffers."""
    assert_clean(r)
    device = r.devices[0].address
    sets = [e for e in r.events if e.kind == "io" and e.name == "IoSetCompletionRoutineEx"]
    allocs = [e for e in r.events if e.kind == "io" and e.name == "IoAllocateIrp"]
    assert all(e.args["StackSize"] == 1 and e.args["ChargeQuota"] == 0 for e in allocs), allocs
    assert len(r.request_allocations) == len(allocs)
    for rec in r.irps:
        # Completed once when sent, or once by the driver itself when never sent (a request
        # dropped unused, or answered without its IRP being completed).
        assert rec.state == "freed" and rec.completions == 1 and rec.uses <= 1, rec
        (s,) = [e for e in sets if e.args["*irp"] == rec.number]
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
    STATUS_PENDING, completed on a provider thread — `echo ok, 11 bytes`, once; the socket is
    kept (the connection's block) until the unload's close work item disconnects and closes it,
    before the deregistration; everything balanced."""
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
        assert calls[name].thread == "work item 1", calls[name]
    # Kept until the unload: the disconnect and the close come from the unload's work item,
    # after DriverUnload began and before the deregistration.
    unload = event_index(r, "run", "DriverUnload")
    deregistration = event_index(r, "nmr", "NmrDeregisterClient") if NMR else \
        event_index(r, "wskreg", "WskReleaseProviderNPI")
    for name in ("WskDisconnect", "WskCloseSocket"):
        assert calls[name].thread == "work item 2" and unload < calls[name].seq < deregistration
    (kept,) = r.connection_allocations
    assert kept.freed_by and log_index(r, ECHO_OK) < unload
    # Every completion routine ran on a provider thread, none inside the WSK call.
    runs_on = {e.thread for e in r.events if e.kind == "io-callback"}
    assert runs_on and all(t.startswith("provider thread") for t in runs_on), runs_on
    assert r.clock == 0


@connection_only
def test_echo_buffers_are_mdls_within_their_pool(run):
    """The message goes out of, and comes back into, a non-paged pool block described by an MDL
    (IoAllocateMdl over the whole block, MmBuildMdlForNonPagedPool) whose WSK_BUF never claims
    more than the MDL's ByteCount; the received bytes are the message; both MDLs are freed (and
    their blocks) once the exchange is over, before the connection is kept (its block was
    allocated before the exchange; keeping it is storing the socket in it)."""
    r = run("echo")
    assert_clean_exchange(r)
    assert len(r.mdls) == 2 and len(r.buffer_allocations) == 2
    for m, a in zip(r.mdls, r.buffer_allocations):
        assert (m.va, m.length) == (a.address, len(ECHO_BYTES)) == (a.address, a.size), (m, a)
    kept = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG][0]
    frees = [e for e in r.events if e.kind == "io" and e.name == "IoFreeMdl"]
    assert len(frees) == 2 and all(kept.seq < log_index(r, ECHO_OK) < e.seq for e in frees)


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


def assert_connection_not_kept(r):
    """The connection's block (and its close work item), allocated before the exchange so that
    keeping and closing allocate nothing, freed by the exchange's own work item when it failed."""
    (block,) = r.connection_allocations
    frees = [e for e in r.events if e.kind == "pool" and e.name.startswith("ExFree")
             and e.args.get("P") == block.address]
    assert len(frees) == 1 and frees[0].thread == "work item 1", frees
    assert all(it.queued_count == 0 for it in r.work_items[1:]), r.work_items


@connection_only
def test_echo_refused_closes_the_socket_at_once(run):
    """WskConnect completes with STATUS_CONNECTION_REFUSED: `echo failed: connect 0xC0000236`;
    no send, receive or disconnect; the socket is closed by the exchange's own work item (no
    connection kept), so the unload has nothing to close."""
    r = run("echo-refused")
    assert_clean_exchange(r)
    assert echo_results(r) == ["echo failed: connect 0xC0000236"]
    assert socket_ops(r) == with_socket(r, [
        *pended("WskSocket", information=-1), *pended("WskBind"),
        *pended("WskConnect", STATUS_CONNECTION_REFUSED), *pended("WskCloseSocket")])
    (close,) = [e for e in r.socket_calls if e.name == "WskCloseSocket"]
    assert close.thread == "work item 1" and close.seq < event_index(r, "run", "DriverUnload")
    assert_connection_not_kept(r)
    assert r.mdls == []


@connection_only
def test_echo_silent_peer_stop_during_the_receive(run):
    """The peer never answers; sc stop comes at 1 s, while the receive is pending. The unload
    waits; the receive times out at 5 s, IoCancelIrp completes it (STATUS_CANCELLED): `echo
    failed: receive 0xC0000120`, the socket closed, the last reference goes and the unload
    ends — no hang, nothing left."""
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
    assert receive.seq < unload.seq < cancel.seq and cancel.time == STEP_MS * ms
    assert cancel.thread == "work item 1"
    assert r.clock == STEP_MS * ms
    assert_connection_not_kept(r)


@connection_only
def test_echo_wine_like_provider_disconnect_stub(run):
    """A Wine-like provider: WskDisconnect answers STATUS_NOT_IMPLEMENTED and never completes its
    IRP. The exchange works (`echo ok`); at the unload the driver logs the stub, completes the
    IRP the provider never took itself (IoSetNextIrpStackLocation + IoCompleteRequest: its
    completion routine runs, so nothing IoSetCompletionRoutineEx allocated is left), frees it,
    and closes the socket anyway."""
    r = run("echo-wine-like")
    assert_clean_exchange(r)
    assert echo_results(r) == [ECHO_OK]
    assert socket_ops(r) == with_socket(r, [*EXCHANGE, "WskDisconnect -> STATUS_NOT_IMPLEMENTED",
                                            "  never sent (completed by the driver): "
                                            "STATUS_NOT_IMPLEMENTED, 0",
                                            *pended("WskCloseSocket")])
    (stub,) = [rec for rec in r.irps if rec.uses == 0]
    assert stub.completions == 1 and stub.state == "freed"
    assert stub.completed_status == harness.STATUS_NOT_IMPLEMENTED
    (own,) = [e for e in r.events if e.kind == "io" and e.name == "IofCompleteRequest"]
    assert own.args["*irp"] == stub.number
    # Every IRP's routine ran: no IoFreeIrp is noted for a routine that never did.
    frees = [e for e in r.events if e.kind == "io" and e.name == "IoFreeIrp"]
    assert [e.args["*irp"] for e in frees if e.text] == [], frees
    assert log_index(r, "request: answered 0xC0000002 without completing its IRP; "
                     "completed here") < \
        event_index(r, "wsk", "WskCloseSocket")


@connection_only
def test_echo_wine_like_silent_peer_last_resort_close(run):
    """A Wine-like provider (IoCancelIrp does nothing) and a silent peer, sc stop at 0.5 s: the
    receive times out at 5 s, the cancel returns FALSE, 1 s later the driver closes the socket as
    its last resort; the close completes the receive (STATUS_CANCELLED) and itself; `echo failed:
    receive 0xC0000120`, and the unload ends with nothing left."""
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
    assert cancel.time == STEP_MS * ms and close.time == (STEP_MS + AFTER_CANCEL_MS) * ms
    assert close.thread == "work item 1"
    # The receive's completion came from the close, inside the WskCloseSocket call.
    (done_receive,) = [e for e in r.completions if e.args["op"] == "WskReceive"]
    assert done_receive.thread == "work item 1" and done_receive.seq > close.seq
    assert r.clock == (STEP_MS + AFTER_CANCEL_MS) * ms


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
    IoCancelIrp does nothing, its WskCloseSocket leaves it pending) leaves the driver waiting for
    ever: reported — the wait nothing can satisfy, DriverUnload abandoned, and the IRP still
    pending in WskReceive at the unload."""
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
    assert any("nothing can ever" in v and "work item 1 waits" in v for v in r.violations), \
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
    """A provider whose WskDisconnect keeps the IRP (pending) yet answers STATUS_NOT_IMPLEMENTED
    breaks the contract the driver relies on (a request not answered STATUS_PENDING is complete,
    or never will be). The driver completes the IRP itself, which the harness reports (the
    provider still holds it) and refuses: the routine does not run. The driver then waits for
    the routine, as for any request: its timeout cancels the IRP, the provider's cancel routine
    completes it, and only then is it freed — never while the provider holds it."""
    class KeepsDisconnect(harness.Harness):
        def _h_sock_disconnect(self, emu, api, func, argv):
            e, sock = self._socket_call("WskDisconnect", argv[0], {})
            self._take_irp(argv[3], "WskDisconnect", sock)
            e.status = harness.STATUS_NOT_IMPLEMENTED
            return e.status
    r = KeepsDisconnect(harness.default_image(), harness.SCENARIOS["echo"], profile=PROFILE).run()
    (irp,) = [x for x in r.irps if x.op == "WskDisconnect"]
    assert r.violations == ["IofCompleteRequest of IRP %d while it is pending (in WskDisconnect): "
                            "the provider owns it" % irp.number]
    assert irp.cancels == 1 and irp.completions == 1, irp
    assert irp.completed_status == harness.STATUS_CANCELLED and irp.state == "freed", irp
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


# ---------------------------------------------------------------------------------------------
# Failed loads, and every named scenario (as run_driver.py shows them)
# ---------------------------------------------------------------------------------------------
def assert_failed_load_clean(r):
    """A failed DriverEntry leaves nothing: no violation, no DriverUnload, every block freed with
    its tag, the device object deleted, no work item, registrations undone."""
    assert r.entry_status is not None and r.entry_status & 0x80000000, S(r.entry_status)
    assert r.violations == [] and r.run_errors == []
    assert not r.unload_ran
    assert r.outstanding == []
    assert all(a.freed_by == "ExFreePoolWithTag" and a.free_tag == a.tag for a in r.allocations)
    assert all(d.deleted_seq is not None for d in r.devices)
    assert r.work_items == [] and r.work_allocations == [] and r.connection_allocations == []
    assert all(reg.captures == 0 for reg in r.wsk_registrations)
    assert all(reg.status != STATUS_SUCCESS or reg.deregistered_seq is not None
               for reg in r.wsk_registrations)


def test_registration_failure_fails_the_load(run):
    """NmrRegisterClient (or WskRegister) fails: DriverEntry fails, its device object deleted
    and its own allocations freed before it returns."""
    r = run("register-fails")
    if NMR:
        assert sequence(r) == [*SETUP, DEVICE, "NmrRegisterClient -> STATUS_INSUFFICIENT_RESOURCES",
                               DELETE, *TEARDOWN]
    else:
        assert sequence(r) == [*SETUP, DEVICE, wsk_register(WSK_1_1, STATUS_INSUFFICIENT_RESOURCES),
                               DELETE, *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert r.binding_allocations == []
    assert sorted(a.tag for a in r.own_allocations) == sorted(OWN_TAGS), r.allocations


def test_device_creation_failure_fails_the_load(run):
    """IoCreateDevice fails: the driver does not register, logs why, and DriverEntry fails with
    that status, its own allocations freed."""
    r = run("device-fails")
    assert sequence(r) == [*SETUP, "IoCreateDevice -> STATUS_INSUFFICIENT_RESOURCES", *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert r.calls("NmrRegisterClient") == [] and r.wsk_calls == [] and r.kevents == []
    assert PROFILE.log("register: IoCreateDevice failed: 0xC000009A") + "\n" in r.logs, r.logs


@pytest.mark.parametrize("scenario", sorted(LOAD_FAILS))
def test_every_failed_load_is_clean(run, scenario):
    r = run(scenario)
    assert_failed_load_clean(r)
    assert "no problems found" in harness.format_trace(r)


@pytest.mark.parametrize("scenario", sorted(set(harness.scenarios_for(PROFILE)) - LOAD_FAILS))
def test_every_named_scenario_is_clean(run, scenario):
    r = run(scenario)
    assert_clean(r)
    text = harness.format_trace(r)
    assert "no problems found" in text
    assert "device objects: 1 created, 1 deleted" in text
