"""Section 11: the WskRegister backend — registration, capture, fallback to WSK 1.0, a
subsystem that says 1.0, one that is ready later or never, and the unload's order.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""

import pytest

from harness import (STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_NOINTERFACE,
                     STATUS_SUCCESS, TICKS_PER_MS, WSK_1_0, WSK_1_1, WSK_NO_WAIT)
from expected import (CONN_ALLOC, CONN_FREE, CONNECTION_CLOSE, CONNECTION_OPEN, DELETE, DEREGISTER,
                      PROFILE, RELEASE, S, SET, TEARDOWN,
                      TIMER_DPC, UNLOAD_WAIT, WAITED, WSK_LOAD, assert_clean,
                      assert_failed_load_clean, assert_in_order, binding_pool_events, capture,
                      default_run, done, event_index, log_events, log_index, queue, runs,
                      sequence, wsk_attached, wsk_register, wskregister_only)


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


# The client's timer in a sequence (expected.sequence).
SET_TIMER, CANCEL_TIMER, FLUSH_DPCS = "KeSetTimer", "KeCancelTimer", "KeFlushQueuedDpcs"


def capture_try(status=STATUS_DEVICE_NOT_READY, sleeps=True):
    """One run of the capture task (work item 1): a try without waiting, then (not captured) the
    client's timer set for the next try a second later."""
    return [runs(1), capture(WSK_NO_WAIT, status), *([SET_TIMER] if sleeps else []), done(1)]


def woken():
    """The client's timer expires; its DPC wakes the capture task (its work item queued)."""
    return [TIMER_DPC, queue(1)]


# A task's pool block (the library's task tag, which is also the echo connection's: its
# connection is a task): the capture task's, and the connection's.
TASK_ALLOC, TASK_FREE = CONN_ALLOC, CONN_FREE


@wskregister_only
def test_wskregister_provider_ready_later(run):
    """The WSK subsystem becomes ready 2.5 s after load (`wsk-late`): the first capture returns
    STATUS_DEVICE_NOT_READY, DriverEntry spawns the capture task and succeeds. The task tries
    WSK_NO_WAIT at once, then once a second, woken by the client's timer (its DPC), each run a
    single short poll (issue 17: no wait in a work item), and captures at t = 3 s."""
    r = run("wsk-late")
    assert sequence(r) == [
        *WSK_LOAD, wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_DEVICE_NOT_READY),
        TASK_ALLOC, queue(1),  # the capture task's first run, from DriverEntry
        TASK_ALLOC, queue(2),  # the connection's task
        *capture_try(),
        runs(2), done(2),  # the connection finds no provider yet (see below), and ends
        *woken(), *capture_try(),  # t = 1 s
        *woken(), *capture_try(),  # t = 2 s
        # t = 3 s: captured, the task ends (its block freed: nobody kept its handle)
        *woken(), runs(1), capture(WSK_NO_WAIT, STATUS_SUCCESS), TASK_FREE, done(1),
        # No connection: nothing to close (the ended connection task's block goes with the
        # handle Client::on_detach lets go). The unload cancels the timer (set for nothing by
        # now) and flushes the DPCs, then releases the NPI.
        TASK_FREE, CANCEL_TIMER, FLUSH_DPCS,
        RELEASE, DEREGISTER, DELETE, *TEARDOWN]
    assert_clean(r)
    caps = r.calls("WskCaptureProviderNPI")
    assert [(e.time, e.thread) for e in caps] == [
        (0, "DriverEntry"), (0, "work item 1"), (1000 * TICKS_PER_MS, "work item 1"),
        (2000 * TICKS_PER_MS, "work item 1"), (3000 * TICKS_PER_MS, "work item 1")]
    (reg,) = r.wsk_registrations
    assert reg.capture_answers[-1] == (WSK_NO_WAIT, STATUS_SUCCESS) and reg.releases == 1
    assert all(wait == WSK_NO_WAIT for wait, _ in reg.capture_answers)
    # The task is spawned before DriverEntry says it registered.
    not_ready = log_index(r, "WSK provider not ready (0xC00000A3): capturing from a task, "
                             "every 1000 ms")
    registered = log_index(r, "registered as WSK client (WskRegister)")
    (q1,) = [e for e in r.events if e.name == "IoQueueWorkItem" and e.args["item"] == 1
             and e.thread == "DriverEntry"]
    assert not_ready < q1.seq < registered < event_index(r, "run", "DriverEntry returned")
    # Two tasks, the capture's and the connection's, each in one pool block; the capture's work
    # item woken by the timer's DPC each time.
    assert len(r.task_allocations) == 2
    wakes = [e for e in r.events if e.name == "IoQueueWorkItem" and e.args["item"] == 1]
    assert [e.thread for e in wakes] == ["DriverEntry", "DPC 1", "DPC 2", "DPC 3"]
    # The capture, and the binding context, on the task's work item at t = 3 s.
    line = PROFILE.log("captured the WSK provider NPI, attached at WSK 1.1") + "\n"
    captured = [e for e in log_events(r) if e.text == line]
    assert [(e.thread, e.time) for e in captured] == [("work item 1", 3000 * TICKS_PER_MS)]
    (alloc,) = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    assert alloc.thread == "work item 1"
    # The example's connection task ran while the capture waited, found no provider
    # (STATUS_DEVICE_NOT_READY) and is not retried: the driver runs without a connection.
    assert log_index(r, "connection: no provider: 0xC00000A3") < captured[0].seq
    assert not any(CONNECTION_OPEN in t for t in r.logs)
    assert log_index(r, "unload: 0 reference(s) outstanding") > captured[0].seq


