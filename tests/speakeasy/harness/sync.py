"""Kernel events and waits: KeInitializeEvent (type, alignment, non-paged memory of the driver
or a stack; the DISPATCHER_HEADER is written), KeSetEvent / KeClearEvent / KeResetEvent
(previous state), KeWaitForSingleObject (signalled: at once, and a synchronization event resets;
a zero timeout polls; else the thread blocks until it is set or its relative or absolute timeout
passes). An event on a stack needs KernelMode waits; a wait inside a callback that may run at
DISPATCH_LEVEL is reported.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-keinitializeevent,
nf-wdm-kesetevent, nf-wdm-keclearevent, nf-wdm-keresetevent, nf-wdm-kewaitforsingleobject.
"""
import struct
from typing import Dict, Optional

from .abi import (EVENT_TYPES, SIZEOF_KEVENT, STATUS_SUCCESS, STATUS_TIMEOUT,
                  SYNCHRONIZATION_EVENT, seconds)
from .machine import hook
from .records import KEvent, Wait


def _may_block(harness, argv) -> bool:
    """KeWaitForSingleObject's 'wait' condition (tests/irql-rules.txt): a NULL or non-zero
    timeout, with which the call may block (above APC_LEVEL it must not)."""
    timeout_p = argv[4]
    return not timeout_p or struct.unpack("<q", harness.rd(timeout_p, 8))[0] != 0


class SyncModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.kevents: Dict[int, KEvent] = {}

    def _write_event(self, ke: KEvent):
        # DISPATCHER_HEADER: Type, Signalling, Size (in LONGs), Reserved1; SignalState;
        # WaitListHead (empty: pointing at itself).
        self.wr(ke.address, struct.pack("<BBBBiQQ", ke.type, 0, SIZEOF_KEVENT // 4, 0,
                                         1 if ke.signalled else 0, ke.address + 8, ke.address + 8))

    def _event(self, addr: int, api: str) -> Optional[KEvent]:
        ke = self.kevents.get(addr)
        if ke is None:
            self.violation("%s(0x%x): not an event initialised with KeInitializeEvent"
                           % (api, addr))
        return ke

    @hook("ntoskrnl", "KeInitializeEvent", 3)
    def _h_keinitializeevent(self, emu, api, func, argv):
        addr, etype, state = argv
        etype &= 0xFFFFFFFF
        state &= 0xFF
        self.ev("ke", "KeInitializeEvent", {"Event": addr, "Type": etype, "State": state})
        if not self.readable(addr, SIZEOF_KEVENT):
            self.violation("KeInitializeEvent: Event 0x%x not writable" % addr)
            return None
        if addr % 8:
            self.violation("KeInitializeEvent: Event 0x%x not 8-byte aligned" % addr)
        if etype not in EVENT_TYPES:
            self.violation("KeInitializeEvent: Type %d is neither NotificationEvent nor "
                           "SynchronizationEvent" % etype)
        # KeInitializeEvent (wdm.h): resident storage; "If you allocate the event on the stack,
        # you must specify a KernelMode wait" (checked by KeWaitForSingleObject): a stack is
        # resident during a KernelMode wait.
        if not (self.on_a_stack(addr) or self.in_image(addr) or self.pool_block(addr)):
            self.violation("KeInitializeEvent: Event 0x%x is %s (not non-paged memory of the "
                           "driver's, nor a stack)" % (addr, self.where(addr)))
        if any(t.state == "blocked" and t.wait.kind == "event" and t.wait.event == addr
               for t in self.threads):
            self.violation("KeInitializeEvent(0x%x) while a thread waits on it" % addr)
        ke = KEvent(address=addr, type=etype, signalled=bool(state), init_seq=len(self.events))
        self.kevents[addr] = ke
        self._write_event(ke)
        return None

    @hook("ntoskrnl", "KeSetEvent", 3)
    def _h_kesetevent(self, emu, api, func, argv):
        addr, increment, wait = argv
        e = self.ev("ke", "KeSetEvent", {"Event": addr})
        ke = self._event(addr, "KeSetEvent")
        if ke is None:
            return 0
        previous = 1 if ke.signalled else 0
        ke.signalled = True
        ke.sets += 1
        self.progress += 1
        self._write_event(ke)
        e.status = previous
        e.text = "previous state %d" % previous
        return previous

    @hook("ntoskrnl", "KeClearEvent", 1)
    def _h_keclearevent(self, emu, api, func, argv):
        (addr,) = argv
        self.ev("ke", "KeClearEvent", {"Event": addr})
        ke = self._event(addr, "KeClearEvent")
        if ke is not None:
            ke.signalled = False
            self._write_event(ke)
        return None

    @hook("ntoskrnl", "KeResetEvent", 1)
    def _h_keresetevent(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("ke", "KeResetEvent", {"Event": addr})
        ke = self._event(addr, "KeResetEvent")
        if ke is None:
            return 0
        previous = 1 if ke.signalled else 0
        ke.signalled = False
        self._write_event(ke)
        e.status = previous
        return previous

    @hook("ntoskrnl", "KeWaitForSingleObject", 5, conditions={"wait": _may_block})
    def _h_kewaitforsingleobject(self, emu, api, func, argv):
        obj, reason, mode, alertable, timeout_p = argv
        timeout = None
        if timeout_p:
            timeout = struct.unpack("<q", self.rd(timeout_p, 8))[0]
        e = self.ev("ke", "KeWaitForSingleObject", {"Object": obj, "WaitReason": reason & 0xFF,
                                                    "WaitMode": mode & 0xFF,
                                                    "Alertable": alertable & 0xFF,
                                                    "Timeout": timeout})
        ke = self._event(obj, "KeWaitForSingleObject")
        if ke is None:
            e.status = STATUS_SUCCESS
            return STATUS_SUCCESS
        if self.on_a_stack(obj) and mode & 0xFF != 0:
            self.violation("KeWaitForSingleObject on event 0x%x, %s, with WaitMode %d: an event "
                           "on a stack needs a KernelMode wait (a UserMode wait may page the "
                           "stack out)" % (obj, self.where(obj), mode & 0xFF))
        if timeout != 0:
            self.work_item_waits("KeWaitForSingleObject (%s) on event 0x%x, %s" % (
                "no timeout" if timeout is None else "timeout %s" % seconds(abs(timeout)), obj,
                self.where(obj)))
            inside = self.in_callback("ClientDetachProvider", "ClientCleanupBindingContext",
                                      "CompletionRoutine")
            if inside:
                self.violation("KeWaitForSingleObject with a wait inside %s (which may run at "
                               "DISPATCH_LEVEL)" % inside)
        e.args["*event"] = "%s, %s" % (EVENT_TYPES.get(ke.type, "?"),
                                       "signalled" if ke.signalled else "not signalled")

        def done(status):
            if status == STATUS_SUCCESS and ke.type == SYNCHRONIZATION_EVENT:
                ke.signalled = False  # a satisfied wait resets a synchronization event
                self._write_event(ke)
            e.status = status
            if e.args.get("blocked"):
                self.ev("ke-return", "KeWaitForSingleObject", status=status,
                        text="after %s" % seconds(self.now - e.time))
            return status

        if ke.signalled:
            ke.waits += 1
            return done(STATUS_SUCCESS)
        if timeout == 0:
            return done(STATUS_TIMEOUT)
        if timeout is None:
            deadline = None
        elif timeout < 0:
            deadline = self.now - timeout
        else:
            deadline = max(self.now, timeout)  # absolute: the clock starts at 0 at load
        e.args["blocked"] = True
        return self._block(Wait("event", "event 0x%x (%s)" % (obj, self.where(obj)),
                                deadline=deadline, event=obj), done)
