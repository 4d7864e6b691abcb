"""Kernel events and waits: KeInitializeEvent (type, alignment, non-paged memory of the driver
or a stack; the DISPATCHER_HEADER is written), KeSetEvent / KeClearEvent / KeResetEvent
(previous state), KeReadStateEvent, KeWaitForSingleObject (signalled: at once, and a
synchronization event resets; a zero timeout polls; else the thread blocks until it is set or its
relative or absolute timeout passes), KeWaitForMultipleObjects (WaitAny: STATUS_WAIT_0 + the
index of the first object signalled, only that one's synchronization event reset; WaitAll:
STATUS_SUCCESS once every one is signalled, all reset; STATUS_TIMEOUT as above). The objects are
events and the thread objects of the driver's system threads (ps.py: signalled when the thread
ends). An event on a stack (or the Object array on a stack) needs KernelMode waits; a wait inside
a callback that may run at DISPATCH_LEVEL is reported; so is, for KeWaitForMultipleObjects, a
Count above THREAD_WAIT_OBJECTS (3) without a WaitBlockArray, above MAXIMUM_WAIT_OBJECTS (64), a
WaitType other than WaitAll / WaitAny, an Object array outside non-paged memory of the driver's
or a stack, and an object that is not one of those (for any wait).

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-keinitializeevent,
nf-wdm-kesetevent, nf-wdm-keclearevent, nf-wdm-keresetevent, nf-wdm-kereadstateevent,
nf-wdm-kewaitforsingleobject, nf-wdm-kewaitformultipleobjects.
"""
import struct
from typing import Dict, Optional

from .abi import (EVENT_TYPES, SIZEOF_KEVENT, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
                  STATUS_TIMEOUT, SYNCHRONIZATION_EVENT, seconds)

# KeWaitForMultipleObjects: WAIT_TYPE, and the limits of its Count (wdm.h).
WAIT_ALL, WAIT_ANY = 0, 1
WAIT_TYPES = {WAIT_ALL: "WaitAll", WAIT_ANY: "WaitAny"}
THREAD_WAIT_OBJECTS = 3
MAXIMUM_WAIT_OBJECTS = 64
STATUS_WAIT_0 = STATUS_SUCCESS
from .machine import hook
from .records import KEvent, Wait


def _may_block(harness, argv) -> bool:
    """KeWaitForSingleObject's 'wait' condition (tests/irql-rules.txt): a NULL or non-zero
    timeout, with which the call may block (above APC_LEVEL it must not)."""
    return _timeout_may_block(harness, argv[4])


def _may_block_multiple(harness, argv) -> bool:
    """KeWaitForMultipleObjects's 'wait' condition: its Timeout (argument 7), as above."""
    return _timeout_may_block(harness, argv[6])


