"""The failure matrix under Speakeasy (issue 12, "Reliability 3"): every kernel, NMR and WSK call
the image makes fails, in turn, at every occurrence, with every failure status its documentation
lists — the calls and statuses of tests/failure-matrix.txt, the table the host model reads too.

How: a normal run of the image's own scenario ("echo" with the echoing peer for the images with a
connection, "default" for the seed driver) counts the calls of every function of the table
(harness.Result.call_counts); then one run per (call, occurrence, status) fails that one call
(harness.Scenario.fail_call): a NULL-returning allocator returns NULL, a function returning an
NTSTATUS returns the status, a WSK provider function completes its IRP with it — on a provider
thread after returning STATUS_PENDING, and once more completed inside the call
(Scenario.complete_inline), which then returns the status.

Each run must: make the failure happen (Result.injected), finish (no emulation error, no thread
abandoned: the harness's hang detection), break no harness rule (pool balanced to zero per tag
at unload or after a failed DriverEntry, NMR / WskRegister rules, IRP / MDL / socket / work item /
device rules: Result.violations empty), and show the failure as this module expects it of that
call (expect()): DriverEntry's status when the call is in the load path and fatal, else
STATUS_SUCCESS, and the log lines naming the call or step and the status in hex.

Completeness: a function the image imports, or a provider function it calls, that is neither in
the table nor in its "never fail" block fails test_the_table_covers_every_call_the_image_makes; a
call of the table this image never makes is listed as "not made by this driver" in the summary
printed at the end of the pytest output (conftest.py: pytest_terminal_summary).

Run: WSK_DRIVER_SYS=<image> [WSK_DRIVER_PROFILE=<profile>] \\
    target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_failure_matrix.py -q
"""
import atexit
import dataclasses
import os
import re
import shutil
import tempfile
import time
from typing import Dict, List, Optional, Set, Tuple

import pytest

import harness
from harness import STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, status_name, tag_name

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TABLE_PATH = os.path.join(ROOT, "tests", "failure-matrix.txt")
IMAGE_BUILT = harness.default_image()
PROFILE = harness.profile_for(IMAGE_BUILT)


def _private_copy(path: str) -> str:
    """The image, copied (same file name) for this session: the ~100 runs map the file again and
    again, and a rebuild replacing it meanwhile would crash them (SIGBUS in pefile's mmap)."""
    if not os.path.isfile(path):
        return path
    directory = tempfile.mkdtemp(prefix="failure-matrix-")
    atexit.register(shutil.rmtree, directory, True)
    copy = os.path.join(directory, os.path.basename(path))
    shutil.copyfile(path, copy)
    return copy


IMAGE = _private_copy(IMAGE_BUILT)
CONN = PROFILE.connection
NMR = PROFILE.backend == "nmr"
BASE_SCENARIO = "echo" if CONN else "default"
HOWS = ("null", "return", "irp")
STATUS_CANCELLED = harness.STATUS_CANCELLED


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Entry:
    name: str
    how: str
    statuses: List[Tuple[str, int]]
    line: int


