"""Kernel timers, DPCs, spin locks and the interrupt time: KeInitializeTimer, KeSetTimer,
KeCancelTimer, KeInitializeDpc, KeFlushQueuedDpcs, KeAcquireSpinLockRaiseToDpc,
KeReleaseSpinLock, KeQueryInterruptTime (the library's task executor: its timers' KTIMER and
KDPC, its task list's and timer list's spin locks).

A set timer expires when the emulated clock reaches its due time (the scheduler lets time pass up
to the earliest due time when nothing else can run); its DPC then runs on a thread of its own at
DISPATCH_LEVEL (the '@DeferredRoutine' line of tests/irql-rules.txt). Nothing of the I/O manager
holds the image for a DPC: when the image may be unmapped, no timer may be set and no DPC queued
or running — the unload must cancel its timer and flush the DPCs (KeFlushQueuedDpcs blocks its
caller until no DPC is queued or running). A spin lock is taken at DISPATCH_LEVEL and released by
its holder, which goes back to the IRQL it had; a DPC or work item that returns holding one, or
a lock acquired while held (the emulation runs one thread at a time: a holder that blocked), is
reported.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-keinitializetimer,
nf-wdm-kesettimer, nf-wdm-kecanceltimer, nf-wdm-keinitializedpc, nf-wdm-keflushqueueddpcs,
nf-wdm-keacquirespinlockraisetodpc, nf-wdm-kereleasespinlock, nf-wdm-kequeryinterrupttime,
nc-wdm-kdeferred_routine.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional

from .abi import seconds
from .machine import hook
from .records import Block, Call, Wait

SIZEOF_KTIMER = 0x40
SIZEOF_KDPC = 0x40


@dataclass
class KTimer:
    address: int
    number: int
    set: bool = False
    due: int = 0
    dpc: int = 0
    sets: int = 0
    expiries: int = 0


@dataclass
class KDpc:
    address: int
    routine: int
    context: int
    runs: int = 0


class TimerModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ktimers: Dict[int, KTimer] = {}
        self.kdpcs: Dict[int, KDpc] = {}
        # DPCs whose timer expired, not yet started; DPC threads running.
        self.dpc_queue: List[KDpc] = []
        self.dpcs_running = 0
        # Spin locks held: address -> the holding thread's name.
        self.spin_locks: Dict[int, str] = {}

    # --- time --------------------------------------------------------------------------------
    @hook("ntoskrnl", "KeQueryInterruptTime", 0)
    def _h_kequeryinterrupttime(self, emu, api, func, argv):
        self.ev("ke", "KeQueryInterruptTime", status=self.now)
        return self.now

    # --- timers and DPCs ---------------------------------------------------------------------
    @hook("ntoskrnl", "KeInitializeTimer", 1)
    def _h_keinitializetimer(self, emu, api, func, argv):
        (addr,) = argv
        self.ev("ke", "KeInitializeTimer", {"Timer": addr})
        if not self.readable(addr, SIZEOF_KTIMER) or addr % 8:
            self.violation("KeInitializeTimer: Timer 0x%x not writable and 8-byte aligned" % addr)
            return None
        old = self.ktimers.get(addr)
        if old is not None and old.set:
            self.violation("KeInitializeTimer: timer 0x%x is set (its DPC would be lost)" % addr)
        self.ktimers[addr] = KTimer(addr, len(self.ktimers) + 1)
        return None

    @hook("ntoskrnl", "KeInitializeDpc", 3)
    def _h_keinitializedpc(self, emu, api, func, argv):
        addr, routine, ctx = argv
        self.ev("ke", "KeInitializeDpc", {"Dpc": addr, "DeferredRoutine": routine,
                                          "DeferredContext": ctx})
        if not self.readable(addr, SIZEOF_KDPC) or addr % 8:
            self.violation("KeInitializeDpc: Dpc 0x%x not writable and 8-byte aligned" % addr)
            return None
        if not self.in_image(routine):
            self.violation("KeInitializeDpc: DeferredRoutine 0x%x is not code of the image"
                           % routine)
            return None
        self.kdpcs[addr] = KDpc(addr, routine, ctx)
        return None

    def _timer(self, addr: int, api: str) -> Optional[KTimer]:
        t = self.ktimers.get(addr)
        if t is None:
            self.violation("%s(0x%x): not a timer initialised with KeInitializeTimer" % (api, addr))
        return t

    @hook("ntoskrnl", "KeSetTimer", 3)
    def _h_kesettimer(self, emu, api, func, argv):
        addr, due, dpc = argv
        due = due - (1 << 64) if due & (1 << 63) else due
        e = self.ev("ke", "KeSetTimer", {"Timer": addr, "DueTime": due, "Dpc": dpc})
        t = self._timer(addr, "KeSetTimer")
        if t is None:
            return 0
        if dpc and dpc not in self.kdpcs:
            self.violation("KeSetTimer: Dpc 0x%x not initialised with KeInitializeDpc" % dpc)
            return 0
        if due >= 0:
            self.violation("KeSetTimer: DueTime %d is absolute (a system time): the drivers set "
                           "relative ones" % due)
            return 0
        was = t.set
        t.set, t.due, t.dpc = True, self.now - due, dpc
        t.sets += 1
        e.text = "expires at t = %s" % seconds(t.due)
        return 1 if was else 0

    @hook("ntoskrnl", "KeCancelTimer", 1)
    def _h_kecanceltimer(self, emu, api, func, argv):
        (addr,) = argv
        e = self.ev("ke", "KeCancelTimer", {"Timer": addr})
        t = self._timer(addr, "KeCancelTimer")
        if t is None:
            return 0
        was, t.set = t.set, False
        e.status = 1 if was else 0
        return e.status

    @hook("ntoskrnl", "KeFlushQueuedDpcs", 0)
    def _h_keflushqueueddpcs(self, emu, api, func, argv):
        self.ev("ke", "KeFlushQueuedDpcs", text="%d DPC(s) queued, %d running"
                % (len(self.dpc_queue), self.dpcs_running))

        def gen():
            if self.dpc_queue or self.dpcs_running:
                yield Block(Wait("dpcs", "the queued DPCs to return (KeFlushQueuedDpcs)"))
            return 0
        return self._start(gen())

    def _dpcs_flushed(self) -> bool:
        return not self.dpc_queue and not self.dpcs_running

    def _expired_timer(self) -> Optional[KTimer]:
        """A set timer whose due time has come (the earliest), if any."""
        due = [t for t in self.ktimers.values() if t.set and t.due <= self.now]
        return min(due, key=lambda t: (t.due, t.number)) if due else None

    def _timer_wake_times(self) -> List[int]:
        return [t.due for t in self.ktimers.values() if t.set]

    def _expire(self, t: KTimer):
        """The timer's due time has come: it is no longer set, its DPC is queued."""
        t.set = False
        t.expiries += 1
        self.ev("ke", "timer expired", {"Timer": t.address, "Dpc": t.dpc},
                text="timer %d expired at t = %s" % (t.number, seconds(self.now)))
        d = self.kdpcs.get(t.dpc)
        if d is not None:
            self.dpc_queue.append(d)

    def _start_dpc(self, d: KDpc):
        self.dpc_queue.remove(d)
        top, size = self._stack_for_worker()
        t = self._new_thread("DPC %d" % (sum(x.kind == "dpc" for x in self.threads) + 1),
                             "dpc", top, size)
        t.irql = self.callback_irql("DeferredRoutine")
        d.runs += 1
        self.dpcs_running += 1
        self.progress += 1
        self.current = t
        self.depth = 1
        self.ev("thread", "switch", text="a DPC runs (routine 0x%x)" % d.routine, depth=0)

        def gen():
            yield Call(d.routine, [d.address, d.context, 0, 0], "DeferredRoutine",
                       returns=False)
            self.depth = 1
            self.ev("ke", "DPC done", {"Dpc": d.address}, depth=1)
            self._no_spin_lock_held(t.name)
            self.dpcs_running -= 1
            return 0
        self._switched = True
        return self._drive(gen(), None, None)

    def _timers_left(self, when: str):
        for t in self.ktimers.values():
            if t.set:
                self.violation("timer %d (0x%x) still set at %s (due at t = %s): its DPC would "
                               "run in an unmapped image (KeCancelTimer)"
                               % (t.number, t.address, when, seconds(t.due)))
        if self.dpc_queue or self.dpcs_running:
            self.violation("%d DPC(s) queued and %d running at %s: they would run in an unmapped "
                           "image (KeFlushQueuedDpcs)" % (len(self.dpc_queue), self.dpcs_running,
                                                         when))

    # --- spin locks --------------------------------------------------------------------------
    @hook("ntoskrnl", "KeAcquireSpinLockRaiseToDpc", 1)
    def _h_keacquirespinlockraisetodpc(self, emu, api, func, argv):
        (lock,) = argv
        t = self.current
        holder = self.spin_locks.get(lock)
        if holder is not None:
            self.violation("KeAcquireSpinLockRaiseToDpc(0x%x) on %s: held by %s (%s)"
                           % (lock, t.name, holder, "a deadlock" if holder == t.name else
                              "its holder blocked while holding a spin lock"))
        if not self.readable(lock, 8) or lock % 8:
            self.violation("KeAcquireSpinLockRaiseToDpc: SpinLock 0x%x not a resident ULONG_PTR"
                           % lock)
        self.spin_locks[lock] = t.name
        before = t.irql
        t.irql = max(t.irql, 2)
        self.ev("ke", "KeAcquireSpinLockRaiseToDpc", {"SpinLock": lock}, status=before)
        return before

    @hook("ntoskrnl", "KeReleaseSpinLock", 2)
    def _h_kereleasespinlock(self, emu, api, func, argv):
        lock, new_irql = argv
        new_irql &= 0xFF
        t = self.current
        self.ev("ke", "KeReleaseSpinLock", {"SpinLock": lock, "NewIrql": new_irql})
        if self.spin_locks.get(lock) != t.name:
            self.violation("KeReleaseSpinLock(0x%x) on %s: not its holder (%s)"
                           % (lock, t.name, self.spin_locks.get(lock, "not held")))
        self.spin_locks.pop(lock, None)
        t.irql = new_irql
        return None

    def _no_spin_lock_held(self, who: str):
        held = [hex(lock) for lock, holder in self.spin_locks.items() if holder == who]
        if held:
            self.violation("%s returned holding spin lock(s) %s" % (who, ", ".join(held)))
