"""Driver Verifier's I/O rules and the NMR / WSK rules (issue 16, "What to build" item 4), as
the harness checks them, each shown caught on a mutated driver: a harness subclass in which the
image makes one call it should not (or leaves out one it should), through the harness's hooks
like any call of its own (mutants.py), so that the rule is checked where it is for the real
image. The same scenarios on the unmutated image break no rule (the other test modules' clean
runs).

The rules, and where the harness checks them:
- IofCompleteRequest of an IRP never sent to the driver (IofCallDriver), and a double completion:
  harness/irp.py, _h_iofcompleterequest;
- an IoSetCompletionRoutineEx routine that never runs (the IRP freed with it set and not run, or
  left at the unload): irp.py, _h_iofreeirp and _irps_left;
- IoFreeIrp before the routine ran (the IRP pending in the provider, or sent): irp.py,
  _h_iofreeirp;
- IofCallDriver of an IRP someone holds, or for a major function the driver has no dispatch
  routine for: irp.py, _h_iofcalldriver;
- a new WSK call inside a completion routine: irp.py, check_no_wsk_call_in_routine, before
  every hooked call;
- NmrClientDetachProviderComplete inside ClientDetachProvider, or after it returned
  STATUS_SUCCESS; a detach status other than STATUS_SUCCESS / STATUS_PENDING: nmr.py;
- a provider NPI call through a binding whose ClientDetachProvider returned: provider.py,
  _client_of;
- DriverUnload returning with the NMR client still registered while the image is unmapped (no
  device object kept): machine.py _image_unmapped, nmr.py _nmr_unmapped.
The IRQL rules are test_irql.py's; the work item rule is test_work_item_rule.py's.

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_rules.py
"""
import re

import harness
from harness import (DRIVER_OBJECT_MAJOR_FUNCTION, IRP_MJ_INTERNAL_DEVICE_CONTROL,
                     STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS)
from expected import PROFILE, connection_only, nmr_only
from mutants import emulate, mutant


def untaken(h, argv):
    """The IRP of an IofCallDriver (the library sends itself an IRP no provider took)."""
    return h.irp_by_addr[argv[1]]


# ---------------------------------------------------------------------------------------------
# Completing an IRP never sent; double completion
# ---------------------------------------------------------------------------------------------
def _complete_it_here(h, argv):
    """The library's way before 87ce39a (irp.rs complete_here): instead of sending the untaken
    IRP to its device, IoSetNextIrpStackLocation (a macro: the driver's own code) and
    IofCompleteRequest."""
    rec = untaken(h, argv)
    h.set_irp_location(rec, h.irp_location(rec) - 1)
    return [("ntoskrnl", "IofCompleteRequest", [rec.address, 0])]


@connection_only
def test_completing_an_irp_never_sent_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc9--driver-verifier-iomanager-violation
    (I/O Verification: an IRP is completed by the driver it was sent to with IoCallDriver, never
    by one that only allocated it) and
    https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocompleterequest.
    Mutation: the library's old completion of an IRP the Wine-like WskDisconnect stub never
    took — IoSetNextIrpStackLocation + IofCompleteRequest instead of IofCallDriver to its own
    device: reported, and nothing else (the routine still runs)."""
    r = emulate(mutant("_h_iofcalldriver", _complete_it_here, replace=True,
                   result=STATUS_NOT_IMPLEMENTED), "echo-wine-like")
    (stub,) = [x for x in r.irps if x.uses == 0]
    assert r.violations == [
        "IofCompleteRequest of IRP %d, which was never sent to the driver (IoCallDriver): only "
        "the driver an IRP was sent to completes it" % stub.number], r.violations
    assert stub.completions == 1 and stub.state == "freed"


@connection_only
def test_double_completion_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocompleterequest
    (an IRP is completed once; I/O Verification's bug check 0xC9,
    https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0xc9--driver-verifier-iomanager-violation).
    Mutation: the library's dispatch routine completes the IRP sent to it twice (two
    IofCompleteRequest): the second is reported, and does not run the routine again."""
    r = emulate(mutant("_h_iofcompleterequest",
                   lambda h, argv: [("ntoskrnl", "IofCompleteRequest", list(argv))] * 2,
                   replace=True), "echo-wine-like")
    (stub,) = [x for x in r.irps if x.uses == 0]
    assert r.violations == ["IofCompleteRequest of IRP %d, completed already: double completion"
                            % stub.number], r.violations
    assert stub.completions == 1 and stub.state == "freed"


