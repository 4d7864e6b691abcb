"""The work item rule (issue 16, "What to build" item 4): a work item routine runs on one of the
system's few shared worker threads and must be short — "System Worker Threads",
https://learn.microsoft.com/windows-hardware/drivers/kernel/system-worker-threads: a driver that
waits there (for the network, a timer, a provider) can deadlock the system. The harness
(harness/io.py) reports a work item routine that calls a function that may block
(KeWaitForSingleObject with a NULL or non-zero timeout, WskCaptureProviderNPI with a WaitTimeout
other than WSK_NO_WAIT) or that runs longer than 1 s of emulated time.

Since issue 17 no work item of these images waits: the echo driver's connection is a task (a
run polls its future once: it awaits each request, and waits for a provider on the client's
timer), the WskRegister capture is one too, and every run enforces the rule on every work item
(harness.io.nothing_allowed). The tests below show it on the scenarios that used to break it —
the echo exchange, the connection without a provider, the capture — and on every named scenario
of every image; a mutated driver whose work item waits is caught.

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_work_item_rule.py
"""
import dataclasses
import re

import pytest

import harness
from harness import STATUS_SUCCESS, STATUS_TIMEOUT, TICKS_PER_MS
from harness.io import nothing_allowed
from expected import CONN, NMR, PROFILE, connection_only, nmr_only, notice_items, wskregister_only
from mutants import emulate, mutant

# A break of the rule, as the harness words it.
RULE = re.compile(r"waits inside a work item routine|longer than 1\.000 s: work items must be "
                  r"short")


class LongWorkItems(AssertionError):
    """The work item rule is broken."""


def assert_short(r):
    """The run breaks no rule but, possibly, the work item rule — that one raises LongWorkItems,
    listing its breaks."""
    others = [v for v in r.violations if not RULE.search(v)]
    assert r.run_errors == [] and others == [], (r.run_errors, others)
    assert r.entry_status == STATUS_SUCCESS and r.unload_completed
    breaks = [v for v in r.violations if RULE.search(v)]
    if breaks:
        raise LongWorkItems("%d break(s) of the work item rule:\n  %s" % (len(breaks),
                                                                         "\n  ".join(breaks)))


def enforced(image, scenario):
    """`scenario`, the work item rule enforced on every work item (nothing allowed)."""
    return harness.run_scenario(image, scenario, long_work_items_allowed=nothing_allowed)


# ---------------------------------------------------------------------------------------------
# The echo driver's connection, a task since issue 17
# ---------------------------------------------------------------------------------------------
@connection_only
def test_the_echo_exchange_waits_in_no_work_item(image):
    """The echo exchange (socket, bind, connect, send, receive; the disconnect and close at the
    unload) with the rule enforced: every request is awaited by the connection's task, whose
    work item runs once per wake and returns. (Before issue 17 each request was waited for —
    KeWaitForSingleObject on its event, 5 s — in the connection's work items.)"""
    r = enforced(image, "echo")
    assert_short(r)
    (task,) = [it for it in r.work_items if it.allocated_in == "DriverEntry"]
    assert task.runs > 5, "one run per completed request, at least"


@connection_only
def test_the_connection_polls_for_no_binding_in_a_work_item(image):
    """The echo exchange without a provider (`echo`, none registered; for the WskRegister image
    a WSK subsystem never ready), the rule enforced: the connection's task tries for a binding,
    then sleeps 100 ms on the client's timer between tries (a run per try), until the unload
    cancels it. (Before issue 17 its work item slept on an event of its own stack.)"""
    r = harness.run_scenario(image, dataclasses.replace(harness.SCENARIOS["echo"], providers=[]),
                             long_work_items_allowed=nothing_allowed)
    assert_short(r)
    assert not any(re.search(r"on the stack of work item \d+", v) for v in r.violations)
    assert any(e.kind == "ke" and e.name == "KeSetTimer" for e in r.events)