@wskregister_only
def test_wskregister_provider_never_ready_gives_up_at_unload(run):
    """The WSK subsystem never becomes ready: the capture task tries every second until sc stop
    (3.5 s). The unload cancels it (the task is woken at once, not at its next try), waits for
    it as outstanding work, and the task gives up on that run; then the timer is cancelled and
    the DPCs flushed, WskDeregister (no WskReleaseProviderNPI: nothing was captured), device
    deleted."""
    r = run("wsk-never")
    assert sequence(r) == [
        *WSK_LOAD, wsk_register(WSK_1_1), capture(WSK_NO_WAIT, STATUS_DEVICE_NOT_READY),
        TASK_ALLOC, queue(1), TASK_ALLOC, queue(2),
        *capture_try(),
        runs(2), done(2),
        *woken(), *capture_try(), *woken(), *capture_try(), *woken(), *capture_try(),
        # t = 3.5 s, sc stop: Client::on_detach lets the ended connection task's handle go (its
        # block freed); the cancellation queues the capture task at once; the unload waits for
        # it; it gives up and ends (its block freed, then the last reference's event set).
        TASK_FREE, queue(1), WAITED, runs(1), TASK_FREE, SET, done(1),
        CANCEL_TIMER, FLUSH_DPCS,
        DEREGISTER, DELETE, *TEARDOWN]
    assert_clean(r)
    assert r.binding_allocations == [] and r.calls("WskReleaseProviderNPI") == []
    unload = event_index(r, "run", "DriverUnload")
    cancelled = log_index(r, "unload: 1 task(s) cancelled")
    outstanding = log_index(r, "unload: 1 work item(s) outstanding")
    (wait,) = [e for e in r.events if e.name == "KeWaitForSingleObject" and e.kind == "ke"]
    gave_up = log_index(r, "capture: given up, the unload began")
    (cancel_wake,) = [e for e in r.events if e.name == "IoQueueWorkItem"
                      and e.thread == "DriverUnload"]
    wait_over = event_index(r, "ke-return", "KeWaitForSingleObject")
    dereg = event_index(r, "wskreg", "WskDeregister")
    assert unload < cancel_wake.seq < cancelled < outstanding < wait.seq < gave_up < wait_over
    assert wait_over < dereg
    # Given up at the sc stop itself, not at the next try (4 s).
    assert wait.time == 3500 * TICKS_PER_MS and r.events[gave_up].time == 3500 * TICKS_PER_MS
    assert wait.status == STATUS_SUCCESS and wait.args["Timeout"] == UNLOAD_WAIT
    assert r.events[gave_up].thread == "work item 1"