def parse_table(path: str = TABLE_PATH) -> Tuple[Dict[str, Entry], Set[str]]:
    """(entries by call name, the names of the "never fail" comment block). Raises ValueError on a
    malformed line."""
    entries: Dict[str, Entry] = {}
    never: Set[str] = set()
    in_never = False
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            text = raw.rstrip("\n")
            if text.startswith("#"):
                if "never fail" in text and text.startswith("# ---"):
                    in_never = True
                elif text.startswith("# ---"):
                    in_never = False
                elif in_never:
                    never.update(re.findall(
                        r"\b(?:Ex|Iof|Io|Ke|Mm|Rtl|Nmr|Wsk|Zw|Dbg)[A-Z][A-Za-z0-9]*\b", text))
                continue
            text = text.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) < 3:
                raise ValueError("%s:%d: '<CallName> <how> <STATUS>=<0xHEX>...' expected"
                                 % (path, number))
            name, how, statuses = parts[0], parts[1], []
            if how not in HOWS:
                raise ValueError("%s:%d: how %r is not one of %s" % (path, number, how, HOWS))
            if name in entries:
                raise ValueError("%s:%d: %s listed twice" % (path, number, name))
            for item in parts[2:]:
                m = re.fullmatch(r"(STATUS_[A-Z0-9_]+)=0x([0-9A-F]{8})", item)
                if not m:
                    raise ValueError("%s:%d: %r is not STATUS_NAME=0x + 8 uppercase hex digits"
                                     % (path, number, item))
                value = int(m.group(2), 16)
                if value >> 30 not in (2, 3):  # warnings and errors only: never NT_SUCCESS
                    raise ValueError("%s:%d: %s is not a failure status" % (path, number, item))
                known = harness.STATUS_NAMES.get(value)
                if known is not None and known != m.group(1):
                    raise ValueError("%s:%d: 0x%08X is %s, not %s" % (path, number, value,
                                                                      known, m.group(1)))
                statuses.append((m.group(1), value))
            if how == "null" and statuses != [("STATUS_INSUFFICIENT_RESOURCES",
                                               STATUS_INSUFFICIENT_RESOURCES)]:
                raise ValueError("%s:%d: a NULL-returning call reports "
                                 "STATUS_INSUFFICIENT_RESOURCES, only" % (path, number))
            entries[name] = Entry(name, how, statuses, number)
    return entries, never


TABLE, NEVER_FAIL = parse_table()


# ---------------------------------------------------------------------------------------------
# The normal run, and the runs of the matrix
# ---------------------------------------------------------------------------------------------
# A call that only a variant of the normal scenario makes is failed in that variant: the pool
# fallback, ExAllocatePoolWithTag, is what the drivers use on a kernel without ExAllocatePool2.
VARIANTS = {
    "ExAllocatePoolWithTag": ("no-ExAllocatePool2",
                              dict(exallocatepool2=False, windows_version=(10, 0, 18363))),
}


def scenario_for(variant: str) -> harness.Scenario:
    sc = harness.SCENARIOS[BASE_SCENARIO]
    for name, overrides in VARIANTS.values():
        if name == variant:
            sc = dataclasses.replace(sc, **overrides)
    return dataclasses.replace(sc)


def _baselines() -> Dict[str, harness.Result]:
    if not os.path.isfile(IMAGE):
        return {}
    out = {"": harness.run_scenario(IMAGE, scenario_for(""))}
    for name, _ in VARIANTS.values():
        out[name] = harness.run_scenario(IMAGE, scenario_for(name))
    return out


BASES = _baselines()
BASE = BASES.get("")


def variant_of(call: str) -> str:
    """The scenario variant the matrix fails `call` in: the normal one, unless only a variant
    makes the call."""
    if BASE is not None and not BASE.call_counts.get(call) and call in VARIANTS:
        return VARIANTS[call][0]
    return ""


def base_of(call: str) -> Optional[harness.Result]:
    return BASES.get(variant_of(call))


def count(call: str) -> int:
    base = base_of(call)
    return base.call_counts.get(call, 0) if base is not None else 0


@dataclasses.dataclass(frozen=True)
class Case:
    call: str
    occurrence: int
    status_name: str
    status: int
    inline: bool = False

    @property
    def variant(self) -> str:
        return variant_of(self.call)

    @property
    def id(self) -> str:
        return "%s#%d-%s%s%s" % (self.call, self.occurrence, self.status_name,
                                 "-inline" if self.inline else "",
                                 "-" + self.variant if self.variant else "")


def cases() -> List[Case]:
    out = []
    if BASE is None:
        return out
    for entry in TABLE.values():
        for occurrence in range(1, count(entry.name) + 1):
            for sname, st in entry.statuses:
                out.append(Case(entry.name, occurrence, sname, st))
                if entry.how == "irp":
                    out.append(Case(entry.name, occurrence, sname, st, inline=True))
    return out


CASES = cases()
DURATIONS: Dict[str, float] = {}
OUTCOMES: Dict[str, str] = {}


