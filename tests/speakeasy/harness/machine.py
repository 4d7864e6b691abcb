"""The machine: Speakeasy set up to run a driver image as Windows would load it, the hooks of
every modelled subsystem installed, the harness's record of events and violations, and the
mechanism by which a hook makes the emulated CPU call into the driver and get control back.

How a hook calls into the driver (see ``_drive``): a hook for a function Speakeasy does not
implement ends with Speakeasy "returning" to the address found at [RSP]. The hook points RSP at a
scratch frame ``[callee, stub, home space...]``, so that return lands on the driver's callback
with return address ``stub``; ``stub`` is a real code stub ``jmp [rip+0]`` to a reserved address
hooked as ``harness.CallbackReturn`` (a ``ret`` straight into Speakeasy's reserved range executes
nothing, hence the stub). That hook reads RAX, and either sets up the next call or puts RSP back
on the original frame, so Speakeasy returns to the driver's original call site. The models are
written as Python generators that ``yield Call(...)`` and get the RAX back. (For a function
Speakeasy does implement, it only returns by itself when the hook left RSP and RIP alone, so
``_wrap`` does that return when the hook moved RSP.)

Each subsystem module declares its hooks beside their handlers with ``@hook(module, name,
argc)``; ``_build`` installs every hook of the class (a subclass overriding a handler keeps its
hook). Speakeasy's runs (DriverEntry, the harness's "after DriverEntry" run, DriverUnload) are
observed here; the threads they and the work items run on are the scheduler's (scheduler.py).

The calling convention and the driver's entry points: DRIVER_INITIALIZE
(https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_initialize) and
DRIVER_UNLOAD (https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_unload).
"""
import logging
import os
import struct
from dataclasses import dataclass
from typing import Callable, Dict, Generator, List, Optional, Tuple

from driver_profiles import DriverProfile, profile_for

from .abi import (DRIVER_OBJECT_DRIVER_UNLOAD, KERNEL_STACK_SIZE, PASSIVE_LEVEL, STATUS_SUCCESS,
                  TICKS_PER_MS,
                  WSK_CONNECTION_DISPATCH_FUNCS, WSK_PROVIDER_DISPATCH_FUNCS, seconds,
                  status_name, tag_name)
from .records import Block, Call, Event, HarnessError, Result, Thread, Wait
from .scenario import Scenario


@dataclass(frozen=True)
class HookSpec:
    """A function the harness hooks: Speakeasy's module and export name, its argument count, the
    name its IRQL rule has in tests/irql-rules.txt (None: the harness's own, not a kernel, NMR or
    WSK function), and the tests of the table's conditions for it (irql.py)."""

    module: str
    name: str
    argc: int
    rule: Optional[str]
    conditions: Optional[Dict[str, Callable]] = None


_SAME = object()


def hook(module: str, name: str, argc: int, rule=_SAME,
         conditions: Optional[Dict[str, Callable]] = None):
    """Declares the method it decorates as the handler of `module`!`name` (argc arguments).
    rule: the function's name in tests/irql-rules.txt when it differs from `name` (None: the
    harness's own hooks). conditions: {condition of the table: test(harness, argv) -> bool}, for
    a stricter IRQL limit that depends on the call's arguments."""
    spec = HookSpec(module, name, argc, name if rule is _SAME else rule, conditions)

    def mark(fn):
        fn.hook_spec = spec
        return fn
    return mark


