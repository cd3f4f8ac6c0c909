"""This patient's identifying values, collected from the input, and a matcher that finds them in any bytes.

Collected at every depth of every object: person names component-wise, IDs,
every date, accession number, institution, addresses, phone numbers, station
and machine names, and the original UIDs (those Table E.1-1 replaces). Values
shorter than ``MIN_LENGTH`` cannot be searched without matching everywhere;
they are still replaced by the profile, and the report counts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from deface_ts.deid.table import ActionTable

MIN_LENGTH = 3
# Values the de-identification writes itself: never an echo even where the input held them.
OWN_VALUES = {"anonymized", "anonymous", "cleaned"}
_TEXT_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "TreatmentMachineName", "DeviceSerialNumber", "MedicalRecordLocator", "RegionOfResidence",
    "PersonTelephoneNumbers", "PersonAddress", "InstitutionDepartmentTypeCodeSequence",
)
_TEXT_TAGS = {tag_for_keyword(k): k for k in _TEXT_KEYWORDS if tag_for_keyword(k) is not None}
_DIGITS = re.compile(rb"(?<![0-9.])[0-9]{3,}")
_UID_RUN = re.compile(rb"[0-9][0-9.]{5,}[0-9]")


@dataclass
class Identifiers:
    """Identifying values by kind ("PatientName component", "date", "UID", a keyword); all lower case."""

    text: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)  # all-digit IDs and dates (YYYYMMDD)
    uids: set[str] = field(default_factory=set)
    too_short: set[str] = field(default_factory=set)  # kinds with a value too short to search
    _pattern: re.Pattern | None = None

    def add(self, value: str, kind: str) -> None:
        value = " ".join(str(value).split()).lower()
        if not value or value in OWN_VALUES:
            return
        if len(value) < MIN_LENGTH:
            self.too_short.add(kind)
        elif kind == "UID":
            self.uids.add(value)
        elif value.isdigit():
            self.numbers.setdefault(value, kind)
        else:
            self.text.setdefault(value, kind)
        self._pattern = None

    def find(self, data: bytes) -> str | None:
        """The kind of the first identifier found in ``data`` (case-insensitive), else None."""
        for run in _DIGITS.findall(data):
            digits = run.decode()
            kind = self.numbers.get(digits)
            if kind is None and len(digits) > 8 and self.numbers.get(digits[:8]) == "date":
                kind = "date"  # the date part of a DT
            if kind:
                return kind
        if self.uids:
            found = {run.decode() for run in _UID_RUN.findall(data)} & self.uids
            if found:
                return "UID"
        match = self.pattern.search(data) if self.text else None
        if match is not None:
            return self.text.get(match.group(0).decode("utf-8", "replace").lower(), "identifier")
        return None

    def contains(self, text: str) -> bool:
        return self.find(text.encode("utf-8")) is not None

    @property
    def pattern(self) -> re.Pattern:
        if self._pattern is None:
            alternatives = []
            for value in sorted(self.text, key=len, reverse=True):
                for encoded in {value.encode("utf-8"), value.encode("latin-1", "ignore"),
                                value.upper().encode("utf-8"), value.upper().encode("latin-1", "ignore")}:
                    alternatives.append(_bounded(encoded))
            self._pattern = re.compile(b"|".join(alternatives), re.IGNORECASE)
        return self._pattern


def _bounded(token: bytes) -> bytes:
    """A token that is not part of a longer word or number: "DOE" matches "DOE1" and "MRN-DOE", not "DOES"."""
    def side(char: int) -> bytes:
        return b"[0-9]" if chr(char).isdigit() else b"[A-Za-z]" if chr(char).isalpha() else b""
    before, after = side(token[0]), side(token[-1])
    return ((b"(?<!" + before + b")") if before else b"") + re.escape(token) + ((b"(?!" + after + b")") if after else b"")


def collect(datasets: list[Dataset], table: ActionTable) -> Identifiers:
    """Every identifying value of ``datasets`` at every depth (private elements are removed, not collected)."""
    found = Identifiers()
    for ds in datasets:
        _collect(ds, table, found)
    return found


def _collect(ds: Dataset, table: ActionTable, found: Identifiers) -> None:
    for tag, raw in ds.items():
        if tag.is_private:
            continue
        vr = raw.VR or _vr(tag)
        if vr == "SQ":
            for item in ds[tag].value or []:
                _collect(item, table, found)
            continue
        keyword = _TEXT_TAGS.get(tag)
        if vr not in ("PN", "DA", "DT", "UI") and keyword is None:
            continue
        element = ds[tag]
        values = [str(v) for v in (element.value if element.VM > 1 else [element.value]) if v not in (None, "")]
        for value in values:
            if element.VR == "PN":
                found.add(value, f"{element.keyword or 'person name'}")
                for part in re.split(r"[\^=\s,]+", value):
                    found.add(part, f"{element.keyword or 'person name'} component")
            elif element.VR in ("DA", "DT"):
                found.add(value[:8].replace(".", ""), "date")
            elif element.VR == "UI":
                if table.action(tag) in ("U", "X/Z/U*"):
                    found.add(value, "UID")
            else:
                found.add(value, keyword or element.keyword)


def _vr(tag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
