#!/usr/bin/env bash
# Sets up what running and the tests need (scripts/setup.sh --tests), then checks lint (ruff, with import
# sorting), types (mypy) and the layer contract (lint-imports: each package imports only the layers below it),
# and runs the whole test suite. Any of them failing fails the command (and CI).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
.venv/bin/ruff check deface_ts tests benchmarks scripts
.venv/bin/mypy
.venv/bin/lint-imports
DEFACE_TS_REQUIRE_EXTRAS=1 exec .venv/bin/python -m pytest -q "$@"
