#!/usr/bin/env bash
# Installs everything deface-ts and its tests need on a fresh Debian/Ubuntu machine. Safe to re-run.
#  - Debian tools used as independent checkers (dicom3tools, dcmtk, plastimatch), Slurm and munge for the
#    batch tests' one-node cluster, podman, buildah and mmdebstrap for the image build test, and Mesa's
#    offscreen OpenGL (EGL, OSMesa) for VTK renders without an X server;
#  - a virtual environment .venv with the package, its test extras, the TotalSegmentator backend on the
#    CPU torch wheel (never a CUDA build), and the privacy extra (renderer and face detectors).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v dcmdump >/dev/null || need_apt+=(dcmtk)
command -v plastimatch >/dev/null || need_apt+=(plastimatch)
# A real one-node Slurm cluster for the batch tests (started by the tests themselves, never as a service).
for tool in slurmctld slurmd munge; do
  [ -x "/usr/sbin/$tool" ] || [ -x "/usr/sbin/${tool}d" ] || need_apt+=("$tool")
done
command -v sbatch >/dev/null || need_apt+=(slurm-client)
# Building the Dockerfile in a test: podman/buildah (chroot isolation) on a base image made by mmdebstrap.
for tool in podman buildah mmdebstrap runc fuse-overlayfs slirp4netns; do
  command -v "$tool" >/dev/null || need_apt+=("$tool")
done
command -v newuidmap >/dev/null || need_apt+=(uidmap)
for lib in libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6; do
  dpkg -s "$lib" >/dev/null 2>&1 || need_apt+=("$lib")
done
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if [ ${#need_apt[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
TORCH=${DEFACE_TS_TORCH:-torch==2.13.0}  # the CPU wheel on this disk; a GPU machine may set a CUDA build
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.deface-ts-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  pip=(.venv/bin/python -m pip install -q)
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  "${pip[@]}" "$TORCH"
  pin=$(mktemp)
  .venv/bin/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$pin"
  "${pip[@]}" -c "$pin" -e ".[test,totalseg]"
  # TotalSegmentator pulls PyPI's torchvision (a CUDA build), which breaks beside the CPU torch and is not
  # needed: deface-ts registers nnU-Net's trainer classes itself (deface_ts/locate/totalseg.py).
  .venv/bin/python -m pip uninstall -q -y torchvision 2>/dev/null || true
  # A second step: TotalSegmentator's preview dependency (fury) caps vtk below 9.4, whose wheels lack
  # offscreen EGL/OSMesa; deface-ts never uses fury.
  "${pip[@]}" -c "$pin" -e ".[privacy]"
  "${pip[@]}" --no-deps mediapipe==0.10.21
  rm -f "$pin"
  touch "$stamp"
fi

# A real head CT for the tests (Debian's invesalius-examples: Cranium.inv3, a tar.gz holding matrix.dat, raw
# int16 108x256x256, and main.plist with its spacing). Only matrix.dat and main.plist are kept, under the
# cache folder tests/real_heads.py reads ($DEFACE_TS_DATA, else ~/.cache/deface-ts).
data=${DEFACE_TS_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deface-ts}/invesalius/Cranium
if [ ! -f "$data/matrix.dat" ] || [ ! -f "$data/main.plist" ]; then
  work=$(mktemp -d)
  (cd "$work" && apt-get download -q invesalius-examples >/dev/null 2>&1 \
     || { $SUDO apt-get update -qq && apt-get download -q invesalius-examples >/dev/null; })
  dpkg-deb -x "$work"/invesalius-examples_*.deb "$work/x"
  mkdir -p "$work/inv3" "$data"
  tar xzf "$(find "$work/x" -name Cranium.inv3)" -C "$work/inv3"
  cp "$(find "$work/inv3" -name matrix.dat)" "$(find "$work/inv3" -name main.plist)" "$data/"
  rm -rf "$work"
fi