def run_case(case: Case) -> harness.Result:
    base = scenario_for(case.variant)
    sc = dataclasses.replace(base, fail_call=(case.call, case.occurrence, case.status),
                             complete_inline=case.inline or base.complete_inline)
    started = time.monotonic()
    try:
        return harness.run_scenario(IMAGE, sc)
    finally:
        DURATIONS[case.id] = time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# What each failure must look like
# ---------------------------------------------------------------------------------------------
# The step the echo driver names in `echo failed: <step> 0x...` for each provider function.
ECHO_STEP = {"WskSocket": "socket", "WskBind": "bind", "WskConnect": "connect",
             "WskSend": "send", "WskReceive": "receive"}
# The values examples/wsk-echo/src/parameters.rs reads, in order; the optional ones may be absent
# (STATUS_OBJECT_NAME_NOT_FOUND: the default), any other failure is logged and stops the echo.
VALUE_NAMES = ("Host", "Port", "Message", "Bytes", "RoundTrips")
OPTIONAL_VALUES = ("Bytes", "RoundTrips")
ECHO_RESULT = re.compile(r"^echo (ok, \d+ bytes.*|failed: .*)$")


@dataclasses.dataclass
class Expectation:
    entry_status: int = STATUS_SUCCESS
    logs: List[str] = dataclasses.field(default_factory=list)  # regexes, each must match a line
    # With a connection: how the exchange ends: None (no exchange: no result line), "ok", or
    # the regex of its `echo failed:` line (exactly one result line when there is an exchange).
    echo: Optional[str] = "ok"
    allowed_violations: List[str] = dataclasses.field(default_factory=list)  # regexes
    why: str = ""
    # DriverUnload returns with its device object left (the image stays mapped until the
    # system's shutdown).
    image_kept: bool = False


def hx(status: int) -> str:
    return "0x%08X" % (status & 0xFFFFFFFF)


def with_status(text: str, status: int) -> str:
    """The regex of a line that names a failure, the status after it optional (`: 0x...`): the
    library's lines for a NULL allocation need not repeat STATUS_INSUFFICIENT_RESOURCES."""
    return r"%s(?:: %s)?" % (text, hx(status))


def _nth(items, n):
    return items[n - 1] if 0 < n <= len(items) else None


def call_event(base: harness.Result, call: str, n: int, kinds=("pool", "io")) -> harness.Event:
    """The event of the n-th call of `call` in the normal run."""
    events = [e for e in base.events if e.kind in kinds and e.name == call]
    assert len(events) >= n, "call %d of %s not in the normal run" % (n, call)
    return events[n - 1]


def step_after(base: harness.Result, event: harness.Event) -> Optional[str]:
    """The provider function the driver called next on the same thread, in the normal run: the
    operation a request prepared at `event` was for (a request is prepared just before its call;
    a socket's close request before its WskSocket)."""
    for e in base.events[event.seq + 1:]:
        if e.kind == "wsk" and e.thread == event.thread:
            return e.name
    return None


def _request_step(op: Optional[str], status: int, exp: Expectation):
    """A request of the library (irp.rs) could not be made for `op`: what follows in the echo."""
    if op in ECHO_STEP:
        exp.echo = r"echo failed: %s %s" % (ECHO_STEP[op], hx(status))
    elif op == "WskDisconnect":
        # The stop's graceful disconnect: its result is ignored (the close follows).
        exp.echo = "ok"
    else:
        # A socket's close has its request prepared with the socket (before WskSocket): a request
        # made for a close at the close is a regression.
        raise AssertionError("a request for %r in the normal run: expectation unknown" % op)