def hook_table(cls) -> Dict[Tuple[str, str], Tuple[str, HookSpec]]:
    """Every hook a harness class declares: (module, name) -> (method name, spec), from its
    bases first, so that a subclass's override of a handler is the one installed."""
    table: Dict[Tuple[str, str], Tuple[str, HookSpec]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            spec = getattr(value, "hook_spec", None)
            if spec is not None:
                table[(spec.module, spec.name)] = (attr, spec)
    return table


class Machine:
    """Speakeasy, the event record, memory helpers, the calls into the driver and the runs.
    The subsystem models (nmr.py, io.py, ...) are mixed into Harness with this class."""

    def __init__(self, image: str, scenario: Scenario, verbose: bool = False,
                 profile: Optional[DriverProfile] = None):
        self.image = image
        self.profile = profile or profile_for(image)
        self.scenario = scenario
        self.verbose = verbose
        self.events: List[Event] = []
        self.violations: List[str] = []
        self.depth = 0
        self.run_errors: List[dict] = []
        self.entry_status: Optional[int] = None
        self.unload_ran = False
        self.unload_completed = False
        self.unload_ptr = 0
        self.image_kept = False  # DriverUnload returned with a device object left
        self.driver_object = 0
        self.skipped_exports: List[str] = []
        self.stack_top = 0
        # The failure matrix (Scenario.fail_call): calls counted per function, failures made.
        self.call_counts: Dict[str, int] = {}
        self.injected: List[Tuple[str, int, int]] = []

    def ev(self, kind, name, args=None, status=None, text="", depth=None) -> Event:
        t = self.current
        if t is not None:
            try:
                rsp = self.emu.get_stack_ptr()
                if t.stack_top - t.stack_size <= rsp <= t.stack_top:
                    t.min_rsp = min(t.min_rsp, rsp)
            except Exception:
                pass
        e = Event(len(self.events), kind, name, dict(args or {}), status,
                  self.depth if depth is None else depth, text,
                  thread=t.name if t is not None else "", time=self.now,
                  irql=t.irql if t is not None else 0)
        self.events.append(e)
        return e

    def violation(self, msg: str):
        self.violations.append(msg)
        self.ev("violation", "violation", text=msg)

    def _inject(self, name: str) -> Optional[int]:
        """Counts a call of `name` (a function of tests/failure-matrix.txt); the status it must
        fail with when Scenario.fail_call names this occurrence, else None."""
        n = self.call_counts[name] = self.call_counts.get(name, 0) + 1
        fc = self.scenario.fail_call
        if fc is None or fc[0] != name or fc[1] != n:
            return None
        status = fc[2] & 0xFFFFFFFF
        self.injected.append((name, n, status))
        self.ev("provider", "injected failure", text="failure matrix: call %d of %s fails (%s)"
                % (n, name, status_name(status)))
        return status

    def rd(self, addr, n) -> bytes:
        return bytes(self.emu.mem_read(addr, n))

    def rd16(self, a):
        return struct.unpack("<H", self.rd(a, 2))[0]

    def rd32(self, a):
        return struct.unpack("<I", self.rd(a, 4))[0]

    def rd64(self, a):
        return struct.unpack("<Q", self.rd(a, 8))[0]

    def wr(self, a, data: bytes):
        self.emu.mem_write(a, data)

    def wr64(self, a, v):
        self.wr(a, struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF))

    def alloc(self, size: int, tag: str) -> int:
        addr = self.emu.mem_map(max(size, 16), tag="harness.%s" % tag)
        self.wr(addr, b"\0" * max(size, 16))
        return addr

    def readable(self, addr: int, n: int = 1) -> bool:
        if not addr:
            return False
        try:
            self.emu.mem_read(addr, n)
            return True
        except Exception:
            return False

    def in_image(self, addr: int) -> bool:
        base, size = self.module.get_base(), self.module.get_image_size()
        return base <= addr < base + size

    def on_a_stack(self, addr: int) -> Optional[Thread]:
        """The thread whose stack `addr` is on: a live one first (a finished worker's stack is
        reused by the next), else the last that had it."""
        on = [t for t in self.threads if t.stack_top - t.stack_size <= addr < t.stack_top]
        live = [t for t in on if t.state in ("running", "blocked")]
        return (live or on or [None])[-1]

    def where(self, addr: int) -> str:
        """Where an address is, for messages."""
        if self.in_image(addr):
            return "in the image"
        if self.pool_block(addr):
            return "in pool tagged %s" % tag_name(self.pool_block(addr).tag)
        t = self.on_a_stack(addr)
        if t:
            return "on the stack of %s" % t.name
        return "elsewhere"

    def _read_ustr(self, a, wide):
        if not a:
            return "(null)"
        length, _, buf = struct.unpack("<HH4xQ", self.rd(a, 16))
        raw = self.rd(buf, length) if buf and length else b""
        return raw.decode("utf-16-le" if wide else "latin-1", "replace")

    def _build(self):
        try:
            import speakeasy  # noqa: F401
        except ImportError as e:  # pragma: no cover
            raise HarnessError("speakeasy-emulator is not installed: run "
                               "tests/speakeasy/setup-venv.sh and use its python") from e
        from speakeasy import Speakeasy

        if not os.path.isfile(self.image):
            raise HarnessError("driver image not found: %s" % self.image)
        logger = logging.getLogger("speakeasy.wsk_driver")
        if not self.verbose:
            logger.setLevel(logging.CRITICAL + 1)
        self.se = Speakeasy(logger=logger)
        self.module = self.se.load_module(self.image)
        self.emu = self.se.emu
        self.uc = self.emu.emu_eng.emu
        # Speakeasy sizes the kernel stack from the image's SizeOfStackCommit (4 KiB for a
        # usual link); Windows x64 gives a thread KERNEL_STACK_SIZE, 24 KiB. Use that.
        self.stack_top, _ = self.emu.alloc_stack(KERNEL_STACK_SIZE)
        self.emu.stack_base = self.stack_top
        self.emu.reset_stack(self.stack_top)

        # Code stub: jmp [rip+0] ; dq harness.CallbackReturn
        self.cont_addr = self.emu.get_proc("harness", "CallbackReturn")
        self.trigger_addr = self.emu.get_proc("harness", "AfterEntry")
        self.stub = self._jump_stub("stub", self.cont_addr)
        self.trigger_stub = self._jump_stub("trigger_stub", self.trigger_addr)
        self.shutdown_stub = self._jump_stub("shutdown_stub",
                                             self.emu.get_proc("harness", "SystemShutdown"))
        self.exallocatepool2_addr = self.emu.get_proc("ntoskrnl", "ExAllocatePool2")
        self.wsk_funcs = {name: self.emu.get_proc("harness", name)
                          for name, _ in WSK_PROVIDER_DISPATCH_FUNCS}
        self.conn_funcs = {name: self.emu.get_proc("harness", "Socket" + name)
                           for name, _ in WSK_CONNECTION_DISPATCH_FUNCS}

        # Every hook the models declare (@hook), installed as the class says (a subclass's
        # override of a handler included).
        for (module, name), (attr, spec) in hook_table(type(self)).items():
            # A function Speakeasy implements returns by itself only when the hook leaves RSP
            # and RIP alone: _wrap returns for it when the hook moved the CPU elsewhere.
            _, handler = self.emu.api.get_export_func_handler(module, name)
            self.se.add_api_hook(self._wrap(getattr(self, attr), handler is not None, spec),
                                 module, name, argc=spec.argc)

        # Observe Speakeasy's runs (DriverEntry, DriverUnload, ours) start and end.
        emu = self.emu
        orig_exec_run, orig_complete = emu._exec_run, emu.on_run_complete

        def exec_run(run):
            self._run_started(run)
            out = orig_exec_run(run)
            # Speakeasy put the run's return address (its end-of-run hook) at [RSP].
            self.run_thread.run_rsp = emu.get_stack_ptr()
            return out

        def on_run_complete():
            self._run_completed(emu.curr_run)
            return orig_complete()

        emu._exec_run = exec_run
        emu.on_run_complete = on_run_complete

    def _jump_stub(self, what: str, target: int) -> int:
        """A code stub `jmp [rip+0]; dq target` (a run's start, to a hooked address)."""
        stub = self.alloc(32, what)
        self.wr(stub, b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", target))
        return stub

    def _wrap(self, fn, implemented_by_speakeasy: bool, spec: HookSpec):
        def cb(emu, api, func, argv):
            self._switched = False
            if spec.rule is not None:  # a kernel, NMR or WSK function: its IRQL limit
                self.check_irql(spec.rule, spec.conditions or {}, argv)
                self.check_no_wsk_call_in_routine(spec.rule)
            rv = fn(emu, api, func, argv)
            if implemented_by_speakeasy and self._switched:
                sp = emu.get_stack_ptr()
                ret = self.rd64(sp)
                emu.reg_write("rsp", sp + 8)
                emu.set_pc(ret)
                if rv is not None:
                    emu.reg_write("rax", rv & 0xFFFFFFFFFFFFFFFF)
            return rv
        return cb

    def _run_name(self, run) -> str:
        from speakeasy.windows.kernel import EP_DRIVER_ENTRY, EP_DRIVER_UNLOAD
        return {EP_DRIVER_ENTRY: "DriverEntry", EP_DRIVER_UNLOAD: "DriverUnload"}.get(
            run.type, str(run.type))

    def _new_thread(self, name, kind, stack_top, stack_size) -> Thread:
        t = Thread(tid=len(self.threads), name=name, kind=kind, stack_top=stack_top,
                   stack_size=stack_size, min_rsp=stack_top)
        self.threads.append(t)
        return t

    def _run_started(self, run):
        name = self._run_name(run)
        self.depth = 0
        self.run_thread = self._new_thread(name, "run", self.stack_top, KERNEL_STACK_SIZE)
        self.current = self.run_thread
        # DriverEntry and DriverUnload at the IRQL of their '@' lines; the harness's own run (a
        # system thread) at PASSIVE_LEVEL.
        self.run_thread.irql = (self.callback_irql(name) if name in ("DriverEntry", "DriverUnload")
                                else PASSIVE_LEVEL)
        if name == "DriverEntry":
            self.driver_object = run.args[0]
            self.registry_path = self._read_ustr(run.args[1], True) if run.args[1] else ""
            self.ev("run", "DriverEntry", {"DriverObject": run.args[0],
                                           "RegistryPath": run.args[1]})
        elif name == "DriverUnload":
            self.unload_ran = True
            self.ev("run", "DriverUnload", {"DriverObject": run.args[0]})
        elif name == "system shutdown":
            self.ev("run", name, text="the system shuts down: NMR deregisters the clients still "
                    "registered (calling into the image, still mapped), the device objects go, "
                    "and the image with them")
        elif name == "after DriverEntry":
            parts = ["the system after DriverEntry: the work items it queued run"]
            if self.scenario.after_entry:
                parts.append("then the provider's events")
            if self.scenario.client:
                parts.append("then the remote client's steps")
            if self.scenario.unload_after_ms:
                parts.append("sc stop %d ms after that" % self.scenario.unload_after_ms)
            self.ev("run", "after DriverEntry", text="; ".join(parts))
        else:
            self.ev("run", name)

    def _run_completed(self, run):
        if run is None:
            return
        name = self._run_name(run)
        t = self.run_thread
        abandoned = t is not None and t.state == "abandoned"
        if t is not None and t.state == "running":
            t.state = "done"
        if getattr(run, "error", None):
            err = dict(run.error)
            err.pop("regs", None)
            err["run"] = name
            self.run_errors.append(err)
            self.ev("violation", "emulation-error", text="%s: %s at %s (%s)" % (
                name, err.get("type"), err.get("pc"), err.get("api_name", err.get("instr", ""))))
        if name == "DriverEntry":
            st = None if abandoned else self.emu.get_return_val() & 0xFFFFFFFF
            self.entry_status = st
            if self.driver_object:
                self.unload_ptr = self.rd64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD)
                if (st is None or st & 0x80000000) and self.unload_ptr:
                    # The I/O manager never calls DriverUnload after DriverEntry failed.
                    self.wr64(self.driver_object + DRIVER_OBJECT_DRIVER_UNLOAD, 0)
            self.ev("run", "DriverEntry abandoned" if abandoned else "DriverEntry returned",
                    status=st, args={"DriverUnload": self.unload_ptr})
            # Speakeasy's all-entrypoints mode would now call every export with dummy
            # arguments, DriverEntry included when the image exports it (a cdylib does).
            # Windows never does that: drop those runs, and say so in the trace.
            for dr in list(getattr(self.emu, "delayed_runs", [])):
                if str(dr.type).startswith("export."):
                    self.emu.delayed_runs.remove(dr)
                    self.skipped_exports.append(dr.type[len("export."):])
            if self.skipped_exports:
                self.ev("run", "exports not called", text="exported by the image, not called "
                        "(Windows does not call a driver's exports): %s"
                        % ", ".join(self.skipped_exports))
            if st == STATUS_SUCCESS:
                if (self.scenario.after_entry or self.work_queue or self._blocked()
                        or self.system_thread_queue or self.scenario.unload_after_ms
                        or self.scenario.client):
                    self._add_run("after DriverEntry", self.trigger_stub)
            else:
                self._image_unmapped("DriverEntry failed")
        elif name == "DriverUnload":
            self.unload_completed = not abandoned
            self.ev("run", "DriverUnload abandoned" if abandoned else "DriverUnload returned")
            kept = [] if abandoned else self.live_devices()
            if kept:
                # A device object of the driver is left: the I/O manager keeps the driver object,
                # and with it the image, mapped; NMR may still call into it. The image goes when
                # the system shuts down (a run of its own).
                self.image_kept = True
                self.ev("run", "image kept", text="DriverUnload returned with %d device "
                        "object(s) of the driver left: the driver object and its image stay "
                        "(the driver cannot unload for good) until the system shuts down"
                        % len(kept))
                self._add_run("system shutdown", self.shutdown_stub)
            elif abandoned:  # it never returns: reported already; what it left too
                self._check_nothing_left("DriverUnload abandoned")
                self._system_threads_running("DriverUnload abandoned")
            else:
                self._image_unmapped("DriverUnload returned")
        elif name == "after DriverEntry":
            self.ev("run", "after DriverEntry done")
        elif name == "system shutdown":
            self.ev("run", "system shutdown done")

    def _add_run(self, name: str, stub: int):
        """Queues a Speakeasy run of the harness's own (a system thread), starting at `stub`."""
        from speakeasy.profiler import Run
        r = Run()
        r.type = name
        r.start_addr = stub
        r.args = []
        self.emu.add_run(r)

    def _drive(self, gen: Generator, send_value, frame_rsp: Optional[int]):
        """Advance a harness generator from inside a hook.

        Returns the value the hook must return. Either the generator finished (RSP back on
        frame_rsp, whose [RSP] is the original return address; a worker thread's generator has
        no frame_rsp: the thread ends), or it asked for a call: RSP now on a scratch frame
        [fn, stub, home space], so Speakeasy's return lands on fn; or it asked to block.
        """
        self._switched = True
        try:
            req = gen.send(send_value)
        except StopIteration as stop:
            if frame_rsp is None:
                return self._thread_exit()
            self.emu.reg_write("rsp", frame_rsp)
            return STATUS_SUCCESS if stop.value is None else stop.value
        if isinstance(req, Block):
            return self._block(req.wait, lambda v: self._drive(gen, v, frame_rsp))
        if not isinstance(req, Call):
            raise HarnessError("harness generator yielded %r" % (req,))
        base = frame_rsp if frame_rsp is not None else self.current.stack_top - 0x40
        sp = (base - 0x80) & ~0xF  # below the hooked call's return address
        self.wr64(sp, req.fn)
        self.wr64(sp + 8, self.stub)
        self.wr(sp + 16, b"\0" * 0x20)  # home space
        regs = ["rcx", "rdx", "r8", "r9"]
        for i, a in enumerate(req.args[:4]):
            self.emu.reg_write(regs[i], a)
        for i, a in enumerate(req.args[4:]):  # the fifth argument on: above the home space
            self.wr64(sp + 0x30 + 8 * i, a)
        self.emu.reg_write("rsp", sp)
        self.current.pending.append((gen, frame_rsp, req, self.depth))
        self.depth += 1
        return 0

    def _start(self, gen: Generator):
        return self._drive(gen, None, self.emu.get_stack_ptr())

    @hook("harness", "CallbackReturn", 0, rule=None)
    def _h_cont(self, emu, api, func, argv):
        if not self.current.pending:
            raise HarnessError("CallbackReturn hook without a pending call on %s"
                               % self.current.name)
        gen, frame_rsp, req, depth = self.current.pending.pop()
        self.depth = depth
        rax = emu.get_return_val()
        value = (rax & 0xFFFFFFFF) if req.returns else None
        return self._drive(gen, value, frame_rsp)

    def call(self, fn: int, args: list, name: str, returns: bool = True, arg_names=(),
             kind: str = "callback", irql: Optional[int] = None):
        """Generator helper: call a driver callback, log it, return its status. kind:
        "callback" (NMR calls it), "io-callback" (the I/O manager: a completion routine, a
        dispatch routine). The thread runs the callback at the IRQL the system calls it at
        (irql.py; `irql`: at that one instead, e.g. the caller's for a dispatch routine), then
        goes back to its own."""
        t = self.current
        caller_irql, t.irql = t.irql, self.callback_irql(name) if irql is None else irql
        e = self.ev(kind, name, dict(zip(arg_names, args)))
        st = yield Call(fn, list(args), name, returns)
        t.irql = caller_irql
        e.status = st
        e.text = "returned"
        self.ev("return" if kind == "callback" else "io-return", name, status=st)
        return st

    def in_callback(self, *names) -> Optional[str]:
        """The innermost driver callback of the current thread among `names`, if any."""
        for _, _, c, _ in reversed(self.current.pending):
            if c.name in names:
                return c.name
        return None

    def _settle(self):
        """Generator helper: wait until every work item that can run has run (or blocked)."""
        yield Block(Wait("settle", "the work items to settle"))

    @hook("harness", "AfterEntry", 0, rule=None)
    def _h_after_entry(self, emu, api, func, argv):
        def gen():
            yield from self._settle()
            for action, what in self.scenario.after_entry:
                if self.deregistered:
                    break
                if action == "register":
                    self.ev("provider", "provider registers", text=what.describe())
                    yield from self._attach_gen(what)
                elif action == "deregister":
                    self.ev("provider", "provider deregisters", text=what)
                    for b in self.bindings:
                        if b.provider.name == what and b.state == "attached":
                            yield from self._detach_gen(b, "provider deregistration")
                else:
                    raise HarnessError("unknown after_entry action %r" % action)
                yield from self._settle()
            if self.scenario.client:  # the remote client's steps (provider.py)
                yield from self._client_script_gen()
            self.settled_at = self.now
            if self.scenario.unload_after_ms:
                deadline = self.now + self.scenario.unload_after_ms * TICKS_PER_MS
                yield Block(Wait("time", "sc stop at t=%s" % seconds(deadline),
                                 deadline=deadline))
                self.ev("provider", "sc stop", text="t = %s" % seconds(self.now))
            return 0
        return self._start(gen())

    def live_devices(self):
        """The device objects of the driver not deleted (they keep the image mapped)."""
        return [d for d in self.devices
                if d.deleted_seq is None and d.driver_object == self.driver_object]

    def _image_unmapped(self, when: str):
        """The image goes (DriverUnload returned with no device object left, a failed
        DriverEntry, or the system shutdown): nothing of it may still be queued or running, and
        no NMR client of it still registered."""
        self._check_nothing_left(when)
        self._system_threads_running(when)
        self._timers_left(when)
        self._nmr_unmapped(when)

    @hook("harness", "SystemShutdown", 0, rule=None)
    def _h_system_shutdown(self, emu, api, func, argv):
        """The system shuts down with the image still mapped (DriverUnload left a device
        object): once what is queued has run, NMR detaches the bindings of a client still
        registered (nmr.py), then the device objects go (deleted by the system, not the
        driver) and the image is unmapped."""
        def gen():
            yield from self._settle()
            yield from self._nmr_shutdown_gen()
            for d in self.live_devices():
                d.deleted_seq = self.ev("device", "device object deleted by the system",
                                        {"DeviceObject": d.address}).seq
            yield from self._settle()
            self._image_unmapped("the system shutdown")
            return 0
        return self._start(gen())

    # What the models check once the image may be unmapped (DriverUnload ran, or DriverEntry
    # failed), in this order: each reports what its subsystem still holds.
    LEFT_AT_END = ("_wsk_registrations_left", "_devices_left", "_keys_left", "_work_items_left",
                   "_thread_handles_left", "_pool_left", "_irps_left", "_mdls_left",
                   "_sockets_left")

    def run(self) -> Result:
        self._build()
        self.se.run_module(self.module, all_entrypoints=True)
        for t in self.threads:
            if t.pending and t.state in ("running", "blocked"):
                self.violation("emulation ended inside %d driver callback(s) on %s"
                               % (len(t.pending), t.name))
        self._nmr_left()
        failed_entry = self.entry_status is None or bool(self.entry_status & 0x80000000)
        if self.unload_ran or failed_entry:
            when = ("the system shutdown" if self.image_kept else "unload" if self.unload_ran
                    else "failed DriverEntry")
            for check in self.LEFT_AT_END:
                getattr(self, check)(when)
        stack = max((t.stack_used for t in self.threads), default=0)
        return Result(scenario=self.scenario, image=self.image, profile=self.profile,
                      events=self.events,
                      bindings=self.bindings, allocations=self.alloc_list,
                      violations=self.violations, entry_status=self.entry_status,
                      unload_ran=self.unload_ran, unload_set=self.unload_ptr,
                      run_errors=self.run_errors, client_handle=self.client_handle,
                      characteristics=self.client, image_base=self.module.get_base(),
                      image_size=self.module.get_image_size(),
                      stack_used=stack, devices=self.devices, work_items=self.work_items,
                      kevents=list(self.kevents.values()), wsk_registrations=self.wsk_regs,
                      threads=self.threads, clock=self.now,
                      unload_completed=self.unload_completed, image_kept=self.image_kept,
                      irps=self.irps, mdls=self.mdls,
                      sockets=self.sockets, mdl_requests=self.mdl_requests,
                      call_counts=self.call_counts, injected=self.injected,
                      long_work_items=self.long_work_items)
