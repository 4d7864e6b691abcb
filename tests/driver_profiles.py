"""What the Speakeasy and Wine suites expect of each driver image that embeds wsk-client.

Both images run the same library code and log the same lines; a profile holds what differs.
The profile is chosen by the image's file name (`wsk_attach.sys`, `wsk_echo.sys`); any other
name is an error, unless $WSK_DRIVER_PROFILE names the profile to use (for a renamed copy of an
image, or to check that the suites fail when the profile does not fit the image).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

# Where `cargo xtask sys` puts the images.
IMAGE_DIR = os.path.join("target", "x86_64-pc-windows-msvc", "release")


@dataclass(frozen=True)
class DriverProfile:
    """One driver image, as the tests see it.

    name: the client's name: the image is `<name>.sys`, every log line starts `<name>: `.
    service: the service name `sc create` gives it (the INF's).
    binding_tag: the pool tag of the binding contexts (the library's allocations).
    module_id: the NPI_MODULEID GUID in its NPI_CLIENT_CHARACTERISTICS.
    own_tags: the driver's own allocations, one block per tag: allocated in DriverEntry before
      NmrRegisterClient, freed in DriverUnload after NmrWaitForClientDeregisterComplete.
    setup_logs: logged in DriverEntry after the `pool:` line, before NmrRegisterClient.
    teardown_logs: logged in DriverUnload once deregistration is complete, before the
      `unloaded, live pool allocations: N` line.
    setup_failure_log: logged when DriverEntry's own allocation fails (None: it has none).
    Log lines are given without the `<name>: ` prefix.
    """

    name: str
    service: str
    binding_tag: str
    module_id: uuid.UUID
    own_tags: Tuple[str, ...] = ()
    setup_logs: Tuple[str, ...] = ()
    teardown_logs: Tuple[str, ...] = ()
    setup_failure_log: Optional[str] = None

    @property
    def prefix(self) -> str:
        return self.name + ": "

    @property
    def image_name(self) -> str:
        return self.name + ".sys"

    def log(self, text: str) -> str:
        """A log line of this driver: `<name>: text`."""
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
    module_id=uuid.UUID("9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718"),
    own_tags=("EchD",),
    setup_logs=("setup: driver context ready (start 1)",),
    teardown_logs=("teardown: driver context freed",),
    setup_failure_log="setup failed: no pool",
)

PROFILES: Dict[str, DriverProfile] = {p.image_name: p for p in (WSK_ATTACH, WSK_ECHO)}

# The image tested when $WSK_DRIVER_SYS is not set: the seed driver.
DEFAULT_IMAGE = os.path.join(IMAGE_DIR, WSK_ATTACH.image_name)


class UnknownDriver(ValueError):
    pass


def image_from_env(root: str) -> str:
    """$WSK_DRIVER_SYS, else the seed driver's image under `root` (the repository)."""
    return os.environ.get("WSK_DRIVER_SYS") or os.path.join(root, DEFAULT_IMAGE)


def profile_for(image: str) -> DriverProfile:
    """The profile of `image`, by its file name, or by $WSK_DRIVER_PROFILE when that is set.

    Raises UnknownDriver for any other file name: a suite must not guess what to expect.
    """
    forced = os.environ.get("WSK_DRIVER_PROFILE")
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
