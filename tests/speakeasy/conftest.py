"""pytest set-up for the Speakeasy tests: import path, the image under test, a result cache."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "applies(condition, reason): the test is about this image only when condition holds; "
        "for other images it is deselected (not collected), never skipped")


def pytest_collection_modifyitems(config, items):
    """Deselects the tests that do not apply to the image under test (another backend, no
    connection): what runs is what applies, and nothing is reported as skipped."""
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("applies")
        (keep if marker is None or marker.args[0] else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def image():
    """The driver image under test (wsk_attach.sys or wsk_echo.sys): $WSK_DRIVER_SYS, else the
    seed driver's cargo xtask output. What the tests expect of it is its driver profile
    (expected.PROFILE, from the file name).

    A missing image is a failure, not a skip: these tests exist to check the image CI built.
    """
    path = harness.default_image()
    if not os.path.isfile(path):
        pytest.fail("driver image not found: %s (build it with `cargo xtask sys`, or set "
                    "WSK_DRIVER_SYS)" % path, pytrace=False)
    return path


@pytest.fixture(scope="session")
def run(image):
    """run(scenario) -> harness.Result; named scenarios are emulated once per session."""
    cache = {}

    def _run(scenario):
        if isinstance(scenario, str):
            if scenario not in cache:
                cache[scenario] = harness.run_scenario(image, scenario)
            return cache[scenario]
        return harness.run_scenario(image, scenario)
    return _run


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The failure matrix's counts (test_failure_matrix.py: calls x statuses x occurrences tried,
    the calls of the table this image never makes, the time), when that module was collected."""
    module = sys.modules.get("test_failure_matrix")
    if module is not None and hasattr(module, "summary_lines"):
        terminalreporter.section("failure matrix")
        for line in module.summary_lines():
            terminalreporter.write_line(line)
