"""Mutated drivers, for the tests that show a rule caught (test_rules.py, test_work_item_rule.py):
a Harness subclass in which the image makes one call it should not, or leaves out one it should,
the call made through the harness's hook for it like any call of the image's (its rules and IRQL
checked where they are for the real image).
"""
import dataclasses

import harness
from expected import PROFILE


def mutant(handler: str, calls, replace: bool = False, result=None):
    """A Harness subclass whose driver, at the first of its calls that `handler` (a hook's
    handler, e.g. "_h_iofcalldriver") handles for which calls(h, argv) is not None, makes the
    calls it names — [(module, name, args)], or [(address, name, args)] for the provider's
    functions — each through the harness's hook for it: right after that call (which the harness
    handles as usual), or instead of it (`replace`; that call then returns `result`)."""
    base = getattr(harness.Harness, handler)

    def handle(self, emu, api, func, argv):
        extra = None if self.mutated else calls(self, argv)
        if extra is None:
            return base(self, emu, api, func, argv)
        self.mutated = True
        rv = result
        if not replace:
            rv = base(self, emu, api, func, argv)
            assert not self._switched, "%s switched threads: make the calls instead of it" % handler

        def gen():
            for target, name, args in extra:
                address = target if isinstance(target, int) else self.emu.get_proc(target, name)
                # Through a code stub, as the image's own call would come: a hook's address is
                # only dispatched when the CPU fetches it.
                yield harness.Call(self._jump_stub("call " + name, address), list(args), name)
            return rv
        return self._start(gen())
    return type("Mutant", (harness.Harness,), {handler: handle, "mutated": False})


def emulate(cls, scenario: str, **changes) -> harness.Result:
    """The image under test through the named scenario (with `changes`), under harness `cls`."""
    sc = dataclasses.replace(harness.SCENARIOS[scenario], **changes)
    return cls(harness.default_image(), sc, profile=PROFILE).run()
