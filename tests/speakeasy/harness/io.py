"""The I/O manager's device objects and work items.

Device objects: IoCreateDevice (checks the driver object; an unnamed device, linked into the
DRIVER_OBJECT) and IoDeleteDevice (unknown or twice: reported); every device object must be
deleted by the end of DriverUnload (or of a failed DriverEntry).
Work items: IoAllocateWorkItem (on a live device object of the driver), IoQueueWorkItem (a
routine of the image, a valid queue type, not queued already) and IoFreeWorkItem (not queued,
not twice). A queued routine runs on a worker thread of its own (scheduler.py) when control
comes back to the harness; `work_delay_ms` delays every start. None may be queued or running
when the image may be unmapped (DriverUnload returned, or a failed DriverEntry).

Work items must be short ("System Worker Threads": a routine holds one of a few shared system
threads; one that waits — for the network, a timer, a provider — or runs long can deadlock the
system): a work item routine that calls a function that may block (KeWaitForSingleObject with a
NULL or non-zero timeout, WskCaptureProviderNPI with a WaitTimeout other than WSK_NO_WAIT) or
runs longer than MAX_WORK_ITEM_TIME (1 s) of emulated time is reported — unless the run allows
that work item (`long_work_items_allowed`: a known offender, with the issue that removes it;
none is allowed by default since issue 17); then it is recorded in Result.long_work_items
instead.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-iocreatedevice,
nf-wdm-iodeletedevice, nf-wdm-ioallocateworkitem, nf-wdm-ioqueueworkitem, nf-wdm-iofreeworkitem,
nc-wdm-io_workitem_routine; and https://learn.microsoft.com/windows-hardware/drivers/kernel/
system-worker-threads.
"""
import struct
from typing import Callable, List, Optional

from .abi import (DEVICE_OBJECT_DRIVER_OBJECT, DEVICE_OBJECT_NEXT_DEVICE,
                  DRIVER_OBJECT_DEVICE_OBJECT, IO_TYPE_DEVICE, MAX_WORK_ITEM_TIME,
                  SIZEOF_DEVICE_OBJECT, SIZEOF_IO_WORKITEM, STATUS_INVALID_PARAMETER,
                  STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS, TICKS_PER_MS, WORK_QUEUES,
                  seconds)
from driver_profiles import DriverProfile

from .machine import hook
from .records import Call, Device, WorkItem

# Which work items may break the work item rule, and why: a function of the driver profile and
# the WorkItem that gives the reason (the issue that removes the offender), or None: the rule
# applies.
Allowance = Callable[[DriverProfile, WorkItem], Optional[str]]

def nothing_allowed(profile: DriverProfile, item: WorkItem) -> Optional[str]:
    """The rule on every work item: the default since issue 17 made the echo driver's connection
    a task (before, its work items waited, and were allowed as known offenders)."""
    return None