def _timeout_may_block(harness, timeout_p: int) -> bool:
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

    @hook("ntoskrnl", "KeReadStateEvent", 1)
    def _h_kereadstateevent(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("ke", "KeReadStateEvent", {"Event": addr})
        ke = self._event(addr, "KeReadStateEvent")
        e.status = 1 if ke is not None and ke.signalled else 0
        return e.status

    # --- waits -------------------------------------------------------------------------------
    def _signalled(self, addr: int) -> bool:
        """Whether the dispatcher object at addr (an event, or a system thread's object) is
        signalled."""
        ke = self.kevents.get(addr)
        if ke is not None:
            return ke.signalled
        st = self.thread_objects.get(addr)
        return st is not None and st.state == "ended"

    def _dispatcher_object(self, addr: int, api: str) -> Optional[str]:
        """What the object at addr is, for a wait ("event", "thread"); None (reported) when it
        is neither an event initialised with KeInitializeEvent nor a thread object."""
        if addr in self.kevents:
            return "event"
        if addr in self.thread_objects:
            return "thread"
        self.violation("%s(0x%x): not an event initialised with KeInitializeEvent nor a thread "
                       "object (the dispatcher objects the harness models)" % (api, addr))
        return None

    def _describe_object(self, addr: int) -> str:
        ke = self.kevents.get(addr)
        if ke is not None:
            return "event 0x%x, %s" % (addr, self.where(addr))
        return "%s's object" % self.thread_objects[addr].name

    def _blocking_wait(self, api: str, objects, mode: int, timeout: Optional[int]):
        """The checks of a wait on `objects` (known dispatcher objects) before it may block: an
        event on a stack needs a KernelMode wait; a wait that may block (timeout NULL or not 0)
        breaks the work item rule in a work item, and is reported inside a callback that may run
        at DISPATCH_LEVEL."""
        for obj in objects:
            if self.on_a_stack(obj) and mode != 0:
                self.violation("%s on event 0x%x, %s, with WaitMode %d: an event on a stack "
                               "needs a KernelMode wait (a UserMode wait may page the stack "
                               "out)" % (api, obj, self.where(obj), mode))
        if timeout == 0:
            return
        self.work_item_waits("%s (%s) on %s" % (
            api, "no timeout" if timeout is None else "timeout %s" % seconds(abs(timeout)),
            ", ".join(self._describe_object(o) for o in objects)))
        inside = self.in_callback("ClientDetachProvider", "ClientCleanupBindingContext",
                                  "CompletionRoutine")
        if inside:
            self.violation("%s with a wait inside %s (which may run at DISPATCH_LEVEL)"
                           % (api, inside))

    def _deadline(self, timeout: Optional[int]) -> Optional[int]:
        if timeout is None:
            return None
        if timeout < 0:
            return self.now - timeout
        return max(self.now, timeout)  # absolute: the clock starts at 0 at load

    def _satisfy(self, objects) -> None:
        """A satisfied wait resets the synchronization events it was satisfied by."""
        for obj in objects:
            ke = self.kevents.get(obj)
            if ke is not None and ke.type == SYNCHRONIZATION_EVENT and ke.signalled:
                ke.signalled = False
                self._write_event(ke)

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
        kind = self._dispatcher_object(obj, "KeWaitForSingleObject")
        if kind is None:
            e.status = STATUS_SUCCESS
            return STATUS_SUCCESS
        if kind == "thread":
            return self._wait_objects("KeWaitForSingleObject", e, [obj], False, mode & 0xFF,
                                      timeout)
        ke = self.kevents[obj]
        self._blocking_wait("KeWaitForSingleObject", [obj], mode & 0xFF, timeout)
        e.args["*event"] = "%s, %s" % (EVENT_TYPES.get(ke.type, "?"),
                                       "signalled" if ke.signalled else "not signalled")

        def done(status):
            if status == STATUS_SUCCESS:
                self._satisfy([obj])
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
        e.args["blocked"] = True
        return self._block(Wait("event", "event 0x%x (%s)" % (obj, self.where(obj)),
                                deadline=self._deadline(timeout), event=obj), done)

    @hook("ntoskrnl", "KeWaitForMultipleObjects", 8, conditions={"wait": _may_block_multiple})
    def _h_kewaitformultipleobjects(self, emu, api, func, argv):
        count, array, wait_type, reason, mode, alertable, timeout_p, blocks = argv
        count, wait_type, mode = count & 0xFFFFFFFF, wait_type & 0xFFFFFFFF, mode & 0xFF
        timeout = None
        if timeout_p:
            timeout = struct.unpack("<q", self.rd(timeout_p, 8))[0]
        objects = ([self.rd64(array + 8 * i) for i in range(count)]
                   if count and self.readable(array, 8 * count) else [])
        e = self.ev("ke", "KeWaitForMultipleObjects", {
            "Count": count, "Object": ", ".join("0x%x" % o for o in objects),
            "WaitType": WAIT_TYPES.get(wait_type, wait_type), "WaitReason": reason & 0xFF,
            "WaitMode": mode, "Alertable": alertable & 0xFF, "Timeout": timeout,
            "WaitBlockArray": blocks})
        api_ = "KeWaitForMultipleObjects"
        bad = None
        if not objects:
            bad = "Count %d, Object 0x%x: no readable array of object pointers" % (count, array)
        elif count > MAXIMUM_WAIT_OBJECTS:
            bad = "Count %d is above MAXIMUM_WAIT_OBJECTS (%d)" % (count, MAXIMUM_WAIT_OBJECTS)
        elif count > THREAD_WAIT_OBJECTS and not blocks:
            bad = ("Count %d is above THREAD_WAIT_OBJECTS (%d) and WaitBlockArray is NULL: the "
                   "caller must supply Count KWAIT_BLOCKs" % (count, THREAD_WAIT_OBJECTS))
        elif wait_type not in WAIT_TYPES:
            bad = "WaitType %d is neither WaitAll nor WaitAny" % wait_type
        elif not (self.on_a_stack(array) or self.in_image(array) or self.pool_block(array)):
            bad = ("the Object array 0x%x is %s (not non-paged memory of the driver's, nor a "
                   "stack)" % (array, self.where(array)))
        if bad is not None:
            self.violation("%s: %s" % (api_, bad))
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if self.on_a_stack(array) and mode != 0:
            self.violation("%s: the Object array 0x%x is on a stack (%s) and WaitMode is %d: a "
                           "UserMode wait may page the stack out" % (api_, array,
                                                                     self.where(array), mode))
        if any(self._dispatcher_object(o, api_) is None for o in objects):
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if wait_type == WAIT_ALL and len(set(objects)) != len(objects):
            self.violation("%s: WaitAll with an object given twice" % api_)
        return self._wait_objects(api_, e, objects, wait_type == WAIT_ALL, mode, timeout)

    def _wait_objects(self, api: str, e, objects, wait_all: bool, mode: int,
                      timeout: Optional[int]):
        """A wait on dispatcher objects (KeWaitForMultipleObjects; KeWaitForSingleObject on a
        thread object): STATUS_WAIT_0 + the index of the first signalled object (WaitAny) or
        STATUS_SUCCESS (WaitAll, all of them signalled), at once or once blocked; STATUS_TIMEOUT
        when the timeout passes first."""
        self._blocking_wait(api, objects, mode, timeout)
        e.args["*objects"] = ", ".join("%s: %s" % (self._describe_object(o), "signalled" if
                                                   self._signalled(o) else "not signalled")
                                       for o in objects)

        def done(status):
            if status == STATUS_SUCCESS:
                states = [self._signalled(o) for o in objects]
                if wait_all:
                    self._satisfy(objects)
                else:
                    index = states.index(True)
                    self._satisfy([objects[index]])
                    status = STATUS_WAIT_0 + index
            for o in objects:
                ke = self.kevents.get(o)
                if ke is not None:
                    ke.waits += 1
            e.status = status
            if e.args.get("blocked"):
                self.ev("ke-return", api, status=status,
                        text="after %s" % seconds(self.now - e.time))
            return status

        states = [self._signalled(o) for o in objects]
        if all(states) if wait_all else any(states):
            return done(STATUS_SUCCESS)
        if timeout == 0:
            return done(STATUS_TIMEOUT)
        e.args["blocked"] = True
        what = (" and " if wait_all else " or ").join(self._describe_object(o) for o in objects)
        return self._block(Wait("objects", what, deadline=self._deadline(timeout),
                                objects=tuple(objects), wait_all=wait_all), done)
