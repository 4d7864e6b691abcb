"""Run a driver image built on wsk-client (wsk_attach.sys, wsk_echo.sys, wsk_echo_wskregister.sys)
under Mandiant's Speakeasy, with this package playing NMR, the WSK subsystem and the parts of the
kernel the images rely on.

Speakeasy (pinned in requirements.txt) emulates an x64 kernel driver with unicorn. It implements
DbgPrintEx, ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress, ... but neither
ExAllocatePool2 nor any Nmr* function nor IoAllocateWorkItem / IoQueueWorkItem / IoFreeWorkItem;
its KeWaitForSingleObject returns at once, its events and device objects are stubs, and its
WskCaptureProviderNPI always succeeds (and writes nothing the second time). This package adds or
replaces them as API hooks, one module per modelled subsystem, each declaring its hooks
(``@hook``) beside their handlers, in the shape of the host model (crates/wsk-host-model/src):

* abi.py: NTSTATUS values, WSK versions, the structures' sizes and offsets;
* scenario.py: what the emulated system looks like and does (Scenario, Provider, SCENARIOS);
* records.py: what a run records (Event, the kernel objects, Thread, Result);
* machine.py: Speakeasy, the hooks' installation, the calls into the driver, the runs;
* scheduler.py: threads, waits and the emulated clock;
* nmr.py: NMR (NmrRegisterClient .. NmrClientDetachProviderComplete and the driver's callbacks);
* wsk_register.py: WskRegister / WskCaptureProviderNPI / WskReleaseProviderNPI / WskDeregister;
* irp.py: IRPs, completion routines and MDLs (the I/O manager's side of a WSK request);
* provider.py: the WSK provider's dispatch and its connection sockets over a simulated peer;
* io.py: device objects and work items;
* ps.py: system threads, their handles and thread objects;
* sync.py: events and waits;
* pool.py: the pool (and the system routines by which the driver picks its allocator);
* registry.py: the service key and its Parameters;
* rtl.py: the run-time library routines Speakeasy lacks (RtlUnicodeToUTF8N, RtlIpv4StringToAddressW);
* dbgprint.py: DbgPrintEx / DbgPrint and their printf;
* trace.py: the trace printer (format_trace).

What is expected of the image (log prefix, pool tags, NMR module id, backend, ...) is its driver
profile (tests/driver_profiles.py), chosen by the image's file name or $WSK_DRIVER_PROFILE.

Use ``run_scenario(path, scenario)`` -> ``Result``; ``format_trace(result)`` renders a trace.
"""
import dataclasses
import os
import sys
from typing import Dict, Optional, Union

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import driver_profiles  # noqa: E402  (tests/driver_profiles.py, shared with tests/wine)
from driver_profiles import DriverProfile, UnknownDriver, profile_for  # noqa: E402,F401

from .abi import *  # noqa: E402,F401,F403  (the constants, as harness.STATUS_SUCCESS etc.)
from .dbgprint import DbgPrintModel, format_printf  # noqa: E402,F401
from .io import Allowance, IoModel  # noqa: E402
from .irp import IrpModel  # noqa: E402
from .irql import IrqlModel, Rules  # noqa: E402
from .machine import Machine, hook, hook_table  # noqa: E402,F401
from .nmr import NmrModel  # noqa: E402
from .pool import PoolModel  # noqa: E402
from .provider import ProviderModel  # noqa: E402
from .ps import PsModel  # noqa: E402
from .records import *  # noqa: E402,F401,F403  (Event, Result, IrpRec, ...)
from .records import HarnessError, Result  # noqa: E402
from .registry import RegistryModel  # noqa: E402
from .rtl import RtlModel  # noqa: E402
from .scenario import *  # noqa: E402,F401,F403  (Scenario, Provider, SCENARIOS, ...)
from .scenario import SCENARIOS, Scenario  # noqa: E402
from .scheduler import Scheduler  # noqa: E402
from .sync import SyncModel  # noqa: E402
from .timer import TimerModel  # noqa: E402
from .trace import format_trace  # noqa: E402,F401
from .wsk_register import WskRegisterModel  # noqa: E402


class Harness(NmrModel, WskRegisterModel, ProviderModel, IrpModel, IoModel, PsModel, SyncModel,
              TimerModel, PoolModel, RegistryModel, RtlModel, DbgPrintModel, IrqlModel, Scheduler,
              Machine):
    """One emulated run of a driver image: Harness(image, scenario, profile=...).run() -> Result.
    irql_rules: the IRQL table (irql.parse of a mutated text, in a test; default
    tests/irql-rules.txt). long_work_items_allowed: the work items that may break the work item
    rule (io.py: a function of the profile and the WorkItem giving the reason, or None; default
    io.nothing_allowed, the rule on every work item). Tests
    subclass it to break one rule on purpose (override a handler: its hook stays)."""


def default_image() -> str:
    """The image under test: $WSK_DRIVER_SYS, else the seed driver's cargo xtask output."""
    return driver_profiles.image_from_env(_repo_root())


def _repo_root() -> str:
    return os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def scenarios_for(profile: DriverProfile) -> Dict[str, Scenario]:
    """The named scenarios meant for this driver."""
    return {n: sc for n, sc in SCENARIOS.items() if sc.is_for(profile)}


def run_scenario(image: str, scenario: Union[str, Scenario] = "default",
                 verbose: bool = False, irql_rules: Optional[Rules] = None,
                 long_work_items_allowed: Optional[Allowance] = None) -> Result:
    """Runs `image` through `scenario`, with the driver profile of the image (profile_for), under
    the IRQL rules of tests/irql-rules.txt (or `irql_rules`), the work item rule on every work item
    (or as `long_work_items_allowed` says)."""
    profile = profile_for(image)
    if isinstance(scenario, str):
        if scenario not in SCENARIOS:
            raise HarnessError("unknown scenario %r (known: %s)" % (scenario, ", ".join(SCENARIOS)))
        scenario = SCENARIOS[scenario]
    if not scenario.is_for(profile):
        raise HarnessError("scenario %r is not for %s (%s)"
                           % (scenario.name, profile.name, scenario.applies_to()))
    return Harness(image, dataclasses.replace(scenario), verbose=verbose, profile=profile,
                   irql_rules=irql_rules, long_work_items_allowed=long_work_items_allowed).run()
