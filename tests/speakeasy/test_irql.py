"""IRQL (issue 16, item 3): the harness keeps each thread's current IRQL and checks every kernel,
NMR and WSK function the driver calls against tests/irql-rules.txt (harness/irql.py).

The table's parser; the IRQL each driver callback runs at (DriverEntry, DriverUnload and work
items at PASSIVE_LEVEL, completion routines at DISPATCH_LEVEL, NMR's detach and cleanup at
PASSIVE_LEVEL or, in the `*-at-dispatch` scenarios, DISPATCH_LEVEL); every import of the image
listed; and the check itself, shown catching what it is for on a mutated table: a call above its
limit (ExFreePoolWithTag limited to PASSIVE_LEVEL: a completion routine, or a cleanup at
DISPATCH_LEVEL, freeing pool), a condition's stricter limit (a blocking wait or capture above
PASSIVE_LEVEL), and a function the table lacks.

Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy/test_irql.py
"""
import re

import pefile
import pytest

import harness
from harness import irql
from harness.abi import APC_LEVEL, DIRQL, DISPATCH_LEVEL, PASSIVE_LEVEL
from expected import CONN, NMR, assert_clean, connection_only, nmr_only, wskregister_only

TABLE = irql.load()
with open(irql.TABLE_PATH, encoding="utf-8") as _f:
    TABLE_TEXT = _f.read()


def mutated(name: str, line: str) -> irql.Rules:
    """The table with the line of `name` (a function, or '@Callback') replaced by `line` (empty:
    removed)."""
    pattern = re.compile(r"^%s\s.*$" % re.escape(name), re.M)
    assert len(pattern.findall(TABLE_TEXT)) == 1, name
    return irql.parse(pattern.sub(line, TABLE_TEXT), "mutated irql-rules.txt")


def run_with(image, scenario, rules):
    return harness.run_scenario(image, scenario, irql_rules=rules)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def test_the_table_parses():
    """Every line of tests/irql-rules.txt parses; the limits the issue names are there."""
    assert TABLE.source == "tests/irql-rules.txt"
    assert TABLE.limit("ExFreePoolWithTag") == DISPATCH_LEVEL
    assert TABLE.limit("DbgPrintEx") == DIRQL
    assert TABLE.limit("IoCreateDevice") == PASSIVE_LEVEL
    # KeWaitForSingleObject: DISPATCH_LEVEL with a zero timeout, APC_LEVEL when it may block.
    assert TABLE.limit("KeWaitForSingleObject") == DISPATCH_LEVEL
    assert TABLE.limit("KeWaitForSingleObject", ["wait"]) == APC_LEVEL
    # WskCaptureProviderNPI: PASSIVE_LEVEL with a WaitTimeout other than WSK_NO_WAIT.
    assert TABLE.limit("WskCaptureProviderNPI") == DISPATCH_LEVEL
    assert TABLE.limit("WskCaptureProviderNPI", ["blocking"]) == PASSIVE_LEVEL
    assert TABLE.limit("KeResetEvent") is None  # not listed
    assert TABLE.callbacks["CompletionRoutine"] == [DISPATCH_LEVEL]
    for callback in ("DriverEntry", "DriverUnload", "WorkItemRoutine", "ClientAttachProvider"):
        assert TABLE.callbacks[callback] == [PASSIVE_LEVEL], callback
    for callback in ("ClientDetachProvider", "ClientCleanupBindingContext"):
        assert TABLE.callbacks[callback] == [PASSIVE_LEVEL, DISPATCH_LEVEL], callback
        assert TABLE.callback_irql(callback) == PASSIVE_LEVEL
        assert TABLE.callback_irql(callback, DISPATCH_LEVEL) == DISPATCH_LEVEL
    with pytest.raises(harness.HarnessError, match="CompletionRoutine at DISPATCH_LEVEL only"):
        TABLE.callback_irql("CompletionRoutine", PASSIVE_LEVEL)


