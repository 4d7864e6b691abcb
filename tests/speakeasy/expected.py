"""What the Speakeasy tests expect of the image under test, shared by the test modules
(test_nmr_attach.py, test_nmr_detach.py, test_wskregister.py, test_kernel_objects.py, test_logs.py,
test_echo.py, test_scenarios.py, test_irql.py).

Each scenario asserts the exact sequence of calls between the driver and NMR or the WskRegister
layer (both directions), with the driver's device object, its work items (queued, run, done), the
events its unload waits on and sets, and its own pool allocations and frees where they happen;
the WSK version of every NmrClientAttachProvider try and WskRegister, and every status returned;
plus the pool balance per tag and the absence of contract violations that the harness detects
(bad handles, callbacks in the wrong state, a foreign NMR module id, leaks, double frees, a device
object or work item left behind, a wait nothing can satisfy, ...).

What differs between the images (backend, log prefix, tags, the driver's own allocations and log
lines, its connection, module id) comes from the image's driver profile, PROFILE
(tests/driver_profiles.py). Tests of one backend are deselected for the other (never skipped):
the markers nmr_only, wskregister_only and connection_only below are the `applies` marker that
conftest.py registers and applies.

Image: $WSK_DRIVER_SYS, default target/x86_64-pc-windows-msvc/release/wsk_attach.sys (a missing
image FAILS the tests; an image name without a profile fails the collection).
"""
import pytest

import harness
from harness import STATUS_SUCCESS, TICKS_PER_MS, WSK_1_1, WSK_NO_WAIT, status_name, tag_name

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
server_only = pytest.mark.applies(PROFILE.server, reason="%s is not the echo server (no "
                                  "listening socket)" % PROFILE.name)
c_echo_only = pytest.mark.applies(PROFILE.c_baseline, reason="%s is not the C echo driver "
                                  "(baseline/wsk_echo_baseline.c)" % PROFILE.name)

# The Wait of the library's unload: 5 s, relative (crates/wsk-client/src/runtime.rs).
UNLOAD_WAIT = -5000 * TICKS_PER_MS
FILE_DEVICE_UNKNOWN = 0x22
FILE_DEVICE_SECURE_OPEN = 0x100


# ---------------------------------------------------------------------------------------------
# The sequence of a run, and its pieces
# ---------------------------------------------------------------------------------------------
def sequence(r):
    """What the driver and the system did to each other, in the order the calls started, as
    readable strings: the calls between NMR (or the WskRegister layer) and the driver; the device
    object; work items queued, starting ("work item 2 runs") and returning ("work item 2 done");
    KeSetEvent and KeWaitForSingleObject with the status the wait ended with; the client's timer
    (KeSetTimer, KeCancelTimer, KeFlushQueuedDpcs, and its expiry: TIMER_DPC); the driver's own
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
        elif e.kind == "ke" and e.name in ("KeSetTimer", "KeCancelTimer", "KeFlushQueuedDpcs"):
            out.append(e.name)
        elif e.kind == "ke" and e.name == "timer expired":
            out.append(TIMER_DPC)
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
TIMER_DPC = "the timer expires: its DPC runs"
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


def notices_made(attach_calls) -> int:
    """How many detach notice work items an attach at load made: the NMR backend allocates one
    with each binding context (crates/wsk-client/src/detach.rs: its context with the work item
    tag, then IoAllocateWorkItem), which ClientAttachProvider does just before its first
    NmrClientAttachProvider — so one when that call was made, none when the attach declined
    without allocating or its allocation failed. The WskRegister backend has no NMR detach and
    makes none."""
    return 1 if any(c.startswith("NmrClientAttachProvider") for c in attach_calls) else 0


# The connection's task's work item when the load attached (or tried to): after the binding's
# notice (work item 1, NMR backend) it is 2; without a notice (WskRegister backend), 1. The task
# runs in it from the spawn to the end, the stop included (CLOSE_ITEM is the same work item).
OPEN_ITEM = 2 if NMR else 1
CLOSE_ITEM = OPEN_ITEM
DETACHED = "ClientDetachProvider -> STATUS_SUCCESS"


def notice(item):
    """A provider's detach (not the unload's: the unload tells the client itself, and the notice
    is freed unqueued) queues the binding's notice work item from inside ClientDetachProvider,
    so that Client::on_detach runs outside NMR's call, at PASSIVE_LEVEL."""
    return [queue(item)]