class IoModel:
    # The work items that may break the work item rule (a run's Harness(...,
    # long_work_items_allowed=...) may say otherwise).
    long_work_items_allowed: Allowance = nothing_allowed

    def __init__(self, *args, long_work_items_allowed: Optional[Allowance] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.devices: List[Device] = []
        self.work_items: List[WorkItem] = []
        self.work_queue: List[WorkItem] = []
        self.long_work_items_allowed: Allowance = (
            type(self).long_work_items_allowed if long_work_items_allowed is None
            else long_work_items_allowed)
        # The rule's breaks that were allowed, as "<message> [allowed: <reason>]".
        self.long_work_items: List[str] = []

    def work_item_waits(self, what: str):
        """Before a call that may block (`what`): a break of the work item rule when the current
        thread runs a work item routine."""
        t = self.current
        if t is None or t.kind != "worker" or t.item is None:
            return
        self._work_item_rule(t.item, "%s waits inside a work item routine (work item %d): work "
                             "items must be short (System Worker Threads)" % (what, t.item.number))

    def _work_item_rule(self, item: WorkItem, message: str):
        """A break of the work item rule: a violation, or — the work item a known offender the
        run allows — recorded apart, with the reason."""
        reason = self.long_work_items_allowed(self.profile, item)
        if reason is None:
            self.violation(message)
            return
        self.long_work_items.append("%s [allowed: %s]" % (message, reason))
        self.ev("known", "work item rule", text="%s [allowed: %s]" % (message,
                                                                       reason.split(":")[0]))

    @hook("ntoskrnl", "IoCreateDevice", 7)
    def _h_iocreatedevice(self, emu, api, func, argv):
        drv, ext, name_p, dtype, chars, exclusive, out = argv
        # 32-bit (and BOOLEAN) arguments: the upper bits of their registers are undefined.
        ext, dtype, chars, exclusive = (ext & 0xFFFFFFFF, dtype & 0xFFFFFFFF, chars & 0xFFFFFFFF,
                                        exclusive & 0xFF)
        name = self._read_ustr(name_p, True) if name_p else None
        e = self.ev("device", "IoCreateDevice", {"DriverObject": drv, "DeviceExtensionSize": ext,
                                                 "DeviceName": name or "NULL",
                                                 "DeviceType": dtype, "Characteristics": chars,
                                                 "Exclusive": exclusive & 0xFF})
        if drv != self.driver_object:
            self.violation("IoCreateDevice: DriverObject 0x%x is not the driver's (0x%x)"
                           % (drv, self.driver_object))
        if not self.readable(out, 8):
            self.violation("IoCreateDevice: DeviceObject out-pointer 0x%x not writable" % out)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        status = self.scenario.create_device_status & 0xFFFFFFFF
        injected = self._inject("IoCreateDevice")
        if injected is not None:
            status = injected
        if status == STATUS_SUCCESS and name and any(
                d.name == name and d.deleted_seq is None for d in self.devices):
            status = STATUS_OBJECT_NAME_COLLISION
        if status != STATUS_SUCCESS:
            e.status = status
            return status
        dev = self.alloc(SIZEOF_DEVICE_OBJECT + ext, "io.device")
        head = self.rd64(drv + DRIVER_OBJECT_DEVICE_OBJECT) if drv else 0
        self.wr(dev, struct.pack("<hH", IO_TYPE_DEVICE, SIZEOF_DEVICE_OBJECT))
        self.wr64(dev + DEVICE_OBJECT_DRIVER_OBJECT, drv)
        self.wr64(dev + DEVICE_OBJECT_NEXT_DEVICE, head)
        if drv:
            self.wr64(drv + DRIVER_OBJECT_DEVICE_OBJECT, dev)  # the I/O manager links it in
        self.wr64(out, dev)
        self.devices.append(Device(address=dev, driver_object=drv, extension_size=ext, name=name,
                                   device_type=dtype, characteristics=chars,
                                   exclusive=exclusive & 0xFF, created_seq=e.seq))
        e.args["*DeviceObject"] = dev
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    def _device(self, addr: int) -> Optional[Device]:
        for d in self.devices:
            if d.address == addr:
                return d
        return None

    @hook("ntoskrnl", "IoDeleteDevice", 1)
    def _h_iodeletedevice(self, emu, api, func, argv):
        (dev,) = argv
        e = self.ev("device", "IoDeleteDevice", {"DeviceObject": dev})
        d = self._device(dev)
        if d is None:
            self.violation("IoDeleteDevice(0x%x): not a device object IoCreateDevice returned"
                           % dev)
            return None
        if d.deleted_seq is not None:
            self.violation("IoDeleteDevice(0x%x): deleted twice" % dev)
            return None
        d.deleted_seq = e.seq
        drv = d.driver_object
        if drv:  # unlink it from the driver object's list
            prev = drv + DRIVER_OBJECT_DEVICE_OBJECT
            cur = self.rd64(prev)
            while cur:
                nxt = self.rd64(cur + DEVICE_OBJECT_NEXT_DEVICE)
                if cur == dev:
                    self.wr64(prev, nxt)
                    break
                prev, cur = cur + DEVICE_OBJECT_NEXT_DEVICE, nxt
        return None

    def _work_item(self, addr: int, api: str) -> Optional[WorkItem]:
        for it in self.work_items:
            if it.address == addr:
                return it
        self.violation("%s(0x%x): not a work item IoAllocateWorkItem returned" % (api, addr))
        return None

    @hook("ntoskrnl", "IoAllocateWorkItem", 1)
    def _h_ioallocateworkitem(self, emu, api, func, argv):
        (dev,) = argv
        e = self.ev("work", "IoAllocateWorkItem", {"DeviceObject": dev})
        if self._inject("IoAllocateWorkItem") is not None:
            e.status = 0
            return 0
        d = self._device(dev)
        if d is None or d.deleted_seq is not None:
            self.violation("IoAllocateWorkItem(0x%x): %s" % (
                dev, "a deleted device object" if d else "not a device object of the driver"))
            e.status = 0
            return 0
        addr = self.alloc(SIZEOF_IO_WORKITEM, "io.workitem")
        it = WorkItem(number=len(self.work_items) + 1, address=addr, device=dev,
                      allocated_in=self._inside())
        self.work_items.append(it)
        e.args["item"] = it.number
        e.status = addr
        return addr

    @hook("ntoskrnl", "IoQueueWorkItem", 4)
    def _h_ioqueueworkitem(self, emu, api, func, argv):
        item_p, routine, qtype, ctx = argv
        qtype &= 0xFFFFFFFF
        e = self.ev("work", "IoQueueWorkItem", {"IoWorkItem": item_p, "WorkerRoutine": routine,
                                                "QueueType": qtype, "Context": ctx})
        it = self._work_item(item_p, "IoQueueWorkItem")
        if it is None:
            return None
        e.args["item"] = it.number
        if it.freed:
            self.violation("IoQueueWorkItem: work item %d was freed (IoFreeWorkItem)" % it.number)
            return None
        if it.state == "queued":
            self.violation("IoQueueWorkItem: work item %d is queued already" % it.number)
            return None
        if not self.in_image(routine):
            self.violation("IoQueueWorkItem: WorkerRoutine 0x%x is not code of the image"
                           % routine)
            return None
        if qtype not in WORK_QUEUES:
            self.violation("IoQueueWorkItem: QueueType %d is not a WORK_QUEUE_TYPE" % qtype)
        d = self._device(it.device)
        if d is not None and d.deleted_seq is not None:
            self.violation("IoQueueWorkItem: work item %d's device object 0x%x was deleted"
                           % (it.number, it.device))
        it.routine, it.context, it.queue_type = routine, ctx, qtype
        it.queued_in = self._inside()
        it.state = "queued"
        it.queued_count += 1
        it.queued_at = self.now
        it.ready_at = self.now + self.scenario.work_delay_ms * TICKS_PER_MS
        self.work_queue.append(it)
        return None

    @hook("ntoskrnl", "IoFreeWorkItem", 1)
    def _h_iofreeworkitem(self, emu, api, func, argv):
        (item_p,) = argv
        e = self.ev("work", "IoFreeWorkItem", {"IoWorkItem": item_p})
        it = self._work_item(item_p, "IoFreeWorkItem")
        if it is None:
            return None
        e.args["item"] = it.number
        if it.freed:
            self.violation("IoFreeWorkItem: work item %d freed twice" % it.number)
            return None
        if it.state == "queued":
            self.violation("IoFreeWorkItem: work item %d is still queued (its routine has not "
                           "run)" % it.number)
            self.work_queue.remove(it)
        it.freed = True
        if it.state != "running":
            it.state = "freed"
        self.wr(item_p, b"\xdd" * SIZEOF_IO_WORKITEM)
        return None

    def _start_worker(self, item: WorkItem):
        self.work_queue.remove(item)
        top, size = self._stack_for_worker()
        t = self._new_thread("work item %d" % item.number, "worker", top, size)
        t.item = item
        t.irql = self.callback_irql("WorkItemRoutine")
        item.state = "running"
        item.runs += 1
        item.thread = t.name
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="a worker thread (%s) runs work item %d" % (
            WORK_QUEUES.get(item.queue_type, item.queue_type), item.number), depth=0)
        self.ev("work", "work item runs", {"WorkerRoutine": item.routine,
                                           "DeviceObject": item.device,
                                           "Context": item.context, "item": item.number},
                depth=1)

        started = self.now

        def gen():
            yield Call(item.routine, [item.device, item.context], "WorkerRoutine", returns=False)
            self.depth = 1
            self.ev("work", "work item done", {"item": item.number}, depth=1)
            if self.now - started > MAX_WORK_ITEM_TIME:
                self._work_item_rule(item, "work item %d's routine ran %s (t = %s to "
                                     "%s), longer than %s: work items must be short (System "
                                     "Worker Threads)" % (item.number, seconds(self.now - started),
                                                          seconds(started), seconds(self.now),
                                                          seconds(MAX_WORK_ITEM_TIME)))
            if item.state == "running":
                item.state = "freed" if item.freed else "allocated"
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _check_nothing_left(self, when: str):
        """When the image may be unmapped: no work item queued or running."""
        for it in self.work_items:
            if it.state == "queued":
                self.violation("%s with work item %d still queued (routine 0x%x): it would run "
                               "in an unmapped image" % (when, it.number, it.routine))
            elif it.state == "running":
                self.violation("%s while work item %d (routine 0x%x) is still running on %s: "
                               "the image would be unmapped under it"
                               % (when, it.number, it.routine, it.thread))

    def _devices_left(self, when: str):
        for d in self.devices:
            if d.deleted_seq is None:
                self.violation("device object 0x%x (IoCreateDevice) not deleted at %s "
                               "(IoDeleteDevice): the driver could never unload"
                               % (d.address, when))

    def _work_items_left(self, when: str):
        for it in self.work_items:
            if not it.freed:
                self.violation("work item %d (IoAllocateWorkItem) not freed at %s "
                               "(IoFreeWorkItem)" % (it.number, when))
