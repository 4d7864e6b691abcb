#!/usr/bin/env bash
# Lints .github/workflows/*.yml on Linux, where the Windows workflow cannot run:
#   check-jsonschema --builtin-schema vendor.github-workflows   the workflow schema (SchemaStore,
#                                                                bundled in the package)
#   zizmor --offline                                            workflow semantics and security
#                                                                (config: .github/zizmor.yml)
# Both are pinned in windows/lint-requirements.txt and installed in a venv under target/lint-venv
# (tests/python-venv.sh).
# Fails loudly when anything is missing or any finding is reported.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workflows="$repo_root/.github/workflows"
zizmor_config="$repo_root/.github/zizmor.yml"

die() { echo "lint-workflows: error: $*" >&2; exit 1; }

[ -d "$workflows" ] || die "no $workflows directory"
[ -f "$zizmor_config" ] || die "missing $zizmor_config"
shopt -s nullglob
files=("$workflows"/*.yml "$workflows"/*.yaml)
[ "${#files[@]}" -gt 0 ] || die "no workflow files in $workflows"

python="$("$repo_root/tests/python-venv.sh" "$repo_root/target/lint-venv" \
  "$repo_root/windows/lint-requirements.txt" check_jsonschema | tail -n 1)"
venv="$(dirname "$(dirname "$python")")"
for tool in check-jsonschema zizmor; do
    [ -x "$venv/bin/$tool" ] || die "$venv/bin/$tool missing after pip install"
done

echo "lint-workflows: ${#files[@]} file(s): $(printf '%s ' "${files[@]#"$repo_root"/}")"
"$venv/bin/check-jsonschema" --builtin-schema vendor.github-workflows "${files[@]}" \
    || die "check-jsonschema: a workflow does not match the GitHub workflow schema (above)"
"$venv/bin/zizmor" --offline --no-progress --config "$zizmor_config" "${files[@]}" \
    || die "zizmor reported findings (above)"
echo "lint-workflows: clean"
