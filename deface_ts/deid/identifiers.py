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
from deface_ts.io.dicom.uids import sequence_items

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
    _tokens: list[tuple[bytes, str]] | None = None

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
        self._tokens = None

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
        if self.text:
            lowered = data.lower()
            for token, kind in self.tokens:
                if _bounded_find(lowered, token):
                    return kind
        return None

    def contains(self, text: str) -> bool:
        return self.find(text.encode("utf-8")) is not None

    @property
    def tokens(self) -> list[tuple[bytes, str]]:
        """Each text value in lower case, in the encodings a DICOM file or a report may hold it."""
        if self._tokens is None:
            self._tokens = sorted({(encoded, kind) for value, kind in self.text.items()
                                   for encoded in (value.encode("utf-8"), value.encode("latin-1", "ignore"))
                                   if encoded})
        return self._tokens


def _bounded_find(data: bytes, token: bytes) -> bool:
    """Whether ``token`` occurs in ``data`` not as part of a longer word or number.

    "doe" matches "doe1" and "mrn-doe", not "does"; a value starting with a digit
    matches after letters ("mrn12345") but not inside a longer number. bytes.find
    runs at memory speed, where one regular expression of every value did not.
    """
    start = data.find(token)
    while start >= 0:
        end = start + len(token)
        if not (start and _same_class(data[start - 1], token[0])) and not (
                end < len(data) and _same_class(data[end], token[-1])):
            return True
        start = data.find(token, start + 1)
    return False


def _same_class(a: int, b: int) -> bool:
    return (chr(a).isdigit() and chr(b).isdigit()) or (chr(a).isalpha() and chr(b).isalpha())


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
        if vr == "SQ" or (vr == "UN" and ds[tag].VR == "SQ"):
            for item in sequence_items(ds, tag):
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