@wskregister_only
def test_the_wskregister_capture_waits_in_no_work_item(image):
    """The WSK subsystem ready 2.5 s after the load (`wsk-late`), the rule enforced on the
    capture's work item alone: since issue 17 the capture is a task that tries WSK_NO_WAIT once
    per run and sleeps on the client's timer in between (it looped on WskCaptureProviderNPI with
    a 1 s timeout in one work item before: three waits, and a run longer than 1 s)."""
    r = enforced(image, "wsk-late")
    (capture,) = [it for it in r.work_items if it.allocated_in == "DriverEntry"
                  and any(e.kind == "wskreg" and e.thread == "work item %d" % it.number
                          for e in r.events)]
    assert capture.runs >= 4, "a run at the start, then one per timer expiry until captured"
    mine = re.compile(r"\(work item %d\)|^work item %d's" % (capture.number, capture.number))
    r.violations[:] = [v for v in r.violations if mine.search(v) or not RULE.search(v)]
    assert_short(r)


def test_nothing_is_allowed_by_default(image):
    """A run allows no work item to break the rule unless told to: the image's own scenario
    records no allowed break, and a run that allows every work item sees the same (nothing to
    allow)."""
    scenario = "echo" if CONN else "provider-detach"
    default = harness.run_scenario(image, scenario)
    lenient = harness.run_scenario(image, scenario,
                                   long_work_items_allowed=lambda profile, item: "allowed")
    assert default.violations == [] and default.long_work_items == []
    assert lenient.long_work_items == []


# ---------------------------------------------------------------------------------------------
# Enforced everywhere else
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("scenario", ["provider-detach", "detach-during-attach",
                                      "provider-detach-at-dispatch"])
def test_the_detach_notices_are_short(image, scenario):
    """The NMR images' detach notice work items (queued by ClientDetachProvider, running
    Client::on_detach: they queue or let go, and return) pass the rule with nothing allowed —
    as does every work item of these runs (none of them has an exchange)."""
    r = enforced(image, scenario)
    assert_short(r)
    assert [it.runs for it in notice_items(r)] == [1]


@pytest.mark.parametrize("scenario", sorted(harness.scenarios_for(PROFILE)))
def test_every_work_item_is_short(image, scenario):
    """Every named scenario of the image passes the rule with nothing allowed."""
    r = enforced(image, scenario)
    assert [v for v in r.violations if RULE.search(v)] == []


# ---------------------------------------------------------------------------------------------
# The rule catches a mutated driver
# ---------------------------------------------------------------------------------------------
def _wait_two_seconds(h, argv):
    """In a work item routine (a detach notice's, on the NMR images), as it frees its work item:
    a 2 s wait on an event of its own (KeInitializeEvent on its stack, below what it uses; a
    KernelMode wait) that nothing signals."""
    item = h.current.item
    if item is None or (NMR and item.allocated_in != "ClientAttachProvider"):
        return None
    event = (h.emu.get_stack_ptr() - 0x400) & ~0xF
    timeout = event + 0x20
    h.wr64(timeout, -2000 * TICKS_PER_MS)
    return [("ntoskrnl", "KeInitializeEvent", [event, 0, 0]),
            ("ntoskrnl", "KeWaitForSingleObject", [event, 0, 0, 0, timeout])]


def test_a_work_item_that_waits_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/kernel/system-worker-threads.
    Mutation: a work item routine waits 2 s on an event of its own before it returns: both
    breaks are reported, the wait and the routine's 2 s. On the NMR images that routine is the
    detach notice of `provider-detach`; on the WskRegister image it is the last run of the
    connection's task, in `default`."""
    mutated = mutant("_h_iofreeworkitem", _wait_two_seconds)
    r = emulate(mutated, "provider-detach" if NMR else "default")
    (wait,) = [e for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"
               and e.thread.startswith("work item")]
    assert wait.status == STATUS_TIMEOUT
    item = int(wait.thread.split()[-1])
    assert r.violations == [
        "KeWaitForSingleObject (timeout 2.000 s) on event 0x%x, on the stack of work item %d "
        "waits inside a work item routine (work item %d): work items must be short (System "
        "Worker Threads)" % (wait.args["Object"], item, item),
        "work item %d's routine ran 2.000 s (t = 0.000 s to 2.000 s), longer than 1.000 s: work "
        "items must be short (System Worker Threads)" % item], r.violations
