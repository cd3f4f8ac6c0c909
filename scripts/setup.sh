#!/usr/bin/env bash
# Installs everything deface-ts and its tests need on a fresh Debian/Ubuntu machine:
# Debian tools used as independent checkers (dicom3tools, dcmtk, plastimatch) and a
# virtual environment .venv with the package and its test extras. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v dcmdump >/dev/null || need_apt+=(dcmtk)
command -v plastimatch >/dev/null || need_apt+=(plastimatch)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.deface-ts-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi
