"""The trace printer: a run (Result) as text, for someone who has never seen the driver run —
the scenario, every call between the driver and the system in order with its thread and time,
and a summary of what was left and what went wrong.
"""
import struct

from .abi import (EVENT_TYPES, KERNEL_STACK_SIZE, NON_PAGED_POOL, NON_PAGED_POOL_NX,
                  POOL_FLAG_NON_PAGED, REG_DWORD, REG_SZ, STATUS_SUCCESS, STATUS_TIMEOUT,
                  WORK_QUEUES, WSK_INFINITE_WAIT, WSK_NO_WAIT, pool_tag, seconds, status_name,
                  tag_name, version_name)
from .irql import level_name
from .records import Result
from .scenario import Provider


def _fmt_args(args: dict) -> str:
    parts = []
    for k, v in args.items():
        if k.startswith("*") or k in ("blocked", "item"):
            continue
        if v is None:
            v = "NULL" if k != "Timeout" else "NULL (no timeout)"
        elif isinstance(v, int):
            if k in ("ClientDispatch.Version", "Dispatch.Version"):
                v = "WSK " + version_name(v)
            elif k == "Tag":
                v = tag_name(v)
            elif k in ("NumberOfBytes", "ComponentId", "Level", "dwOSVersionInfoSize",
                       "DeviceExtensionSize", "WaitReason", "WaitMode", "Alertable", "Exclusive",
                       "State", "Length", "StackSize", "ChargeQuota", "SecondaryBuffer",
                       "Information", "InvokeOnSuccess", "InvokeOnError", "InvokeOnCancel",
                       "AddressFamily", "SocketType", "Protocol"):
                v = str(v)
            elif k == "Status":
                v = status_name(v)
            elif k == "Flags":
                v = "0x%x%s" % (v, " (POOL_FLAG_NON_PAGED)" if v == POOL_FLAG_NON_PAGED else "")
            elif k == "PoolType":
                v = "%d%s" % (v, {NON_PAGED_POOL_NX: " (NonPagedPoolNx)",
                                  NON_PAGED_POOL: " (NonPagedPool)"}.get(v, ""))
            elif k == "QueueType":
                v = "%d (%s)" % (v, WORK_QUEUES.get(v, "?"))
            elif k == "Type":
                v = "%d (%s)" % (v, EVENT_TYPES.get(v, "?"))
            elif k == "WaitTimeout":
                v = {WSK_NO_WAIT: "WSK_NO_WAIT", WSK_INFINITE_WAIT: "WSK_INFINITE_WAIT"}.get(
                    v, "%d ms" % v)
            elif k == "Timeout":
                v = ("%d (%s %s)" % (v, "relative" if v < 0 else "absolute",
                                     seconds(abs(v))) if v else "0 (poll)")
            else:
                v = "0x%x" % v
        elif isinstance(v, str):
            v = '"%s"' % v if k == "SystemRoutineName" else v
        parts.append("%s=%s" % (k, v))
    return ", ".join(parts)


