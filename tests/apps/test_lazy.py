"""Start-up: scipy.ndimage and scipy.signal load at their first use, not before the first stage."""

from __future__ import annotations

import json
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


LEAN = """
import sys
from deface_ts.apps.lazy import import_pydicom_lean
print(sorted(import_pydicom_lean()))
print(sorted(n for n in ("gdcm", "PIL", "requests", "tqdm") if n in sys.modules))
import pydicom.pixels.decoders.gdcm as plugin
print(plugin.HAVE_GDCM)
import gdcm, requests, tqdm  # restored: a later import loads them as usual
from PIL import Image
print(gdcm.Version.GetVersion().split(".")[0], requests.__name__, tqdm.__name__, Image.new("L", (2, 2)).size)
"""


def test_pydicom_is_imported_without_the_packages_it_probes():
    out = subprocess.run([sys.executable, "-c", LEAN], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['PIL', 'gdcm', 'requests', 'tqdm']"
    assert out[1] == "[]"  # not loaded by pydicom's import
    assert out[2] == "False"  # pydicom's gdcm plugin is off for this process
    assert out[3] == "3 requests tqdm (2, 2)"


COMPRESSED = """
import sys
from deface_ts.apps.lazy import import_pydicom_lean
import_pydicom_lean()
import numpy as np
from pydicom.uid import JPEG2000Lossless, RLELossless
from deface_ts.phantom import PhantomOptions, write_phantom_study
study = write_phantom_study(__import__("pathlib").Path(sys.argv[1]), PhantomOptions(rows=64, columns=64, slices=4))
import pydicom
for syntax in (JPEG2000Lossless, RLELossless):
    ds = pydicom.dcmread(study.ct_files[0])
    original = ds.pixel_array.copy()
    ds.compress(syntax)
    ds.save_as(sys.argv[1] + "/compressed.dcm")
    back = pydicom.dcmread(sys.argv[1] + "/compressed.dcm")
    print(syntax.name, back.file_meta.TransferSyntaxUID == syntax, np.array_equal(back.pixel_array, original))
print("gdcm" in sys.modules or "PIL" in sys.modules)
"""


def test_compressed_ct_still_decodes_with_gdcm_and_pillow_hidden(tmp_path):
    """JPEG 2000 (pylibjpeg's openjpeg) and RLE (pydicom's own) slices encoded and read back bit for bit."""
    out = subprocess.run([sys.executable, "-c", COMPRESSED, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:3] == ["JPEG 2000 Image Compression (Lossless Only) True True", "RLE Lossless True True", "False"]


def test_the_command_line_reads_a_study_without_them(phantom_cache):
    """`deface-ts info` on the phantom study in a fresh process: it works, and none of the three was loaded."""
    probe = ("import sys\nfrom deface_ts.apps.cli import main\ncode = main(['info', sys.argv[1], '--json'])\n"
             "print(code, sorted(n for n in ('gdcm', 'PIL', 'requests', 'tqdm') if n in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe, str(phantom_cache().folder)], capture_output=True, text=True,
                          check=True)
    assert done.stderr.strip().splitlines()[-1] == "0 []"
    summary = json.loads(done.stdout)
    assert summary["ct"]["series_instance_uid"] == phantom_cache().series_instance_uid


LIKE_FOR_LIKE = """
import sys
from deface_ts.apps.cli import main
code = main(["deface", sys.argv[1], sys.argv[2], "--method", "eyes", "--verify", "off", "--no-nifti",
             "--no-pictures", "--quiet"])
loaded = ("yaml", "PIL", "nibabel", "cv2", "dlib", "mediapipe", "vtkmodules", "torch", "deface_ts.checks.identity",
          "deface_ts.vision.faces", "deface_ts.locate.totalseg.runtime", "deface_ts.locate.totalseg.weights")
print(code, sorted(name for name in loaded if name in sys.modules), file=sys.stderr)
"""


def test_eye_rois_without_verification_import_only_what_they_use(phantom_cache, tmp_path):
    """`deface --method eyes --verify off --no-nifti --no-pictures` (defaceRT's job) on a study with eye ROIs loads
    no YAML parser, no TotalSegmentator module, no detector, renderer or NIfTI library: start-up is what the
    method needs."""
    done = subprocess.run([sys.executable, "-c", LIKE_FOR_LIKE, str(phantom_cache().folder), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "0 []"
    assert (tmp_path / "out" / "report.json").is_file()
