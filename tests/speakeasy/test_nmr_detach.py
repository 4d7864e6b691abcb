"""Sections 9-10 (NMR): the provider's detach and cleanup, re-attach of a late provider, a
detach during the attach call, and the unload's order and handles.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""

from harness import STATUS_PENDING, STATUS_SUCCESS, WSK_1_1
from expected import (CONN, CONN_FREE, CONN_TAG, LOAD, UNLOAD_NOTHING_ATTACHED, assert_clean,
                      attach, binding_pool_events, done, event_index, first, log_index, nmr_attach,
                      nmr_only, open_connection, queue, runs, sequence, unload)


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
