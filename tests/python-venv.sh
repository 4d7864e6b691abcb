#!/usr/bin/env bash
# Creates, or brings up to date, a Python virtual environment from a pinned requirements file.
# Shared by tests/speakeasy/setup-venv.sh, tests/wine/setup.sh and windows/lint-workflows.sh.
#   usage: tests/python-venv.sh VENV_DIR REQUIREMENTS_FILE [MODULE...]
# Idempotent: nothing is installed when the requirements are unchanged (a hash stamp) and every
# MODULE imports. Installs Debian's python3-venv with apt-get when python3 cannot make a venv.
# Non-interactive; fails loudly. Prints the venv's python path as its last line.
set -euo pipefail

die() { echo "python-venv.sh: error: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 VENV_DIR REQUIREMENTS_FILE [MODULE...]"
venv="$1"
req="$2"
shift 2
modules=("$@")
py="${PYTHON:-python3}"
[ -f "$req" ] || die "no requirements file $req"
command -v "$py" >/dev/null 2>&1 || die "$py not found"

imports_ok() {
  local module
  for module in "${modules[@]}"; do
    "$venv/bin/python" -c "import $module" >/dev/null 2>&1 || return 1
  done
}

want="$(sha256sum "$req" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && imports_ok; then
  echo "venv up to date: $venv" >&2
  echo "$venv/bin/python"
  exit 0
fi

# The venv module (Debian splits ensurepip into python3-venv).
if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || die "$py cannot make a venv; install python3-venv (needs root)"
  command -v apt-get >/dev/null 2>&1 || die "$py cannot make a venv and apt-get is missing"
  echo "python-venv.sh: apt-get install python3-venv" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q python3-venv >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q python3-venv >&2; } \
    || die "apt-get install python3-venv failed"
  py=/usr/bin/python3
fi

if [ -e "$venv" ] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  echo "python-venv.sh: removing broken venv $venv (its python does not run)" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "python-venv.sh: creating $venv" >&2
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" || die "$py -m venv $venv failed"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
"$venv/bin/python" -m pip install --quiet -r "$req" >&2 || die "pip install -r $req failed"
"$venv/bin/python" -m pip check >&2 || die "pip check found broken requirements in $venv"
imports_ok || die "after pip install, one of these does not import: ${modules[*]}"
echo "$want" > "$stamp"
echo "venv ready: $venv" >&2
echo "$venv/bin/python"
