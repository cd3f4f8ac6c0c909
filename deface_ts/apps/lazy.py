"""Third-party modules that load at their first use instead of at start-up (the standard library's LazyLoader).

The command line imports every stage's code before its first stage. Two of its imports cost more than they
give at that point: scipy.ndimage and scipy.signal (~0.15 s on the 2-core machine, through scipy's array-API
layer) are first used when the face is located or the removal planned, and `deface-ts deid` never uses them.
Deferred, they are loaded when first used (by then in the main thread: Python 3.11's LazyLoader must not be
first touched by two threads at once). Only submodules imported as ``from package import module`` stay
deferred: a plain ``import module`` of a registered one loads it there and then (Python 3.11's import system
reads the module's ``__spec__``), which is why pydicom's ``import requests`` (for its test-file downloads,
~0.05 s) is not on the list.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

DEFERRED = ("scipy.ndimage", "scipy.signal")


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