@pytest.mark.parametrize("text,error", [
    ("IoFreeIrp HIGH_LEVEL", "'HIGH_LEVEL' is not an IRQL"),
    ("IoFreeIrp", "<Name> <MAX_IRQL>"),
    ("IoFreeIrp DISPATCH_LEVEL\nIoFreeIrp PASSIVE_LEVEL", "t.txt:4: IoFreeIrp listed twice"),
    ("KeWaitForSingleObject DISPATCH_LEVEL sleep=APC_LEVEL", "'sleep=APC_LEVEL' is not"),
    ("KeWaitForSingleObject DISPATCH_LEVEL wait", "'wait' is not <condition>=<MAX_IRQL>"),
    ("KeWaitForSingleObject DISPATCH_LEVEL wait=LOW", "'LOW' is not an IRQL"),
    ("@CompletionRoutine", "'@<Callback> <IRQL>"),
    ("@DriverEntry PASSIVE_LEVEL\n@DriverEntry PASSIVE_LEVEL", "@DriverEntry listed twice"),
])
def test_the_parser_rejects_a_malformed_line(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        irql.parse("# a comment\n\n" + text, "t.txt")


def test_the_parser_reads_comments_conditions_and_callbacks():
    rules = irql.parse("# header\nKeSetEvent DISPATCH_LEVEL  # trailing comment\n"
                       "KeWaitForSingleObject DISPATCH_LEVEL wait=APC_LEVEL\n"
                       "@ClientDetachProvider PASSIVE_LEVEL DISPATCH_LEVEL\n", "t.txt")
    assert set(rules.functions) == {"KeSetEvent", "KeWaitForSingleObject"}
    assert rules.functions["KeWaitForSingleObject"].line == 3
    assert rules.functions["KeWaitForSingleObject"].conditions == {"wait": APC_LEVEL}
    assert rules.limit("KeWaitForSingleObject", ["wait", "blocking"]) == APC_LEVEL
    assert rules.callbacks == {"ClientDetachProvider": [PASSIVE_LEVEL, DISPATCH_LEVEL]}


def test_every_import_of_the_image_is_in_the_table(image):
    """Every function the image imports has its line (the hooks then check each call)."""
    pe = pefile.PE(image, fast_load=True)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]])
    imports = {i.name.decode() for d in pe.DIRECTORY_ENTRY_IMPORT for i in d.imports}
    assert imports and imports - set(TABLE.functions) == set()


# ---------------------------------------------------------------------------------------------
# The IRQL of each callback
# ---------------------------------------------------------------------------------------------
def irqls(r, kind, name):
    return {e.irql for e in r.events if e.kind == kind and e.name == name}


def test_callbacks_run_at_the_irql_of_their_table_line(run):
    """DriverEntry, DriverUnload and work item routines at PASSIVE_LEVEL; NMR's callbacks at
    PASSIVE_LEVEL by default; completion routines at DISPATCH_LEVEL — and what they call is
    checked at that IRQL (the clean run is clean)."""
    r = run("echo" if CONN else "default")
    assert_clean(r)
    assert irqls(r, "run", "DriverEntry") == irqls(r, "run", "DriverUnload") == {PASSIVE_LEVEL}
    assert irqls(r, "work", "work item runs") <= {PASSIVE_LEVEL}
    if NMR:
        for name in ("ClientAttachProvider", "ClientDetachProvider",
                     "ClientCleanupBindingContext"):
            assert irqls(r, "callback", name) == {PASSIVE_LEVEL}, name
    if CONN:
        assert irqls(r, "io-callback", "CompletionRoutine") == {DISPATCH_LEVEL}
        # What a completion routine calls (KeSetEvent at least) is called at DISPATCH_LEVEL.
        inside = [e for e in r.events if e.irql == DISPATCH_LEVEL and e.kind == "ke"]
        assert any(e.name == "KeSetEvent" for e in inside), inside


@nmr_only
@pytest.mark.parametrize("scenario", ["detach-at-dispatch", "provider-detach-at-dispatch"])
def test_detach_and_cleanup_at_dispatch_level_break_no_rule(run, scenario):
    """NMR calls ClientDetachProvider and ClientCleanupBindingContext at DISPATCH_LEVEL (their
    pages allow it): everything the driver does in them is allowed there (the cleanup frees the
    binding context at DISPATCH_LEVEL), and the run is as clean as at PASSIVE_LEVEL."""
    r = run(scenario)
    assert_clean(r)
    for name in ("ClientDetachProvider", "ClientCleanupBindingContext"):
        assert irqls(r, "callback", name) == {DISPATCH_LEVEL}, name
    (cleanup,) = [e for e in r.events if e.kind == "callback"
                  and e.name == "ClientCleanupBindingContext"]
    frees = [e for e in r.events if e.kind == "pool" and e.name == "ExFreePoolWithTag"
             and e.seq > cleanup.seq and e.irql == DISPATCH_LEVEL]
    assert frees, "the cleanup freed nothing at DISPATCH_LEVEL"
    assert "ClientCleanupBindingContext(ClientBindingContext=" in harness.format_trace(r)


