"""Threads and time. Speakeasy runs one thing at a time; the harness gives each work item (and
each IRP completion by the provider) a thread with its own 24 KiB stack (KERNEL_STACK_SIZE, as
Windows x64 gives a kernel thread), and switches threads inside hooks: a thread that must wait
(KeWaitForSingleObject on an event not signalled, WskCaptureProviderNPI waiting for the WSK
subsystem, the harness's own "let everything settle") has its registers saved (XMM included:
Windows x64 code keeps values in RBX, RBP, RDI, RSI, R12-R15 and XMM6-XMM15 across calls) and
the scheduler resumes another one, or starts a queued work item or a provider completion.

A wait resumes with its success value once its condition holds, with its timeout value when the
emulated clock (100 ns units, as the kernel's) reaches its deadline — time advances only when
nothing else can run — and is reported as a violation when nothing could ever satisfy it (that
thread is then abandoned instead of looping).

Wait semantics: KeWaitForSingleObject and KeWaitForMultipleObjects
(https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kewaitforsingleobject,
.../nf-wdm-kewaitformultipleobjects); a wait on dispatcher objects (events, thread objects) is
satisfied when one (WaitAny) or all (WaitAll) of them are signalled.
"""
import ctypes
from typing import Callable, List, Optional, Tuple

from .abi import (KERNEL_STACK_SIZE, MAX_EMULATED_TIME, MAX_FRUITLESS_TIMEOUTS, STATUS_SUCCESS,
                  STATUS_TIMEOUT, seconds)
from .records import HarnessError, Thread, Wait


# Registers a switch between threads saves and restores (every general-purpose register, the
# flags, and the SSE state: Windows x64 code keeps values in RBX, RBP, RDI, RSI, R12-R15 and
# XMM6-XMM15 across calls).
_GPRS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
         "r13", "r14", "r15", "eflags", "mxcsr"]


