#!/usr/bin/env bash
# Sets up what running needs (scripts/setup.sh: no test tools), generates the built-in phantom study and defaces
# it into demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/deface-ts demo demo-output --overwrite "$@"
