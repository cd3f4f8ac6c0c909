"""Set-up in two profiles: what running needs (the demo) and what the tests need; pip's known noise dropped."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_ONLY = {"slurmctld", "slurmd", "slurm-client", "munge", "podman", "buildah", "mmdebstrap", "dicom3tools",
             "dcmtk", "plastimatch"}


def _dry_run(*args: str) -> dict[str, str]:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), *args, "--dry-run"], capture_output=True,
                          text=True, check=True)
    return dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_running_needs_no_test_tools():
    plan = _dry_run()
    wanted = set(plan["wanted Debian packages"].split())
    assert not wanted & TEST_ONLY and "libosmesa6" in wanted
    assert plan["pip extras"] == "privacy"


def test_tests_add_their_tools_and_extras():
    plan = _dry_run("--tests")
    assert TEST_ONLY <= set(plan["wanted Debian packages"].split())
    assert plan["pip extras"] == "test,totalseg,privacy"


def test_demo_sets_up_for_running_and_test_for_tests():
    demo = (ROOT / "scripts" / "demo.sh").read_text()
    test = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r"^scripts/setup\.sh$", demo, re.M) and re.search(r"^scripts/setup\.sh --tests$", test, re.M)


def test_unknown_setup_option_is_refused():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "--everything"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "usage: scripts/setup.sh [--tests] [--dry-run]" in done.stderr


HEADING = ("ERROR: pip's dependency resolver does not currently take into account all the packages that are "
           "installed. This behaviour is the source of the following dependency conflicts.")
FURY = "fury 0.12.0 requires vtk<9.4.0, but you have vtk 9.5.2 which is incompatible."
OTHER = "nnunetv2 2.6 requires numpy<2, but you have numpy 2.4.6 which is incompatible."


def _filtered(text: str) -> str:
    return subprocess.run(["awk", "-f", str(ROOT / "scripts" / "pip-conflicts.awk")], input=text,
                          capture_output=True, text=True, check=True).stdout


def test_pip_fury_conflict_is_dropped_and_others_kept():
    assert _filtered(f"{HEADING}\n{FURY}\n") == ""
    assert _filtered(f"{HEADING}\n{FURY}\n{OTHER}\n") == f"{HEADING}\n{OTHER}\n"
    assert _filtered("WARNING: something else\n") == "WARNING: something else\n"


def test_setup_writes_the_package_bytecode():
    """Where PYTHONDONTWRITEBYTECODE is set (CI, containers) a module without a .pyc is compiled at every start."""
    import importlib.util

    package = ROOT / "deface_ts"
    missing = [str(p.relative_to(ROOT)) for p in package.rglob("*.py")
               if not Path(importlib.util.cache_from_source(str(p))).is_file()]
    assert not missing, f"no bytecode for {missing[:5]} ({len(missing)} modules): run scripts/setup.sh"
