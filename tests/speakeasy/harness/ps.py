"""System threads (the C echo driver's connection thread, baseline/wsk_echo_baseline.c):
PsCreateSystemThread, PsTerminateSystemThread, the thread's handle (ZwClose: registry.py asks
here) and its thread object (ObReferenceObjectByHandle with PsThreadType, ObfDereferenceObject),
a dispatcher object that is signalled when the thread ends (KeWaitForSingleObject /
KeWaitForMultipleObjects on it: sync.py).

PsCreateSystemThread (a start routine of the image; ProcessHandle NULL: a thread of the system
process, the only kind a driver's DriverEntry makes) writes a kernel handle and queues the thread:
it starts, on a thread of its own with its own 24 KiB stack (kind "system"), at PASSIVE_LEVEL (the
'@ThreadStartRoutine' line of tests/irql-rules.txt) when the scheduler next picks something to run
(scheduler.py), and ends when its start routine returns or it calls PsTerminateSystemThread (which
does not return). Its thread object, a DISPATCHER_HEADER of type ThreadObject, is signalled then.

Rules (violations):
- PsTerminateSystemThread from a thread that is not a system thread of the driver's ("The driver
  must not terminate any threads that the system or other drivers created").
- A system thread of the driver still created or running when the image may be unmapped
  (DriverUnload returned, or DriverEntry failed): "A driver that creates its own threads must
  ensure that each such thread terminates" — before it unloads, or the thread runs in an
  unmapped image.
- The thread's handle not closed by the end (ZwClose: PsCreateSystemThread's ThreadHandle, "the
  driver must close this handle with ZwClose as soon as the handle is no longer being used").
- ObReferenceObjectByHandle of a handle that is not an open thread handle of the driver, or
  with an ObjectType other than PsThreadType (or NULL); an
  ObfDereferenceObject of an object with no reference of the driver's; a reference still held at
  the end ("the caller must decrement the reference count with ObDereferenceObject as soon as it
  is done with the object").

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ :
nf-wdm-pscreatesystemthread, nf-wdm-psterminatesystemthread, nf-wdm-obreferenceobjectbyhandle,
nf-wdm-obdereferenceobject, nf-wdm-zwclose, nc-wdm-kstart_routine.
"""
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional

from .abi import STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, status_name
from .machine import hook
from .records import Call, Thread

# DISPATCHER_HEADER.Type of a thread object (KOBJECTS: ThreadObject).
THREAD_OBJECT = 6
SIZEOF_KTHREAD_HEADER = 0x40  # what the harness gives a thread object: its DISPATCHER_HEADER+
THREAD_HANDLE_BASE = 0xFFFFFFFF80010000


@dataclass
class SystemThread:
    """A thread PsCreateSystemThread made. state: created (not started yet), running (its
    routine runs or waits), ended."""

    number: int
    handle: int
    object: int
    routine: int
    context: int
    created_in: str
    state: str = "created"
    thread: Optional[Thread] = None
    handle_open: bool = True
    references: int = 0  # the driver's: ObReferenceObjectByHandle minus ObfDereferenceObject
    exit_status: Optional[int] = None
    how: str = ""  # how it ended

    @property
    def name(self) -> str:
        return "system thread %d" % self.number


class PsModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.system_threads: List[SystemThread] = []
        self.system_thread_queue: List[SystemThread] = []
        self.thread_objects: Dict[int, SystemThread] = {}

    # --- creation and start ------------------------------------------------------------------
    @hook("ntoskrnl", "PsCreateSystemThread", 7)
    def _h_pscreatesystemthread(self, emu, api, func, argv):
        handle_out, access, attributes, process, client_id, routine, ctx = argv
        e = self.ev("kernel", "PsCreateSystemThread", {
            "DesiredAccess": access & 0xFFFFFFFF, "ObjectAttributes": attributes,
            "ProcessHandle": process, "StartRoutine": routine, "StartContext": ctx})
        if not self.in_image(routine):
            self.violation("PsCreateSystemThread: StartRoutine 0x%x is not code of the image"
                           % routine)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if process:
            self.violation("PsCreateSystemThread: ProcessHandle 0x%x: the harness models the "
                           "system process's threads (NULL) only" % process)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if not self.readable(handle_out, 8):
            self.violation("PsCreateSystemThread: ThreadHandle 0x%x not writable" % handle_out)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        number = len(self.system_threads) + 1
        obj = self.alloc(SIZEOF_KTHREAD_HEADER, "ps.thread_object")
        st = SystemThread(number=number, handle=THREAD_HANDLE_BASE + 4 * number, object=obj,
                          routine=routine, context=ctx, created_in=self._inside())
        self._write_thread_object(st)
        self.system_threads.append(st)
        self.thread_objects[obj] = st
        self.system_thread_queue.append(st)
        self.wr64(handle_out, st.handle)
        if client_id and self.readable(client_id, 16):
            self.wr(client_id, struct.pack("<QQ", 4, 0x100 + 4 * number))  # system process
        e.args["*ThreadHandle"] = st.handle
        e.text = "system thread %d, started when the scheduler next runs something" % number
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    def _write_thread_object(self, st: SystemThread):
        # DISPATCHER_HEADER: Type, Signalling, Size, Reserved1; SignalState; WaitListHead.
        self.wr(st.object, struct.pack("<BBBBiQQ", THREAD_OBJECT, 0, SIZEOF_KTHREAD_HEADER // 4,
                                       0, 1 if st.state == "ended" else 0, st.object + 8,
                                       st.object + 8))

    def _start_system_thread(self, st: SystemThread):
        """The scheduler starts a created thread: its start routine runs on a thread of its own,
        at PASSIVE_LEVEL; its return ends the thread."""
        self.system_thread_queue.remove(st)
        top, size = self._stack_for_worker()
        t = self._new_thread(st.name, "system", top, size)
        t.irql = self.callback_irql("ThreadStartRoutine")
        st.thread = t
        st.state = "running"
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="%s starts (StartRoutine 0x%x)" % (st.name, st.routine),
                depth=0)

        def gen():
            yield Call(st.routine, [st.context], "ThreadStartRoutine", returns=False)
            self.depth = 1
            self._system_thread_ended(st, STATUS_SUCCESS, "its start routine returned")
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _system_thread_ended(self, st: SystemThread, status: int, how: str):
        st.state = "ended"
        st.exit_status = status
        st.how = how
        self._write_thread_object(st)
        self.progress += 1
        self._no_spin_lock_held(st.name)
        self.ev("thread", "system thread ends", {"thread": st.number},
                text="%s ends: %s (%s); its thread object is signalled"
                % (st.name, how, status_name(status)), depth=1)

    def _current_system_thread(self) -> Optional[SystemThread]:
        t = self.current
        return next((st for st in self.system_threads if st.thread is t), None)

    @hook("ntoskrnl", "PsTerminateSystemThread", 1)
    def _h_psterminatesystemthread(self, emu, api, func, argv):
        status = argv[0] & 0xFFFFFFFF
        e = self.ev("kernel", "PsTerminateSystemThread", {"ExitStatus": status})
        st = self._current_system_thread()
        if st is None:
            self.violation("PsTerminateSystemThread on %s, not a system thread the driver "
                           "created: the driver must not terminate threads the system or other "
                           "drivers created" % self.current.name)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        # It does not return: the thread's frames (its start routine's, the harness's call of it)
        # go with it.
        self.current.pending.clear()
        self._system_thread_ended(st, status, "PsTerminateSystemThread")
        return self._thread_exit()

    # --- the handle and the object -----------------------------------------------------------
    def _close_thread_handle(self, handle: int) -> bool:
        """ZwClose(handle) for a thread handle (registry.py's ZwClose asks): True when it was
        one, open."""
        st = next((s for s in self.system_threads if s.handle == handle and s.handle_open), None)
        if st is None:
            return False
        st.handle_open = False
        return True

    def _build(self):
        """PsThreadType is a data export of ntoskrnl (a POBJECT_TYPE variable), which Speakeasy
        does not have: the harness binds the image's import of it to a variable of its own that
        holds a thread object type's address, so that the driver reads a real one."""
        super()._build()
        self.ps_thread_type = self.alloc(0x40, "ps.thread_object_type")
        variable = self.alloc(8, "ps.PsThreadType")
        self.wr64(variable, self.ps_thread_type)
        for slot, (module, name) in self.module.imports.items():
            if module.lower() == "ntoskrnl" and name == "PsThreadType":
                self.wr64(slot, variable)  # its IAT slot

    @hook("ntoskrnl", "ObReferenceObjectByHandle", 6)
    def _h_obreferenceobjectbyhandle(self, emu, api, func, argv):
        handle, access, otype, mode, out, info = argv
        mode &= 0xFF
        e = self.ev("kernel", "ObReferenceObjectByHandle", {
            "Handle": handle, "DesiredAccess": access & 0xFFFFFFFF, "ObjectType": otype,
            "AccessMode": mode})
        st = next((s for s in self.system_threads if s.handle == handle and s.handle_open), None)
        if st is None:
            self.violation("ObReferenceObjectByHandle: 0x%x is not an open thread handle of the "
                           "driver's (the harness models thread handles only)" % handle)
            e.status = STATUS_INVALID_HANDLE
            return e.status
        if otype and otype != self.ps_thread_type:
            self.violation("ObReferenceObjectByHandle: ObjectType 0x%x is not *PsThreadType "
                           "(0x%x) for thread handle 0x%x" % (otype, self.ps_thread_type, handle))
            e.status = 0xC0000024  # STATUS_OBJECT_TYPE_MISMATCH
            return e.status
        if not self.readable(out, 8):
            self.violation("ObReferenceObjectByHandle: Object 0x%x not writable" % out)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        st.references += 1
        self.wr64(out, st.object)
        if info and self.readable(info, 8):
            self.wr(info, struct.pack("<II", 0, access & 0xFFFFFFFF))
        e.args["*Object"] = st.object
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS

    @hook("ntoskrnl", "ObfDereferenceObject", 1)
    def _h_obfdereferenceobject(self, emu, api, func, argv):
        (obj,) = argv
        e = self.ev("kernel", "ObfDereferenceObject", {"Object": obj})
        st = self.thread_objects.get(obj)
        if st is None or st.references <= 0:
            self.violation("ObfDereferenceObject(0x%x): %s" % (
                obj, "not an object the driver referenced" if st is None else
                "%s's object, with no reference of the driver's left" % st.name))
            return 0
        st.references -= 1
        e.status = st.references
        return st.references

    # --- what is left ------------------------------------------------------------------------
    def _system_threads_running(self, when: str):
        """When the image may be unmapped: every system thread of the driver has ended."""
        for st in self.system_threads:
            if st.state != "ended":
                self.violation("%s while %s (StartRoutine 0x%x) is %s: the image would be "
                               "unmapped under it (a driver that creates its own threads must "
                               "ensure that each terminates before it unloads)"
                               % (when, st.name, st.routine,
                                  "still running" if st.state == "running" else
                                  "created and not started"))

    def _thread_handles_left(self, when: str):
        for st in self.system_threads:
            if st.handle_open:
                self.violation("%s's handle 0x%x (PsCreateSystemThread) not closed at %s "
                               "(ZwClose)" % (st.name, st.handle, when))
            if st.references:
                self.violation("%s's object: %d reference(s) (ObReferenceObjectByHandle) not "
                               "released at %s (ObDereferenceObject)"
                               % (st.name, st.references, when))
