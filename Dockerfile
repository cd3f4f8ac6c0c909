# deface-ts for a cluster node or workstation: `docker run IMAGE deface /in /out` (entrypoint deface-ts).
#
# BASE must bring Python >= 3.10 with pip and, for TotalSegmentator on a GPU, a CUDA build of torch: the
# default is PyTorch's runtime image (Ubuntu, conda Python 3.11). Without torch in the base, set TORCH to the
# build to install first (scripts/docker_build_test.sh builds on a local Debian stand-in with the CPU wheel).
# TotalSegmentator weights are never downloaded: mount them and point TOTALSEG_HOME_DIR at them, e.g.
#   docker run --gpus all -v $HOME/.totalsegmentator:/weights -v /data:/data IMAGE deface /data/in /data/out
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

ARG TORCH=""

# Offscreen OpenGL for the verification renders (VTK's EGL/OSMesa): a container has no X server.
# Not pinned: the same names resolve on Ubuntu (PyTorch's image) and Debian bases, to different versions.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/deface-ts
COPY pyproject.toml README.md ./
COPY deface_ts ./deface_ts
COPY configs ./configs
COPY models ./models

# The steps of scripts/setup.sh: torch first (the base's, or TORCH), the package pinned to it, torchvision
# removed (PyPI's build breaks beside another torch; deface-ts registers nnU-Net's trainers itself), then the
# privacy extra (TotalSegmentator's fury caps vtk below 9.4, whose wheels bring EGL/OSMesa) and mediapipe.
# The named configs (`--config public`) install to <prefix>/share/deface-ts/configs.
# hadolint ignore=DL3013,SC2086
RUN if [ -n "$TORCH" ]; then python3 -m pip install --no-cache-dir $TORCH; fi \
 && python3 -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > /tmp/torch-pin.txt \
 && python3 -m pip install --no-cache-dir -c /tmp/torch-pin.txt ".[totalseg,codecs]" \
 && (python3 -m pip uninstall -y torchvision || true) \
 && python3 -m pip install --no-cache-dir -c /tmp/torch-pin.txt ".[privacy]" \
 && python3 -m pip install --no-cache-dir --no-deps mediapipe==0.10.21 \
 && rm /tmp/torch-pin.txt \
 && deface-ts --version

RUN useradd --create-home --uid 1000 deface
USER 1000
ENV TOTALSEG_HOME_DIR=/weights
WORKDIR /home/deface
ENTRYPOINT ["deface-ts"]
CMD ["--help"]
