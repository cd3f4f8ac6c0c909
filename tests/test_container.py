"""The Dockerfile: hadolint-clean, and an image built from it defaces and verifies the demo case."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_TOOLS = ("podman", "buildah", "mmdebstrap")


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (scripts/setup.sh --tests installs it with the test extra)")
    done = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(any(shutil.which(tool) is None for tool in BUILD_TOOLS),
                    reason="podman, buildah or mmdebstrap not installed (scripts/setup.sh --tests installs them)")
def test_image_builds_and_defaces_the_demo_inside():
    """The real build on a local stand-in base (no registry here), then `deface-ts demo` in the image (~3 min)."""
    done = subprocess.run([str(ROOT / "scripts" / "docker_build_test.sh")], capture_output=True, text=True,
                          env={**os.environ, "CLEAN": "1", "IMAGE": "localhost/deface-ts:pytest"}, timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "built, demo defaced and verified inside it" in done.stdout