def _work_item_step(j: int, status: int, exp: Expectation, what: str):
    """The j-th work item of the normal run (`what`: its "context" — a block with the work item
    tag — or its "IO_WORKITEM") could not be made. The NMR backend makes one first, with the
    binding context, for the binding's detach notice (crates/wsk-client/src/detach.rs): without
    it the attach fails (no binding, so the connection waits for one until the unload cancels
    it); then comes the connection's task's (crates/wsk-client/src/kernel/task.rs: its
    IO_WORKITEM; a task has no context block, it is its own): not spawned, no exchange; then the
    one a socket's creation allocates to close a socket made for nobody
    (crates/wsk-client/src/net/socket/op.rs): the creation is not requested."""
    h = hx(status)
    if NMR:
        if j == 1:
            exp.logs.append(with_status(r"work item: no pool for its context", status)
                            if what == "context"
                            else with_status(r"work item: IoAllocateWorkItem failed", status))
            exp.logs.append(r"attach failed: no work item for the detach notice: %s" % h)
            if CONN:
                exp.echo = r"echo failed: attach %s" % hx(STATUS_CANCELLED)
            return
        j -= 1
    if CONN and what == "IO_WORKITEM":
        j -= 1
        if j == 0:  # the connection's task: never spawned
            exp.logs.append(with_status(r"task: IoAllocateWorkItem failed", status))
            exp.echo = r"echo failed: start %s" % h
            return
    if CONN and j == 1:  # the socket creation's orphan close: no WskSocket
        exp.logs.append(with_status(r"work item: no pool for its context", status)
                        if what == "context"
                        else with_status(r"work item: IoAllocateWorkItem failed", status))
        exp.echo = r"echo failed: socket %s" % h
    else:
        raise AssertionError("work item %d (%s): expectation unknown" % (j, what))


# The library's line when a failed deregistration keeps its device object (unload.rs).
KEPT = r"unload: deregistration failed: the device object is kept, the image stays loaded"