def open_connection(item=OPEN_ITEM, holding=True):
    """The connection's task, spawned by DriverEntry once registered (its block allocated, its
    work item queued), run once DriverEntry returned: it takes a binding reference and holds it
    (its first poll ends pending), or finds no provider and ends (its block freed in that run)."""
    if not CONN:
        return []
    return [CONN_ALLOC, queue(item), runs(item), done(item)]


def close_connection(item=CLOSE_ITEM, holding=True):
    """The unload's first step when the driver holds a connection: Client::on_detach cancels its
    task (its work item, allocated with it, queued: the stop allocates nothing), the unload waits
    for the reference, the task lets it go (KeSetEvent by the last reference) and ends (its block
    freed). A task that ended at once (no provider): its block goes with the handle on_detach lets
    go, nothing queued."""
    if not CONN:
        return []
    if not holding:
        return [CONN_FREE]
    return [queue(item), WAITED, runs(item), SET, CONN_FREE, done(item)]


# NMR backend
LOAD = [*SETUP, DEVICE, "NmrRegisterClient -> STATUS_SUCCESS"]


def unload(attached=True, holding=None, item=CLOSE_ITEM, gone=False):
    """The NMR unload: the connection closed (its task's work item `item`; `gone`: the task and
    its handle are gone already, a detach having cancelled it), the deregistration, whose detach
    of a binding still attached completes at once (its notice is not queued: the unload has told
    the client already), the device object deleted, the driver's teardown."""
    holding = attached if holding is None else holding
    return [*([] if gone else close_connection(item, holding)),
            "NmrDeregisterClient -> STATUS_PENDING",
            *([DETACHED, "ClientCleanupBindingContext"] if attached else []),
            "NmrWaitForClientDeregisterComplete -> STATUS_SUCCESS",
            DELETE,
            *TEARDOWN]


UNLOAD = unload(attached=True)
UNLOAD_NOTHING_ATTACHED = unload(attached=False)


def attached_at(*attach_calls):
    """A whole run that attached at load (the NMR calls in the attach given) and unloaded."""
    n = notices_made(attach_calls)
    return [*LOAD, *attach_calls, *open_connection(1 + n, True),
            *unload(attached=True, item=1 + n)]


def not_attached(*attach_calls):
    """A whole run in which the attach at load was declined or failed (a notice made with the
    binding context is freed with it, unqueued, by the attach)."""
    n = notices_made(attach_calls)
    return [*LOAD, *attach_calls, *open_connection(1 + n, False), *UNLOAD_NOTHING_ATTACHED]


# WskRegister backend
WSK_LOAD = [*SETUP, DEVICE]
WSK_UNLOAD = [*close_connection(1, True), RELEASE, DEREGISTER, DELETE, *TEARDOWN]


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
    # connection's close that never came to be (the exchange failed) or a detach notice never
    # sent, freed unqueued; one context each. A task's work item (one per task, with its 'T'
    # block instead of a context) runs once per wake: queued as often as it ran, then freed.
    tasks = len(r.task_allocations)
    for it in r.work_items:
        assert it.freed and it.state == "freed" and it.queued_count == it.runs, it
    assert sum(1 for it in r.work_items if it.runs > 1) <= tasks, (r.work_items, tasks)
    assert len(r.work_allocations) + tasks == len(r.work_items)
    # The detach notices: one per binding context (NMR backend), made in ClientAttachProvider,
    # queued (if at all) by ClientDetachProvider. Anything else is the connection's.
    notices = notice_items(r)
    assert len(notices) == (len(r.binding_allocations) if NMR else 0), (
        "detach notice work items %r for binding contexts %r" % (notices,
                                                                 r.binding_allocations))
    for it in notices:
        assert it.queued_count == 0 or it.queued_in == "ClientDetachProvider", it
    if not CONN:
        assert len(r.work_items) == len(notices) and r.connection_allocations == []
    # The connection's task, and on the WskRegister backend a capture task (one task tag).
    assert len(r.connection_allocations) <= (1 if NMR else 2)
    for reg in r.wsk_registrations:
        assert reg.captures == 0, reg
        assert reg.status != STATUS_SUCCESS or reg.deregistered_seq is not None, reg
    assert all(t.state == "done" for t in r.threads), [(t.name, t.state) for t in r.threads]


def notice_items(r):
    """The detach notice work items: those allocated inside ClientAttachProvider (with a binding
    context; crates/wsk-client/src/detach.rs)."""
    return [it for it in r.work_items if it.allocated_in == "ClientAttachProvider"]


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



CONNECTION_CLOSE = "connection: reference released"
CONNECTION_OPEN = "connection: holding a binding reference"


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
