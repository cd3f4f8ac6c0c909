"""Third-party modules that load at their first use instead of at start-up (the standard library's LazyLoader).

The command line imports every stage's code before its first stage. Two of its imports cost more than they
give at that point: scipy.ndimage and scipy.signal (~0.15 s on the 2-core machine, through scipy's array-API
layer) are first used when the face is located or the removal planned, and `deface-ts deid` never uses them.
Deferred, they are loaded when first used (by then in the main thread: Python 3.11's LazyLoader must not be
first touched by two threads at once). Only submodules imported as ``from package import module`` stay
deferred: a plain ``import module`` of a registered one loads it there and then (Python 3.11's import system
reads the module's ``__spec__``), which is why pydicom's ``import requests`` (for its test-file downloads,
~0.05 s) is not on the list: pydicom is imported with such probes hidden instead (`import_pydicom_lean`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

DEFERRED = ("scipy.ndimage", "scipy.signal")

#: Optional packages pydicom imports at its own import, to see which of its plugins can run: python-gdcm and Pillow
#: (decoders of compressed pixel data; gdcm ~0.1 s, the dearest part of the start-up after numpy, Pillow with its
#: colour management ~0.015 s) and requests and tqdm (the download of pydicom's own test files, ~0.1 s with urllib3
#: and charset_normalizer). A deface-ts run uses none of them through pydicom.
PYDICOM_PROBES = ("gdcm", "PIL", "requests", "tqdm")
#: Decoders hidden only where pylibjpeg's decoders stand in for them.
PYDICOM_DECODERS = ("gdcm", "PIL")
#: pylibjpeg's decoders, which cover what gdcm's decoder would (JPEG, JPEG-LS, JPEG 2000, HTJ2K; RLE is pydicom's own).
PYLIBJPEG_DECODERS = ("pylibjpeg", "libjpeg", "openjpeg")


def defer_imports(names: tuple[str, ...] = DEFERRED) -> list[str]:
    """Register each module not yet imported as a lazy one; return the names registered."""
    done = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        spec.loader = importlib.util.LazyLoader(spec.loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        parent, _, child = name.rpartition(".")
        if parent:
            # ``from scipy import ndimage`` finds the attribute and binds the lazy module; without it scipy's
            # __getattr__ would call import_module, which touches the module and loads it there and then.
            setattr(importlib.import_module(parent), child, module)
        done.append(name)
    return done


def import_pydicom_lean() -> list[str]:
    """Import pydicom with the optional packages it probes hidden from it; return the names hidden.

    A name set to None in ``sys.modules`` makes its import fail with ImportError, which pydicom takes as "not
    installed": its gdcm plugin and its test-file download stay off for this process. The names are restored
    at once, so a later ``import gdcm`` (dicom2nifti), ``import PIL`` (the QC pictures) or ``import requests``
    (TotalSegmentator) loads them as usual. gdcm and Pillow are hidden only where pylibjpeg's decoders are
    installed: without them they are pydicom's decoders for compressed CT. Nothing is hidden once pydicom is
    imported (its plugins are already chosen).
    """
    if "pydicom" in sys.modules:
        return []
    hidden = [name for name in PYDICOM_PROBES if name not in sys.modules]
    if not all(importlib.util.find_spec(name) for name in PYLIBJPEG_DECODERS):
        hidden = [name for name in hidden if name not in PYDICOM_DECODERS]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        importlib.import_module("pydicom")
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return hidden