# ---------------------------------------------------------------------------------------------
# A completion routine that never runs; IoFreeIrp before it ran
# ---------------------------------------------------------------------------------------------
@connection_only
def test_a_routine_that_never_runs_is_caught_when_the_irp_is_left_at_unload():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutineex
    (the memory it allocates, and its reference on the device object, are released when the
    routine runs: the IRP must be sent, so that it is completed). Mutation: a driver that neither
    sends nor completes the IRP the stub never took (its IofCallDriver does nothing, as
    Speakeasy's own stub did): the routine never runs, the IRP is left at the unload —
    reported."""
    r = emulate(mutant("_h_iofcalldriver", lambda h, argv: [], replace=True,
                   result=STATUS_SUCCESS), "echo-wine-like")
    (stub,) = [x for x in r.irps if x.uses == 0]
    assert ("the IoSetCompletionRoutineEx routine of IRP %d never ran (left at unload): the "
            "memory it allocated, and its reference on the device object, leak"
            % stub.number) in r.violations, r.violations
    assert stub.completions == 0 and stub.state == "allocated"


@connection_only
def test_a_routine_that_never_runs_is_caught_when_the_irp_is_freed():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutineex
    and https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreeirp. Mutation:
    a driver that frees the IRP the stub never took instead of sending it (IoFreeIrp in place of
    IofCallDriver): its routine never ran — reported at the IoFreeIrp."""
    r = emulate(mutant("_h_iofcalldriver",
                   lambda h, argv: [("ntoskrnl", "IoFreeIrp", [argv[1]])], replace=True,
                   result=STATUS_SUCCESS), "echo-wine-like")
    (stub,) = [x for x in r.irps if x.uses == 0]
    assert ("IoFreeIrp(0x%x): the IoSetCompletionRoutineEx routine of IRP %d never ran: the "
            "memory it allocated, and its reference on the device object, leak (send the IRP, so "
            "that it is completed, instead)" % (stub.address, stub.number)) in r.violations, \
        r.violations
    assert stub.completions == 0 and stub.state == "freed"


@connection_only
def test_iofreeirp_before_the_routine_ran_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iofreeirp (an IRP
    the driver sent is the provider's until it completes it; the WSK client frees it in, or
    after, its completion routine:
    https://learn.microsoft.com/windows-hardware/drivers/network/using-irps-with-winsock-kernel-functions).
    Mutation: a driver that frees its pending receive when IoCancelIrp finds no cancel routine
    (a Wine-like provider, a silent peer): reported — the receive is pending in the provider."""
    def free_after_a_failed_cancel(h, argv):
        rec = h.irp_by_addr.get(argv[0])
        return [("ntoskrnl", "IoFreeIrp", [argv[0]])] if rec and rec.state == "pending" else None
    r = emulate(mutant("_h_iocancelirp", free_after_a_failed_cancel), "echo-wine-silent")
    (receive,) = [x for x in r.irps if x.op == "WskReceive"]
    assert ("IoFreeIrp(0x%x): IRP %d is pending (in WskReceive): freed before its completion "
            "routine ran (the provider owns it until it completes it)"
            % (receive.address, receive.number)) in r.violations, r.violations


# ---------------------------------------------------------------------------------------------
# IofCallDriver
# ---------------------------------------------------------------------------------------------
@connection_only
def test_iofcalldriver_of_an_irp_the_provider_holds_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocalldriver (the
    caller gives the IRP to the next driver: it must hold it). Mutated harness: a provider that
    takes WskDisconnect's IRP (pending) without using its stack location, yet answers
    STATUS_NOT_IMPLEMENTED: the library, seeing the location unused, sends the IRP to its own
    device while the provider holds it — reported, and refused (no dispatch routine runs)."""
    class KeepsDisconnectUnseen(harness.Harness):
        def consume_location(self, rec, who):
            return None if who == "WskDisconnect" else super().consume_location(rec, who)

        def _h_sock_disconnect(self, emu, api, func, argv):
            e, sock = self._socket_call("WskDisconnect", argv[0], {})
            self._take_irp(argv[3], "WskDisconnect", sock)
            e.status = STATUS_NOT_IMPLEMENTED
            return e.status
    r = KeepsDisconnectUnseen(harness.default_image(), harness.SCENARIOS["echo"],
                              profile=PROFILE).run()
    (irp,) = [x for x in r.irps if x.op == "WskDisconnect"]
    assert r.violations == ["IofCallDriver of IRP %d while it is pending (in WskDisconnect): the "
                            "provider holds it" % irp.number], r.violations
    assert not any(e.name == "DriverDispatch" for e in r.events)


@connection_only
def test_iofcalldriver_without_a_dispatch_routine_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_dispatch and
    https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iocalldriver (the I/O
    manager calls the dispatch routine of the IRP's major function in the DRIVER_OBJECT).
    Mutation: a driver that never installed its IRP_MJ_INTERNAL_DEVICE_CONTROL routine (the
    entry cleared once DriverEntry returned): the IofCallDriver of the stub's IRP is reported;
    the I/O manager's own routine completes the IRP with STATUS_INVALID_DEVICE_REQUEST, so the
    completion routine still runs."""
    class NoDispatch(harness.Harness):
        def _run_completed(self, run_):
            if self._run_name(run_) == "DriverEntry" and self.driver_object:
                self.wr64(self.driver_object + DRIVER_OBJECT_MAJOR_FUNCTION
                          + 8 * IRP_MJ_INTERNAL_DEVICE_CONTROL, 0)
            return super()._run_completed(run_)
    r = emulate(NoDispatch, "echo-wine-like")
    (stub,) = [x for x in r.irps if x.uses == 0]
    assert r.violations == [
        "IofCallDriver of IRP %d: the driver has no dispatch routine for its MajorFunction "
        "IRP_MJ_INTERNAL_DEVICE_CONTROL (DRIVER_OBJECT.MajorFunction: 0x0); the I/O manager "
        "completes it with STATUS_INVALID_DEVICE_REQUEST" % stub.number], r.violations
    assert stub.completed_status == harness.STATUS_INVALID_DEVICE_REQUEST
    assert stub.completions == 1 and stub.state == "freed"


# ---------------------------------------------------------------------------------------------
# No new WSK call inside a completion routine
# ---------------------------------------------------------------------------------------------
def _client(h) -> int:
    """The WSK_CLIENT the provider gave the driver (its binding's, or its registration's)."""
    return ([b.wsk_client for b in h.bindings if b.wsk_client]
            + [reg.wsk_client for reg in h.wsk_regs if reg.wsk_client])[0]


@connection_only
def test_a_wsk_call_inside_a_completion_routine_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/network/using-irps-with-winsock-kernel-functions
    (a completion routine ends its request: it frees or reuses the IRP and returns
    STATUS_MORE_PROCESSING_REQUIRED; new WSK work belongs elsewhere). Mutation: a driver whose
    completion routine, once it set its request's event, calls WskSocketConnect (a provider
    function allowed at DISPATCH_LEVEL, so that only this rule speaks): reported."""
    def connect_in_the_routine(h, argv):
        if not h.in_callback("CompletionRoutine"):
            return None
        return [(h.wsk_funcs["WskSocketConnect"], "WskSocketConnect", [_client(h)] + [0] * 11)]
    r = emulate(mutant("_h_kesetevent", connect_in_the_routine), "echo")
    assert len(r.violations) == 1 and re.fullmatch(
        r"WskSocketConnect called inside a completion routine \(on provider thread \d+\): a WSK "
        r"client starts no new WSK call there \(Using IRPs with Winsock Kernel Functions\)",
        r.violations[0]), r.violations


# ---------------------------------------------------------------------------------------------
# NMR: the detach
# ---------------------------------------------------------------------------------------------
def _detaching(h):
    (b,) = [b for b in h.bindings if b.state == "detaching"]
    return b


@nmr_only
def test_detach_complete_inside_the_detach_callback_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn
    and https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrclientdetachprovidercomplete
    (the client calls it after returning STATUS_PENDING). Mutation: a driver whose
    ClientDetachProvider, once it logged, calls NmrClientDetachProviderComplete itself (the
    defect of issue 16: a close completing inside the callback let the last reference go there):
    reported as a call inside the callback, and — the callback then returning STATUS_SUCCESS —
    as a completion without STATUS_PENDING."""
    def complete_in_the_callback(h, argv):
        if not h.in_callback("ClientDetachProvider"):
            return None
        return [("netio", "NmrClientDetachProviderComplete", [_detaching(h).handle])]
    r = emulate(mutant("_h_dbgprintex", complete_in_the_callback), "default")
    (b,) = r.bindings
    assert r.violations == [
        "NmrClientDetachProviderComplete(0x%x) inside ClientDetachProvider: only after it "
        "returned STATUS_PENDING (NPI_CLIENT_DETACH_PROVIDER_FN)" % b.handle,
        "NmrClientDetachProviderComplete called although ClientDetachProvider returned "
        "STATUS_SUCCESS"], r.violations


@nmr_only
def test_detach_complete_after_a_detach_that_returned_success_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrclientdetachprovidercomplete
    (only for a detach whose ClientDetachProvider returned STATUS_PENDING, once). Mutation: a
    driver that calls NmrClientDetachProviderComplete after the unload's detach returned
    STATUS_SUCCESS (when it deletes its device object): reported."""
    def complete_after_success(h, argv):
        return [("netio", "NmrClientDetachProviderComplete", [h.bindings[0].handle])]
    r = emulate(mutant("_h_iodeletedevice", complete_after_success), "default")
    (b,) = r.bindings
    assert b.detach_status == STATUS_SUCCESS
    assert r.violations == [
        "NmrClientDetachProviderComplete(0x%x) after ClientDetachProvider returned "
        "STATUS_SUCCESS: only after it returned STATUS_PENDING, once "
        "(NPI_CLIENT_DETACH_PROVIDER_FN)" % b.handle], r.violations


@nmr_only
def test_a_detach_status_other_than_success_or_pending_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn
    (Return value: STATUS_SUCCESS or STATUS_PENDING, nothing else). Mutation: a driver whose
    ClientDetachProvider answers STATUS_INVALID_PARAMETER (what it answered a NULL context
    before 5211294): reported."""
    class DetachAnswersInvalid(harness.Harness):
        def call(self, fn, args, name, *rest, **kw):
            st = yield from super().call(fn, args, name, *rest, **kw)
            return STATUS_INVALID_PARAMETER if name == "ClientDetachProvider" else st
    r = emulate(DetachAnswersInvalid, "default")
    assert r.violations == ["ClientDetachProvider returned STATUS_INVALID_PARAMETER (only "
                            "STATUS_SUCCESS or STATUS_PENDING are allowed)"], r.violations


# ---------------------------------------------------------------------------------------------
# NMR: no provider NPI call after the detach
# ---------------------------------------------------------------------------------------------
def _control_client(h):
    return [(h.wsk_funcs["WskControlClient"], "WskControlClient", [_client(h)] + [0] * 7)]


@nmr_only
def test_a_provider_call_after_the_detach_returned_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn
    ("After ClientDetachProvider has been called, the client module should not make any more
    calls to any of the provider module's NPI functions"; checked from the callback's return on,
    as the host model does). Mutation: a driver that calls WskControlClient through its binding
    from the detach notice's work item, after ClientDetachProvider returned: reported. The same
    call from inside ClientDetachProvider (a call that checked the binding before the detach
    began may still race the callback) is not."""
    def in_the_notice(h, argv):
        item = h.current.item
        return (_control_client(h) if item is not None
                and item.allocated_in == "ClientAttachProvider" else None)
    r = emulate(mutant("_h_iofreeworkitem", in_the_notice), "provider-detach")
    (b,) = r.bindings
    assert len(r.violations) == 1 and re.fullmatch(
        r"WskControlClient called through binding 0x%x whose detach began \(ClientDetachProvider "
        r"returned STATUS_(SUCCESS|PENDING); the binding is (cleaned|detach-pending)\): no "
        r"provider NPI call after the detach" % b.handle, r.violations[0]), r.violations

    def in_the_callback(h, argv):
        return _control_client(h) if h.in_callback("ClientDetachProvider") else None
    r = emulate(mutant("_h_dbgprintex", in_the_callback), "provider-detach")
    assert any(e.name == "WskControlClient" and e.kind == "wsk" for e in r.events)
    assert r.violations == [], r.violations


# ---------------------------------------------------------------------------------------------
# NMR: DriverUnload returning before the deregistration completed
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_unload_returning_with_the_client_registered_and_the_image_unmapped_is_caught():
    """https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrderegisterclient
    and .../nf-netioddk-nmrwaitforclientderegistercomplete (a client module must not unload
    before its deregistration is complete: NMR still calls it) and
    https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_unload. NMR
    refuses the deregistration (NmrDeregisterClient fails): the image keeps its device object,
    so the image stays mapped until the system's shutdown detaches the binding — clean. Mutation:
    a driver that deletes its device object anyway (the unload before 5211294): DriverUnload
    returns with the client registered and the image unmapped — reported."""
    fail = dict(fail_call=("NmrDeregisterClient", 1, STATUS_INVALID_PARAMETER))
    kept = emulate(harness.Harness, "default", **fail)
    assert kept.image_kept and kept.violations == [], kept.violations
    assert [e.name for e in kept.events if e.kind == "callback"][-2:] == [
        "ClientDetachProvider", "ClientCleanupBindingContext"]

    def delete_the_device(h, argv):
        if h.current.name != "DriverUnload" or "device object is kept" not in h.current.last_log:
            return None
        return [("ntoskrnl", "IoDeleteDevice", [h.live_devices()[0].address])]
    r = emulate(mutant("_h_dbgprintex", delete_the_device), "default", **fail)
    assert not r.image_kept
    assert ("DriverUnload returned with the NMR client still registered and the image "
            "unmapped: NMR would call into it (its deregistration was not complete: keep the "
            "device object, and the image, until it is)") in r.violations, r.violations


def test_the_mutations_change_nothing_unless_they_apply(image):
    """The mutant harness itself: with a mutation that never applies, the run is the normal one
    (same violations: none; same sequence of calls)."""
    normal = harness.run_scenario(image, "default")
    r = emulate(mutant("_h_dbgprintex", lambda h, argv: None), "default")
    assert r.violations == normal.violations == []
    assert [(e.kind, e.name) for e in r.events] == [(e.kind, e.name) for e in normal.events]