# ---------------------------------------------------------------------------------------------
# The check, on mutated tables
# ---------------------------------------------------------------------------------------------
def test_a_call_above_its_limit_is_caught(image):
    """ExFreePoolWithTag limited to PASSIVE_LEVEL: the driver's pool free inside a completion
    routine (the images with a connection), or inside ClientCleanupBindingContext at
    DISPATCH_LEVEL (wsk_attach), is reported, naming the function, the IRQL, the limit and the
    callback."""
    rules = mutated("ExFreePoolWithTag", "ExFreePoolWithTag PASSIVE_LEVEL")
    # (A detach at DISPATCH_LEVEL may free pool too, in ClientDetachProvider.)
    scenario, callback, callbacks = ("echo", "CompletionRoutine", "CompletionRoutine") if CONN \
        else ("detach-at-dispatch", "ClientCleanupBindingContext",
              "ClientDetachProvider|ClientCleanupBindingContext")
    r = run_with(image, scenario, rules)
    shape = (r"IRQL: ExFreePoolWithTag called at DISPATCH_LEVEL, above its limit PASSIVE_LEVEL "
             r"\(mutated irql-rules\.txt:%d\), in (%s) on .*"
             % (TABLE.functions["ExFreePoolWithTag"].line, callbacks))
    assert r.violations and all(re.fullmatch(shape, v) for v in r.violations), r.violations
    assert any(" in %s on " % callback in v for v in r.violations), r.violations


@connection_only
def test_a_blocking_wait_above_its_stricter_limit_is_caught(image):
    """KeWaitForSingleObject's 'wait' condition (a NULL or non-zero timeout): with DriverUnload
    at APC_LEVEL, its 5 s wait is allowed by the table (wait=APC_LEVEL) — what is reported is
    only the PASSIVE_LEVEL functions it calls; lower the condition's limit to PASSIVE_LEVEL and
    the wait is reported too, and nothing else changes."""
    at_apc = re.sub(r"^@DriverUnload .*$", "@DriverUnload APC_LEVEL", TABLE_TEXT, flags=re.M)
    stricter = re.sub(r"^KeWaitForSingleObject .*$",
                      "KeWaitForSingleObject DISPATCH_LEVEL wait=PASSIVE_LEVEL", at_apc,
                      flags=re.M)
    base = run_with(image, "default", irql.parse(at_apc, "mutated irql-rules.txt"))
    r = run_with(image, "default", irql.parse(stricter, "mutated irql-rules.txt"))
    assert base.violations and not any("KeWaitForSingleObject" in v for v in base.violations)
    assert all(v.startswith("IRQL: ") and "limit PASSIVE_LEVEL" in v and
               v.endswith("in DriverUnload") for v in base.violations), base.violations
    wait = ("IRQL: KeWaitForSingleObject (wait) called at APC_LEVEL, above its limit "
            "PASSIVE_LEVEL (mutated irql-rules.txt:%d), in DriverUnload"
            % TABLE.functions["KeWaitForSingleObject"].line)
    assert sorted(r.violations) == sorted(base.violations + [wait]), r.violations


@wskregister_only
def test_the_capture_never_blocks_so_no_level_limits_it_to_passive(image):
    """WskCaptureProviderNPI's 'blocking' condition (a WaitTimeout other than WSK_NO_WAIT: only
    at PASSIVE_LEVEL) never holds for the driver since issue 17: DriverEntry's capture and the
    capture task's are all WSK_NO_WAIT, legal up to DISPATCH_LEVEL. So were work items run at
    APC_LEVEL, nothing would be reported (the loop before issue 17 captured with a 1000 ms wait
    in its work item: one violation per run of it)."""
    r = run_with(image, "wsk-late", mutated("@WorkItemRoutine", "@WorkItemRoutine APC_LEVEL"))
    captures = [e for e in r.events if e.kind == "wskreg" and e.name == "WskCaptureProviderNPI"]
    assert len(captures) >= 3 and all(e.args["WaitTimeout"] == 0 for e in captures), captures
    assert any(e.thread.startswith("work item") for e in captures)
    assert r.violations == [], r.violations


def test_a_function_missing_from_the_table_is_reported(image):
    """A function the driver calls that the table lacks (here DbgPrintEx, removed) fails the
    run: a violation naming it, once per callback it is called in."""
    r = run_with(image, "default", mutated("DbgPrintEx", ""))
    assert r.violations, "a call of a function missing from the table went unreported"
    assert all(v.startswith("IRQL: DbgPrintEx is not in mutated irql-rules.txt: the driver calls "
                            "it (at ") for v in r.violations), r.violations
    assert ("IRQL: DbgPrintEx is not in mutated irql-rules.txt: the driver calls it (at "
            "PASSIVE_LEVEL, in DriverEntry) and its IRQL limit is unknown") in r.violations
    assert len(r.violations) == len(set(r.violations))

