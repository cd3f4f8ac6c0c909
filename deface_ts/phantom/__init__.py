"""A synthetic head-and-neck phantom with known anatomy, for the demo, tests and benchmarks.

:mod:`~deface_ts.phantom.surfaces` draws the head as implicit surfaces, :mod:`~deface_ts.phantom.canvas` holds
what is painted, :mod:`~deface_ts.phantom.anatomy` paints the tissues and ROIs in patient space for any patient
position, :mod:`~deface_ts.phantom.dicom` writes it as a DICOM-RT study, :mod:`~deface_ts.phantom.people` varies
the face into distinct synthetic people.
"""

from deface_ts.phantom.anatomy import PhantomOptions, PhantomStudy, evaluate
from deface_ts.phantom.dicom import write_phantom_study
from deface_ts.phantom.surfaces import CHIN, EYE_CENTRES, NOSE_TIP, FaceShape

__all__ = ["CHIN", "EYE_CENTRES", "NOSE_TIP", "FaceShape", "PhantomOptions", "PhantomStudy", "evaluate",
           "write_phantom_study"]
