"""The C echo driver (baseline/wsk_echo_baseline.c, raw NMR: the Rust echo driver's comparator)
under Speakeasy: its connection runs on a system thread (PsCreateSystemThread, its thread object
referenced with ObReferenceObjectByHandle and PsThreadType, the handle closed), waits with
KeWaitForMultipleObjects (WaitAny of a request's event and the stop event, a 5 s timeout) on
events its completion routines set, and its DriverUnload waits on the thread object. The harness
models all of it (harness/ps.py, harness/sync.py); this module runs the image clean (one message,
bulk mode, a peer that never answers, no provider) and shows each new rule caught on a mutated
driver (mutants.py): a DriverUnload that does not wait for its thread, the thread handle not
closed, the thread object's reference not released, PsTerminateSystemThread on a thread that is
not the driver's, KeWaitForMultipleObjects of more than THREAD_WAIT_OBJECTS objects without a
WaitBlockArray.

For other images these tests are deselected (expected.c_echo_only). `cargo xtask ci` runs this
file on the image `cargo xtask baseline` builds:
    WSK_DRIVER_SYS=target/baseline/wsk_echo_baseline.sys \\
        target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_c_echo.py -q
"""
import collections
import dataclasses

import harness
from harness import STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_TIMEOUT
from expected import PROFILE, c_echo_only
from mutants import emulate, mutant

pytestmark = c_echo_only

UNLOADED = "unloaded, live pool allocations: 0"
CHUNK = 64 * 1024


def run(scenario) -> harness.Result:
    """The image through a scenario (a name or a Scenario). The echo scenarios are for images
    with a connection (a wsk-client task): this driver has its own, on a system thread."""
    if isinstance(scenario, str):
        scenario = harness.SCENARIOS[scenario]
    return harness.Harness(harness.default_image(), dataclasses.replace(scenario),
                           profile=PROFILE).run()


def logs(r):
    return [line.rstrip("\n") for line in r.logs]


def socket_calls(r):
    return collections.Counter(e.name for e in r.socket_calls)


def bulk(chunks: int) -> harness.Scenario:
    """The echo scenario in bulk mode, a 64-byte Message: `chunks` chunks of 64 KiB."""
    registry = harness.echo_parameters(message="m" * 64)
    registry["Parameters"]["Bytes"] = harness.reg_dword(chunks * CHUNK)
    return dataclasses.replace(harness.SCENARIOS["echo"], registry=registry)


def assert_clean(r):
    assert r.violations == [] and r.run_errors == [], harness.format_trace(r)
    assert r.entry_status == STATUS_SUCCESS and r.unload_completed
    assert PROFILE.log(UNLOADED) in logs(r)
    assert all(v["outstanding"] == 0 for v in r.pool_balance().values()), r.pool_balance()


def the_thread_ends_before_the_unload_returns(r, how="PsTerminateSystemThread"):
    """One system thread, started at PASSIVE_LEVEL, ended by `how`, its handle closed and its
    object's reference released; DriverUnload's wait on its object returned STATUS_SUCCESS."""
    created = [e for e in r.events if e.name == "PsCreateSystemThread"]
    assert len(created) == 1 and created[0].status == STATUS_SUCCESS, created
    ended = [e for e in r.events if e.name == "system thread ends"]
    assert len(ended) == 1 and how in ended[0].text, ended
    (thread,) = [t for t in r.threads if t.kind == "system"]
    assert thread.state == "done" and thread.irql == harness.PASSIVE_LEVEL
    unload = next(e.seq for e in r.events if e.kind == "run" and e.name == "DriverUnload")
    unload_end = next(e.seq for e in r.events if e.name == "DriverUnload returned")
    assert ended[0].seq < unload_end
    waits = [e for e in r.events if e.name == "KeWaitForSingleObject" and e.kind == "ke"
             and e.seq > unload and "system thread 1's object" in e.args.get("*objects", "")]
    assert waits and all(w.status == STATUS_SUCCESS for w in waits), waits


def test_one_message_is_echoed_on_the_system_thread():
    """The `echo` scenario: socket, bind, connect, one send and one receive of Message, the
    graceful disconnect and the close, all on the system thread; the unload waits for it."""
    r = run("echo")
    assert_clean(r)
    assert PROFILE.log("echo ok, %d bytes" % len(harness.ECHO_MESSAGE)) in logs(r)
    calls = socket_calls(r)
    assert calls["WskSend"] == 1 and calls["WskReceive"] == 1, calls
    assert all(e.thread == "system thread 1" for e in r.socket_calls)
    the_thread_ends_before_the_unload_returns(r)


def test_bulk_mode_sends_and_receives_one_request_per_chunk():
    """Bulk mode, 4 chunks of 64 KiB: one WskSend and one WskReceive per chunk (the echo peer
    gives a 64 KiB receive a whole chunk: two are in flight), each KeWaitForMultipleObjects a
    WaitAny satisfied by the request's event (STATUS_WAIT_0). The same figure as the Rust
    driver's, which `cargo xtask baseline` compares per round trip."""
    r = run(bulk(4))
    assert_clean(r)
    assert PROFILE.log("echo ok, %d bytes (no clock)" % (4 * CHUNK)) in logs(r)
    calls = socket_calls(r)
    assert calls["WskSend"] == 4 and calls["WskReceive"] == 4, calls
    waits = [e for e in r.events if e.name == "KeWaitForMultipleObjects" and e.kind == "ke"]
    assert waits and all(w.args["WaitType"] == "WaitAny" and w.status == 0 for w in waits)
    the_thread_ends_before_the_unload_returns(r)


def test_the_stop_ends_a_wait_for_a_peer_that_never_answers():
    """A silent peer, sc stop 1 s after everything settled: the thread's WaitAny (the receive's
    event, the stop event) returns STATUS_WAIT_1 when DriverUnload sets the stop; the driver
    cancels its receive, closes its socket, lets its binding go and ends; the unload's wait on
    the thread object then returns."""
    r = run("echo-silent-stop")
    assert_clean(r)
    assert PROFILE.log("echo failed: receive 0xC0000120") in logs(r)
    waits = [e for e in r.events if e.name == "KeWaitForMultipleObjects" and e.kind == "ke"]
    assert waits[-1].status == 1, waits[-1]  # STATUS_WAIT_1: the stop
    the_thread_ends_before_the_unload_returns(r)


def test_no_provider_the_thread_gives_up_at_the_stop():
    """No WSK version in common (`wsk12-only`): the thread waits for an attach that never comes
    (WaitAny with a 10 s timeout) until the unload's stop, logs it and ends."""
    r = run("wsk12-only")
    assert_clean(r)
    assert PROFILE.log("connection: no provider: 0xC0000120") in logs(r)
    the_thread_ends_before_the_unload_returns(r)


def _is_thread_object(h, argv):
    return argv[0] in h.thread_objects


def test_an_unload_that_does_not_wait_for_its_thread_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-psterminatesystemthread
    ("A driver that creates its own threads must ensure that each such thread terminates": before
    its image goes). Mutation: DriverUnload's KeWaitForSingleObject on the thread object returns
    at once, in `wsk12-only` (the thread holds no binding, so NMR's deregistration does not wait
    for it either): DriverUnload returns while the thread, woken by the stop, has not run yet."""
    r = emulate(mutant("_h_kewaitforsingleobject",
                       lambda h, argv: [] if _is_thread_object(h, argv) else None,
                       replace=True, result=STATUS_SUCCESS), "wsk12-only")
    (routine,) = [e.args["StartRoutine"] for e in r.events if e.name == "PsCreateSystemThread"]
    assert r.violations == [
        "DriverUnload returned while system thread 1 (StartRoutine 0x%x) is still running: the "
        "image would be unmapped under it (a driver that creates its own threads must ensure "
        "that each terminates before it unloads)" % routine,
        # and, the image gone, the thread's start routine never returns
        "emulation ended inside 1 driver callback(s) on system thread 1"], r.violations


def test_a_thread_handle_left_open_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-pscreatesystemthread
    (ThreadHandle: the driver must close it with ZwClose once it no longer uses it). Mutation:
    DriverEntry's ZwClose of the thread handle is left out: reported at the unload, and nothing
    else."""
    r = emulate(mutant("_h_zwclose",
                       lambda h, argv: [] if any(st.handle == argv[0]
                                                 for st in h.system_threads) else None,
                       replace=True, result=STATUS_SUCCESS), "echo")
    (st_handle,) = [e.args["*ThreadHandle"] for e in r.events if e.name == "PsCreateSystemThread"]
    assert r.violations == ["system thread 1's handle 0x%x (PsCreateSystemThread) not closed at "
                            "unload (ZwClose)" % st_handle], r.violations


