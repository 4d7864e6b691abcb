"""The image exists; failed loads (registration, device object) leave nothing; every named
scenario (as run_driver.py shows them) is clean.

Shared expectations (the profile of the image, the call sequences, the clean-run checks):
expected.py. Run: target/speakeasy-venv/bin/python -m pytest tests/speakeasy
"""
import os

import pytest

import harness
from harness import STATUS_INSUFFICIENT_RESOURCES, WSK_1_1
from expected import (DELETE, DEVICE, LOAD_FAILS, NMR, OWN_TAGS, PROFILE, S, SETUP, TEARDOWN,
                      assert_clean, assert_failed_load_clean, sequence, wsk_register)


def test_image_exists():
    """FAILS when the image is missing (every other test then errors in the image fixture)."""
    image = harness.default_image()
    assert os.path.isfile(image), ("driver image not found: %s (build it with `cargo xtask "
                                   "sys`, or set WSK_DRIVER_SYS)" % image)
    with open(image, "rb") as f:
        assert f.read(2) == b"MZ", "%s is not a PE image" % image




# ---------------------------------------------------------------------------------------------
# Failed loads, and every named scenario (as run_driver.py shows them)
# ---------------------------------------------------------------------------------------------
def test_registration_failure_fails_the_load(run):
    """NmrRegisterClient (or WskRegister) fails: DriverEntry fails, its device object deleted
    and its own allocations freed before it returns."""
    r = run("register-fails")
    if NMR:
        assert sequence(r) == [*SETUP, DEVICE, "NmrRegisterClient -> STATUS_INSUFFICIENT_RESOURCES",
                               DELETE, *TEARDOWN]
    else:
        assert sequence(r) == [*SETUP, DEVICE, wsk_register(WSK_1_1, STATUS_INSUFFICIENT_RESOURCES),
                               DELETE, *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert r.binding_allocations == []
    assert sorted(a.tag for a in r.own_allocations) == sorted(OWN_TAGS), r.allocations


def test_device_creation_failure_fails_the_load(run):
    """IoCreateDevice fails: the driver does not register, logs why, and DriverEntry fails with
    that status, its own allocations freed."""
    r = run("device-fails")
    assert sequence(r) == [*SETUP, "IoCreateDevice -> STATUS_INSUFFICIENT_RESOURCES", *TEARDOWN]
    assert r.entry_status == STATUS_INSUFFICIENT_RESOURCES, S(r.entry_status)
    assert_failed_load_clean(r)
    assert r.calls("NmrRegisterClient") == [] and r.wsk_calls == [] and r.kevents == []
    assert PROFILE.log("register: IoCreateDevice failed: 0xC000009A") + "\n" in r.logs, r.logs


@pytest.mark.parametrize("scenario", sorted(LOAD_FAILS))
def test_every_failed_load_is_clean(run, scenario):
    r = run(scenario)
    assert_failed_load_clean(r)
    assert "no problems found" in harness.format_trace(r)


@pytest.mark.parametrize("scenario", sorted(set(harness.scenarios_for(PROFILE)) - LOAD_FAILS))
def test_every_named_scenario_is_clean(run, scenario):
    r = run(scenario)
    assert_clean(r)
    text = harness.format_trace(r)
    assert "no problems found" in text
    assert "device objects: 1 created, 1 deleted" in text
