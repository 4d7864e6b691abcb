"""IRQL: every emulated thread has a current IRQL, and every kernel, NMR and WSK function the
driver calls is checked against the highest IRQL its Microsoft page allows, as Driver Verifier's
IRQL checking does (bug check 0xC4 / IRQL_NOT_LESS_OR_EQUAL on Windows).

The limits are those of tests/irql-rules.txt (the lead engineer's table, read by the host model
too; its format is at its top): one line per function, `<Name> <MAX_IRQL> [<condition>=<MAX_IRQL>
...]`, and '@' lines for the IRQL at which the system calls each driver callback (the first one
the default, the others tried by scenarios). A hook declares the function's name in the table
(``@hook(..., rule=...)``) and, for a stricter limit that depends on the call's arguments, the
condition's test (``conditions={"wait": ...}``); the machine checks the limit before the
handler runs. A call above its limit, and a call of a function the table lacks, are violations.

Where the IRQL comes from: DriverEntry, DriverUnload and work item routines run at
PASSIVE_LEVEL, completion routines at DISPATCH_LEVEL, ClientAttachProvider at PASSIVE_LEVEL,
ClientDetachProvider and ClientCleanupBindingContext at PASSIVE_LEVEL or, when the scenario asks
(Scenario.detach_irql), DISPATCH_LEVEL — each as its '@' line says. The pages:
https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-driver_initialize,
.../ddi/wdm/nc-wdm-io_workitem_routine, .../ddi/wdm/nc-wdm-io_completion_routine,
.../ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn (cited line by line in the table).
"""
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

from .abi import IRQL_LEVELS as LEVELS, PASSIVE_LEVEL
from .records import HarnessError

LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
# The conditions the table may attach to a function (its header says what each means).
CONDITIONS = ("wait", "blocking")

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TABLE_PATH = os.path.join(REPO_ROOT, "tests", "irql-rules.txt")


def level_name(level: Optional[int]) -> str:
    return "?" if level is None else LEVEL_NAMES.get(level, "IRQL %d" % level)


@dataclass
class Rule:
    """One function's line: its limit, and the stricter limits of its conditions."""

    name: str
    limit: int
    conditions: Dict[str, int] = field(default_factory=dict)
    line: int = 0


@dataclass
class Rules:
    """tests/irql-rules.txt, parsed: functions by name, and each callback's IRQLs (the first
    one the default)."""

    functions: Dict[str, Rule]
    callbacks: Dict[str, List[int]]
    source: str = TABLE_PATH

    def limit(self, name: str, conditions: Iterable[str] = ()) -> Optional[int]:
        """The highest IRQL `name` may be called at when `conditions` hold (None: not listed)."""
        rule = self.functions.get(name)
        if rule is None:
            return None
        return min([rule.limit] + [rule.conditions[c] for c in conditions
                                   if c in rule.conditions])

    def callback_irql(self, callback: str, level: Optional[int] = None) -> int:
        """The IRQL the system calls `callback` at: its default, or `level` when its '@' line
        allows it."""
        levels = self.callbacks.get(callback)
        if not levels:
            raise HarnessError("%s has no '@%s' line: at which IRQL does the system call it?"
                               % (self.source, callback))
        if level is None:
            return levels[0]
        if level not in levels:
            raise HarnessError("%s: the system calls %s at %s only, not %s"
                               % (self.source, callback,
                                  " or ".join(level_name(x) for x in levels), level_name(level)))
        return level


