"""Sections 9-10 (NMR): the provider's detach and cleanup, re-attach of a late provider, a
detach during the attach call, and the unload's order and handles.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""

from harness import STATUS_PENDING, STATUS_SUCCESS, WSK_1_1
from expected import (CLOSE_ITEM, CONN, CONN_ALLOC, CONN_FREE, CONN_TAG, DETACHED, LOAD, OPEN_ITEM,
                      UNLOAD_NOTHING_ATTACHED, assert_clean, attach, binding_pool_events, done,
                      event_index, first, log_index, nmr_attach, nmr_only, notice, notice_items,
                      open_connection, queue, runs, sequence, unload)


# ---------------------------------------------------------------------------------------------
# 9. Detach and cleanup (provider side) and re-attach (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_provider_detach_then_cleanup_frees_in_cleanup(run):
    """The provider deregisters after DriverEntry. ClientDetachProvider queues the binding's
    detach notice (work item 1, made with the binding context at attach), so that
    Client::on_detach runs outside NMR's call, and returns. Without a connection the detach
    completes at once (STATUS_SUCCESS). With one (its task holds a binding reference),
    ClientDetachProvider returns STATUS_PENDING; the notice's on_detach cancels the task (its
    work item queued), which drops the reference — the last one — and so calls
    NmrClientDetachProviderComplete exactly once, after the detach returned; NMR cleans up from
    there. Either way the context is freed in cleanup, never in detach, and the unload
    afterwards is clean."""
    r = run("provider-detach")
    if CONN:
        assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                               *open_connection(OPEN_ITEM, True),
                               "ClientDetachProvider -> STATUS_PENDING", *notice(1),
                               runs(1), queue(CLOSE_ITEM), done(1),
                               runs(CLOSE_ITEM), "NmrClientDetachProviderComplete",
                               "ClientCleanupBindingContext", CONN_FREE, done(CLOSE_ITEM),
                               *unload(attached=False, gone=True)]
    else:
        assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                               DETACHED, *notice(1), "ClientCleanupBindingContext",
                               runs(1), done(1), *UNLOAD_NOTHING_ATTACHED]
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
    # The notice: queued inside ClientDetachProvider, run after it returned, on a worker thread.
    (notice_item,) = notice_items(r)
    (notice_q,) = [e for e in r.events if e.name == "IoQueueWorkItem"
                   and e.args["item"] == notice_item.number]
    (notice_runs,) = [e for e in r.events if e.name == "work item runs"
                      and e.args["item"] == notice_item.number]
    assert detach.seq < notice_q.seq < event_index(r, "return", "ClientDetachProvider") < \
        notice_runs.seq
    assert notice_q.thread == "after DriverEntry"
    completes = r.calls("NmrClientDetachProviderComplete")
    if not CONN:
        assert completes == [] and b.detach_status == STATUS_SUCCESS
        return
    assert b.detach_status == STATUS_PENDING and b.complete_calls == 1
    (complete,) = completes
    assert complete.args["NmrBindingHandle"] == b.handle
    # The task's work item was queued by the notice's work item (Client::on_detach) ...
    (_, close_q) = [e for e in r.events if e.name == "IoQueueWorkItem"
                    and e.args["item"] == CLOSE_ITEM]
    assert notice_runs.seq < close_q.seq and close_q.thread == "work item 1"
    # ... and the task completes the detach from it, after the detach returned, before the
    # task's block is freed and the work item returns; cleanup happens inside that call.
    assert complete.thread == cleanup.thread == "work item %d" % CLOSE_ITEM
    item_done = [e for e in r.events if e.name == "work item done"
                 and e.args["item"] == CLOSE_ITEM][-1]
    conn_free = [e for e in r.events if e.kind == "pool" and e.args.get("Tag") == CONN_TAG
                 and e.name.startswith("ExFree")][0]
    assert event_index(r, "return", "ClientDetachProvider") < complete.seq < cleanup.seq < \
        conn_free.seq < item_done.seq
    assert detach.seq < log_index(r, "detach: 1 call(s) in flight, pending") < \
        event_index(r, "return", "ClientDetachProvider")
    assert log_index(r, "detach completed: last call in flight returned") < complete.seq
    assert log_index(r, "connection: reference released") > complete.seq
    # The unload later finds nothing attached, no reference and no connection: nothing to close.
    assert log_index(r, "unload: 0 reference(s) outstanding") > item_done.seq
    assert r.calls("ClientDetachProvider") == [detach]


@nmr_only
def test_late_provider_attach_detach_reattach(run):
    """No provider at load (the connection's task, work item 1, finds none and ends); one
    registers, then deregisters — its binding's notice (work item 2) queued by the detach, whose
    on_detach lets the ended task's handle go (its block freed) — and registers again; the
    unload detaches the second binding (its notice freed unqueued)."""
    r = run("late-provider")
    item = 2 if CONN else 1
    assert sequence(r) == [*LOAD,
                           *open_connection(1, holding=False),
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           # No connection was kept: the detach has nothing to close.
                           DETACHED, *notice(item), "ClientCleanupBindingContext",
                           runs(item), *([CONN_FREE] if CONN else []), done(item),
                           attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           *unload(attached=True, holding=False, gone=True)]
    assert_clean(r)
    assert len(r.bindings) == 2 and all(b.state == "cleaned" for b in r.bindings)
    assert len(r.binding_allocations) == 2
    assert [(it.queued_count, it.queued_in) for it in notice_items(r)] == [
        (1, "ClientDetachProvider"), (0, "")]
    if CONN:
        # The connection's work item ran before any provider was there: it holds nothing (the
        # example opens its connection once, at load).
        assert log_index(r, "connection: no provider: 0xC00000A3") < \
            event_index(r, "callback", "ClientAttachProvider")


@nmr_only
def test_detach_during_attach_call(run):
    """NMR detaches the binding before NmrClientAttachProvider has returned (the race of
    ebpf-for-windows #4982): attach must still return STATUS_SUCCESS, and the context must be
    freed exactly once, by cleanup, with nothing left for unload. The detach queues the
    binding's notice (work item 1), which runs once DriverEntry returned."""
    r = run("detach-during-attach")
    assert sequence(r) == [*LOAD, attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS),
                           DETACHED, *notice(1),
                           # No connection yet: the detach has nothing to close; the connection's
                           # task, cancelled as it is kept (the cancel came first), then ends
                           # without a provider.
                           "ClientCleanupBindingContext",
                           *([CONN_ALLOC, queue(2)] if CONN else []),
                           runs(1), done(1),
                           *([runs(2), CONN_FREE, done(2)] if CONN else []),
                           *unload(attached=False, gone=True)]
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
