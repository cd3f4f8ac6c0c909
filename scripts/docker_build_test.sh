#!/usr/bin/env bash
# Builds the Dockerfile on a local stand-in base and runs the demo inside the image (no registry is reachable
# here, so PyTorch's image cannot be pulled): a minimal Debian made by mmdebstrap, whose Python is made
# pip-installable like a conda image's, with torch from the CPU wheel on this machine.
# Needs root, podman, buildah and mmdebstrap (apt-get install podman buildah mmdebstrap runc), ~6 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-/tmp/deface-ts-image}
base=localhost/deface-ts-standin:bookworm
image=${IMAGE:-localhost/deface-ts:test}
mkdir -p "$work"
if ! podman image exists "$base"; then
  mmdebstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    bookworm "$work/base.tar" http://deb.debian.org/debian
  podman import "$work/base.tar" "$base"
fi
wheel=$(ls /opt/wheels/torch-2.13.0*.whl 2>/dev/null | head -1 || true)
torch=${wheel:-torch==2.13.0}
# gVisor refuses the rlimits podman sets for RUN steps: chroot isolation sets none.
podman build --isolation=chroot --network=host \
  -v /opt/wheels:/opt/wheels:ro -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg BASE="$base" --build-arg TORCH="$torch" -t "$image" .
# Run the image's entry point on the demo case (buildah run: chroot isolation, as above).
container=$(buildah from "$image")
trap 'buildah rm "$container" >/dev/null' EXIT
buildah run --isolation=chroot "$container" -- deface-ts --version
buildah run --isolation=chroot "$container" -- deface-ts models status
# buildah's chroot runner now and then fails to start the command at all ("Close_Fd sealing memfd copy:
# Device or resource busy", exit 1, before deface-ts prints anything): that start, and only that, is tried again.
if ! buildah run --isolation=chroot "$container" -- deface-ts demo /home/deface/demo --config public 2>"$work/demo.err"; then
  cat "$work/demo.err" >&2
  grep -q "sealing memfd copy" "$work/demo.err" || exit 1
  buildah run --isolation=chroot "$container" -- deface-ts demo /home/deface/demo --config public
fi
buildah run --isolation=chroot "$container" -- \
  grep -q '"status": "verified: ' /home/deface/demo/defaced/report.json
echo "image $image: built, demo defaced and verified inside it"
if [ "${CLEAN:-0}" = 1 ]; then  # tests: leave only the stand-in base behind
  buildah rm "$container" >/dev/null && trap - EXIT
  podman rmi "$image" >/dev/null && podman image prune -f >/dev/null
fi
