"""A synthetic head-and-neck phantom with known anatomy, for the demo, tests and benchmarks.

:mod:`~deface_ts.phantom.anatomy` describes the phantom in patient space; :mod:`~deface_ts.phantom.dicom`
writes it as a DICOM-RT study.
"""

from deface_ts.phantom.anatomy import CHIN, EYE_CENTRES, NOSE_TIP, FaceShape, PhantomOptions, PhantomStudy, evaluate
from deface_ts.phantom.dicom import write_phantom_study

__all__ = ["CHIN", "EYE_CENTRES", "NOSE_TIP", "FaceShape", "FaceShape", "PhantomOptions", "PhantomStudy", "evaluate", "write_phantom_study"]
