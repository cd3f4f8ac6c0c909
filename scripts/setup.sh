#!/usr/bin/env bash
# Installs what deface-ts needs on a fresh Debian/Ubuntu machine. Safe to re-run.
#
#   scripts/setup.sh            what running needs (scripts/demo.sh calls this): Mesa's offscreen OpenGL (EGL,
#                               OSMesa) for VTK renders without an X server, and a virtual environment .venv with
#                               the package and the privacy extra (renderer and face detectors).
#   scripts/setup.sh --tests    also what the tests need (scripts/test.sh calls this): the Debian tools used as
#                               independent checkers (dicom3tools, dcmtk, plastimatch), Slurm and munge for the
#                               batch tests' one-node cluster, podman, buildah and mmdebstrap for the image build
#                               test, and the test and TotalSegmentator extras (torch from the CPU wheel).
#   --dry-run                   print what would be installed, install nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

tests=0
dry=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    --dry-run) dry=1 ;;
    *) echo "usage: scripts/setup.sh [--tests] [--dry-run]" >&2; exit 2 ;;
  esac
done

# "package[:command]": the package is wanted unless the command (else the package itself) is already there.
run_apt=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6)
test_apt=(dicom3tools:dciodvfy dcmtk:dcmdump plastimatch:plastimatch
          slurmctld:/usr/sbin/slurmctld slurmd:/usr/sbin/slurmd munge:/usr/sbin/munged slurm-client:sbatch
          podman:podman buildah:buildah mmdebstrap:mmdebstrap runc:runc fuse-overlayfs:fuse-overlayfs
          slirp4netns:slirp4netns uidmap:newuidmap)
wanted=("${run_apt[@]}")
[ "$tests" -eq 1 ] && wanted+=("${test_apt[@]}")

need_apt=()
for entry in "${wanted[@]}"; do
  package=${entry%%:*}
  command=${entry#*:}
  if [ "$command" != "$entry" ]; then
    command -v "$command" >/dev/null 2>&1 || [ -x "$command" ] || need_apt+=("$package")
  else
    dpkg -s "$package" >/dev/null 2>&1 || need_apt+=("$package")
  fi
done

extras=privacy
[ "$tests" -eq 1 ] && extras=test,totalseg,privacy
if [ "$dry" -eq 1 ]; then
  echo "wanted Debian packages: ${wanted[*]%%:*}"
  echo "missing Debian packages: ${need_apt[*]:-none}"
  echo "pip extras: $extras"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
TORCH=${DEFACE_TS_TORCH:-torch==2.13.0}  # the CPU wheel on this disk; a GPU machine may set a CUDA build
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.deface-ts-installed-$extras
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ] && [ ! scripts/setup.sh -nt "$1" ]; }
# A set-up for the tests holds everything running needs.
if ! fresh "$stamp" && ! fresh .venv/.deface-ts-installed-test,totalseg,privacy; then
  # pip's resolver names conflicts of packages installed in other steps; the one it always names here (fury,
  # TotalSegmentator's preview dependency, wants vtk < 9.4, whose wheels lack offscreen rendering; deface-ts
  # never uses fury) is dropped, any other is shown.
  pip_install() { .venv/bin/python -m pip install -q "$@" 2> >(awk -f scripts/pip-conflicts.awk >&2); }
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  pin=$(mktemp)
  if [ "$tests" -eq 1 ]; then
    pip_install "$TORCH"
    .venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$pin"
    pip_install -c "$pin" -e ".[test,totalseg]"
    # TotalSegmentator pulls PyPI's torchvision (a CUDA build), which breaks beside the CPU torch and is not
    # needed: deface-ts registers nnU-Net's trainer classes itself (deface_ts/locate/totalseg/runtime.py).
    .venv/bin/python -m pip uninstall -q -y torchvision 2>/dev/null || true
  fi
  # A step of its own: TotalSegmentator's preview dependency (fury) caps vtk below 9.4.
  pip_install -c "$pin" -e ".[privacy]"
  pip_install --no-deps mediapipe==0.10.21
  rm -f "$pin"
  touch "$stamp"
fi
# The package's bytecode, as pip writes it for a non-editable install: where PYTHONDONTWRITEBYTECODE is set (CI,
# containers) Python would otherwise compile deface-ts from source at every start (~0.08 s of the start-up).
# Python checks each .pyc against its source, so an edited module is compiled afresh, never run stale.
.venv/bin/python -m compileall -q -j 0 deface_ts >/dev/null

# A real head CT for the tests (Debian's invesalius-examples: Cranium.inv3, a tar.gz holding matrix.dat, raw
# int16 108x256x256, and main.plist with its spacing). Only matrix.dat and main.plist are kept, under the
# cache folder tests/real_heads.py reads ($DEFACE_TS_DATA, else ~/.cache/deface-ts).
data=${DEFACE_TS_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deface-ts}/invesalius/Cranium
if [ "$tests" -eq 1 ] && { [ ! -f "$data/matrix.dat" ] || [ ! -f "$data/main.plist" ]; }; then
  work=$(mktemp -d)
  (cd "$work" && apt-get download -q invesalius-examples >/dev/null 2>&1 \
     || { $SUDO apt-get update -qq && apt-get download -q invesalius-examples >/dev/null; })
  dpkg-deb -x "$work"/invesalius-examples_*.deb "$work/x"
  mkdir -p "$work/inv3" "$data"
  tar xzf "$(find "$work/x" -name Cranium.inv3)" -C "$work/inv3"
  cp "$(find "$work/inv3" -name matrix.dat)" "$(find "$work/inv3" -name main.plist)" "$data/"
  rm -rf "$work"
fi
