"""De-identification profiles: the action for each attribute, from Table E.1-1 plus the profile's options.

``rt-research`` is the Basic Application Level Confidentiality Profile with the
options Retain Longitudinal Temporal Information with Modified Dates, Retain
Patient Characteristics, Clean Descriptors, Clean Graphics (and, in
``deface``, Clean Recognizable Visual Features). ``basic`` is the Basic
Profile alone. A user YAML names a base profile and overrides actions by
attribute keyword. Both add the RT labels that Table E.1-1 misses or keeps.

Actions: X remove, Z empty, D dummy, K keep, U new keyed UID, C clean (kept
unless it holds an identifier of this patient), S shift the date, P pseudonym.
Private elements are removed, except those a YAML profile lists under
``safe_private`` (Retain Safe Private Option; the echo scan still reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydicom.datadict import tag_for_keyword

from deface_ts.deid.table import ActionTable, load_table
from deface_ts.errors import ConfigError

PROFILES = ("rt-research", "basic", "off")
ACTIONS = ("X", "Z", "D", "K", "U", "C", "S", "P")

# Compound codes of Table E.1-1 depend on the attribute's type in each IOD, which a table of tags cannot know:
# the choice that keeps every type valid (a dummy for Type 1, a dummy or empty value for Type 2).
_COMPOUND = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}

# CID 7050 codes (PS3.16) of the Basic Profile and the options rt-research applies.
BASIC = ("113100", "Basic Application Confidentiality Profile")
OPTIONS = {
    "rt-research": [BASIC, ("113103", "Clean Graphics Option"), ("113105", "Clean Descriptors Option"),
                    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
                    ("113108", "Retain Patient Characteristics Option")],
    "basic": [BASIC],
}

# RT labels and free text that Table E.1-1 misses (Beam Name, Tolerance Table Label) or keeps; a
# treatment machine name often equals the station name. Type 1 labels get a dummy, Type 2 an empty value.
RT_TEXT = {
    "BeamName": "D", "BeamDescription": "X", "ToleranceTableLabel": "X", "FractionGroupDescription": "X",
    "DoseReferenceDescription": "X", "TreatmentMachineName": "Z", "StructureSetLabel": "D",
    "StructureSetName": "X", "StructureSetDescription": "X", "ROIInterpreter": "Z", "ROIObservationLabel": "X",
    "ROIDescription": "X", "RTPlanLabel": "D", "RTPlanName": "X", "RTPlanDescription": "X", "ReviewerName": "Z",
    "BlockName": "X", "FixationDeviceLabel": "X", "ShieldingDeviceLabel": "X", "PatientSetupLabel": "X",
    "SetupTechniqueDescription": "X", "ApplicatorDescription": "X",
}
# The patient's name and ID become the pseudonym (PS3.15 E.1: a dummy that still tells patients apart).
PSEUDONYM = {"PatientName": "P", "PatientID": "P"}
# Retain Patient Characteristics Option (Table E.1-1, column "Rtn. Pat. Chars."): kept.
PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
                           "SmokingStatus", "PregnancyStatus", "PatientSexNeutered")
# Clean Descriptors Option: descriptions that are clinical data, kept unless they name this patient.
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ROIName", "ProtocolName", "ImageComments",
               "DerivationDescription", "PerformedProcedureStepDescription", "RequestedProcedureDescription",
               "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent")
# Dates never shifted but handled by the table: the birth date is not longitudinal information.
NOT_SHIFTED = ("PatientBirthDate",)


def _by_tag(actions: dict[str, str]) -> dict[int, str]:
    tags = {keyword: tag_for_keyword(keyword) for keyword in actions}
    return {tag: actions[keyword] for keyword, tag in tags.items() if tag is not None}


@dataclass(frozen=True)
class Profile:
    name: str
    table: ActionTable
    overrides: dict[int, str] = field(default_factory=dict)
    options: tuple[tuple[str, str], ...] = ()
    shift_dates: bool = False
    safe_private: frozenset[tuple[str, int]] = frozenset()  # (private creator, element byte) kept: opt-in only
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def edition(self) -> str:
        return self.table.edition

    def action(self, tag: int, vr: str) -> str:
        """The action for one element (public tags; private tags are always removed)."""
        key = (int(tag), vr)  # an int: a pydicom tag compares in Python, and this runs for every element
        if key not in self._cache:
            self._cache[key] = self._action(tag, vr)
        return self._cache[key]

    def _action(self, tag: int, vr: str) -> str:
        found = self.overrides.get(tag)
        if found is not None:
            return found
        if vr in ("DA", "DT") and self.shift_dates and tag not in _NOT_SHIFTED:
            return "S"
        if vr == "TM" and self.shift_dates:
            return "K"  # with dates shifted, times of day identify no one and keep the order of events
        action = self.table.action(tag)
        if action is None:
            # Dates outside the table still date the patient's care: a profile that keeps none empties them.
            return "Z" if vr in ("DA", "DT") and not self.shift_dates else "K"
        return _COMPOUND.get(action, action)


_NOT_SHIFTED = {tag_for_keyword(k) for k in NOT_SHIFTED}


def builtin_profile(name: str) -> Profile:
    table = load_table()
    if name == "basic":
        return Profile("basic", table, _by_tag({**RT_TEXT, **PSEUDONYM}), tuple(OPTIONS["basic"]))
    if name == "rt-research":
        actions = {**{k: "K" for k in PATIENT_CHARACTERISTICS}, **{k: "C" for k in DESCRIPTORS}, **RT_TEXT,
                   **PSEUDONYM}
        return Profile("rt-research", table, _by_tag(actions), tuple(OPTIONS["rt-research"]), shift_dates=True)
    raise ConfigError(f"unknown de-identification profile {name!r} (expected {', '.join(PROFILES)} or a YAML file)")


def load_profile(name: str) -> Profile | None:
    """A built-in profile, or a YAML file ``{base: rt-research, actions: {Keyword: X}}``; None for ``off``."""
    if name == "off":
        return None
    if name in PROFILES:
        return builtin_profile(name)
    path = Path(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such de-identification profile (built-in: {', '.join(PROFILES)}; "
                          "or a YAML file)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    unknown = set(data) - {"base", "actions", "safe_private"} if isinstance(data, dict) else {"(not a mapping)"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (known: base, actions, safe_private)")
    base = builtin_profile(str(data.get("base", "rt-research")))
    overrides = dict(base.overrides)
    for keyword, action in (data.get("actions") or {}).items():
        tag = tag_for_keyword(str(keyword))
        if tag is None:
            raise ConfigError(f"{path}: actions: '{keyword}' is not a DICOM attribute keyword")
        if action not in ACTIONS:
            raise ConfigError(f"{path}: actions: {keyword}: '{action}', expected one of {', '.join(ACTIONS)}")
        overrides[tag] = action
    safe = frozenset(_safe_private(str(entry), path) for entry in data.get("safe_private") or [])
    options = base.options + ((("113111", "Retain Safe Private Option"),) if safe else ())
    return Profile(f"{base.name}+{path.name}", base.table, overrides, options, base.shift_dates, safe)


def _safe_private(entry: str, path: Path) -> tuple[str, int]:
    """``"CREATOR:xx"``: the element ``xx`` (hex, 00-FF) of the private block that ``CREATOR`` reserves."""
    creator, _, element = entry.rpartition(":")
    try:
        number = int(element, 16)
    except ValueError:
        number = -1
    if not creator or not 0 <= number <= 0xFF:
        raise ConfigError(f"{path}: safe_private: {entry!r} must be 'PRIVATE CREATOR:xx' with xx a hex byte")
    return creator.strip(), number
