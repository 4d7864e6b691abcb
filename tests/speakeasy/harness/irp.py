"""IRPs and MDLs, as the I/O manager manages them for a driver that allocates its own IRPs to
send to WSK: IoAllocateIrp, IoSetCompletionRoutineEx, IoCancelIrp, IoReuseIrp, IoFreeIrp,
IofCompleteRequest (IoCompleteRequest), IoAllocateMdl, MmBuildMdlForNonPagedPool, IoFreeMdl; and
the completion of an IRP (IoStatus written, then the completion routine called with DeviceObject
NULL, which must give the driver's own IRP back with STATUS_MORE_PROCESSING_REQUIRED), on a
provider thread of its own or inside the WSK call.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-ioallocateirp,
nf-wdm-iosetcompletionroutineex, nf-wdm-iocancelirp, nf-wdm-ioreuseirp, nf-wdm-iofreeirp,
nf-wdm-iocompleterequest, nc-wdm-io_completion_routine, nf-wdm-ioallocatemdl,
nf-wdm-mmbuildmdlfornonpagedpool, nf-wdm-iofreemdl; and "Using IRPs with Winsock Kernel
Functions", at https://learn.microsoft.com/windows-hardware/drivers/ :
network/using-irps-with-winsock-kernel-functions.
"""
import struct
from typing import Dict, List, Optional

from .abi import (DISPATCH_LEVEL, DRIVER_OBJECT_MAJOR_FUNCTION, IO_STACK_LOCATION_DEVICE_OBJECT,
                  IO_TYPE_IRP, IRP_CANCEL, IRP_CURRENT_LOCATION, IRP_CURRENT_STACK_LOCATION,
                  IRP_IO_STATUS, IRP_MJ_INTERNAL_DEVICE_CONTROL, IRP_MJ_MAXIMUM_FUNCTION,
                  IRP_STACK_COUNT, MDL_MAPPED_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL, PAGE_SIZE,
                  SIZEOF_IO_STACK_LOCATION, SIZEOF_IRP, SIZEOF_MDL, STATUS_CANCELLED,
                  STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER,
                  STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, STATUS_SUCCESS, status_name)
from .machine import hook
from .records import HarnessError, IrpRec, MdlRec

def _holder(rec: IrpRec) -> str:
    """Who holds an IRP that is not the driver's to touch, for messages."""
    return {"pending": "the provider", "sent": "the dispatch routine it was sent to",
            "completing": "the I/O manager"}.get(rec.state, "the driver")


# The major functions' names (wdm.h), for messages.
_MAJOR_NAMES = {0x00: "IRP_MJ_CREATE", 0x02: "IRP_MJ_CLOSE", 0x03: "IRP_MJ_READ",
                0x04: "IRP_MJ_WRITE", 0x0E: "IRP_MJ_DEVICE_CONTROL",
                IRP_MJ_INTERNAL_DEVICE_CONTROL: "IRP_MJ_INTERNAL_DEVICE_CONTROL",
                0x12: "IRP_MJ_CLEANUP", 0x1B: "IRP_MJ_PNP"}


def major_name(major: int) -> str:
    return _MAJOR_NAMES.get(major, "IRP_MJ 0x%02x" % major)


class IrpModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.irps: List[IrpRec] = []
        self.irp_by_addr: Dict[int, IrpRec] = {}
        self.mdls: List[MdlRec] = []
        self.mdl_by_addr: Dict[int, MdlRec] = {}
        self.mdl_requests: List[int] = []  # VirtualAddress of every IoAllocateMdl
        # The IRP completions the provider has queued (run on provider threads).
        self.completion_queue: list = []

    def _irp(self, addr: int, api: str) -> Optional[IrpRec]:
        rec = self.irp_by_addr.get(addr)
        if rec is None:
            self.violation("%s(0x%x): not an IRP from IoAllocateIrp" % (api, addr))
            return None
        if rec.state == "freed":
            self.violation("%s(0x%x): IRP %d was freed already (IoFreeIrp)" % (api, addr,
                                                                              rec.number))
            return None
        return rec

    @hook("ntoskrnl", "IoAllocateIrp", 2)
    def _h_ioallocateirp(self, emu, api, func, argv):
        stack_size, quota = argv[0] & 0xFF, argv[1] & 0xFF
        e = self.ev("io", "IoAllocateIrp", {"StackSize": stack_size, "ChargeQuota": quota})
        if self._inject("IoAllocateIrp") is not None or self.scenario.fail_irp_allocations:
            e.status = 0
            return 0
        if stack_size < 1:
            self.violation("IoAllocateIrp(StackSize=%d): a WSK request needs a stack location "
                           "for the provider" % stack_size)
        size = SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * max(stack_size, 1)
        addr = self.alloc(size, "irp")
        self.wr(addr, struct.pack("<hH", IO_TYPE_IRP, size))
        self.wr(addr + IRP_STACK_COUNT, bytes([stack_size, (stack_size + 1) & 0xFF]))
        # As IoAllocateIrp leaves it: the current location one past the last one (none yet).
        self.wr64(addr + IRP_CURRENT_STACK_LOCATION,
                  addr + SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * stack_size)
        rec = IrpRec(number=len(self.irps) + 1, address=addr, stack_size=stack_size,
                     allocated_seq=e.seq)
        self.irps.append(rec)
        self.irp_by_addr[addr] = rec
        e.status = addr
        e.args["*irp"] = rec.number
        return addr

    @hook("ntoskrnl", "IoFreeIrp", 1)
    def _h_iofreeirp(self, emu, api, func, argv):
        (addr,) = argv
        rec = self.irp_by_addr.get(addr)
        e = self.ev("io", "IoFreeIrp", {"Irp": addr})
        if rec is None:
            self.violation("IoFreeIrp(0x%x): not an IRP from IoAllocateIrp" % addr)
            return None
        e.args["*irp"] = rec.number
        if rec.state == "freed":
            self.violation("IoFreeIrp(0x%x): IRP %d freed twice" % (addr, rec.number))
            return None
        if rec.state in ("pending", "sent"):
            # Before its routine ran: the routine would run on a freed IRP. (Inside the routine,
            # state "completing", the driver frees its own IRP given back: allowed.)
            self.violation("IoFreeIrp(0x%x): IRP %d is %s (in %s): freed before its completion "
                           "routine ran (%s owns it until it completes it)"
                           % (addr, rec.number, rec.state, rec.op, _holder(rec)))
        elif rec.routine:
            # Set, never sent: the routine never runs, and the memory IoSetCompletionRoutineEx
            # allocated (and its device object reference) is only released when it runs.
            e.text = "its IoSetCompletionRoutineEx routine never ran"
            self.violation("IoFreeIrp(0x%x): the IoSetCompletionRoutineEx routine of IRP %d never "
                           "ran: the memory it allocated, and its reference on the device object, "
                           "leak (send the IRP, so that it is completed, instead)"
                           % (addr, rec.number))
        rec.state = "freed"
        rec.freed_seq = e.seq
        self.wr(addr, b"\xdd" * (SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * max(rec.stack_size, 1)))
        return None

    @hook("ntoskrnl", "IoReuseIrp", 2)
    def _h_ioreuseirp(self, emu, api, func, argv):
        """IoReuseIrp (nf-wdm-ioreuseirp): reinitializes an IRP from IoAllocateIrp for another
        use: the driver's own (not pending, not sent), its routine run (else the memory
        IoSetCompletionRoutineEx allocated leaks, as with IoFreeIrp); its stack locations cleared,
        none current, Cancel cleared, IoStatus.Status set."""
        addr, status = argv[0], argv[1] & 0xFFFFFFFF
        e = self.ev("io", "IoReuseIrp", {"Irp": addr, "Iostatus": status})
        rec = self._irp(addr, "IoReuseIrp")
        if rec is None:
            return None
        e.args["*irp"] = rec.number
        if rec.state != "allocated":
            self.violation("IoReuseIrp of IRP %d while it is %s (in %s): %s holds it"
                           % (rec.number, rec.state, rec.op, _holder(rec)))
            return None
        if rec.routine:
            self.violation("IoReuseIrp of IRP %d: its IoSetCompletionRoutineEx routine never ran: "
                           "the memory it allocated, and its reference on the device object, leak"
                           % rec.number)
            rec.routine = rec.context = 0
        self.wr(addr + SIZEOF_IRP, b"\x00" * (SIZEOF_IO_STACK_LOCATION * max(rec.stack_size, 1)))
        self.set_irp_location(rec, rec.stack_size + 1)
        self.wr(addr + IRP_CANCEL, b"\x00")
        self.wr(addr + IRP_IO_STATUS, struct.pack("<IIQ", status, 0, 0))
        rec.completed_since_use = False
        rec.reuses += 1
        return None

    @hook("ntoskrnl", "IoSetCompletionRoutineEx", 7)
    def _h_iosetcompletionroutineex(self, emu, api, func, argv):
        dev, irp, routine, ctx, on_success, on_error, on_cancel = argv
        invoke = (on_success & 0xFF, on_error & 0xFF, on_cancel & 0xFF)
        e = self.ev("io", "IoSetCompletionRoutineEx", {
            "DeviceObject": dev, "Irp": irp, "CompletionRoutine": routine, "Context": ctx,
            "InvokeOnSuccess": invoke[0], "InvokeOnError": invoke[1], "InvokeOnCancel": invoke[2]})
        injected = self._inject("IoSetCompletionRoutineEx")
        rec = self._irp(irp, "IoSetCompletionRoutineEx")
        if rec is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        e.args["*irp"] = rec.number
        if injected is not None:  # no routine set (and no device object reference taken)
            e.status = injected
            return injected
        d = self._device(dev)
        if d is None or d.deleted_seq is not None:
            # The I/O manager takes a reference on it until the routine has run.
            self.violation("IoSetCompletionRoutineEx: DeviceObject 0x%x is not a live device "
                           "object of the driver" % dev)
        if not self.in_image(routine):
            self.violation("IoSetCompletionRoutineEx: CompletionRoutine 0x%x is not in the "
                           "image" % routine)
        if rec.state != "allocated":
            self.violation("IoSetCompletionRoutineEx on IRP %d while it is %s (in %s)"
                           % (rec.number, rec.state, rec.op))
        elif rec.completed_since_use:
            # Its stack location was used up: IoReuseIrp makes it new first.
            self.violation("IoSetCompletionRoutineEx on IRP %d, completed (in %s) and not "
                           "reinitialized with IoReuseIrp" % (rec.number, rec.op))
        rec.routine, rec.context, rec.device, rec.invoke = routine, ctx, dev, invoke
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    @hook("ntoskrnl", "IoCancelIrp", 1)
    def _h_iocancelirp(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "IoCancelIrp", {"Irp": addr})
        rec = self._irp(addr, "IoCancelIrp")
        if rec is None:
            e.status = 0
            return 0
        e.args["*irp"] = rec.number
        rec.cancels += 1
        self.wr(addr + IRP_CANCEL, b"\x01")
        if rec.state != "pending":
            e.status, e.text = 0, "not pending"
            return 0
        if self.scenario.peer_ignores_cancel:
            e.status, e.text = 0, "the provider set no cancel routine: nothing happens"
            return 0
        e.text = "the provider's cancel routine completes it"

        def gen():
            yield from self._complete_gen(rec, STATUS_CANCELLED, 0)
            e.status = 1
            return 1
        return self._start(gen())

    def irp_location(self, rec: IrpRec) -> int:
        """The IRP's CurrentLocation (stack_size + 1: none current, as IoAllocateIrp leaves it),
        checked against its CurrentStackLocation."""
        location = self.rd(rec.address + IRP_CURRENT_LOCATION, 1)[0]
        current = self.rd64(rec.address + IRP_CURRENT_STACK_LOCATION)
        if current != self._stack_location(rec, location):
            self.violation("IRP %d: CurrentStackLocation 0x%x does not match CurrentLocation %d "
                           "(0x%x)" % (rec.number, current, location,
                                       self._stack_location(rec, location)))
        return location

    def _stack_location(self, rec: IrpRec, location: int) -> int:
        """The address of IO_STACK_LOCATION number `location` (1: the first) of the IRP."""
        return rec.address + SIZEOF_IRP + SIZEOF_IO_STACK_LOCATION * (location - 1)

    def set_irp_location(self, rec: IrpRec, location: int) -> int:
        """Makes `location` the IRP's current one (CurrentLocation and CurrentStackLocation, as
        IoCallDriver moves down a location and IoCompleteRequest back up); its address."""
        stack = self._stack_location(rec, location)
        self.wr(rec.address + IRP_CURRENT_LOCATION, bytes([location & 0xFF]))
        self.wr64(rec.address + IRP_CURRENT_STACK_LOCATION, stack)
        return stack

    def consume_location(self, rec: IrpRec, who: str) -> Optional[int]:
        """Whoever the IRP goes to (IoCallDriver to a device; a WSK provider taking it, which
        passes it down the same way) uses its next stack location: the one whose completion
        routine IoSetCompletionRoutineEx set. Its address, or None (reported) when none is left
        (bug check NO_MORE_IRP_STACK_LOCATIONS)."""
        location = self.irp_location(rec)
        if location <= 1:
            self.violation("%s of IRP %d: no stack location left (CurrentLocation %d): bug check "
                           "NO_MORE_IRP_STACK_LOCATIONS" % (who, rec.number, location))
            return None
        return self.set_irp_location(rec, location - 1)

    def _send(self, dev: int, addr: int, e) -> Optional[tuple]:
        """IofCallDriver's checks, and its move to the next stack location: (IRP, that
        location's address), or None (reported: nothing sent)."""
        d = self._device(dev)
        if d is None or d.deleted_seq is not None or d.driver_object != self.driver_object:
            self.violation("IofCallDriver(0x%x): %s" % (
                dev, "a deleted device object" if d is not None and d.deleted_seq is not None
                else "not a device object of the driver"))
            return None
        rec = self._irp(addr, "IofCallDriver")
        if rec is None:
            return None
        e.args["*irp"] = rec.number
        if rec.state != "allocated":
            self.violation("IofCallDriver of IRP %d while it is %s (in %s): %s holds it"
                           % (rec.number, rec.state, rec.op or "no request", _holder(rec)))
            return None
        stack = self.consume_location(rec, "IofCallDriver")
        return None if stack is None else (rec, stack)

    @hook("ntoskrnl", "IofCallDriver", 2)
    def _h_iofcalldriver(self, emu, api, func, argv):
        """IoCallDriver (IofCallDriver) of the driver's own IRP to a device object of the driver
        (the library sends itself a request's IRP that no provider took, to complete it): the
        device must be the driver's and live, the IRP the driver's and held by nobody else (not
        pending in a provider, not sent already); the I/O manager moves it to its next stack
        location (CurrentLocation - 1, CurrentStackLocation - 0x48), sets that location's
        DeviceObject and calls the dispatch routine of the DRIVER_OBJECT's MajorFunction table for
        that location's MajorFunction, in the caller's context (its thread and IRQL), and returns
        what the routine returns. A dispatch routine that returns anything but STATUS_PENDING has
        completed the IRP (IoCompleteRequest). No routine in the table: the I/O manager's own
        (IopInvalidDeviceRequest) completes the IRP with STATUS_INVALID_DEVICE_REQUEST."""
        dev, addr = argv
        e = self.ev("io", "IofCallDriver", {"DeviceObject": dev, "Irp": addr})
        sent = self._send(dev, addr, e)
        if sent is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        rec, stack = sent
        self.wr64(stack + IO_STACK_LOCATION_DEVICE_OBJECT, dev)
        major = self.rd(stack, 1)[0]
        e.args["MajorFunction"] = major
        rec.state = "sent"
        rec.completed_since_use = False
        rec.op = "%s (IofCallDriver to the driver's device)" % major_name(major)
        routine = (self.rd64(self.driver_object + DRIVER_OBJECT_MAJOR_FUNCTION + 8 * major)
                   if major <= IRP_MJ_MAXIMUM_FUNCTION else 0)

        def gen():
            if not self.in_image(routine):
                self.violation("IofCallDriver of IRP %d: the driver has no dispatch routine for "
                               "its MajorFunction %s (DRIVER_OBJECT.MajorFunction: 0x%x); the I/O "
                               "manager completes it with STATUS_INVALID_DEVICE_REQUEST"
                               % (rec.number, major_name(major), routine))
                rec.state = "pending"
                yield from self._complete_gen(rec, STATUS_INVALID_DEVICE_REQUEST, 0,
                                              by="I/O manager")
                e.status = STATUS_INVALID_DEVICE_REQUEST
                return e.status
            st = yield from self.call(routine, [dev, addr], "DriverDispatch",
                                      arg_names=("DeviceObject", "Irp"), kind="io-callback",
                                      irql=self.irql)
            e.status = st
            if rec.state == "sent" and st != STATUS_PENDING:
                self.violation("the dispatch routine of IRP %d returned %s without completing it "
                               "(a dispatch routine completes the IRP or returns STATUS_PENDING)"
                               % (rec.number, status_name(st)))
            return st
        return self._start(gen())

    @hook("ntoskrnl", "IofCompleteRequest", 2)
    def _h_iofcompleterequest(self, emu, api, func, argv):
        """IoCompleteRequest (IofCompleteRequest) of the driver's own IRP, by its dispatch
        routine (IofCallDriver sent it to the driver, making the location of its completion
        routine current) with IoStatus written: the completion routine runs at once, as for a
        completion by the provider, and must give the IRP back (STATUS_MORE_PROCESSING_REQUIRED).
        """
        addr, boost = argv[0], argv[1] & 0xFF
        e = self.ev("io", "IofCompleteRequest", {"Irp": addr, "PriorityBoost": boost})
        rec = self._irp(addr, "IofCompleteRequest")
        if rec is None:
            return None
        e.args["*irp"] = rec.number
        if rec.state == "completing" or (rec.state == "allocated" and rec.completed_since_use):
            # Driver Verifier's I/O verification: IRP_COMPLETED twice.
            self.violation("IofCompleteRequest of IRP %d, %s: double completion"
                           % (rec.number, "whose completion routine runs"
                              if rec.state == "completing" else "completed already"))
            return None
        if rec.state == "pending":
            self.violation("IofCompleteRequest of IRP %d while it is pending (in %s): the "
                           "provider owns it" % (rec.number, rec.op))
            return None
        if rec.state == "allocated":
            # Driver Verifier's I/O verification (bug check 0xC9): completing an IRP that was
            # never forwarded via IoCallDriver. (Its routine runs all the same, as on Windows.)
            self.violation("IofCompleteRequest of IRP %d, which was never sent to the driver "
                           "(IoCallDriver): only the driver an IRP was sent to completes it"
                           % rec.number)
        location = self.irp_location(rec)
        if location != rec.stack_size:
            self.violation("IofCompleteRequest of IRP %d at CurrentLocation %d, expected %d (the "
                           "location of its completion routine)"
                           % (rec.number, location, rec.stack_size))
        status, _, information = struct.unpack("<IIQ", self.rd(addr + IRP_IO_STATUS, 16))
        if status == STATUS_PENDING:
            self.violation("IofCompleteRequest of IRP %d with IoStatus.Status STATUS_PENDING"
                           % rec.number)
        if rec.state == "allocated":
            rec.op = "%s (completed by the driver)" % (rec.op or "never sent")
        rec.state = "pending"  # what _complete_gen completes

        def gen():
            yield from self._complete_gen(rec, status, information, by="driver")
            return 0
        return self._start(gen())

    def _complete_gen(self, rec: IrpRec, status: int, information: int, before=None,
                      by: str = "provider"):
        """Generator: IoCompleteRequest of a pending IRP (by the provider, or `by` whoever else
        completes it): IoStatus written, then the completion routine called (DeviceObject NULL:
        the driver allocated the IRP); it must return STATUS_MORE_PROCESSING_REQUIRED, which
        gives the IRP back to the driver."""
        if rec.state != "pending":
            raise HarnessError("completing IRP %d while %s" % (rec.number, rec.state))
        if before is not None:
            before()
        self.wr(rec.address + IRP_IO_STATUS, struct.pack("<IIQ", status & 0xFFFFFFFF, 0,
                                                         information))
        rec.state = "completing"
        rec.completions += 1
        rec.completed_since_use = True
        rec.completed_status = status
        self.progress += 1
        self.ev("io", "IoCompleteRequest", {"op": rec.op, "Irp": rec.address, "*irp": rec.number,
                                            "Status": status, "Information": information},
                text=by)
        routine, ctx = rec.routine, rec.context
        if status == STATUS_CANCELLED:
            invoked = rec.invoke[2]
        elif status & 0x80000000 == 0:
            invoked = rec.invoke[0]
        else:
            invoked = rec.invoke[1]
        # The stack location is used up: a reuse of the IRP needs its routine set again. The I/O
        # manager moves back up past it before calling its routine.
        rec.routine = rec.context = 0
        self.set_irp_location(rec, rec.stack_size + 1)
        if not routine or not invoked:
            self.violation("IRP %d (%s) completed with %s and no completion routine to call: "
                           "the I/O manager would go on completing the driver's own IRP"
                           % (rec.number, rec.op, status_name(status)))
            rec.state = "allocated"
            return
        st = yield from self.call(routine, [0, rec.address, ctx], "CompletionRoutine",
                                  arg_names=("DeviceObject", "Irp", "Context"), kind="io-callback")
        if st != STATUS_MORE_PROCESSING_REQUIRED:
            self.violation("the completion routine of IRP %d (%s) returned %s, not "
                           "STATUS_MORE_PROCESSING_REQUIRED: the I/O manager would go on "
                           "completing (and free) the driver's own IRP"
                           % (rec.number, rec.op, status_name(st)))
        if rec.state == "completing":
            rec.state = "allocated"

    def _queue_completion(self, rec: IrpRec, status: int, information: int = 0, before=None):
        """The provider completes `rec` later, on a thread of its own (a DPC, say)."""
        self.completion_queue.append((rec, rec.uses, status, information, before))
        self.progress += 1

    def _start_provider_thread(self, job):
        self.completion_queue.remove(job)
        rec, token, status, information, before = job
        top, size = self._stack_for_worker()
        t = self._new_thread("provider thread %d" % (sum(x.kind == "provider"
                                                         for x in self.threads) + 1),
                             "provider", top, size)
        t.irql = DISPATCH_LEVEL  # the provider completes IRPs from its DPCs
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="the WSK provider completes IRP %d (%s) on %s"
                % (rec.number, rec.op, t.name), depth=0)

        def gen():
            if rec.state == "pending" and rec.uses == token:
                yield from self._complete_gen(rec, status, information, before)
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _mdl(self, addr: int, api: str) -> Optional[MdlRec]:
        m = self.mdl_by_addr.get(addr)
        if m is None:
            self.violation("%s(0x%x): not an MDL from IoAllocateMdl" % (api, addr))
            return None
        if m.freed_seq is not None:
            self.violation("%s(0x%x): MDL %d was freed already (IoFreeMdl)" % (api, addr,
                                                                              m.number))
            return None
        return m

    @hook("ntoskrnl", "IoAllocateMdl", 5)
    def _h_ioallocatemdl(self, emu, api, func, argv):
        va, length, secondary, quota, irp = argv
        length &= 0xFFFFFFFF
        e = self.ev("io", "IoAllocateMdl", {"VirtualAddress": va, "Length": length,
                                            "SecondaryBuffer": secondary & 0xFF,
                                            "ChargeQuota": quota & 0xFF, "Irp": irp})
        self.mdl_requests.append(va)
        if self._inject("IoAllocateMdl") is not None or self.scenario.fail_mdl_allocations:
            e.status = 0
            return 0
        if irp:
            self.violation("IoAllocateMdl with Irp 0x%x: the MDL would belong to that IRP "
                           "(IoFreeIrp frees it)" % irp)
        block = self.pool_block(va)
        if length == 0 or block is None or va + length > block.address + block.size:
            self.violation("IoAllocateMdl(0x%x, %d): not within one live pool block (%s)"
                           % (va, length, self.where(va)))
        pages = ((va & (PAGE_SIZE - 1)) + length + PAGE_SIZE - 1) // PAGE_SIZE
        size = SIZEOF_MDL + 8 * pages
        addr = self.alloc(size, "mdl")
        self.wr(addr, struct.pack("<QhH4xQQQII", 0, size, 0, 0, 0, va & ~(PAGE_SIZE - 1), length,
                                  va & (PAGE_SIZE - 1)))
        m = MdlRec(number=len(self.mdls) + 1, address=addr, va=va, length=length,
                   allocated_seq=e.seq)
        self.mdls.append(m)
        self.mdl_by_addr[addr] = m
        e.status = addr
        e.args["*mdl"] = m.number
        return addr

    @hook("ntoskrnl", "MmBuildMdlForNonPagedPool", 1)
    def _h_mmbuildmdlfornonpagedpool(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "MmBuildMdlForNonPagedPool", {"MemoryDescriptorList": addr})
        m = self._mdl(addr, "MmBuildMdlForNonPagedPool")
        if m is None:
            return None
        e.args["*mdl"] = m.number
        if self.pool_block(m.va) is None:
            self.violation("MmBuildMdlForNonPagedPool: MDL %d describes 0x%x, %s (not live "
                           "non-paged pool)" % (m.number, m.va, self.where(m.va)))
        flags = struct.unpack("<H", self.rd(addr + 10, 2))[0] | MDL_SOURCE_IS_NONPAGED_POOL
        self.wr(addr + 10, struct.pack("<H", flags))
        self.wr64(addr + MDL_MAPPED_SYSTEM_VA, m.va)
        m.built = True
        return None

    @hook("ntoskrnl", "IoFreeMdl", 1)
    def _h_iofreemdl(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("io", "IoFreeMdl", {"Mdl": addr})
        m = self.mdl_by_addr.get(addr)
        if m is None:
            self.violation("IoFreeMdl(0x%x): not an MDL from IoAllocateMdl" % addr)
            return None
        e.args["*mdl"] = m.number
        if m.freed_seq is not None:
            self.violation("IoFreeMdl(0x%x): MDL %d freed twice" % (addr, m.number))
            return None
        for rec in self.irps:
            if rec.state == "pending" and rec.buffer is not None and rec.buffer[2] is m:
                self.violation("IoFreeMdl(0x%x): MDL %d is in use by IRP %d, pending in %s"
                               % (addr, m.number, rec.number, rec.op))
        m.freed_seq = e.seq
        self.wr(addr, b"\xdd" * SIZEOF_MDL)
        return None

    def _irps_left(self, when: str):
        for rec in self.irps:
            if rec.state != "freed":
                self.violation("IRP %d (IoAllocateIrp) not freed at %s (IoFreeIrp)%s"
                               % (rec.number, when, "; still %s in %s" % (rec.state, rec.op)
                                  if rec.state in ("pending", "sent") else ""))
                if rec.routine:
                    self.violation("the IoSetCompletionRoutineEx routine of IRP %d never ran "
                                   "(left at %s): the memory it allocated, and its reference on "
                                   "the device object, leak" % (rec.number, when))

    def check_no_wsk_call_in_routine(self, rule: str):
        """Before a kernel, NMR or WSK call (`rule`: its name in tests/irql-rules.txt): no new
        WSK call inside a completion routine ("Using IRPs with Winsock Kernel Functions": the
        routine only ends its request; a new call belongs elsewhere, e.g. a work item)."""
        if rule.startswith("Wsk") and self.in_callback("CompletionRoutine"):
            self.violation("%s called inside a completion routine (on %s): a WSK client starts "
                           "no new WSK call there (Using IRPs with Winsock Kernel Functions)"
                           % (rule, self.current.name))

    def _mdls_left(self, when: str):
        for m in self.mdls:
            if m.freed_seq is None:
                self.violation("MDL %d (IoAllocateMdl) not freed at %s (IoFreeMdl)"
                               % (m.number, when))
