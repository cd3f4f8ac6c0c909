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
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset

from deface_ts.deid.sequences import character_set, items_of
from deface_ts.deid.table import ActionTable

MIN_LENGTH = 3
_SMALL = 1 << 16
# One search of the echo scan: the token, the bytes that may not stand just before or after it, the index of the
# byte looked for first (see _occurrences), and the kind of identifier.
_Search = tuple[bytes, bytes, bytes, int | None, str]
# Values the de-identification writes itself: never an echo even where the input held them.
OWN_VALUES = {"anonymized", "anonymous", "cleaned"}
_TEXT_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "TreatmentMachineName", "DeviceSerialNumber", "MedicalRecordLocator", "RegionOfResidence",
    "PersonTelephoneNumbers", "PersonAddress",
)
_TEXT_TAGS = {tag_for_keyword(k): k for k in _TEXT_KEYWORDS if tag_for_keyword(k) is not None}
_UID_CHARS = re.compile(rb"[0-9.]+")
# The VRs whose values are collected whatever the attribute; other values only for the keywords above.
_VALUE_VRS = frozenset(("PN", "DA", "DT", "UI"))
# Looked at before the value is touched: a UN may read as one of these or as a sequence.
_COLLECTED_VRS = _VALUE_VRS | {"SQ", "UN"}


@dataclass
class Identifiers:
    """Identifying values by kind ("PatientName component", "date", "UID", a keyword); all lower case."""

    text: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)  # all-digit IDs and dates (YYYYMMDD)
    uids: set[str] = field(default_factory=set)
    too_short: set[str] = field(default_factory=set)  # kinds with a value too short to search
    _tokens: list[_Search] | None = None
    _number_searches: list[_Search] | None = None
    _uid_prefixes: list[bytes] | None = None
    _contains: dict[str, bool] = field(default_factory=dict)

    def add(self, value: str, kind: str) -> None:
        value = " ".join(str(value).split()).lower()
        if not value or value in OWN_VALUES:
            return
        if len(value) < MIN_LENGTH:
            self.too_short.add(kind)
        elif kind == "UID":
            self.uids.add(value)
            self._uid_prefixes = None
        elif value.isdigit():
            self.numbers.setdefault(value, kind)
        else:
            self.text.setdefault(value, kind)
        self._tokens = self._number_searches = None
        self._contains.clear()

    def find(self, data: bytes) -> str | None:
        """The kind of the first identifier found in ``data`` (case-insensitive), else None."""
        # In a small value or a CT header, ``in`` (C code) rules most tokens out before the bounded search (Python
        # code) runs; in megabytes of ContourData it would be one more full search per token.
        small = len(data) < _SMALL
        for search in self.number_searches:
            if (not small or search[0] in data) and _bounded_find(data, *search[:4]):
                return search[4]
        if self.uids and self._has_uid(data):
            return "UID"
        if self.text:
            lowered = data.lower()
            for search in self.tokens:
                if (not small or search[0] in lowered) and _bounded_find(lowered, *search[:4]):
                    return search[4]
        return None

    @property
    def number_searches(self) -> list[_Search]:
        """(token, bytes not allowed before, after, anchor, kind) of each all-digit value, made once."""
        if self._number_searches is None:
            # A date may go on as the time of a DT; no value starts inside a longer number or a decimal.
            self._number_searches = [(number.encode(), b"0123456789.", b"" if kind == "date" else b"0123456789",
                                      _anchor(number.encode()), kind) for number, kind in self.numbers.items()]
        return self._number_searches

    def _has_uid(self, data: bytes) -> bool:
        """Whether an original UID stands on its own in ``data``: found by its first characters (a few roots
        per set) at memory speed, then read whole; a regular expression over every number was 10x slower."""
        if self._uid_prefixes is None:
            self._uid_prefixes = sorted({uid[:10].encode() for uid in self.uids})
        for prefix in self._uid_prefixes:
            start = data.find(prefix)
            while start >= 0:
                if start == 0 or data[start - 1] not in b"0123456789.":
                    run = _UID_CHARS.match(data, start).group(0).rstrip(b".")  # type: ignore[union-attr]
                    if run.decode() in self.uids:
                        return True
                start = data.find(prefix, start + 1)
        return False

    def contains(self, text: str) -> bool:
        """Remembered per text until an identifier is added: every CT slice repeats its descriptions."""
        if text not in self._contains:
            self._contains[text] = self.find(text.encode("utf-8")) is not None
        return self._contains[text]

    @property
    def tokens(self) -> list[_Search]:
        """Each text value in lower case, in the encodings a DICOM file or a report may hold it, as a search
        (token, bytes not allowed before, after, anchor, kind) made once: the echo scan runs them on every file."""
        if self._tokens is None:
            encoded = sorted({(token, kind) for value, kind in self.text.items()
                              for token in (value.encode("utf-8"), value.encode("latin-1", "ignore")) if token})
            self._tokens = [(token, _word_class(token[0]), _word_class(token[-1]),
                             _anchor(token) if len(token) > 1 else None, kind) for token, kind in encoded]
        return self._tokens