def expect(case: Case, base: harness.Result) -> Expectation:
    call, n, st = case.call, case.occurrence, case.status
    exp = Expectation(echo="ok" if CONN else None)
    h = hx(st)
    if call in ("ExAllocatePool2", "ExAllocatePoolWithTag"):
        allocs = [a for a in base.allocations if a.api == call]
        a = _nth(allocs, n)
        assert a is not None, "allocation %d of %s not in the normal run" % (n, call)
        tag = tag_name(a.tag).strip("'")
        same_tag = [x for x in base.allocations if x.tag == a.tag]
        j = same_tag.index(a) + 1  # the j-th block of that tag
        buffers = {x.address for x in base.buffer_allocations}
        exp.why = "block %d of tag %s" % (j, tag)
        if tag in PROFILE.own_tags:
            exp.entry_status = st
            exp.logs.append(with_status(re.escape(PROFILE.setup_failure_log), st))
            exp.echo = None
        elif tag == PROFILE.binding_tag:
            if NMR:
                exp.logs.append(with_status(r"attach failed: no pool for the binding context",
                                            st))
                if CONN:  # no binding: the exchange waits for one until the unload cancels it
                    exp.echo = r"echo failed: attach %s" % hx(STATUS_CANCELLED)
            else:
                exp.entry_status = st
                exp.logs.append(with_status(r"capture: no pool for the binding context", st))
                exp.echo = None
        elif tag == PROFILE.work_item_tag:
            _work_item_step(j, st, exp, "context")
        elif tag == PROFILE.connection_tag:  # the connection's task: never spawned
            exp.logs.append(with_status(r"task: no pool for it", st))
            exp.echo = r"echo failed: start %s" % h
        elif tag == PROFILE.parameters_tag:  # the connection's parameters, before the spawn
            exp.echo = r"echo failed: start %s" % h
        elif tag == PROFILE.binding_tag[:3] + "I":
            exp.logs.append(with_status(r"request: no pool for its context", st))
            op = step_after(base, call_event(base, call, n))
            exp.why += ", the request prepared for %s" % op
            _request_step(op, st, exp)
        elif a.address in buffers:
            exp.logs.append(with_status(r"buffer: no pool for %d bytes" % a.size, st))
            exp.echo = r"echo failed: buffer %s" % h
        else:
            raise AssertionError("allocation %d (tag %s) of the normal run: expectation unknown"
                                 % (n, tag))
    elif call == "IoAllocateIrp":
        op = step_after(base, call_event(base, call, n))
        exp.why = "the request prepared for %s" % op
        exp.logs.append(with_status(r"request: IoAllocateIrp failed", st))
        _request_step(op, st, exp)
    elif call == "IoSetCompletionRoutineEx":
        op = step_after(base, call_event(base, call, n))
        exp.why = "the request prepared for %s" % op
        exp.logs.append(r"request: IoSetCompletionRoutineEx failed: %s" % h)
        _request_step(op, st, exp)
    elif call == "IoAllocateMdl":
        exp.logs.append(with_status(r"buffer: IoAllocateMdl failed", st))
        exp.echo = r"echo failed: buffer %s" % h
    elif call == "IoAllocateWorkItem":
        _work_item_step(n, st, exp, "IO_WORKITEM")
    elif call == "IoCreateDevice":
        exp.entry_status = st
        exp.logs.append(r"register: IoCreateDevice failed: %s" % h)
        exp.echo = None
    elif call == "ZwOpenKey":
        exp.logs.append([r"parameters: the service key missing \(%s\): no echo",
                         r"parameters: no Parameters key \(%s\): no echo"][n - 1] % h)
        exp.logs.append(re.escape(harness.driver_profiles.CONNECTION_OPEN_LOG))
        exp.echo = None
    elif call == "ZwQueryValueKey":
        name = VALUE_NAMES[n - 1]
        exp.why = "the value %s" % name
        if name in OPTIONAL_VALUES and st == harness.STATUS_OBJECT_NAME_NOT_FOUND:
            return exp  # an optional value that is not there: the default, the echo as usual
        exp.logs.append(r"parameters: %s missing \(%s\): no echo" % (name, h))
        exp.logs.append(re.escape(harness.driver_profiles.CONNECTION_OPEN_LOG))
        exp.echo = None
    elif call in ("NmrRegisterClient", "WskRegister"):
        exp.entry_status = st
        exp.logs.append(r"NmrRegisterClient failed: %s" % h if call == "NmrRegisterClient"
                        else r"WskRegister with WSK 1\.1: %s" % h)
        exp.echo = None
    elif call == "NmrClientAttachProvider":
        exp.logs.append(r"attach tried WSK 1\.1: %s" % h)
        if st == harness.STATUS_NOINTERFACE:  # the documented fallback
            exp.logs += [r"fallback from WSK 1\.1 to WSK 1\.0",
                         r"attach tried WSK 1\.0: 0x00000000",
                         r"attached at WSK 1\.0"]
        else:
            exp.logs.append(r"attach failed: %s" % h)
            if CONN:
                exp.echo = r"echo failed: attach %s" % hx(STATUS_CANCELLED)
    elif call == "NmrDeregisterClient":
        # NMR did not begin the deregistration, so the binding stays attached and its context
        # (and its detach notice's work item) stay allocated: NMR still points at it, and may call
        # the client at any time. The library logs it, does not wait
        # (NmrWaitForClientDeregisterComplete is only for a successful deregistration) and keeps
        # its device object, so that the image stays mapped for NMR; the system's shutdown then
        # detaches the binding into the mapped image, and nothing is left.
        exp.logs.append(r"NmrDeregisterClient failed: %s" % h)
        exp.logs.append(KEPT)
        exp.logs.append(r"unloaded, live pool allocations: 2")
        exp.image_kept = True
    elif call == "NmrWaitForClientDeregisterComplete":
        # Whether the deregistration ended is unknown: the device object is kept (the image
        # stays mapped) all the same.
        exp.logs.append(r"NmrWaitForClientDeregisterComplete failed: %s" % h)
        exp.logs.append(KEPT)
        exp.image_kept = True
    elif call == "WskCaptureProviderNPI":
        if st == harness.STATUS_DEVICE_NOT_READY:  # captured later, by a task
            exp.logs += [r"WSK provider not ready(?: \(%s\))?: capturing from a task, every "
                         r"1000 ms" % h,
                         r"captured the WSK provider NPI, attached at WSK 1\.1"]
        elif st == harness.STATUS_NOINTERFACE:  # re-registered at 1.0
            exp.logs += [r"WskCaptureProviderNPI: STATUS_NOINTERFACE, falling back",
                         r"WskRegister with WSK 1\.0: 0x00000000",
                         r"captured the WSK provider NPI, attached at WSK 1\.0"]
        else:
            exp.entry_status = st
            exp.logs.append(r"WskCaptureProviderNPI failed: %s" % h)
            exp.echo = None
    elif call in ECHO_STEP:
        exp.logs.append(r"socket: %s failed: %s" % (call, h))
        exp.echo = r"echo failed: %s %s" % (ECHO_STEP[call], h)
    elif call in ("WskDisconnect", "WskCloseSocket"):  # at the unload, after the exchange
        exp.logs.append(r"socket: %s failed: %s" % (call, h))
    else:
        raise AssertionError("%s is in the table but this module has no expectation for it: "
                             "write one" % call)
    return exp


