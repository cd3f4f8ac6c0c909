#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DEFACE_TS_REQUIRE_EXTRAS=1 exec .venv/bin/python -m pytest -q "$@"
