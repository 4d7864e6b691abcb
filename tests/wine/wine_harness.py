"""Wine harness for a driver image (wsk_attach.sys, wsk_echo.sys, wsk_echo_wskregister.sys): a
fresh WINEPREFIX, the test NETIO.SYS (raw NMR images) or Wine's own netio.sys (the WskRegister
image), Wine's real sc.exe.

Every Wine process of a prefix writes its stderr to one log file (opened in append mode), so the
DbgPrintEx output of winedevice.exe lands there whichever process started services.exe; the
harness writes a marker line (`=== wine sc start wsk_attach`) into the same file before each sc
command, so that the log splits into phases. Under WINEDEBUG=+debugstr a DbgPrintEx line reads
`0134:warn:debugstr:vDbgPrintExWithPrefix 0000004d:00000008: wsk_attach: ...`.

The service name, the image's file name in the prefix and the expected log lines come from the
image's driver profile (tests/driver_profiles.py, chosen by the image's file name or
$WSK_DRIVER_PROFILE). Its backend says which netio.sys is the WSK provider: for "nmr", the test
NETIO.SYS (tests/wine/netio-provider), loaded instead of Wine's with `WINEDLLOVERRIDES=
netio.sys=n` (every Nmr* export of Wine's netio.sys is a stub that aborts the process); for
"wskregister", Wine's own builtin netio.sys, whose WskRegister / WskCaptureProviderNPI /
WskReleaseProviderNPI / WskDeregister are real (its provider dispatch says WSK 1.0).
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import driver_profiles  # noqa: E402  (tests/driver_profiles.py, shared with tests/speakeasy)
from driver_profiles import DriverProfile, UnknownDriver  # noqa: E402,F401

DEFAULT_IMAGE = os.path.join(ROOT, driver_profiles.DEFAULT_IMAGE)
PROVIDER_BUILD = os.path.join(ROOT, "tests", "wine", "build-provider.sh")
DRIVERS_DIR = r"C:\windows\system32\drivers"
# Wine's own netio.sys (the WSK provider of the WskRegister image), as Debian's wine64 installs it.
WINE_BUILTIN_NETIO = "/usr/lib/x86_64-linux-gnu/wine/x86_64-windows/netio.sys"
# The provider variants a profile's image runs against: the test NETIO.SYS builds for raw NMR,
# Wine's own netio.sys for WskRegister.
NMR_VARIANTS = ("wsk11", "noif11")
# The test NETIO.SYS that hands an NMR client Wine's real WSK provider (captured from Wine's own
# netio.sys, copied into the prefix as BRIDGED_NETIO): the raw NMR image's real TCP tests.
BRIDGE_VARIANT = "bridge"
BRIDGED_NETIO = "wnetio.sys"
BUILTIN_VARIANT = "wine-netio"
# The Windows version of the prefix (`HKCU\Software\Wine\Version`): Windows 10, whatever Wine's
# default, so the driver's pool fallback is the Windows 8 .. 10 1909 one (NonPagedPoolNx).
WINDOWS_VERSION = "win10"
# Every Wine command starts under `setarch -R` (personality ADDR_NO_RANDOMIZE, inherited by every
# process it starts: services.exe, winedevice.exe, ...). Debian's Wine 8 has no preloader: its
# loader is a non-PIE binary at 0x7d000000, and Linux places a 64-bit process's heap (brk)
# anywhere in the GiB above it. Now and then (1 of 6,000 `wine sc.exe query` runs here; twice in
# CI) it lay over 0x7ffe0000, where Wine maps KUSER_SHARED_DATA, and the process died at start
# ("failed to map the shared user data: c0000018"): as winedevice.exe, `sc start` failed; as
# wineboot, no prefix was made; as sc.exe, Wine's launcher said "ShellExecuteEx failed" (a
# process that dies before its start-up is done fails its CreateProcess). Without randomisation
# the heap starts at 0x7d005000, 47 MiB below.
WINE_LAUNCH = ("setarch", "-R")
ADDR_NO_RANDOMIZE = 0x0040000

DBG_LINE = re.compile(r"debugstr:\w+ [0-9a-fA-F]{8}:[0-9a-fA-F]{8}: (.*?)\s*$")
MARKER = "=== "
# Signs that a Wine process crashed, aborted on a stub, or left an import unbound.
CRASH_PATTERNS = [
    re.compile(p) for p in (
        r"[Uu]nhandled exception",
        r"unimplemented function",
        r"[Uu]nhandled page fault",
        r"err:seh:",
        r"err:module:",
        r"No implementation for",
        r"err:ntoskrnl:",
        r"wine: Assertion",
    )
]

# The test NETIO.SYS keeps Windows' image lifetime in every variant (netio-provider/src/
# lifetime.rs): it logs its installation once per winedevice.exe, the client's IoQueueWorkItem
# import entries it patched at each registration, and each work item queued through them.
PIN_INSTALLED = "netio-provider: image pinning: NETIO.SYS "
PIN_CLIENT = re.compile(r"netio-provider: image pinning: client image \S+ \(its \w+\): (\d+) "
                        r"IoQueueWorkItem import")
PIN_QUEUED = "netio-provider: image pinning: work item routine "


class HarnessError(Exception):
    """The harness itself could not do its job (missing tool, wineboot failed...)."""


def driver_image_path():
    """$WSK_DRIVER_SYS, else the seed driver's image."""
    return driver_profiles.image_from_env(ROOT)