def check(case: Case, r: harness.Result, exp: Expectation) -> List[str]:
    """Every way the run differs from the expectation (empty: as expected)."""
    problems = []
    prefix = PROFILE.prefix
    logs = [line.rstrip("\n") for line in r.logs]
    own = [line[len(prefix):] for line in logs if line.startswith(prefix)]
    if r.injected != [(case.call, case.occurrence, case.status & 0xFFFFFFFF)]:
        problems.append("the failure did not happen: injected %r" % (r.injected,))
    if r.run_errors:
        problems.append("emulation errors: %r" % r.run_errors)
    abandoned = [t.name for t in r.threads if t.state == "abandoned"]
    if abandoned:
        problems.append("threads abandoned (a hang): %s" % ", ".join(abandoned))
    for v in r.violations:
        if not any(re.search(a, v) for a in exp.allowed_violations):
            problems.append("harness rule broken: %s" % v)
    failed_entry = r.entry_status is None or bool(r.entry_status & 0x80000000)
    if r.entry_status != exp.entry_status:
        problems.append("DriverEntry returned %s, expected %s" % (status_name(r.entry_status),
                                                                 status_name(exp.entry_status)))
    if not failed_entry and not r.unload_completed:
        problems.append("DriverUnload did not complete")
    if r.image_kept != exp.image_kept:
        problems.append("DriverUnload returned with %s device object left, expected %s"
                        % ("a" if r.image_kept else "no", "one" if exp.image_kept else "none"))
    if not exp.allowed_violations:
        unbalanced = {t: b for t, b in r.pool_balance().items() if b["outstanding"]}
        if unbalanced:
            problems.append("pool not balanced to zero per tag: %r" % unbalanced)
    for pattern in exp.logs:
        if not any(re.fullmatch(pattern, line) for line in own):
            problems.append("no log line %r" % pattern)
    if CONN:
        results = [line for line in own if ECHO_RESULT.match(line)]
        if exp.echo is None:
            if results:
                problems.append("no exchange expected, but: %r" % results)
        elif len(results) != 1:
            problems.append("exactly one echo result line expected (%s), got %r"
                            % (exp.echo, results))
        elif exp.echo == "ok":
            if not results[0].startswith("echo ok"):
                problems.append("the exchange should succeed: %r" % results[0])
        elif not re.fullmatch(exp.echo, results[0]):
            problems.append("echo result %r, expected %r" % (results[0], exp.echo))
    return problems


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------
def _imports(path: str) -> Set[str]:
    import pefile
    pe = pefile.PE(path, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    return {i.name.decode() for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []) for i in e.imports
            if i.name}


def test_the_table_is_well_formed():
    """Parsed at import already (a malformed line fails the collection); and no call is both in
    the table and in its never-fail block."""
    assert TABLE, "no call in %s" % TABLE_PATH
    assert not set(TABLE) & NEVER_FAIL, "both failable and never failing: %s" % (
        sorted(set(TABLE) & NEVER_FAIL))