class Scheduler:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads: List[Thread] = []
        self.current: Optional[Thread] = None
        self.run_thread: Optional[Thread] = None
        self.now = 0
        self.progress = 0
        self._block_seq = 0
        self._switched = False
        self._free_stacks: List[Tuple[int, int]] = []
        self.settled_at: Optional[int] = None
    def _save_regs(self) -> dict:
        from unicorn import x86_const as X
        from unicorn.unicorn import _uc, uc_x86_xmm
        regs = {r: self.uc.reg_read(getattr(X, "UC_X86_REG_" + r.upper())) for r in _GPRS}
        for i in range(16):
            x = uc_x86_xmm()
            _uc.uc_reg_read(self.uc._uch, X.UC_X86_REG_XMM0 + i, ctypes.byref(x))
            regs["xmm%d" % i] = (x.low_qword, x.high_qword)
        return regs

    def _load_regs(self, regs: dict):
        from unicorn import x86_const as X
        from unicorn.unicorn import _uc, uc_x86_xmm
        for r in _GPRS:
            self.uc.reg_write(getattr(X, "UC_X86_REG_" + r.upper()), regs[r])
        for i in range(16):
            x = uc_x86_xmm()
            x.low_qword, x.high_qword = regs["xmm%d" % i]
            _uc.uc_reg_write(self.uc._uch, X.UC_X86_REG_XMM0 + i, ctypes.byref(x))

    def _blocked(self) -> List[Thread]:
        return sorted((t for t in self.threads if t.state == "blocked"),
                      key=lambda t: t.wait.since)

    def _block(self, wait: Wait, cont: Callable[[int], int]):
        """Blocks the current thread (inside a hook); returns what the hook must return."""
        t = self.current
        self._block_seq += 1
        wait.since = self._block_seq
        t.regs = self._save_regs()
        t.depth = self.depth
        t.wait = wait
        t.cont = cont
        t.state = "blocked"
        return self.schedule()

    def _resume(self, t: Thread, value: int):
        self._load_regs(t.regs)
        t.regs = None
        t.state = "running"
        w, t.wait = t.wait, None
        self._switched = True
        switched = self.current is not t
        self.current = t
        self.depth = t.depth
        if switched:
            self.ev("thread", "switch", text="back on %s (%s)" % (
                t.name, "timed out" if w.timed_out else "wait over"), depth=0)
        return t.cont(value)

    def _stack_for_worker(self) -> Tuple[int, int]:
        if self._free_stacks:
            return self._free_stacks.pop()
        base = self.emu.mem_map(KERNEL_STACK_SIZE, tag="harness.worker_stack")
        return base + KERNEL_STACK_SIZE, KERNEL_STACK_SIZE

    def _thread_exit(self):
        t = self.current
        t.state = "done"
        if t.kind in ("worker", "provider", "dpc", "system"):
            self._free_stacks.append((t.stack_top, t.stack_size))
        self.progress += 1
        return self.schedule()

    def _end_run(self, t: Thread):
        """Ends the Speakeasy run of thread t (abandoned): Speakeasy 'returns' to its end hook."""
        self.current = t
        self._switched = True
        self.emu.reg_write("rsp", t.run_rsp)
        return 0

    def _describe_wait(self, t: Thread) -> str:
        w = t.wait
        what = w.what
        if w.deadline is not None:
            what += " (timeout at t=%s)" % seconds(w.deadline)
        else:
            what += " (no timeout)"
        last = (", after its log line %r" % t.last_log.rstrip("\n")) if t.last_log else ""
        return "%s waits for %s%s" % (t.name, what, last)

    def _abandon(self, t: Thread, why: str):
        self.violation("%s: %s; the emulation of %s is abandoned" % (self._describe_wait(t), why,
                                                                     t.name))
        t.state = "abandoned"
        if t.item is not None:
            t.item.state = "running"  # it never returns: reported when the image goes away

    def _satisfied(self, w: Wait) -> bool:
        if w.kind == "event":
            ke = self.kevents.get(w.event)
            return bool(ke and ke.signalled)
        if w.kind == "provider":
            ready = self._wsk_ready_at()
            return (ready is not None and self.now >= ready) or (
                w.registration is not None and w.registration.deregistered_seq is not None)
        if w.kind == "dpcs":
            return self._dpcs_flushed()
        if w.kind == "objects":
            states = [self._signalled(o) for o in w.objects]
            return all(states) if w.wait_all else any(states)
        return False

    def _wake_time(self, w: Wait) -> Optional[int]:
        times = [w.deadline] if w.deadline is not None else []
        if w.kind == "provider":
            ready = self._wsk_ready_at()
            if ready is not None and ready > self.now:
                times.append(ready)
        return min(times) if times else None

    def schedule(self):
        """Picks what runs next, from inside a hook whose thread just blocked or ended; returns
        what that hook must return (the CPU is then set up for the thread that runs).

        In this order: a blocked thread whose wait is satisfied (FIFO); the DPC of a timer whose
        due time has come (on a thread of its own, at DISPATCH_LEVEL: timer.py); a provider
        completion; a queued work item whose start time has come (FIFO; it starts on a new worker
        thread); a system thread the driver created (ps.py; FIFO); the harness's own
        "settle" waiter (the system goes on only once nothing else can run); else the clock
        advances to the earliest wake-up (a timeout, the WSK provider becoming ready, a delayed
        work item, a timer's due time) and the choice is made again. A wait nothing can satisfy any more is a
        violation: that thread is abandoned (a run ends there)."""
        while True:
            blocked = self._blocked()
            for t in blocked:
                if t.wait.kind not in ("settle", "time") and self._satisfied(t.wait):
                    self.progress += 1
                    return self._resume(t, STATUS_SUCCESS)
            for t in blocked:
                if t.wait.deadline is not None and self.now >= t.wait.deadline:
                    t.wait.timed_out = True
                    if t.wait.kind == "event":
                        ke = self.kevents.get(t.wait.event)
                        if ke:
                            ke.waits += 1
                    return self._resume(t, STATUS_TIMEOUT)
            # A timer whose due time has come queues its DPC; a queued DPC runs before threads
            # (DISPATCH_LEVEL).
            expired = self._expired_timer()
            while expired is not None:
                self._expire(expired)
                expired = self._expired_timer()
            if self.dpc_queue:
                return self._start_dpc(self.dpc_queue[0])
            if self.completion_queue:
                return self._start_provider_thread(self.completion_queue[0])
            for item in self.work_queue:
                if item.ready_at <= self.now:
                    return self._start_worker(item)
            if self.system_thread_queue:  # a system thread the driver created (ps.py)
                return self._start_system_thread(self.system_thread_queue[0])
            for t in blocked:
                if t.wait.kind == "settle":
                    return self._resume(t, STATUS_SUCCESS)
            # Nothing can run now: let time pass, up to the earliest wake-up.
            wakes = [(self._wake_time(t.wait), 0, t.wait.since, t) for t in blocked
                     if self._wake_time(t.wait) is not None]
            wakes += [(it.ready_at, 1, it.number, it) for it in self.work_queue]
            wakes += [(t.due, 2, t.number, t) for t in self.ktimers.values() if t.set]
            if wakes:
                when, _, _, who = min(wakes, key=lambda w: w[:3])
                if isinstance(who, Thread) and who.wait.kind in ("event", "objects") and \
                        when == who.wait.deadline:
                    others = [w for w in wakes if w[3] is not who]
                    if not others:
                        self._abandon(who, "nothing can ever signal it (no work item queued, "
                                           "no other thread that can ever run again)")
                        continue
                    if who.progress_at_timeout == self.progress:
                        who.fruitless_timeouts += 1
                    else:
                        who.fruitless_timeouts = 0
                    who.progress_at_timeout = self.progress
                    if who.fruitless_timeouts >= MAX_FRUITLESS_TIMEOUTS:
                        self._abandon(who, "%d timeouts in a row with nothing happening "
                                           "meanwhile" % who.fruitless_timeouts)
                        continue
                if when > MAX_EMULATED_TIME:
                    for t in blocked:
                        self._abandon(t, "the emulated clock passed %s" % seconds(
                            MAX_EMULATED_TIME))
                    self.work_queue.clear()
                    for timer in self.ktimers.values():
                        if timer.set:
                            self.violation("timer %d still set when the emulated clock passed "
                                           "%s: the emulation ends there" % (
                                               timer.number, seconds(MAX_EMULATED_TIME)))
                            timer.set = False
                    continue
                if when > self.now:
                    self.ev("thread", "time", text="time passes: t = %s (+%s)" % (
                        seconds(when), seconds(when - self.now)), depth=0)
                    self.now = when
                continue
            # Nothing will ever happen: every blocked thread is stuck for good.
            for t in blocked:
                self._abandon(t, "nothing can ever satisfy it")
            run = self.run_thread
            if run is not None and run.state == "abandoned":
                return self._end_run(run)
            raise HarnessError("the scheduler has nothing to run and no run to end")