def test_a_thread_object_reference_not_released_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-obreferenceobjectbyhandle
    (a reference it takes, the driver releases with ObDereferenceObject when done). Mutation:
    DriverUnload's ObfDereferenceObject of the thread object is left out."""
    r = emulate(mutant("_h_obfdereferenceobject", lambda h, argv: [], replace=True, result=0),
                "echo")
    assert r.violations == ["system thread 1's object: 1 reference(s) (ObReferenceObjectByHandle) "
                            "not released at unload (ObDereferenceObject)"], r.violations


def test_a_wrong_object_type_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-obreferenceobjectbyhandle
    (ObjectType: *PsThreadType for a thread handle). Mutation: DriverEntry passes the address of
    the PsThreadType variable (wdm.h's IAT-slot spelling without the `*`, the bug 26f4d47 fixed)
    instead of the type: reported, the reference refused."""
    base = harness.Harness._h_obreferenceobjectbyhandle

    class Mutant(harness.Harness):
        def _h_obreferenceobjectbyhandle(self, emu, api, func, argv):
            argv = list(argv)
            argv[2] = argv[2] + 8  # not the type the variable holds
            return base(self, emu, api, func, argv)
    r = emulate(Mutant, "echo")
    assert any(v.startswith("ObReferenceObjectByHandle: ObjectType 0x") and
               "is not *PsThreadType" in v for v in r.violations), r.violations
    assert PROFILE.log("thread: no reference 0xC0000024") in logs(r)


def test_terminating_a_thread_the_driver_did_not_create_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-psterminatesystemthread
    ("The driver must not terminate any threads that the system or other drivers created").
    Mutation: DriverEntry calls PsTerminateSystemThread right after its IoCreateDevice: reported,
    and the call fails (STATUS_INVALID_PARAMETER) without ending DriverEntry's thread."""
    r = emulate(mutant("_h_iocreatedevice",
                       lambda h, argv: [("ntoskrnl", "PsTerminateSystemThread", [0])]), "echo")
    assert r.violations == ["PsTerminateSystemThread on DriverEntry, not a system thread the "
                            "driver created: the driver must not terminate threads the system or "
                            "other drivers created"], r.violations
    (call,) = [e for e in r.events if e.name == "PsTerminateSystemThread"
               and e.thread == "DriverEntry"]
    assert call.status == STATUS_INVALID_PARAMETER and r.entry_status == STATUS_SUCCESS


def test_a_wait_on_more_objects_than_thread_wait_objects_without_wait_blocks_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kewaitformultipleobjects
    (WaitBlockArray may be NULL only if Count <= THREAD_WAIT_OBJECTS, 3). Mutation: the thread's
    first KeWaitForMultipleObjects passes Count 4 (its WaitBlockArray still NULL): reported, the
    call refused (STATUS_INVALID_PARAMETER: the driver gives up on the provider)."""
    base = harness.Harness._h_kewaitformultipleobjects

    class Mutant(harness.Harness):
        mutated = False

        def _h_kewaitformultipleobjects(self, emu, api, func, argv):
            argv = list(argv)
            if not self.mutated:
                self.mutated = True
                argv[0] = 4
            return base(self, emu, api, func, argv)
    r = emulate(Mutant, "echo")
    assert r.violations == ["KeWaitForMultipleObjects: Count 4 is above THREAD_WAIT_OBJECTS (3) "
                            "and WaitBlockArray is NULL: the caller must supply Count "
                            "KWAIT_BLOCKs"], r.violations


def test_a_timeout_ends_a_wait_any():
    """KeWaitForMultipleObjects's timeout: no provider (`wsk12-only`) and sc stop at 11 s, after
    the thread's 10 s WaitAny for an attach: that wait returns STATUS_TIMEOUT at t = 10 s, the
    thread logs it (STATUS_DEVICE_NOT_READY) and ends before the unload."""
    r = run(dataclasses.replace(harness.SCENARIOS["wsk12-only"], unload_after_ms=11000))
    assert_clean(r)
    (wait,) = [e for e in r.events if e.name == "KeWaitForMultipleObjects" and e.kind == "ke"]
    assert wait.status == STATUS_TIMEOUT, wait
    assert PROFILE.log("connection: no provider: 0xC00000A3") in logs(r)
    the_thread_ends_before_the_unload_returns(r)
