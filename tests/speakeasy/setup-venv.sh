#!/usr/bin/env bash
# Create (or bring up to date) the Python environment for the Speakeasy harness:
#   target/speakeasy-venv with everything in tests/speakeasy/requirements.txt, pinned.
# Idempotent: a second run with the same requirements does nothing but check. Non-interactive;
# fails loudly. Prints the venv's python path as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${SPEAKEASY_VENV:-$root/target/speakeasy-venv}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
py="${PYTHON:-python3}"

die() { echo "setup-venv.sh: error: $*" >&2; exit 1; }

command -v "$py" >/dev/null 2>&1 || die "$py not found"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
  || die "$py is older than 3.8"

want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$venv/bin/python" -c 'import speakeasy, pytest' >/dev/null 2>&1; then
  echo "speakeasy venv up to date: $venv" >&2
  echo "$venv/bin/python"
  exit 0
fi

# The venv module (Debian splits ensurepip into python3-venv).
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing python3-venv with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; } \
      || die "apt-get install python3-venv failed"
    py=/usr/bin/python3
  else
    die "$py has no venv/ensurepip module; install python3-venv"
  fi
fi

if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "removing broken venv $venv (its python does not run)" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" || die "python -m venv $venv failed"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet -r "$req" >&2 || die "pip install -r $req failed"
"$venv/bin/python" -c 'import speakeasy, unicorn, pytest' || die "installed packages do not import"
"$venv/bin/python" -m pip check >&2 || die "pip check found broken requirements"
echo "$want" > "$stamp"
echo "speakeasy venv ready: $venv" >&2
echo "$venv/bin/python"