def _bounded_find(data: bytes, token: bytes, before: bytes, after: bytes, anchor: int | None = -1) -> bool:
    """Whether ``token`` occurs in ``data`` with no byte of ``before`` just before it nor of ``after`` just after.

    "doe" matches "doe1" and "mrn-doe", not "does"; "12345" matches "mrn12345",
    not "0.12345". bytes.find runs at memory speed, where one regular expression
    of every value did not.
    """
    for start in _occurrences(data, token, anchor):
        end = start + len(token)
        if (start == 0 or data[start - 1] not in before) and (end == len(data) or data[end] not in after):
            return True
    return False


# Lower-case letters from the most to the least frequent in English text, and the bytes bulk numeric values
# (ContourData, DS/IS strings) are made of: a letter late in the first is rare in any DICOM file.
_LETTER_ORDER = b"etaoinsrhldcumfpgwybvkxjqz"
_NUMERIC_TEXT = frozenset(b"0123456789.+-eE \\")


def _anchor(token: bytes) -> int | None:
    """The index of the byte of ``token`` to look for first: its rarest letter, else any byte that no
    numeric string holds; None when the token is itself numeric-looking (then searched whole)."""
    letters = [i for i, c in enumerate(token) if c in _LETTER_ORDER]
    if letters:
        return max(letters, key=lambda i: _LETTER_ORDER.index(token[i]))
    return next((i for i, c in enumerate(token) if c not in _NUMERIC_TEXT), None)


def _occurrences(data: bytes, token: bytes, anchor: int | None = -1):
    """Every start of ``token`` in ``data``, in order.

    A search for a multi-byte token runs at ~1.5 GB/s, a search for one byte at
    memory speed: an RTSTRUCT's megabytes of ContourData (digits, dots,
    backslashes) hold few letters, so the token's rarest letter is found first
    and the token is compared only there. Every occurrence holds that byte at the
    same offset, so none is missed.
    """
    if anchor == -1:  # not given: found here (callers that search often pass the one they made once)
        anchor = _anchor(token) if len(token) > 1 else None
    if anchor is None:
        start = data.find(token)
        while start >= 0:
            yield start
            start = data.find(token, start + 1)
        return
    byte = token[anchor:anchor + 1]
    found = data.find(byte, anchor)
    while found >= 0:
        if data.startswith(token, found - anchor):
            yield found - anchor
        found = data.find(byte, found + 1)


_DIGIT_BYTES = b"0123456789"
_LETTER_BYTES = bytes(c for c in range(256) if chr(c).isalpha())


def _word_class(char: int) -> bytes:
    """The bytes that would make ``char`` part of a longer word (letters) or number (digits)."""
    return _DIGIT_BYTES if chr(char).isdigit() else _LETTER_BYTES if chr(char).isalpha() else b""


def read_element(ds: Dataset, tag) -> DataElement:
    """The element at ``tag`` with its value converted, leaving ``ds`` as read (``ds[tag]`` would store the
    conversion in it): an element left raw is written back as its bytes, where a converted one goes through
    pydicom's value writers (a fifth of the time of writing a de-identified CT slice)."""
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return raw
    return convert_raw_data_element(raw, encoding=character_set(ds), ds=ds)


def collect(datasets: list[Dataset], table: ActionTable, parsed: dict | None = None) -> Identifiers:
    """Every identifying value of ``datasets`` at every depth (private elements are removed, not collected).

    ``parsed``: raw sequences parsed here are kept there for the transform (see
    :func:`deface_ts.deid.sequences.items_of`).
    """
    found = Identifiers()
    seen: set = set()  # raw values already read: the slices of a CT series repeat most of their header
    for ds in datasets:
        _collect(ds, table, found, seen, parsed)
    return found


def _collect(ds: Dataset, table: ActionTable, found: Identifiers, seen: set, parsed: dict | None) -> None:
    for tag, raw in ds.items():
        if tag & 0x10000:  # private (an odd group)
            continue
        # The VR before the value: keying a CT slice's pixel data by its bytes hashed 512 kB per slice.
        vr = raw.VR or _vr(tag)
        keyword = _TEXT_TAGS.get(tag)
        if vr not in _COLLECTED_VRS and keyword is None:
            continue
        if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
            key = (int(tag), raw.value)
            if key in seen:
                continue
            seen.add(key)
        element = None
        if vr == "UN":  # pydicom reads a UN of a known tag with the dictionary's VR (a sequence, a name...)
            element = read_element(ds, tag)
            vr = element.VR
        if vr == "SQ":
            for item in items_of(ds, tag, parsed):
                _collect(item, table, found, seen, parsed)
            continue
        if vr not in _VALUE_VRS and keyword is None:
            continue
        element = element or read_element(ds, tag)
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