def format_trace(r: Result) -> str:
    """A trace for someone who has never seen the driver run."""
    L = []
    sc = r.scenario
    backend = r.profile.backend
    L.append("=" * 78)
    L.append("%s under Speakeasy  --  scenario '%s'" % (r.profile.image_name, sc.name))
    L.append("  image:    %s" % r.image)
    L.append("  driver:   %s (log prefix '%s', service %s, %s backend)" % (
        r.profile.name, r.profile.prefix.rstrip(), r.profile.service,
        "raw NMR" if backend == "nmr" else "WskRegister"))
    L.append("  scenario: %s" % sc.describe_for(r.profile))
    if backend == "nmr":
        if sc.providers:
            for p in sc.providers:
                L.append("  provider registered before load: %s" % p.describe())
        else:
            L.append("  no provider registered when the driver loads")
        for action, what in sc.after_entry:
            L.append("  later: provider %s %s" % (action, what if isinstance(what, str)
                                                   else what.describe()))
    else:
        if sc.providers:
            L.append("  WSK subsystem ready at load: %s" % sc.providers[0].describe())
        elif sc.wsk_ready_after_ms is None:
            L.append("  WSK subsystem never ready (WskCaptureProviderNPI: "
                     "STATUS_DEVICE_NOT_READY)")
        else:
            L.append("  WSK subsystem ready %d ms after load: %s"
                     % (sc.wsk_ready_after_ms, Provider().describe()))
    L.append("  Windows version (RtlGetVersion): %d.%d build %d" % sc.windows_version)
    L.append("  ExAllocatePool2 available: %s" % ("yes" if sc.exallocatepool2 else
                                                 "no (pre-Windows 10 2004 kernel)"))
    if sc.fail_pool_allocations:
        L.append("  every pool allocation fails")
    if sc.fail_binding_allocations:
        L.append("  every allocation of a binding context (tag %s) fails"
                 % tag_name(pool_tag(r.profile.binding_tag)))
    if sc.fail_allocations:
        L.append("  pool allocation(s) number %s fail" % ", ".join(map(str, sc.fail_allocations)))
    if sc.register_status != STATUS_SUCCESS:
        L.append("  %s returns %s" % ("NmrRegisterClient" if backend == "nmr" else "WskRegister",
                                      status_name(sc.register_status)))
    if sc.create_device_status != STATUS_SUCCESS:
        L.append("  IoCreateDevice returns %s" % status_name(sc.create_device_status))
    if sc.work_delay_ms:
        L.append("  a work item starts %d ms after it is queued" % sc.work_delay_ms)
    if sc.unload_after_ms:
        L.append("  sc stop %d ms after the driver's start has settled" % sc.unload_after_ms)
    for key, values in sc.registry.items():
        shown = []
        for name, (kind, data) in values.items():
            if kind == REG_SZ:
                shown.append("%s=%r" % (name, data.decode("utf-16-le", "replace").rstrip("\0")))
            elif kind == REG_DWORD and len(data) == 4:
                shown.append("%s=%d" % (name, struct.unpack("<I", data)[0]))
            else:
                shown.append("%s=(type %d, %d bytes)" % (name, kind, len(data)))
        L.append("  registry: service key\\%s: %s" % (key, ", ".join(shown)))
    if sc.peer:
        extra = [x for x, on in (
            ("IoCancelIrp does nothing", sc.peer_ignores_cancel),
            ("WskDisconnect is a stub", sc.disconnect_stub),
            ("requests completed inside the call", sc.complete_inline),
            ("at most %d bytes per receive" % sc.peer_chunk, sc.peer_chunk),
            ("WskControlSocket is a stub", sc.control_stub),
            ("no datagram sockets", not sc.datagram_sockets)) if on]
        L.append("  sockets: the peer %s%s" % (
            {"echo": "echoes", "refuse": "refuses connections",
             "silent": "never answers",
             "client": "is a remote client of the driver's sockets"}[sc.peer],
            "; " + "; ".join(extra) if extra else ""))
        if sc.client:
            L.append("  the remote client: %s" % ", ".join(
                " ".join([step[0]] + ["%r" % x for x in step[1:]]) for step in sc.client))
    if sc.detach_irql != "PASSIVE_LEVEL":
        L.append("  NMR calls ClientDetachProvider and ClientCleanupBindingContext at %s"
                 % sc.detach_irql)
    if sc.fail_irp_allocations:
        L.append("  IoAllocateIrp returns NULL")
    if sc.fail_mdl_allocations:
        L.append("  IoAllocateMdl returns NULL")
    L.append("")
    L.append("Legend: '->' NMR/kernel answers the driver; '<=' NMR calls into the driver and the "
             "driver returns; 'log' is the driver's own DbgPrintEx output; '~~' the harness "
             "switches threads or lets time pass (t = emulated time since load); '!!' a rule "
             "broken; '!~' a break of the work item rule by a known offender, allowed.")
    L.append("-" * 78)
    prev_thread = None
    for e in r.events:
        ind = "  " * (e.depth + 1)
        if e.kind not in ("run", "thread") and e.thread != prev_thread and prev_thread is not None:
            L.append("  ~~ on %s, t = %s" % (e.thread, seconds(e.time)))
        if e.kind != "thread":
            prev_thread = e.thread
        if e.kind == "run":
            if e.name.endswith(("returned", "done", "abandoned")):
                extra = ""
                if e.status is not None:
                    extra = " -> %s" % status_name(e.status)
                if e.name in ("DriverEntry returned", "DriverEntry abandoned"):
                    extra += ("; DriverObject->DriverUnload = 0x%x" % e.args["DriverUnload"]
                              if e.args.get("DriverUnload") else "; DriverUnload NOT set")
                L.append("%s%s%s" % (ind, e.name, extra))
                L.append("")
            else:
                L.append("[%s] %s (t = %s)" % (e.name, _fmt_args(e.args) or e.text,
                                               seconds(e.time)))
        elif e.kind == "thread":
            L.append("  ~~ %s" % e.text)
            prev_thread = e.thread
        elif e.kind == "log":
            lvl = e.args.get("Level")
            L.append("%slog%s: %s" % (ind, "" if lvl is None else "[%d]" % lvl,
                                      e.text.rstrip("\n")))
        elif e.kind == "nmr":
            st = " -> %s" % status_name(e.status) if e.status is not None else ""
            if any(x.kind == "nmr-return" and x.name == e.name for x in r.events):
                st = "  ..."  # its status follows, after the callbacks NMR makes meanwhile
            if e.name == "NmrClientAttachProvider" and "ClientDispatch.Version" in e.args:
                a = e.args
                L.append("%sNmrClientAttachProvider(ClientDispatch->Version = WSK %s)%s" % (
                    ind, version_name(a["ClientDispatch.Version"]), st))
                L.append("%s   NmrBindingHandle=0x%x ClientBindingContext=0x%x ClientDispatch=0x%x"
                         " out-pointers: ProviderBindingContext at 0x%x, ProviderDispatch at 0x%x"
                         % (ind, a["NmrBindingHandle"], a["ClientBindingContext"],
                            a["ClientDispatch"], a["ProviderBindingContext"],
                            a["ProviderDispatch"]))
            else:
                L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
            if e.args.get("*ProviderBindingContext"):
                L.append("%s   (NMR wrote WSK_CLIENT 0x%x and WSK_PROVIDER_DISPATCH 0x%x)" % (
                    ind, e.args["*ProviderBindingContext"], e.args["*ProviderDispatch"]))
        elif e.kind == "callback":
            prov = e.args.get("provider")
            args = {k: v for k, v in e.args.items() if k not in ("provider", "why")}
            why = " [%s]" % e.args["why"] if "why" in e.args else ""
            L.append("%sNMR => driver %s(%s)%s at %s" % (ind, e.name, _fmt_args(args), why,
                                                      level_name(e.irql)))
            if prov:
                L.append("%s   provider: %s" % (ind, prov))
        elif e.kind == "return":
            if e.name == "ClientCleanupBindingContext":
                L.append("%s<= %s returned" % (ind, e.name))
            else:
                L.append("%s<= %s returned %s" % (ind, e.name, status_name(e.status)))
        elif e.kind in ("nmr-return", "ke-return", "wskreg-return"):
            L.append("%s%s returned %s%s" % (ind, e.name, status_name(e.status),
                                             " (%s)" % e.text if e.text else ""))
            if e.args.get("*Dispatch"):
                L.append("%s   (wrote WSK_PROVIDER_NPI: Client 0x%x, Dispatch 0x%x with Version "
                         "WSK %s)" % (ind, e.args["*Client"], e.args["*Dispatch"],
                                      version_name(e.args["*Dispatch.Version"])))
        elif e.kind == "pool":
            if e.name.startswith("ExFree"):
                L.append("%spool: %s(%s)" % (ind, e.name, _fmt_args(e.args)))
            else:
                L.append("%spool: %s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                                   "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "kernel" and e.name.startswith("Zw"):
            L.append("%s%s(%s) -> %s" % (ind, e.name, _fmt_args(e.args), status_name(e.status)))
        elif e.kind == "kernel" and e.name == "RtlGetVersion":
            L.append("%s%s(%s) -> %s: %s" % (ind, e.name, _fmt_args(e.args), status_name(e.status),
                                            e.text))
        elif e.kind == "kernel":
            L.append("%s%s(%s) -> %s" % (ind, e.name, _fmt_args(e.args),
                                         "0x%x" % e.status if e.status else "NULL"))
        elif e.kind == "device":
            if e.name == "IoCreateDevice":
                out = ("STATUS_SUCCESS, DeviceObject 0x%x" % e.args["*DeviceObject"]
                       if e.status == STATUS_SUCCESS else status_name(e.status))
                L.append("%sIoCreateDevice(%s) -> %s" % (ind, _fmt_args(e.args), out))
            else:
                L.append("%s%s(%s)" % (ind, e.name, _fmt_args(e.args)))
        elif e.kind == "work":
            item = e.args.get("item")
            tag = " [work item %d]" % item if item else ""
            if e.name == "IoAllocateWorkItem":
                L.append("%sIoAllocateWorkItem(%s) -> %s%s" % (
                    ind, _fmt_args(e.args), "0x%x" % e.status if e.status else "NULL", tag))
            elif e.name == "work item runs":
                L.append("%swork item %d: WorkerRoutine 0x%x(DeviceObject=0x%x, Context=0x%x)"
                         % (ind, item, e.args["WorkerRoutine"], e.args["DeviceObject"],
                            e.args["Context"]))
            elif e.name == "work item done":
                L.append("%swork item %d: WorkerRoutine returned" % (ind, item))
            else:
                L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), tag))
        elif e.kind == "ke":
            st = ""
            if e.name == "KeWaitForSingleObject":
                st = ("  ... blocks: %s" % e.args.get("*event") if e.args.get("blocked")
                      else " -> %s" % status_name(e.status))
            elif e.name in ("KeSetEvent", "KeResetEvent") and e.status is not None:
                st = " -> %d (previous state)" % e.status
            L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
        elif e.kind == "wskreg":
            if e.args.get("blocked"):
                st = "  ... waits"
            elif e.status is not None:
                st = " -> %s" % status_name(e.status)
            else:
                st = ""
            L.append("%s%s(%s)%s" % (ind, e.name, _fmt_args(e.args), st))
            if e.args.get("*Dispatch"):
                L.append("%s   (wrote WSK_PROVIDER_NPI: Client 0x%x, Dispatch 0x%x with Version "
                         "WSK %s)" % (ind, e.args["*Client"], e.args["*Dispatch"],
                                      version_name(e.args["*Dispatch.Version"])))
        elif e.kind == "wsk":
            where = "provider dispatch" if "Socket" not in e.args else \
                "socket %s" % e.args.get("*socket", "?")
            L.append("%sWSK %s: %s(%s) -> %s%s" % (ind, where, e.name, _fmt_args(e.args),
                                                 status_name(e.status),
                                                 " (%s)" % e.text if e.text else ""))
            if e.args.get("*data") is not None:
                L.append("%s   data: %r" % (ind, e.args["*data"]))
            if "*WskReceiveEvent" in e.args:
                L.append("%s   AcceptSocketDispatch: %s" % (ind, ", ".join(
                    "%s %s" % (n, "0x%x" % e.args["*" + n] if e.args["*" + n] else "NULL")
                    for n in ("WskReceiveEvent", "WskDisconnectEvent", "WskSendBacklogEvent"))))
        elif e.kind == "io":
            tag = ""
            if "*irp" in e.args:
                tag = " [IRP %d]" % e.args["*irp"]
            elif "*mdl" in e.args:
                tag = " [MDL %d]" % e.args["*mdl"]
            if e.name == "IoCompleteRequest":
                L.append("%s%s completes the IRP of %s%s: IoStatus = {%s, %d}" % (
                    ind, e.text or "provider", e.args["op"], tag, status_name(e.args["Status"]),
                    e.args["Information"]))
            elif e.name in ("IoAllocateIrp", "IoAllocateMdl"):
                L.append("%s%s(%s) -> %s%s" % (ind, e.name, _fmt_args(e.args),
                                               "0x%x" % e.status if e.status else "NULL", tag))
            elif e.name == "IoCancelIrp":
                L.append("%sIoCancelIrp(%s) -> %s%s%s" % (
                    ind, _fmt_args(e.args), {1: "TRUE", 0: "FALSE"}.get(e.status, "?"), tag,
                    " (%s)" % e.text if e.text else ""))
            elif e.name in ("IoSetCompletionRoutineEx", "IofCallDriver"):
                L.append("%s%s(%s) -> %s%s" % (ind, e.name, _fmt_args(e.args),
                                               status_name(e.status), tag))
            else:
                L.append("%s%s(%s)%s%s" % (ind, e.name, _fmt_args(e.args), tag,
                                           " (%s)" % e.text if e.text else ""))
        elif e.kind == "wsk-callback":
            L.append("%sWSK provider => driver %s(%s) at %s" % (ind, e.name, _fmt_args(e.args),
                                                             level_name(e.irql)))
        elif e.kind == "io-callback":
            L.append("%sI/O manager => driver %s(%s) at %s" % (ind, e.name, _fmt_args(e.args),
                                                            level_name(e.irql)))
        elif e.kind == "io-return":
            L.append("%s<= %s returned %s" % (ind, e.name, status_name(e.status)))
        elif e.kind == "provider":
            L.append("%s%s: %s" % (ind, e.name, e.text))
        elif e.kind == "violation":
            L.append("%s!! %s" % (ind, e.text))
        elif e.kind == "known":
            L.append("%s!~ %s" % (ind, e.text))
    L.append("-" * 78)
    L.append("Summary")
    L.append("  DriverEntry returned %s" % status_name(r.entry_status))
    for b in r.bindings:
        tries = ", ".join("WSK %s -> %s" % (version_name(t.version), status_name(t.status))
                          for t in b.tries) or "none"
        L.append("  binding 0x%x (%s): attach tries: %s; ClientAttachProvider returned %s; "
                 "final state %s" % (b.handle, b.provider.name, tries,
                                     status_name(b.attach_status), b.state))
    for reg in r.wsk_registrations:
        answers = ", ".join("%s -> %s" % (
            {WSK_NO_WAIT: "no wait", WSK_INFINITE_WAIT: "infinite"}.get(w, "%d ms" % w),
            status_name(s)) for w, s in reg.capture_answers) or "none"
        L.append("  WskRegister at WSK %s -> %s; captures: %s; %s" % (
            version_name(reg.version), status_name(reg.status), answers,
            "deregistered" if reg.deregistered_seq is not None else
            ("NOT deregistered" if reg.status == STATUS_SUCCESS else "not registered")))
    bal = r.pool_balance()
    if not bal:
        L.append("  pool: nothing allocated")
    for tag, d in bal.items():
        L.append("  pool tag %s: %d allocated, %d freed, %d outstanding (%d bytes)"
                 % (tag, d["allocated"], d["freed"], d["outstanding"], d["bytes_outstanding"]))
    L.append("  device objects: %d created, %d deleted" % (
        len(r.devices), sum(d.deleted_seq is not None for d in r.devices)))
    L.append("  work items: %d allocated, %d queued, %d ran, %d freed" % (
        len(r.work_items), sum(it.queued_count for it in r.work_items),
        sum(it.runs for it in r.work_items), sum(it.freed for it in r.work_items)))
    L.append("  events: %d initialised, %d set, %d waits (%d timed out)" % (
        len(r.kevents), sum(k.sets for k in r.kevents),
        sum(1 for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"),
        sum(1 for e in r.events if e.kind == "ke" and e.name == "KeWaitForSingleObject"
            and e.status == STATUS_TIMEOUT)))
    if r.irps or r.mdls or r.sockets or r.mdl_requests:
        L.append("  IRPs: %d allocated, %d freed, %d completions; MDLs: %d allocated (%d asked "
                 "for), %d freed; sockets: %d created, %d closed" % (
                     len(r.irps), sum(x.state == "freed" for x in r.irps),
                     sum(x.completions for x in r.irps), len(r.mdls), len(r.mdl_requests),
                     sum(m.freed_seq is not None for m in r.mdls), len(r.sockets),
                     sum(x.state == "closed" for x in r.sockets)))
    L.append("  DriverUnload ran: %s" % ("yes" if r.unload_completed else
                                         ("ABANDONED (it would hang)" if r.unload_ran else "no")))
    L.append("  emulated time at the end: %s" % seconds(r.clock))
    L.append("  stack: %d bytes deep at the deepest API call (of a %d KiB kernel stack)"
             % (r.stack_used, KERNEL_STACK_SIZE // 1024))
    if r.violations:
        L.append("  PROBLEMS (%d):" % len(r.violations))
        for v in r.violations:
            L.append("    - %s" % v)
    if r.run_errors:
        L.append("  EMULATION ERRORS:")
        for err in r.run_errors:
            L.append("    - %s: %s at %s %s" % (err.get("run"), err.get("type"), err.get("pc"),
                                                err.get("api_name", "")))
    allowed: dict = {}
    for v in r.long_work_items:
        message, _, reason = v.partition(" [allowed: ")
        allowed.setdefault(reason[:-1], []).append(message)
    for reason, messages in allowed.items():
        L.append("  work item rule, %d break(s) allowed (%s):" % (len(messages), reason))
        L.extend("    - %s" % m for m in messages)
    if not r.violations and not r.run_errors:
        L.append("  no problems found")
    L.append("=" * 78)
    return "\n".join(L)
