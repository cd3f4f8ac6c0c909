"""De-identification profiles: the action for each attribute, from Table E.1-1's columns plus the RT rules.

A profile applies the Basic Profile column of PS3.15 Table E.1-1 and some of
its option columns (:mod:`deface_ts.deid.table`): for each attribute, the code
of an applied option that lists it, else the Basic one. ``rt-research`` applies
Retain Longitudinal Temporal Information with Modified Dates, Retain Patient
Characteristics, Clean Descriptors and Clean Graphics (and, in ``deface``, Clean
Recognizable Visual Features); ``basic`` the Basic Profile alone. On top of the
table, and only there, the rules the table cannot hold: the RT labels it misses
or keeps, the pseudonym, and the dates it does not list. A user YAML names a
base profile and overrides actions by attribute keyword.

Actions: X remove, Z empty, D dummy, K keep, U new keyed UID, C clean (kept
unless it holds an identifier of this patient), S shift the date, P pseudonym,
N the beam's own label ("BEAM 3", from the item's beam number).
Private elements are removed, except those a YAML profile lists under
``safe_private`` (Retain Safe Private Option; the echo scan still reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydicom.datadict import tag_for_keyword

from deface_ts.deid.table import OPTIONS as TABLE_OPTIONS
from deface_ts.deid.table import ActionTable, load_table
from deface_ts.errors import ConfigError

PROFILES = ("rt-research", "basic", "off")
ACTIONS = ("X", "Z", "D", "K", "U", "C", "S", "P", "N")

# Compound codes of Table E.1-1 depend on the attribute's type in each IOD, which a table of tags cannot know:
# the choice that keeps every type valid (a dummy for Type 1, a dummy or empty value for Type 2).
_COMPOUND = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}
# Values whose text cannot be read to clean it: where an option says C, the Basic action stays.
_BINARY_VRS = frozenset(("OB", "OW", "OF", "OD", "OL", "OV", "UN"))

# CID 7050 code (PS3.16) of the Basic Profile, and the option columns of Table E.1-1 each profile applies.
BASIC = ("113100", "Basic Application Confidentiality Profile")
COLUMNS = {
    "rt-research": ("retain_long_modified_dates", "retain_patient_characteristics", "clean_descriptors",
                    "clean_graphics"),
    "basic": (),
}
SAFE_PRIVATE = ("113111", "Retain Safe Private Option")

# The rules on top of the table. RT labels and free text that Table E.1-1 misses (Beam Name, Tolerance Table
# Label) or keeps; a treatment machine name often equals the station name. Type 1 labels get a dummy, Type 2 an
# empty value; a beam's name and description its own label, so a physicist still tells the beams apart.
RT_TEXT = {
    "BeamName": "N", "BeamDescription": "N", "ToleranceTableLabel": "X", "FractionGroupDescription": "X",
    "DoseReferenceDescription": "X", "TreatmentMachineName": "Z", "StructureSetLabel": "D",
    "StructureSetName": "X", "StructureSetDescription": "X", "ROIInterpreter": "Z", "ROIObservationLabel": "X",
    "ROIDescription": "X", "RTPlanLabel": "D", "RTPlanName": "X", "RTPlanDescription": "X", "ReviewerName": "Z",
    "BlockName": "X", "FixationDeviceLabel": "X", "ShieldingDeviceLabel": "X", "PatientSetupLabel": "X",
    "SetupTechniqueDescription": "X", "ApplicatorDescription": "X",
}
# The patient's name and ID become the pseudonym (PS3.15 E.1: a dummy that still tells patients apart).
PSEUDONYM = {"PatientName": "P", "PatientID": "P"}


def _by_tag(actions: dict[str, str]) -> dict[int, str]:
    tags = {keyword: tag_for_keyword(keyword) for keyword in actions}
    return {tag: actions[keyword] for keyword, tag in tags.items() if tag is not None}


def translate(code: str, vr: str, basic: str) -> str:
    """A code of Table E.1-1 as the action done on a value of ``vr``; ``basic``: the Basic column's code.

    C (clean) depends on what the value is: a date under Retain Longitudinal Temporal Information with Modified
    Dates is shifted by the patient's offset (S); a time is kept (the shift is whole days, so times of day stay
    consistent with the modified dates); text and sequences are cleaned (kept unless they hold an identifier of
    this patient; a sequence item by item); bytes cannot be read, so the Basic action stays.
    """
    if code == "C":
        if vr in ("DA", "DT"):
            return "S"
        if vr == "TM":
            return "K"
        return _COMPOUND.get(basic, basic) if vr in _BINARY_VRS else "C"
    return _COMPOUND.get(code, code)


@dataclass(frozen=True)
class Profile:
    name: str
    table: ActionTable
    columns: tuple[str, ...] = ()  # the option columns of Table E.1-1 applied
    overrides: dict[int, str] = field(default_factory=dict)  # the rules on top of the table, by tag
    safe_private: frozenset[tuple[str, int]] = frozenset()  # (private creator, element byte) kept: opt-in only
    private_uids: frozenset[tuple[str, int]] = frozenset()  # those of them that hold UIDs (given new ones)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def edition(self) -> str:
        return self.table.edition

    @property
    def shift_dates(self) -> bool:
        return "retain_long_modified_dates" in self.columns

    @property
    def options(self) -> tuple[tuple[str, str], ...]:
        """The CID 7050 codes of the profile and the options applied (PS3.15 E.1.1: Deidentification Method)."""
        return (BASIC, *(TABLE_OPTIONS[c] for c in self.columns), *((SAFE_PRIVATE,) if self.safe_private else ()))

    def action(self, tag: int, vr: str) -> str:
        """The action for one element (public tags; private tags are always removed)."""
        key = (int(tag), vr)  # an int: a pydicom tag compares in Python, and this runs for every element
        if key not in self._cache:
            self._cache[key] = self._action(int(tag), vr)
        return self._cache[key]

    def _action(self, tag: int, vr: str) -> str:
        found = self.overrides.get(tag)
        if found is not None:
            return found
        row = self.table.row(tag)
        if row is not None:
            return translate(self.table.action(tag, self.columns) or "X", vr, row["basic"])
        if vr in ("DA", "DT"):
            # Every date, also those the table does not list, dates the patient's care (issue 12: every DA and DT
            # is shifted); a profile that keeps no dates empties them.
            return "S" if self.shift_dates else "Z"
        return "K"


def builtin_profile(name: str) -> Profile:
    if name not in COLUMNS:
        raise ConfigError(f"unknown de-identification profile {name!r} (expected {', '.join(PROFILES)} or a YAML file)")
    return Profile(name, load_table(), COLUMNS[name], _by_tag({**RT_TEXT, **PSEUDONYM}))


def load_profile(name: str) -> Profile | None:
    """A built-in profile, or a YAML file ``{base: rt-research, actions: {Keyword: X}}``; None for ``off``."""
    if name == "off":
        return None
    if name in PROFILES:
        return builtin_profile(name)
    import yaml  # here: the built-in profiles are not YAML, and a run needs none (~0.01 s of start-up)

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
    entries = [_safe_private(str(entry), path) for entry in data.get("safe_private") or []]
    safe = frozenset(element for element, _ in entries)
    uids = frozenset(element for element, is_uid in entries if is_uid)
    return Profile(f"{base.name}+{path.name}", base.table, base.columns, overrides, safe, uids)


def _safe_private(entry: str, path: Path) -> tuple[tuple[str, int], bool]:
    """``"CREATOR:xx"``: the element ``xx`` (hex, 00-FF) of the private block that ``CREATOR`` reserves;
    ``"CREATOR:xx:UI"``: one that holds UIDs, remapped like every other UID even where the file stores it as UN
    (implicit VR, or a writer without the vendor's dictionary). Returns ((creator, xx), holds UIDs)."""
    is_uid = entry.upper().endswith(":UI")
    creator, _, element = (entry[:-3] if is_uid else entry).rpartition(":")
    try:
        number = int(element, 16)
    except ValueError:
        number = -1
    if not creator or not 0 <= number <= 0xFF:
        raise ConfigError(f"{path}: safe_private: {entry!r} must be 'PRIVATE CREATOR:xx' with xx a hex byte, "
                          "or 'PRIVATE CREATOR:xx:UI' for an element that holds UIDs")
    return (creator.strip(), number), is_uid
