#!/usr/bin/env bash
# Sets up what running and the tests need (scripts/setup.sh --tests) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
DEFACE_TS_REQUIRE_EXTRAS=1 exec .venv/bin/python -m pytest -q "$@"