def parse(text: str, source: str = "<irql rules>") -> Rules:
    """Parses the table's text; raises ValueError naming the line of a malformed one."""
    functions: Dict[str, Rule] = {}
    callbacks: Dict[str, List[int]] = {}

    def level(word: str, number: int) -> int:
        if word not in LEVELS:
            raise ValueError("%s:%d: %r is not an IRQL (%s)" % (source, number, word,
                                                               ", ".join(LEVELS)))
        return LEVELS[word]

    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0].startswith("@"):
            name = words[0][1:]
            if not name or len(words) < 2:
                raise ValueError("%s:%d: '@<Callback> <IRQL> [<IRQL> ...]' expected"
                                 % (source, number))
            if name in callbacks:
                raise ValueError("%s:%d: @%s listed twice" % (source, number, name))
            callbacks[name] = [level(w, number) for w in words[1:]]
            continue
        if len(words) < 2:
            raise ValueError("%s:%d: '<Name> <MAX_IRQL> [<condition>=<MAX_IRQL> ...]' expected"
                             % (source, number))
        name = words[0]
        if name in functions:
            raise ValueError("%s:%d: %s listed twice" % (source, number, name))
        rule = Rule(name, level(words[1], number), line=number)
        for item in words[2:]:
            condition, sep, value = item.partition("=")
            if not sep or condition not in CONDITIONS:
                raise ValueError("%s:%d: %r is not <condition>=<MAX_IRQL> with a condition of %s"
                                 % (source, number, item, ", ".join(CONDITIONS)))
            rule.conditions[condition] = level(value, number)
        functions[name] = rule
    return Rules(functions, callbacks, source)


_loaded: Dict[str, Rules] = {}


def load(path: str = TABLE_PATH) -> Rules:
    """The table at `path` (tests/irql-rules.txt by default), parsed once per process."""
    if path not in _loaded:
        with open(path, encoding="utf-8") as f:
            _loaded[path] = parse(f.read(), os.path.relpath(path, REPO_ROOT))
    return _loaded[path]


class IrqlModel:
    """The current IRQL of each thread (Thread.irql) and the check of every hooked call."""

    def __init__(self, *args, irql_rules: Optional[Rules] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.irql_rules = irql_rules if irql_rules is not None else load()
        self._irql_reported: set = set()

    @property
    def irql(self) -> int:
        """The current thread's IRQL (PASSIVE_LEVEL before any thread exists)."""
        return self.current.irql if self.current is not None else PASSIVE_LEVEL

    def callback_irql(self, callback: str) -> int:
        """The IRQL the system calls a driver callback at, in this scenario."""
        level = None
        if callback in ("ClientDetachProvider", "ClientCleanupBindingContext"):
            level = LEVELS[self.scenario.detach_irql]
        return self.irql_rules.callback_irql(callback, level)

    def _inside(self) -> str:
        """The driver callback the current thread is in (its run or thread name when none)."""
        t = self.current
        if t is None:
            return "?"
        return t.pending[-1][2].name if t.pending else t.name

    def check_irql(self, rule: str, conditions: Dict[str, Callable], argv) -> None:
        """Before a hooked call of `rule` (its name in the table): a violation when the table
        lacks it, or when the current IRQL is above its limit (conditions: name -> test of the
        call's arguments, for the stricter limits)."""
        now, inside = self.irql, self._inside()
        where = ("in %s" % inside if self.current is None or inside == self.current.name
                 else "in %s on %s" % (inside, self.current.name))
        if rule not in self.irql_rules.functions:
            self._irql_violation((rule, None, inside),
                                 "IRQL: %s is not in %s: the driver calls it (at %s, %s) and "
                                 "its IRQL limit is unknown"
                                 % (rule, self.irql_rules.source, level_name(now), where))
            return
        held = [c for c, test in conditions.items() if test(self, argv)]
        limit = self.irql_rules.limit(rule, held)
        if now > limit:
            line = self.irql_rules.functions[rule].line
            self._irql_violation((rule, now, inside),
                                 "IRQL: %s%s called at %s, above its limit %s (%s:%d), %s"
                                 % (rule, " (%s)" % ", ".join(held) if held else "",
                                    level_name(now), level_name(limit), self.irql_rules.source,
                                    line, where))

    def _irql_violation(self, key: tuple, message: str):
        """Reported once per (function, IRQL, callback) in a run, however many calls."""
        if key not in self._irql_reported:
            self._irql_reported.add(key)
            self.violation(message)
