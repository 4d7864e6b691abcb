"""Sections 1-8: the attach at load. NMR attaches during NmrRegisterClient at the highest
common WSK version, falls back 1.1 -> 1.0 on STATUS_NOINTERFACE, never asks a 1.0-only provider
for 1.1, declines without allocating when no version fits or the registration instance is
malformed, frees its context when every version is refused or NMR fails otherwise; and the pool:
a binding context that cannot be allocated, the driver's own allocation in DriverEntry failing,
the ExAllocatePoolWithTag fallback without ExAllocatePool2.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""

import pytest

import harness
from harness import (NON_PAGED_POOL, NON_PAGED_POOL_NX, POOL_FLAG_NON_PAGED,
                     STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE,
                     STATUS_SUCCESS, STATUS_UNSUCCESSFUL, WSK_1_0, WSK_1_1, Provider, Scenario,
                     status_name, tag_name)
from expected import (BINDING_TAG, OWN_TAGS, PROFILE, S, assert_clean, attach, attached_at,
                      binding_pool_events, default_run, event_index, first, log_events, nmr_attach,
                      nmr_only, not_attached, registration_index, sequence)


# ---------------------------------------------------------------------------------------------
# 1. Attach during registration, at the highest common version (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_attach_during_registration_at_highest_common_version(run):
    r = run("default")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS))
    assert_clean(r)
    # The attach happened inside NmrRegisterClient, before NMR wrote the client handle.
    reg = event_index(r, "nmr", "NmrRegisterClient")
    reg_ret = event_index(r, "nmr-return", "NmrRegisterClient")
    att = event_index(r, "callback", "ClientAttachProvider")
    assert reg < att < reg_ret
    (b,) = r.bindings
    assert b.state == "cleaned"
    assert [(t.version, t.status) for t in b.tries] == [(WSK_1_1, STATUS_SUCCESS)]
    # One binding context, from ExAllocatePool2(POOL_FLAG_NON_PAGED, ..., binding tag); the
    # driver's other allocations come from there too.
    (a,) = r.binding_allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePool2", POOL_FLAG_NON_PAGED, BINDING_TAG)
    assert {(x.api, x.pool) for x in r.allocations} == {("ExAllocatePool2", POOL_FLAG_NON_PAGED)}
    (t,) = b.tries
    assert t.context_is_pool and t.client_context == a.address
    # NMR's out-values go straight into the binding context (no window where they are elsewhere).
    assert t.out_client_in_context and t.out_dispatch_in_context
    assert t.reserved == 0
    # The WSK_CLIENT_DISPATCH is a static of the image (it must outlive the attach call).
    assert r.in_image(t.client_dispatch)
    assert t.client_event == 0 or r.in_image(t.client_event)


@nmr_only
def test_client_characteristics(run):
    r = run("default")
    c = r.characteristics
    assert (c["Version"], c["Length"]) == (0, 72)
    assert (c["reg_Version"], c["reg_Size"], c["reg_Number"]) == (0, 40, 0)
    assert c["NpiId"] == harness.NPI_WSK_INTERFACE_ID
    assert c["ModuleId"]["Length"] == 24 and c["ModuleId"]["Type"] == 1
    # The driver's own module id (the NMR model reports any other as a violation, too).
    assert c["ModuleId"]["Guid"] == PROFILE.module_id, c["ModuleId"]
    assert c["ClientCleanupBindingContext"], "no cleanup callback: the context would leak"


def test_system_routine_looked_up_first(run):
    r = run("default")
    lookups = [e for e in r.events if e.name == "MmGetSystemRoutineAddress"]
    assert [e.args["SystemRoutineName"] for e in lookups] == ["ExAllocatePool2"]
    # ... looked up in DriverEntry with the Windows version, before any allocation, before the
    # device object and before the registration.
    (version,) = [e for e in r.events if e.name == "RtlGetVersion"]
    first_pool = min(e.seq for e in r.events if e.kind == "pool")
    device = event_index(r, "device", "IoCreateDevice")
    assert max(lookups[0].seq, version.seq) < min(first_pool, device, registration_index(r))


# ---------------------------------------------------------------------------------------------
# 2. Fallback 1.1 -> 1.0 on STATUS_NOINTERFACE (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_fallback_from_1_1_to_1_0_on_nointerface(run):
    r = run("fallback")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS),
                                      nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                      nmr_attach(WSK_1_0, STATUS_SUCCESS))
    assert_clean(r)
    (b,) = r.bindings
    # Both tries with the same binding handle and the same, single, context.
    assert {t.binding for t in b.tries} == {b.handle}
    assert len({t.client_context for t in b.tries}) == 1
    assert len(r.binding_allocations) == 1


# ---------------------------------------------------------------------------------------------
# 3. A 1.0-only provider: 1.1 is never tried (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_wsk_1_0_only_provider_never_sees_1_1(run):
    r = run("wsk10-only")
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_0, STATUS_SUCCESS))
    assert_clean(r)
    assert all(t.version == WSK_1_0 for t in r.attach_tries)


@nmr_only
def test_provider_above_1_1_attaches_at_1_1(run):
    r = run(Scenario(name="wsk10-12", providers=[Provider(highest=0x0102, lowest=WSK_1_0)]))
    assert sequence(r) == attached_at(attach(STATUS_SUCCESS), nmr_attach(WSK_1_1, STATUS_SUCCESS))
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 4. No fitting version: STATUS_NOINTERFACE, nothing allocated, no NMR call
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("low,high", [(0x0102, 0x0102), (0x0200, 0x0203), (0x0001, 0x00FF)])
def test_no_common_version_declines_without_allocating(run, low, high):
    r = run(Scenario(name="no-common", providers=[Provider(highest=high, lowest=low)]))
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert_clean(r)
    assert r.binding_allocations == []


@nmr_only
def test_named_scenario_wsk12_only(run):
    r = run("wsk12-only")
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert r.binding_allocations == []
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 5. STATUS_NOINTERFACE for every version: context freed, STATUS_NOINTERFACE returned
# ---------------------------------------------------------------------------------------------
@nmr_only
def test_nointerface_for_all_versions_frees_context(run):
    r = run("all-nointerface")
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_0, STATUS_NOINTERFACE))
    assert_clean(r)
    (a,) = r.binding_allocations
    # Freed inside ClientAttachProvider, before it returned.
    free = first(binding_pool_events(r), "ExFreePoolWithTag")
    ret = event_index(r, "return", "ClientAttachProvider")
    assert free.seq < ret and free.args == {"P": a.address, "Tag": BINDING_TAG}


# ---------------------------------------------------------------------------------------------
# 6. Another NMR error: no retry, that status returned, context freed
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("error", [STATUS_INSUFFICIENT_RESOURCES, STATUS_UNSUCCESSFUL,
                                   STATUS_INVALID_PARAMETER], ids=status_name)
def test_other_nmr_error_is_not_retried(run, error):
    r = run(Scenario(name="nmr-error", providers=[
        Provider(answers={WSK_1_1: error, WSK_1_0: STATUS_SUCCESS})]))
    assert sequence(r) == not_attached(attach(error), nmr_attach(WSK_1_1, error))
    assert_clean(r)
    assert len(r.binding_allocations) == 1


@nmr_only
def test_error_after_fallback_returns_last_status(run):
    r = run(Scenario(name="nointerface-then-error", providers=[
        Provider(answers={WSK_1_1: STATUS_NOINTERFACE, WSK_1_0: STATUS_UNSUCCESSFUL})]))
    assert sequence(r) == not_attached(attach(STATUS_UNSUCCESSFUL),
                                       nmr_attach(WSK_1_1, STATUS_NOINTERFACE),
                                       nmr_attach(WSK_1_0, STATUS_UNSUCCESSFUL))
    assert_clean(r)


# ---------------------------------------------------------------------------------------------
# 7. Allocation failure: STATUS_INSUFFICIENT_RESOURCES, no NMR call
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("pool2", [True, False], ids=["ExAllocatePool2", "ExAllocatePoolWithTag"])
def test_allocation_failure(run, pool2):
    """The binding context's allocation fails (the driver's own ones, if any, succeed)."""
    r = run(Scenario(name="no-pool", fail_binding_allocations=True, exallocatepool2=pool2))
    assert sequence(r) == not_attached(attach(STATUS_INSUFFICIENT_RESOURCES))
    assert_clean(r)
    tried = [e for e in binding_pool_events(r) if e.name.startswith("ExAllocate")]
    assert [e.name for e in tried] == ["ExAllocatePool2" if pool2 else "ExAllocatePoolWithTag"]
    assert tried[0].status == 0
    assert r.binding_allocations == []


@pytest.mark.applies("setup-no-pool" in harness.scenarios_for(PROFILE),
                     reason="%s allocates nothing of its own in DriverEntry" % PROFILE.name)
def test_setup_allocation_failure_fails_the_load(run):
    """The driver's own allocation in DriverEntry (the first pool allocation) fails: DriverEntry
    logs it and returns STATUS_INSUFFICIENT_RESOURCES without registering (no device object
    either); nothing is left."""
    r = run("setup-no-pool")
    assert sequence(r) == ["allocate %s -> NULL" % tag_name(OWN_TAGS[0])]
    assert r.calls("NmrRegisterClient") == [] and r.wsk_calls == []
    assert r.devices == [] and r.work_items == []
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert r.violations == [] and r.run_errors == []
    assert r.allocations == [] and r.outstanding == []
    assert not r.unload_ran
    logs = [(e.args["Level"], e.text) for e in log_events(r)]
    assert (0, PROFILE.log(PROFILE.setup_failure_log) + "\n") in logs, logs  # DPFLTR_ERROR_LEVEL
    assert not any(t in text for text in r.logs for t in PROFILE.setup_logs), r.logs


@pytest.mark.parametrize("scenario,pool_type,line", [
    ("no-exallocatepool2", NON_PAGED_POOL_NX, "pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"),
    ("windows-7", NON_PAGED_POOL,
     "pool: ExAllocatePoolWithTag(NonPagedPool) fallback, before Windows 8"),
])
def test_fallback_allocator_without_exallocatepool2(run, scenario, pool_type, line):
    """No ExAllocatePool2: ExAllocatePoolWithTag, with NonPagedPoolNx from Windows 8 on and
    NonPagedPool before, for every allocation of the driver (work items and connection too)."""
    r = run(scenario)
    assert sequence(r) == default_run()
    assert_clean(r)
    (a,) = r.binding_allocations
    assert (a.api, a.pool, a.tag) == ("ExAllocatePoolWithTag", pool_type, BINDING_TAG)
    assert {(x.api, x.pool) for x in r.allocations} == {("ExAllocatePoolWithTag", pool_type)}
    assert not any(e.name == "ExAllocatePool2" for e in r.events)
    assert PROFILE.log(line) + "\n" in r.logs, r.logs


# ---------------------------------------------------------------------------------------------
# 8. Malformed registration instances: STATUS_NOINTERFACE, nothing allocated (NMR)
# ---------------------------------------------------------------------------------------------
@nmr_only
@pytest.mark.parametrize("scenario", ["null-characteristics", "wrong-npiid", "inverted-range"])
def test_malformed_registration_instance_is_declined(run, scenario):
    r = run(scenario)
    assert sequence(r) == not_attached(attach(STATUS_NOINTERFACE))
    assert_clean(r)
    assert r.binding_allocations == []
