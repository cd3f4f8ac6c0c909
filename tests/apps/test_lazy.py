"""Start-up: scipy.ndimage and scipy.signal load at their first use, not before the first stage."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from deface_ts.apps.lazy import defer_imports
print(sorted(defer_imports()))
import deface_ts.pipeline
from scipy import ndimage
print(type(sys.modules["scipy.ndimage"]).__name__, type(ndimage).__name__, type(sys.modules["scipy.signal"]).__name__)
import numpy as np
print(int(ndimage.binary_dilation(np.eye(3, dtype=bool)).sum()), type(sys.modules["scipy.ndimage"]).__name__)
"""


def test_deferred_modules_load_at_first_use():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['scipy.ndimage', 'scipy.signal']"
    assert out[1] == "_LazyModule _LazyModule _LazyModule"  # every stage's code imported, neither loaded yet
    assert out[2] == "7 module"  # loaded by its first use, and it works


def test_a_module_already_imported_stays_as_it_is():
    probe = "import scipy.ndimage\nfrom deface_ts.apps.lazy import defer_imports\nprint(defer_imports(('scipy.ndimage',)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