def test_the_table_covers_every_call_the_image_makes():
    """Every function the image imports, and every provider function it called in the normal run
    (and ExAllocatePool2, found by MmGetSystemRoutineAddress), is in the table or in its
    never-fail block: a call the driver makes that can fail is never left out of the matrix."""
    assert BASE is not None, "driver image not found: %s" % IMAGE_BUILT
    made = _imports(IMAGE)
    for base in BASES.values():
        made |= {e.name for e in base.socket_calls}
        made |= set(base.call_counts)
    missing = sorted(made - set(TABLE) - NEVER_FAIL)
    assert not missing, ("%s makes calls that are neither in %s nor in its never-fail block: %s"
                         % (PROFILE.name, os.path.relpath(TABLE_PATH, ROOT), missing))


def test_the_normal_runs_are_clean():
    """The runs the matrix starts from (the normal scenario and its variants) break no rule and
    fail nothing."""
    assert BASE is not None, "driver image not found: %s" % IMAGE_BUILT
    for variant, base in BASES.items():
        assert base.violations == [], variant
        assert base.entry_status == STATUS_SUCCESS, variant
        assert base.unload_completed, variant
        assert base.injected == [], variant
    assert CASES, "no call of the table made: the matrix is empty"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_failure(case):
    exp = expect(case, base_of(case.call))
    r = run_case(case)
    problems = check(case, r, exp)
    OUTCOMES[case.id] = "ok" if not problems else "FAILED"
    assert not problems, "%s (%s%s):\n  %s\nlogs:\n  %s" % (
        case.id, PROFILE.name, "; " + exp.why if exp.why else "", "\n  ".join(problems),
        "\n  ".join(line.rstrip("\n") for line in r.logs))


def test_an_injected_failure_that_does_not_fail_is_caught():
    """The matrix can fail: a run whose injected failure does not happen (the harness told to
    fail a call the driver makes one time fewer) is reported by check()."""
    assert CASES, "no call of the table made: the matrix is empty"
    case = CASES[0]
    never = dataclasses.replace(case, occurrence=count(case.call) + 1)
    r = run_case(never)
    problems = check(case, r, expect(case, base_of(case.call)))
    assert any("did not happen" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------
# The summary (printed by conftest.py's pytest_terminal_summary)
# ---------------------------------------------------------------------------------------------
def summary_lines() -> List[str]:
    if BASE is None:
        return ["failure matrix: %s: image not found (%s)" % (PROFILE.name, IMAGE_BUILT)]
    made = [e for e in TABLE.values() if count(e.name)]
    not_made = [e.name for e in TABLE.values() if not count(e.name)]
    statuses = sum(len(e.statuses) for e in made)
    pairs = sum(count(e.name) * len(e.statuses) for e in made)
    inline = sum(count(e.name) * len(e.statuses) for e in made if e.how == "irp")
    ran = [c for c in CASES if c.id in DURATIONS]
    lines = [
        "failure matrix (%s, image %s, scenario '%s'): %d calls of the table made, %d call x "
        "status pairs, %d call x status x occurrence runs + %d again completed inline = %d runs"
        % (PROFILE.name, os.path.relpath(IMAGE_BUILT, ROOT), BASE_SCENARIO, len(made), statuses,
           pairs, inline, len(CASES)),
        "  per call (occurrences x statuses): " + ", ".join(
            "%s %dx%d%s%s" % (e.name, count(e.name), len(e.statuses),
                              " (+inline)" if e.how == "irp" else "",
                              " (scenario variant %s)" % variant_of(e.name)
                              if variant_of(e.name) else "") for e in made),
        "  not made by this driver: " + (", ".join(not_made) or "none"),
        "  ran %d of them in %.1f s (%.2f s each)%s" % (
            len(ran), sum(DURATIONS.values()),
            sum(DURATIONS.values()) / len(ran) if ran else 0.0,
            "; outcomes: " + ", ".join("%d %s" % (list(OUTCOMES.values()).count(k), k)
                                       for k in ("ok", "FAILED")
                                       if k in OUTCOMES.values()) if OUTCOMES else ""),
    ]
    return lines
