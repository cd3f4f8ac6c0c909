"""Shared fixtures: real phantom DICOM-RT studies written to disk, and the Debian checkers."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from deface_ts.phantom import PhantomOptions, write_phantom_study

#: Small but anatomically complete phantoms keep the suite fast.
SMALL = dict(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0)


#: The one kind of skip CI accepts: the machine lacks hardware (a CUDA GPU), which no setup script can install.
#: Tests skip with ``pytest.skip(f"{HARDWARE_ABSENT} no CUDA GPU")``; every other skip is a missing extra.
HARDWARE_ABSENT = "hardware absent:"


def _extras_required() -> bool:
    return os.environ.get("DEFACE_TS_REQUIRE_EXTRAS") == "1"


def _skip_reason(longrepr) -> str:
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With DEFACE_TS_REQUIRE_EXTRAS=1 (scripts/test.sh, CI) every skip in setup or call fails the test.

    The TotalSegmentator, render, face-detector, Slurm and container tests skip on a bare install, but
    where the project's setup ran they must run: a broken install must not turn them into silent
    skips. Judged by outcome, not by message, so a skip worded differently cannot slip through; only
    `HARDWARE_ABSENT` skips stay skips.
    """
    outcome = yield
    report = outcome.get_result()
    if _extras_required() and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report.longrepr)
        if HARDWARE_ABSENT not in reason:
            report.outcome = "failed"
            report.longrepr = f"required extra missing (DEFACE_TS_REQUIRE_EXTRAS=1): {reason}"


@pytest.fixture(autouse=True, scope="session")
def deid_key_home(tmp_path_factory):
    """De-identification keys created by tests go to a test folder, never to the user's ~/.config."""
    saved = {name: os.environ.get(name) for name in ("XDG_CONFIG_HOME", "DEFACE_TS_DEID_KEY")}
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    os.environ.pop("DEFACE_TS_DEID_KEY", None)
    yield Path(os.environ["XDG_CONFIG_HOME"])
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same at collection: a module-level ``pytest.importorskip`` skips the whole file before any test."""
    outcome = yield
    report = outcome.get_result()
    if _extras_required() and report.skipped:
        reason = _skip_reason(report.longrepr)
        if HARDWARE_ABSENT not in reason:
            report.outcome = "failed"
            report.longrepr = f"required extra missing at collection (DEFACE_TS_REQUIRE_EXTRAS=1): {reason}"


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory):
    """Write each distinct phantom once per session; tests copy it before changing anything."""
    cache: dict = {}

    def make(**options):
        key = tuple(sorted({**SMALL, **options}.items()))
        if key not in cache:
            folder = tmp_path_factory.mktemp("phantom")
            cache[key] = write_phantom_study(folder / "study", PhantomOptions(**dict(key)))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def face_ct(phantom_cache):
    """The phantom at 1 mm pixels and 2 mm slices, read back from DICOM: a face detectors recognise."""
    from tests.vision.scenes import FACE_PHANTOM, load_phantom_ct

    return load_phantom_ct(phantom_cache(**FACE_PHANTOM))


@pytest.fixture
def phantom(phantom_cache):
    """The default small HFS phantom (read-only: copy it with `copy_study` before modifying)."""
    return phantom_cache()


def copy_study(study, destination: Path) -> Path:
    shutil.copytree(study.folder, destination)
    return destination


def tree_digest(folder: Path) -> dict[str, str]:
    """Content hash of every file under a folder, to prove inputs are never modified."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }
