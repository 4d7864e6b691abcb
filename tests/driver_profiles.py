"""What the Speakeasy and Wine suites expect of each driver image that embeds wsk-client.

The images run the same library code and log the same lines; a profile holds what differs.
The profile is chosen by the image's file name as `cargo xtask sys` builds it (`wsk_attach.sys`,
`wsk_echo.sys`, `wsk_echo_wskregister.sys`); any other name is an error, unless
$WSK_DRIVER_PROFILE names the profile to use (for a renamed copy of an image — the test-signed
packages are `target/package/<profile>/<service>.sys` — or to check that the suites fail when
the profile does not fit the image).
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# Where `cargo xtask sys` puts the images.
IMAGE_DIR = os.path.join("target", "x86_64-pc-windows-msvc", "release")

# The echo driver's connection (examples/wsk-echo/src/connection.rs): after registering, a task
# (a pool block with the library's task tag, and its work item) takes a binding reference and
# holds it; when a detach or the unload begins, the task is cancelled (its work item queued) and
# lets it go, then ends (its block freed).
CONNECTION_OPEN_LOG = "connection: holding a binding reference"
CONNECTION_CLOSE_LOG = "connection: reference released"


@dataclass(frozen=True)
class DriverProfile:
    """One driver image, as the tests see it.

    name: the profile's name: the image is built as `<name>.sys` (the file name that selects this
      profile).
    service: the service name `sc create` gives it (the INF's), and the file name it is installed
      under (`<service>.sys`).
    log_name: the client's name: every log line starts `<log_name>: ` (default: `name`).
    backend: how the library attaches: "nmr" (NmrRegisterClient and the NMR callbacks) or
      "wskregister" (WskRegister / WskCaptureProviderNPI / WskReleaseProviderNPI / WskDeregister).
    binding_tag: the pool tag of the binding contexts (the library's allocations).
    work_item_tag: the pool tag of the library's work item contexts (one block per queued work
      item, allocated before IoAllocateWorkItem, freed by the work item's routine).
    module_id: the NPI_MODULEID GUID in its NPI_CLIENT_CHARACTERISTICS (NMR backend).
    own_tags: the driver's own allocations, one block per tag: allocated in DriverEntry before it
      registers, freed in DriverUnload after the deregistration completed.
    setup_logs: logged in DriverEntry after the `pool:` line, before it registers.
    teardown_logs: logged in DriverUnload once deregistration is complete, before the
      `unloaded, live pool allocations: N` line.
    setup_failure_log: logged when DriverEntry's own allocation fails (None: it has none).
    connection_tag: the driver holds a connection — a task (its pool block has this tag, the
      library's task tag) spawned once DriverEntry registered, which takes a binding reference
      (logs CONNECTION_OPEN_LOG) and, cancelled when a detach or the unload begins, lets it go
      (logs CONNECTION_CLOSE_LOG) and ends; so a provider detach pends and the unload waits for
      it. None: no connection (the driver queues no work item).
    parameters_tag: the connection's parameters block (when it has Parameters to echo), the
      task's, freed when the task ends.
    server: the echo server (examples/wsk-echo-server): without Parameters it registers and
      serves nothing (its setup_logs say why); with them, tests/wine/test_wine_server.py.
    c_baseline: the C echo driver (baseline/wsk_echo_baseline.c, raw NMR), the Rust echo
      driver's comparator: not built on wsk-client (a system thread, no task, no work item), so
      only tests/speakeasy/test_c_echo.py is about it.
    Log lines are given without the `<log_name>: ` prefix.
    """

    name: str
    service: str
    binding_tag: str
    module_id: uuid.UUID
    backend: str = "nmr"
    log_name: Optional[str] = None
    work_item_tag: Optional[str] = None
    own_tags: Tuple[str, ...] = ()
    setup_logs: Tuple[str, ...] = ()
    teardown_logs: Tuple[str, ...] = ()
    setup_failure_log: Optional[str] = None
    connection_tag: Optional[str] = None
    parameters_tag: Optional[str] = None
    server: bool = False
    c_baseline: bool = False

    def __post_init__(self):
        if self.backend not in ("nmr", "wskregister"):
            raise ValueError("%s: unknown backend %r" % (self.name, self.backend))
        if self.work_item_tag is None:  # the library's default: the binding tag, last char W
            object.__setattr__(self, "work_item_tag", self.binding_tag[:3] + "W")

    @property
    def prefix(self) -> str:
        return (self.log_name or self.name) + ": "

    @property
    def image_name(self) -> str:
        """The built image's file name (selects the profile)."""
        return self.name + ".sys"

    @property
    def sys_name(self) -> str:
        """The file name the image is installed under (the service's)."""
        return self.service + ".sys"

    @property
    def connection(self) -> bool:
        return self.connection_tag is not None

    @property
    def registered_log(self) -> str:
        """The line that ends a successful registration."""
        return ("registered as WSK NPI client" if self.backend == "nmr"
                else "registered as WSK client (WskRegister)")

    @property
    def started_log(self) -> str:
        """The last line of a start: the connection's, else the registration's."""
        return CONNECTION_OPEN_LOG if self.connection else self.registered_log

    def log(self, text: str) -> str:
        """A log line of this driver: `<log_name>: text`."""
        return self.prefix + text


WSK_ATTACH = DriverProfile(
    name="wsk_attach",
    service="wsk_attach",
    binding_tag="WskA",
    module_id=uuid.UUID("4D636F0B-B15B-48CA-8894-FB0987DBE869"),
)

WSK_ECHO = DriverProfile(
    name="wsk_echo",
    service="wsk_echo",
    binding_tag="EchB",
    work_item_tag="EchW",
    module_id=uuid.UUID("9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718"),
    own_tags=("EchG",),
    setup_logs=("setup: driver context ready (start 1)",),
    teardown_logs=("teardown: driver context freed",),
    setup_failure_log="setup failed: no pool",
    connection_tag="EchT",
    parameters_tag="EchP",
)

# The same example built with the `wsk-register` feature: the same service, file and log name
# (and tags, and module id, which this backend never hands to NMR itself).
WSK_ECHO_WSKREGISTER = DriverProfile(
    name="wsk_echo_wskregister",
    service="wsk_echo",
    log_name="wsk_echo",
    backend="wskregister",
    binding_tag="EchB",
    work_item_tag="EchW",
    module_id=uuid.UUID("9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718"),
    own_tags=("EchG",),
    setup_logs=("setup: driver context ready (start 1)",),
    teardown_logs=("teardown: driver context freed",),
    setup_failure_log="setup failed: no pool",
    connection_tag="EchT",
    parameters_tag="EchP",
)

# The echo server (examples/wsk-echo-server), both backends: the same service and log name. The
# generic suites run it without Parameters: it says so in DriverEntry, before it registers, and
# spawns no task.
SERVER_SETUP_LOGS = ("parameters: no Parameters key (0xC0000034): not serving",)

WSK_ECHO_SERVER = DriverProfile(
    name="wsk_echo_server",
    service="wsk_echo_server",
    binding_tag="SrvB",
    module_id=uuid.UUID("5E7A1C42-0B9D-4E63-8F21-7A4C9D3E6B15"),
    setup_logs=SERVER_SETUP_LOGS,
    server=True,
)

WSK_ECHO_SERVER_WSKREGISTER = DriverProfile(
    name="wsk_echo_server_wskregister",
    service="wsk_echo_server",
    log_name="wsk_echo_server",
    backend="wskregister",
    binding_tag="SrvB",
    module_id=uuid.UUID("5E7A1C42-0B9D-4E63-8F21-7A4C9D3E6B15"),
    setup_logs=SERVER_SETUP_LOGS,
    server=True,
)

# The C echo driver (baseline/wsk_echo_baseline.c, `cargo xtask baseline` builds it into
# target/baseline), raw NMR: the Rust echo driver's identity (service, log name, module id,
# binding tag), its own blocks the send and receive buffers ('EchS', 'EchR').
WSK_ECHO_BASELINE = DriverProfile(
    name="wsk_echo_baseline",
    service="wsk_echo",
    log_name="wsk_echo",
    binding_tag="EchB",
    module_id=uuid.UUID("9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718"),
    c_baseline=True,
)

PROFILES: Dict[str, DriverProfile] = {
    p.image_name: p for p in (WSK_ATTACH, WSK_ECHO, WSK_ECHO_WSKREGISTER, WSK_ECHO_SERVER,
                              WSK_ECHO_SERVER_WSKREGISTER, WSK_ECHO_BASELINE)}

# The image tested when $WSK_DRIVER_SYS is not set: the seed driver.
DEFAULT_IMAGE = os.path.join(IMAGE_DIR, WSK_ATTACH.image_name)


class UnknownDriver(ValueError):
    pass


def image_from_env(root: str) -> str:
    """$WSK_DRIVER_SYS, else the seed driver's image under `root` (the repository)."""
    return os.environ.get("WSK_DRIVER_SYS") or os.path.join(root, DEFAULT_IMAGE)


def profile_for(image: str) -> DriverProfile:
    """The profile of `image`, by its file name, or by $WSK_DRIVER_PROFILE when that is set: a
    profile's name, or a whole profile as a JSON object of DriverProfile's fields (a driver made
    by `cargo xtask new`, which is none of this repository's).

    Raises UnknownDriver for any other file name: a suite must not guess what to expect.
    """
    forced = os.environ.get("WSK_DRIVER_PROFILE")
    if forced and forced.lstrip().startswith("{"):
        try:
            fields = json.loads(forced)
            fields["module_id"] = uuid.UUID(fields["module_id"])
            for key in ("own_tags", "setup_logs", "teardown_logs"):
                if key in fields:
                    fields[key] = tuple(fields[key])
            return DriverProfile(**fields)
        except (ValueError, KeyError, TypeError) as error:
            raise UnknownDriver("WSK_DRIVER_PROFILE: not a driver profile: %s" % error) from None
    if forced:
        for p in PROFILES.values():
            if forced in (p.name, p.image_name):
                return p
        raise UnknownDriver("WSK_DRIVER_PROFILE=%s: no such driver profile (known: %s)"
                            % (forced, ", ".join(p.name for p in PROFILES.values())))
    base = os.path.basename(image)
    try:
        return PROFILES[base]
    except KeyError:
        raise UnknownDriver(
            "%s: no driver profile for an image called %r (known: %s); name the image after its "
            "driver, or set WSK_DRIVER_PROFILE" % (image, base, ", ".join(PROFILES))) from None
