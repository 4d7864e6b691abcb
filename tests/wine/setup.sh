#!/usr/bin/env bash
# Prepare the Wine tests (tests/wine): Debian's Wine (wine64 + wine) when missing, installed
# non-interactively with apt-get (needs root, as on the project's machines), and the Python venv
# target/wine-venv with tests/wine/requirements.txt. Idempotent; fails loudly.
# Prints the venv's python path as its last line.
#   usage: tests/wine/setup.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${WSK_WINE_VENV:-$root/target/wine-venv}"
req="$here/requirements.txt"

die() { echo "tests/wine/setup.sh: error: $*" >&2; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
  export DEBIAN_FRONTEND=noninteractive
  echo "tests/wine/setup.sh: apt-get install $*" >&2
  apt-get install -y -q --no-install-recommends "$@" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "$@" >&2; } \
    || die "apt-get install $* failed"
}

# 1. Wine (Debian 12: wine 8.0; wine64 has the 64-bit loader, wine the `wine` launcher).
if ! command -v wine >/dev/null 2>&1 || ! command -v wineserver >/dev/null 2>&1 \
   || [ ! -x /usr/lib/wine/wine64 ]; then
  apt_install wine64 wine
fi
command -v wine >/dev/null 2>&1 || die "wine still missing after apt-get install"
command -v wineserver >/dev/null 2>&1 || die "wineserver still missing after apt-get install"
echo "wine: $(wine --version 2>/dev/null)" >&2

# 2. The venv.
exec "$root/tests/python-venv.sh" "$venv" "$req" pytest
