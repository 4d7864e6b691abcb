#!/usr/bin/env bash
# Create (or bring up to date) the Python environment for the Speakeasy harness:
#   target/speakeasy-venv with everything in tests/speakeasy/requirements.txt, pinned.
# Idempotent; non-interactive; fails loudly. Prints the venv's python path as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
exec "$root/tests/python-venv.sh" "${SPEAKEASY_VENV:-$root/target/speakeasy-venv}" \
  "$here/requirements.txt" speakeasy unicorn pytest
