"""Section 12 (every image): the device object, the events, the work items, the unload's
wait for the connection (and for busy worker threads), the harness's report of a wait nothing
can satisfy, the driver's own blocks and the connection's.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""
import dataclasses

import harness
from harness import STATUS_SUCCESS, STATUS_TIMEOUT, TICKS_PER_MS, tag_name
from expected import (BINDING_TAG, CLOSE_ITEM, CONN, CONNECTION_CLOSE, CONNECTION_OPEN, CONN_TAG,
                      FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN, NMR, OPEN_ITEM, OWN_TAGS,
                      PROFILE, UNLOAD_WAIT, WAITED, WORK_TAG, assert_clean, connection_only,
                      default_run, deregistered_index, event_index, log_events, log_index,
                      notice_items, registration_index, sequence)


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
    the driver's device object. A queued one: IoQueueWorkItem on the DelayedWorkQueue with that
    context and a routine of the image; the routine frees the context first and its own work
    item last (while it runs). The NMR backend's detach notice (crates/wsk-client/src/detach.rs),
    made by ClientAttachProvider with the binding context before it calls
    NmrClientAttachProvider, is not queued by the unload's detach (the unload told the client
    itself): ClientDetachProvider frees it, context first, before it returns. Nothing queued or
    running when DriverUnload returns. wsk_attach queues none and never waits."""
    r = run("default")
    assert_clean(r)
    (dev,) = r.devices
    pool = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == WORK_TAG]

    def item_events(it, name):
        return [e for e in r.events if e.name == name and e.args.get("item") == it.number]

    notices = notice_items(r)
    assert len(notices) == (1 if NMR else 0), r.work_items
    for it in notices:
        (alloc_ev,) = item_events(it, "IoAllocateWorkItem")
        (free_ev,) = item_events(it, "IoFreeWorkItem")
        assert alloc_ev.args["DeviceObject"] == dev.address == it.device
        assert it.queued_count == 0 and it.runs == 0, it
        ctx_alloc = [e for e in pool
                     if e.name.startswith("ExAllocate") and e.seq < alloc_ev.seq][-1]
        (ctx_free,) = [e for e in pool if e.name.startswith("ExFree")
                       and e.args["P"] == ctx_alloc.status]
        (binding,) = [e for e in r.events if e.kind == "pool" and e.name.startswith("ExAllocate")
                      and e.args.get("Tag") == BINDING_TAG]
        assert event_index(r, "callback", "ClientAttachProvider") < binding.seq < \
            ctx_alloc.seq < alloc_ev.seq < event_index(r, "nmr", "NmrClientAttachProvider")
        detach = event_index(r, "callback", "ClientDetachProvider")
        assert detach < ctx_free.seq < free_ev.seq < event_index(r, "return",
                                                                 "ClientDetachProvider")
        assert free_ev.thread == "DriverUnload"
    queued = [it for it in r.work_items if it not in notices]
    if not CONN:
        assert queued == []
        assert not any(e.kind == "ke" and e.name in ("KeWaitForSingleObject", "KeSetEvent")
                       for e in r.events)
        return
    # The connection's task: its block and work item allocated by DriverEntry (the spawn), the
    # work item queued there (the first poll) and by DriverUnload (Client::on_detach cancels the
    # task), run twice; the task's last run frees its block, then the work item.
    (task,) = queued
    (task_block,) = r.task_allocations
    assert task.context == task_block.address and task.allocated_in == "DriverEntry"
    assert (task.queued_count, task.runs) == (2, 2), task
    (alloc_ev,) = item_events(task, "IoAllocateWorkItem")
    (free_ev,) = item_events(task, "IoFreeWorkItem")
    queues = item_events(task, "IoQueueWorkItem")
    runs_ev = item_events(task, "work item runs")
    dones = item_events(task, "work item done")
    assert alloc_ev.args["DeviceObject"] == dev.address == task.device
    assert all(e.args["QueueType"] == harness.DELAYED_WORK_QUEUE for e in queues)
    assert r.in_image(task.routine)
    assert [e.thread for e in queues] == ["DriverEntry", "DriverUnload"]
    block = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG]
    (block_alloc, block_free) = block
    assert block_alloc.seq < alloc_ev.seq < queues[0].seq < runs_ev[0].seq < dones[0].seq
    assert queues[1].seq < runs_ev[1].seq < block_free.seq < free_ev.seq < dones[1].seq
    assert block_free.thread == free_ev.thread == "work item %d" % task.number


@connection_only
def test_unload_waits_for_the_connection(run):
    """The unload, while the connection holds its reference: `unload: 1 reference(s)
    outstanding`, the task's work item queued (Client::on_detach cancels it), `unload: waiting
    for 1 reference(s)`, a 5 s wait on the references' event that blocks; the task drops the
    reference (KeSetEvent on that event, `connection: reference released`) and ends; the wait
    returns STATUS_SUCCESS; then the deregistration, and no second wait (no work outstanding any
    more)."""
    r = run("default")
    assert_clean(r)
    outstanding = log_index(r, "unload: 1 reference(s) outstanding")
    (_, close_q) = [e for e in r.events if e.name == "IoQueueWorkItem"
                    and e.args["item"] == CLOSE_ITEM]
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
    assert wait.thread == "DriverUnload" and setev.thread == "work item %d" % CLOSE_ITEM
    assert not any("work item(s) outstanding" in t for t in r.logs), r.logs


def test_busy_workers_unload_times_out_and_keeps_waiting(run):
    """Work items start 12 s after they are queued and sc stop comes at 20 s: the connection's
    task runs first at 12 s; its run for the unload's cancel starts at 32 s, so the unload's 5 s
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
    assert any("work item %d (IoAllocateWorkItem) not freed" % OPEN_ITEM in v
               for v in r.violations), r.violations
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
    """The connection's block (its task): allocated by DriverEntry's spawn once registered, freed
    by the task's last run inside DriverUnload, before the deregistration."""
    r = run("default")
    (a,) = r.connection_allocations
    pool = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG]
    alloc, free = pool
    assert alloc.status == a.address and free.args == {"P": a.address, "Tag": CONN_TAG}
    assert (alloc.thread, free.thread) == ("DriverEntry", "work item %d" % CLOSE_ITEM)
    assert registration_index(r) < alloc.seq < event_index(r, "run", "DriverEntry returned") < \
        log_index(r, CONNECTION_OPEN)
    deregistration = event_index(r, "nmr", "NmrDeregisterClient") if NMR else \
        event_index(r, "wskreg", "WskReleaseProviderNPI")
    assert event_index(r, "run", "DriverUnload") < log_index(r, CONNECTION_CLOSE) < free.seq < \
        deregistration