def driver_profile(image):
    """The driver profile of `image` (by its file name, or $WSK_DRIVER_PROFILE); UnknownDriver
    for an image name without one."""
    return driver_profiles.profile_for(image)


def bin_path(profile):
    """The service's binPath: the image, under the service's file name, in the prefix's
    drivers."""
    return "%s\\%s" % (DRIVERS_DIR, profile.sys_name)


def variants_for(profile):
    """The provider variants to test the profile's image against."""
    if profile is not None and profile.backend == "wskregister":
        return (BUILTIN_VARIANT,)
    return NMR_VARIANTS


def build_driver_image():
    """`cargo xtask sys`: the default image, built once when missing."""
    proc = subprocess.run(["cargo", "xtask", "sys"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.isfile(DEFAULT_IMAGE):
        raise HarnessError("`cargo xtask sys` failed (exit %d):\n%s%s"
                           % (proc.returncode, proc.stdout, proc.stderr))
    return DEFAULT_IMAGE


def provider_images(variants=NMR_VARIANTS):
    """{variant: path} of the test NETIO.SYS: $WSK_WINE_PROVIDER_<VARIANT>, else built by
    tests/wine/build-provider.sh (an up-to-date build takes about a second)."""
    images, to_build = {}, []
    for variant in variants:
        env_path = os.environ.get("WSK_WINE_PROVIDER_" + variant.upper())
        if env_path:
            if not os.path.isfile(env_path):
                raise HarnessError("WSK_WINE_PROVIDER_%s=%s: no such file" % (variant.upper(), env_path))
            images[variant] = env_path
        else:
            to_build.append(variant)
    if to_build:
        proc = subprocess.run(["bash", PROVIDER_BUILD] + to_build, cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError("%s %s failed (exit %d):\n%s%s" % (
                PROVIDER_BUILD, " ".join(to_build), proc.returncode, proc.stdout, proc.stderr))
        built = proc.stdout.split()
        for variant, path in zip(to_build, built):
            if not path.endswith("netio-%s.sys" % variant) or not os.path.isfile(path):
                raise HarnessError("build-provider.sh printed %r for %s" % (path, variant))
            images[variant] = path
    return images


def missing_tools():
    return [tool for tool in ("wine", "wineserver") if shutil.which(tool) is None]


class Prefix:
    """A fresh WINEPREFIX in a temporary folder, with a persistent wineserver.

    test_netio: whether our NETIO.SYS replaces Wine's (`netio.sys=n`); False leaves Wine's own
    netio.sys as the WSK provider."""

    def __init__(self, keep=False, test_netio=True):
        self.dir = tempfile.mkdtemp(prefix="wsk-wine-")
        self.path = os.path.join(self.dir, "prefix")
        self.log_path = os.path.join(self.dir, "wine.log")
        self.keep = keep or bool(os.environ.get("WSK_WINE_KEEP"))
        self._log = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ)
        for var in ("DISPLAY", "WAYLAND_DISPLAY"):
            env.pop(var, None)
        self.test_netio = test_netio
        env.update({
            "WINEPREFIX": self.path,
            # DbgPrintEx output; and which netio.sys each process loads (builtin or native).
            "WINEDEBUG": "+debugstr,+loaddll",
            # Our NETIO.SYS instead of Wine's builtin one (raw NMR images); no Mono/Gecko set-up
            # in wineboot.
            "WINEDLLOVERRIDES": ("netio.sys=n;" if test_netio else "") + "mscoree,mshtml=",
            "WINEARCH": "win64",
        })
        self.env = env
        self.drivers = os.path.join(self.path, "drive_c", "windows", "system32", "drivers")

    # -- plumbing ---------------------------------------------------------------------------
    def mark(self, text):
        self._log.write(("%s%s\n" % (MARKER, text)).encode())

    def run(self, argv, timeout=120, check=True):
        """Runs a Wine command (under WINE_LAUNCH): (exit code, stdout)."""
        self.mark(" ".join(argv))
        # stdout goes to a file, not a pipe: services.exe and winedevice.exe, started by the
        # first command, inherit it and keep it open, so reading a pipe to EOF would hang.
        with tempfile.TemporaryFile(dir=self.dir) as stdout:
            proc = subprocess.run(list(WINE_LAUNCH) + list(argv), env=self.env,
                                  stdin=subprocess.DEVNULL, stdout=stdout, stderr=self._log,
                                  timeout=timeout)
            stdout.seek(0)
            out = stdout.read().decode(errors="replace")
        if check and proc.returncode != 0:
            raise HarnessError("%s exited %d:\n%s\n--- log tail ---\n%s"
                               % (" ".join(argv), proc.returncode, out, self.log_tail()))
        return proc.returncode, out

    def boot(self):
        """`wine wineboot -i` (creates the prefix), wait until its processes have ended, then a
        persistent wineserver: it keeps services.exe (and so winedevice.exe) alive between the
        sc commands. Starting the persistent server before the prefix exists made `sc create`
        go to a services.exe that then went away (the service was missing at `sc start`)."""
        self.run(["wine", "wineboot", "-i"], timeout=300)
        self.server(["-w"], timeout=120)
        if not os.path.isdir(self.drivers):
            raise HarnessError("wineboot -i made no %s\n%s" % (self.drivers, self.log_tail()))
        self.server(["-p"], timeout=60)
        self.run(["wine", "reg", "add", r"HKCU\Software\Wine", "/v", "Version", "/t", "REG_SZ",
                  "/d", WINDOWS_VERSION, "/f"])
        self.check_not_randomized()

    def processes(self):
        """{pid: command line} of the running Wine processes of this prefix (by WINEPREFIX)."""
        found = {}
        want = ("WINEPREFIX=%s" % self.path).encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    if want not in f.read().split(b"\0"):
                        continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    found[int(pid)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:  # ended meanwhile, or not ours to read
                continue
        return found

    def check_not_randomized(self):
        """Every Wine process of the prefix (services.exe at least) runs with
        ADDR_NO_RANDOMIZE (see WINE_LAUNCH)."""
        procs = {pid: cmd for pid, cmd in self.processes().items() if ".exe" in cmd}
        if not any("services.exe" in cmd for cmd in procs.values()):
            raise HarnessError("no services.exe in the prefix after boot: %r" % procs)
        for pid, cmd in procs.items():
            try:
                with open("/proc/%d/personality" % pid) as f:
                    personality = int(f.read(), 16)
            except OSError:
                continue
            if not personality & ADDR_NO_RANDOMIZE:
                raise HarnessError("%s (pid %d) runs with address randomisation (personality "
                                   "%#x): every Wine command must start under %s"
                                   % (cmd.strip(), pid, personality, " ".join(WINE_LAUNCH)))

    def server(self, args, timeout=60):
        subprocess.run(["wineserver"] + args, env=self.env, stdin=subprocess.DEVNULL,
                       stdout=self._log, stderr=self._log, timeout=timeout, check=False)

    def install(self, provider, driver, profile, bridged=False):
        """The test NETIO.SYS as netio.sys (provider None: Wine's own stays), the driver image
        under its service's file name; `bridged`: Wine's own netio.sys as wnetio.sys too, for
        the bridge variant to capture Wine's real provider from."""
        if bridged:
            shutil.copyfile(WINE_BUILTIN_NETIO, os.path.join(self.drivers, BRIDGED_NETIO))
        if provider is not None:
            if not self.test_netio:
                raise HarnessError("a test NETIO.SYS in a prefix without the netio.sys override")
            shutil.copyfile(provider, os.path.join(self.drivers, "netio.sys"))
        elif self.test_netio:
            raise HarnessError("the netio.sys override without a test NETIO.SYS to load")
        shutil.copyfile(driver, os.path.join(self.drivers, profile.sys_name))

    def sc(self, *args, timeout=60):
        """`wine sc.exe ARGS`: (exit code, stdout)."""
        return self.run(["wine", "sc.exe"] + list(args), timeout=timeout, check=False)

    def state(self, service):
        code, out = self.sc("query", service)
        match = re.search(r"STATE\s*:\s*\d+\s+(\w+)", out)
        return match.group(1) if (code == 0 and match) else None

    def wait_state(self, service, want, timeout=20.0):
        deadline = time.monotonic() + timeout
        state = self.state(service)
        while state != want and time.monotonic() < deadline:
            time.sleep(0.2)
            state = self.state(service)
        return state

    def wait_log(self, text, count=1, timeout=20.0):
        """Waits until `text` occurs `count` times in the log; returns the count seen."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.log().count(text)
            if seen >= count or time.monotonic() >= deadline:
                return seen
            time.sleep(0.1)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def log_since(self, offset, limit=80):
        """The log from `offset` on, without Wine's wine32 advice lines, at most `limit` lines."""
        noise = ("wine32", "multiarch needs", "dpkg --add-architecture", "apt-get install wine32")
        lines = [line for line in self.log()[offset:].splitlines()
                 if not any(n in line for n in noise)]
        return "\n".join(lines[:limit])

    def log_tail(self, lines=60):
        return "\n".join(self.log().splitlines()[-lines:])

    def close(self):
        try:
            self.server(["-k"])
            self.server(["-w"])
        finally:
            self._log.close()
            if not self.keep:
                shutil.rmtree(self.dir, ignore_errors=True)


def events(log_text):
    """The DbgPrintEx lines and harness markers of a log, in order."""
    out = []
    for line in log_text.splitlines():
        if line.startswith(MARKER):
            out.append(line)
            continue
        match = DBG_LINE.search(line)
        if match:
            out.append(match.group(1))
    return out


NETIO_LOADED = re.compile(r"loaddll:\w+ Loaded L\"[^\"]*\\\\netio\.sys\" at [0-9A-Fa-f]+: (\w+)",
                          re.IGNORECASE)


def netio_loads(log_text):
    """How each load of netio.sys in the log was satisfied: ["native", "builtin", ...]."""
    return [m.group(1) for m in NETIO_LOADED.finditer(log_text)]


def image_pinning_problems(log_text, starts, queues_work_items):
    """What is wrong with the test NETIO.SYS's image lifetime emulation in a log section of
    `starts` service starts (each in its own winedevice.exe): it must be installed once per
    start, patch the client's image at each registration and, for a driver that queues work
    items (`queues_work_items`), patch at least one IoQueueWorkItem import entry and queue at
    least one work item per start through it. [] when all is well. (An image unloaded with a
    routine in flight is an `ERROR` line, which every test fails on.)"""
    problems = []
    installed = log_text.count(PIN_INSTALLED)
    if installed != starts:
        problems.append("image pinning installed %d time(s) in %d start(s)" % (installed, starts))
    clients = [int(m.group(1)) for m in PIN_CLIENT.finditer(log_text)]
    if len(clients) != starts:
        problems.append("image pinning: %d client image(s) patched in %d start(s)"
                        % (len(clients), starts))
    if queues_work_items:
        if not clients or min(clients) < 1:
            problems.append("image pinning: IoQueueWorkItem import entries patched per "
                            "registration: %r (the driver queues work items)" % clients)
        queued = log_text.count(PIN_QUEUED)
        if queued < starts:
            problems.append("image pinning: %d work item(s) queued through it in %d start(s)"
                            % (queued, starts))
    return problems


def crash_lines(log_text):
    return [line for line in log_text.splitlines() if any(p.search(line) for p in CRASH_PATTERNS)]


# A known defect of Wine itself, for which alone a test is rerun, once (conftest.py). Wine 8's
# netio.sys completes a socket's pending requests in WskCloseSocket (STATUS_CANCELLED), and a
# thread-pool wait callback of the same request (send_receive_callback, connect_callback) that
# was queued late still runs afterwards: dispatch_pending_io() then writes
# `io->irp->IoStatus.Information` through the IRP pointer close had already cleared, a write
# fault at 0x38 in Wine's code, on a thread-pool thread of Wine's. Seen 7 times in 1,200 soak
# cycles (each in a stop during a pending receive: the driver closes its socket to end the
# request, which is right on Windows). Matched exactly: that one fault, at that one instruction
# (dispatch_pending_io+0x1e, offset 0x436E of the image) of this very build of Wine's netio.sys
# (Debian's wine64 8.0~repack-4, by its SHA-256), as loaded in the prefix (`netio.sys`, or
# `wnetio.sys` behind the bridge). Any other crash line, or another build, fails as before.
WINE_NETIO_SHA256 = "8f00d652e899e4f5069a11bbe4ec6ee6a647c0a76ca10559bb89b3cc314e71fb"
NETIO_LATE_CALLBACK_OFFSET = 0x436E
NETIO_LATE_CALLBACK_FAULT = re.compile(
    r"^wine: Unhandled page fault on write access to 0000000000000038 at address "
    r"([0-9A-F]{16}) \(thread [0-9a-f]{4}\), starting debugger\.\.\.$")
BUILTIN_NETIO_LOADED = re.compile(
    r"loaddll:\w+ Loaded L\"[^\"]*\\\\w?netio\.sys\" at ([0-9A-Fa-f]+): builtin", re.IGNORECASE)


def wine_netio_build_known():
    """Whether Wine's netio.sys here is the build NETIO_LATE_CALLBACK_OFFSET was read from."""
    try:
        with open(WINE_BUILTIN_NETIO, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest() == WINE_NETIO_SHA256
    except OSError:
        return False


def known_wine_defect(log_text):
    """The known Wine defect that every crash line of `log_text` is, as a one-line description;
    None when there is no crash line, or one that is anything else."""
    crashes = crash_lines(log_text)
    if not crashes or not wine_netio_build_known():
        return None
    bases = {int(m.group(1), 16) for m in BUILTIN_NETIO_LOADED.finditer(log_text)}
    for line in crashes:
        match = NETIO_LATE_CALLBACK_FAULT.match(line)
        if not match or int(match.group(1), 16) - NETIO_LATE_CALLBACK_OFFSET not in bases:
            return None
    return ("Wine's netio.sys ran a request's wait callback after WskCloseSocket had completed "
            "the request (dispatch_pending_io, write fault at 0x38): %s" % "; ".join(crashes))


def find_in_order(lines, expected):
    """Matches each expected substring against `lines` in order. Returns (ok, message)."""
    pos = 0
    for want in expected:
        for i in range(pos, len(lines)):
            if want in lines[i]:
                pos = i + 1
                break
        else:
            later = [line for line in lines if want in line]
            where = ("it occurs only earlier: out of order" if later
                     else "it does not occur at all")
            return False, "expected %r after line %d; %s.\nevents:\n  %s" % (
                want, pos, where, "\n  ".join(lines))
    return True, ""
