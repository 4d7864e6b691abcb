#!/usr/bin/env bash
# The Wine tests in one command: install Wine and the venv when missing (setup.sh), then pytest.
# The driver image is $WSK_DRIVER_SYS (wsk_attach.sys, wsk_echo.sys or wsk_echo_wskregister.sys;
# what is expected of it is the driver profile of its file name or of $WSK_DRIVER_PROFILE,
# tests/driver_profiles.py), else target/x86_64-pc-windows-msvc/release/wsk_attach.sys (built
# once with `cargo xtask sys` when missing); for a raw NMR image the test NETIO.SYS variants are
# $WSK_WINE_PROVIDER_WSK11 / $WSK_WINE_PROVIDER_NOIF11, else built by build-provider.sh (the
# WskRegister image runs against Wine's own netio.sys).
#   usage: tests/wine/run.sh [pytest args...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py="$("$here/setup.sh" | tail -n 1)"
cd "$root"
exec "$py" -m pytest -p no:cacheprovider "$here" "$@"
