"""pytest set-up for the Wine tests: tools, the images under test and the driver's profile, a
fresh prefix per test; one rerun of a test that failed on a known defect of Wine itself.

Nothing here skips: a missing tool or image is a failure (these tests exist to check the image
CI built). Run tests/wine/setup.sh first (it installs Wine and the venv).
"""
import os
import sys

import pytest
from _pytest.runner import runtestprotocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wine_harness as wh  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "applies(condition, reason): condition(profile) says whether the test is about the image "
        "under test; for other images it is deselected (not collected), never skipped")


# What a failed test's log showed, when every crash in it is the known Wine defect.
WINE_DEFECT = pytest.StashKey[str]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed on its crash check (every other check before it passed) in a prefix
    whose every crash line is the known Wine defect (wine_harness.known_wine_defect) is marked
    for one rerun. Read here, while the prefix and its log still exist."""
    report = yield
    failed_on_crash = (report.when == "call" and report.failed and call.excinfo is not None
                       and call.excinfo.errisinstance(AssertionError)
                       and "a Wine process crashed" in str(call.excinfo.value))
    if failed_on_crash:
        for value in (item.funcargs or {}).values():
            if isinstance(value, wh.Prefix):
                defect = wh.known_wine_defect(value.log())
                if defect:
                    item.stash[WINE_DEFECT] = defect
                break
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    """Runs the test; if it failed on the known Wine defect alone, runs it once more in a fresh
    prefix, says so, and reports that second run, whatever its outcome. Nothing else is
    rerun."""
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reports = runtestprotocol(item, nextitem=nextitem, log=False)
    defect = item.stash.get(WINE_DEFECT, None)
    if defect is not None:
        del item.stash[WINE_DEFECT]
        terminal = item.config.pluginmanager.getplugin("terminalreporter")
        message = "RERUN %s once: a known defect of Wine itself: %s" % (item.nodeid, defect)
        if terminal is not None:
            terminal.write_line("")
            terminal.write_line(message)
        item.add_report_section("call", "wine-defect", message)
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def pytest_collection_modifyitems(config, items):
    """Deselects the tests that do not apply to the image under test's profile. With no profile
    (an unknown image) everything stays, so the fixtures fail loudly."""
    try:
        profile = wh.driver_profile(wh.driver_image_path())
    except wh.UnknownDriver:
        return
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("applies")
        (keep if marker is None or marker.args[0](profile) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def wine_tools():
    missing = wh.missing_tools()
    if missing:
        pytest.fail("%s not found: run tests/wine/setup.sh (installs Debian's wine64 and wine)"
                    % ", ".join(missing), pytrace=False)


@pytest.fixture(scope="session")
def driver_image():
    """The driver image (wsk_attach.sys, wsk_echo.sys, wsk_echo_wskregister.sys):
    $WSK_DRIVER_SYS, else target/x86_64-pc-windows-msvc/release/wsk_attach.sys, built once with
    `cargo xtask sys` when missing."""
    path = wh.driver_image_path()
    if os.environ.get("WSK_DRIVER_SYS"):
        if not os.path.isfile(path):
            pytest.fail("WSK_DRIVER_SYS=%s: no such file" % path, pytrace=False)
        return path
    if not os.path.isfile(path):
        try:
            wh.build_driver_image()
        except wh.HarnessError as error:
            pytest.fail("driver image %s missing and could not be built: %s" % (path, error),
                        pytrace=False)
    return path


@pytest.fixture(scope="session")
def profile(driver_image):
    """The driver profile of the image (service name, image file name, log lines): by the image's
    file name, or $WSK_DRIVER_PROFILE. An image name without a profile is a failure."""
    try:
        return wh.driver_profile(driver_image)
    except wh.UnknownDriver as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def providers(profile):
    """{variant: netio.sys to install} for the profile's variants: the test NETIO.SYS builds
    (wsk11, noif11) for a raw NMR image; for the WskRegister image, {"wine-netio": None}: Wine's
    own netio.sys stays (checked to be there)."""
    if profile.backend == "wskregister":
        if not os.path.isfile(wh.WINE_BUILTIN_NETIO):
            pytest.fail("Wine's own netio.sys is not at %s: run tests/wine/setup.sh"
                        % wh.WINE_BUILTIN_NETIO, pytrace=False)
        return {wh.BUILTIN_VARIANT: None}
    try:
        return wh.provider_images()
    except wh.HarnessError as error:
        pytest.fail("test NETIO.SYS: %s" % error, pytrace=False)


def booted_prefix(test_netio):
    """A fresh, booted WINEPREFIX in a temporary folder (kept when WSK_WINE_KEEP=1), closed after
    the test; `test_netio`: with the netio.sys override (a test NETIO.SYS)."""
    p = wh.Prefix(test_netio=test_netio)
    try:
        try:
            p.boot()
        except (wh.HarnessError, OSError) as error:
            pytest.fail("wineboot failed: %s" % error, pytrace=False)
        yield p
    finally:
        p.close()


@pytest.fixture
def prefix(wine_tools, profile):
    """A fresh prefix with the netio.sys override for a raw NMR image (the test NETIO.SYS),
    without it for the WskRegister image (Wine's own netio.sys)."""
    yield from booted_prefix(profile.backend == "nmr")


@pytest.fixture
def bridged_prefix(wine_tools):
    """A fresh prefix with the netio.sys override, for the bridge test NETIO.SYS (either
    backend: see test_wine_echo.py)."""
    yield from booted_prefix(True)
