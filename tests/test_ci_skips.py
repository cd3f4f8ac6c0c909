"""DEFACE_TS_REQUIRE_EXTRAS=1 turns every skip for a missing extra into a failure, collection included.

Run on real pytest sessions in a subprocess, with this suite's conftest as the only plugin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "test_module_skip.py": 'import pytest\npytest.importorskip("no_such_module_deface_ts")\n\n'
                           "def test_never_collected():\n    pass\n",
    "test_odd_message.py": 'import pytest\n\ndef test_odd():\n    pytest.skip("weights for the thing are absent")\n',
    "test_marker.py": 'import pytest\n\n@pytest.mark.skipif(True, reason="tool missing")\ndef test_marked():\n    pass\n',
    "test_fixture.py": 'import pytest\n\n@pytest.fixture\ndef needs():\n    pytest.skip("fixture says no")\n\n'
                       "def test_uses(needs):\n    pass\n",
    "test_hardware.py": 'import pytest\nfrom tests.conftest import HARDWARE_ABSENT\n\n'
                        'def test_gpu():\n    pytest.skip(f"{HARDWARE_ABSENT} no CUDA GPU")\n',
}


def run(folder: Path, required: bool) -> str:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("DEFACE_TS_REQUIRE_EXTRAS", None)
    if required:
        env["DEFACE_TS_REQUIRE_EXTRAS"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "tests.conftest", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "--rootdir", str(folder), str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder, check=False)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def sessions(tmp_path_factory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("skips")
    for name, text in CASES.items():
        (folder / name).write_text(text)
    return run(folder, required=False), run(folder, required=True)


def test_without_the_flag_skips_stay_skips(sessions):
    relaxed, _ = sessions
    assert "5 skipped" in relaxed and "failed" not in relaxed and "error" not in relaxed.lower()


def test_with_the_flag_every_extra_skip_fails_collection_included(sessions):
    _, strict = sessions
    assert "required extra missing at collection" in strict and "no_such_module_deface_ts" in strict
    for test in ("test_odd_message.py::test_odd", "test_marker.py::test_marked", "test_fixture.py::test_uses"):
        assert f"FAILED {test}" in strict or f"ERROR {test}" in strict
    assert "weights for the thing are absent" in strict and "tool missing" in strict and "fixture says no" in strict
    assert "1 skipped" in strict  # the GPU test: hardware no setup script can install
