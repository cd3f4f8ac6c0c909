"""Apply a profile to DICOM datasets: every element at every depth, and the file meta.

A dataset is never changed in place: the result is a shallow copy (see
:func:`deface_ts.io.dicom.uids.shallow_copy`) in which only what the profile
changes is replaced, so pixel data and contour data are written as read.
Sequences not yet parsed are cached by their bytes: an RTSTRUCT repeats the
same ContourImageSequence values thousands of times.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import cast

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from pydicom.valuerep import PersonName

from deface_ts import __version__
from deface_ts.deid.identifiers import Identifiers, read_element
from deface_ts.deid.keys import DeidKey
from deface_ts.deid.profile import Profile
from deface_ts.deid.sequences import character_set, encode_items, items_of
from deface_ts.io.dicom.uids import (
    UidMap,
    encode_element,
    encode_sequence,
    shallow_copy,
)

# File meta (PS3.10 7.1): only what identifies the file's format survives; AE titles, source addresses and
# private information go.
# Group length, information version, media storage SOP class and instance, transfer syntax, implementation class
# and version.
_FILE_META_KEPT = frozenset((0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013))
_FILE_META_DEFAULTS = ((0x00020000, "UL", 0), (0x00020001, "OB", b"\x00\x01"),  # group length (set on writing)
                       (0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID))  # and version, implementation class
_TEXT_DUMMY = "ANONYMIZED"
_NUMERIC = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}
_UNCHANGED = object()
_UID_BYTES = re.compile(rb"[0-9]+(\.[0-9]+)*(\\[0-9]+(\.[0-9]+)*)*")
# Actions whose new value depends on more than the element's bytes (the identifiers, the item's beam number):
# never remembered per raw value.
_PER_ITEM = ("C", "N")


@dataclass
class HeaderDeidentifier:
    """De-identifies the datasets of one patient with one key, date offset, pseudonym and UID map."""

    profile: Profile
    key: DeidKey
    original_patient_id: str
    pseudonym: str
    identifiers: Identifiers
    uids: UidMap
    cleaned: list[str] = field(default_factory=list)  # attribute paths whose value held an identifier
    renamed: dict[str, str] = field(default_factory=dict)  # ROI name that held an identifier → new name
    malformed_dates: list[str] = field(default_factory=list)
    private_removed: int = 0
    defaced: bool = False
    parsed: dict = field(default_factory=dict)  # raw sequences parsed once, shared with the collection
    _sequences: dict = field(default_factory=dict)
    _values: dict = field(default_factory=dict)
    _marks: dict = field(default_factory=dict)

    @property
    def offset(self) -> dt.timedelta:
        return dt.timedelta(days=self.key.date_offset_days(self.original_patient_id))

    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of a top-level dataset, its file meta included."""
        out, _ = self._walk(ds, "")
        if hasattr(ds, "file_meta"):  # the copy's own file meta, never the read dataset's
            meta = out.file_meta if out.file_meta is not ds.file_meta else cast(FileMetaDataset,
                                                                                 shallow_copy(ds.file_meta))
            out.file_meta = self._file_meta(meta, out)
            out.preamble = bytes(128)  # whatever an application wrote into the input's preamble stays there
        self._mark(out)
        return out

    def _walk(self, ds: Dataset, path: str) -> tuple[Dataset, bool]:
        out = shallow_copy(ds)
        changed = False
        for tag, raw in ds._dict.items():  # ds is not changed here: only out is
            if tag & 0x10000:  # an odd group: private (BaseTag.is_private is a Python property per element)
                kept = self._private(ds, tag)
                if kept is not _UNCHANGED:
                    changed = True
                    if kept is None:
                        del out[tag]
                        self.private_removed += 1
                    else:
                        out[tag] = kept
                continue
            vr = raw.VR or _vr(tag)
            action = self.profile.action(tag, vr)
            if action == "K" and vr not in ("SQ", "UI"):
                continue
            new = self._element_once(ds, tag, raw, vr, action, path)
            if new is _UNCHANGED:
                continue
            changed = True
            # The element dictionary itself: Dataset.__setitem__'s checks are for private and new tags, and cost
            # more than the rest of the walk of a CT slice (a public tag replaced by an element of that tag).
            if new is None:
                del out._dict[tag]
            else:
                out._dict[tag] = new
        return out, changed

    def _private(self, ds: Dataset, tag):
        """None (removed) unless the profile lists the element as safe (Retain Safe Private Option). A kept
        element that holds UIDs gets new ones whatever its VR: one the list declares a UID element is read as
        UI even where the file stores it as UN (implicit VR, or no private dictionary), and gets a new UID for
        every value; any other kept UI or UN value that is an original UID of the set is mapped too."""
        creator = self._private_creator(ds, tag)
        if creator is None:
            return None
        if tag.element < 0x100:
            return _UNCHANGED
        element = read_element(ds, tag)
        if element.VR not in ("UI", "UN") or element.value in (None, "", b""):
            return _UNCHANGED
        as_uid = element if element.VR == "UI" else _as_uid(element)
        if (creator, tag.element & 0xFF) in self.profile.private_uids:
            return self._uid(as_uid) if as_uid is not None else None  # declared UIDs that are not UIDs: removed
        return self._known_uid(as_uid) if as_uid is not None else _UNCHANGED

    def _private_creator(self, ds: Dataset, tag) -> str | None:
        """The creator of a safe private element, or None when the profile does not keep it."""
        safe = self.profile.safe_private
        if not safe:
            return None
        if tag.element < 0x100:  # a private creator: kept when the profile keeps an element of its block
            creator = str(ds[tag].value).strip()
            return creator if any(creator == name for name, _ in safe) else None
        found = ds.get((tag.group << 16) | (tag.element >> 8))
        name = str(found.value).strip() if found is not None else None
        return name if name is not None and (name, tag.element & 0xFF) in safe else None

    def _element_once(self, ds: Dataset, tag, raw, vr: str, action: str, path: str):
        """:meth:`_element`, remembered per raw value: the slices of a CT series repeat most of their header."""
        if vr == "SQ" or not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
            return self._element(ds, tag, vr, action, path)
        key = (int(tag), raw.value, raw.is_implicit_VR, raw.is_little_endian)
        if action in _PER_ITEM:
            # Only a value found clean is remembered (the identifiers are complete once prepared): a value that
            # held one is cleaned each time, so that the report names every place it was found.
            if self._values.get(key) is _UNCHANGED:
                return _UNCHANGED
            new = self._element(ds, tag, vr, action, path)
            if new is _UNCHANGED and action == "C":
                self._values[key] = new
            return new
        if vr == "UI" and action in ("U", "K") and raw.is_little_endian:
            return self._uid_bytes(raw, action)  # one per CT slice (SOPInstanceUID): never repeated
        if key not in self._values:
            new = self._element(ds, tag, vr, action, path)
            if isinstance(new, DataElement) and new.VR != "SQ" and _ascii(new.value):
                new = encode_element(new, raw)  # encoded once, then written as bytes into every CT slice
            self._values[key] = new
        return self._values[key]

    def _uid_bytes(self, raw: RawDataElement, action: str):
        """:meth:`_uid` (U) or :meth:`_known_uid` (K) on the bytes: UIDs are ASCII, backslash-separated and padded
        with NUL to even length (PS3.5 6.2, 9.1) in every encoding, so the new value is written as pydicom writes
        it without converting the element and encoding it back."""
        values = (raw.value or b"").rstrip(b"\x00 ").decode("ascii", "replace").split("\\")
        if action == "U":
            mapped = [v if not v or self.uids.issued(v) else self.uids.new(v) for v in values]
        else:
            mapped = [self.uids.get(v) if v else v for v in values]
        if mapped == values:
            return _UNCHANGED
        value = "\\".join(mapped).encode("ascii")
        value += b"\x00" * (len(value) % 2)
        return raw._replace(VR="UI", length=len(value), value=value)

    def _element(self, ds: Dataset, tag, vr: str, action: str, path: str):
        if action == "X":
            return None
        if vr == "SQ":
            return DataElement(tag, "SQ", Sequence()) if action == "Z" else self._sequence(ds, tag, path)
        element = read_element(ds, tag)
        if element.VR == "SQ":  # an implicit-VR UN that reads as a sequence
            return self._sequence(ds, tag, path)
        if action == "Z":
            return DataElement(tag, element.VR, None) if element.value not in (None, "", b"") else _UNCHANGED
        if action == "P":
            return DataElement(tag, element.VR, self.pseudonym)
        if action == "S":
            return self._shift(element, path)
        if action == "U":
            return self._uid(element)
        if action == "K":  # a UI outside the table that holds an original UID of the set is mapped too
            return self._known_uid(element)
        if action == "C":
            return self._clean(ds, element, path)
        if action == "N":
            return self._beam_label(ds, element, path)
        return self._dummy(element, path)

    def _sequence(self, ds: Dataset, tag, path: str):
        raw = ds.get_item(tag)
        key = None
        if raw is not None and getattr(raw, "is_raw", False) and isinstance(raw.value, bytes):
            key = (int(tag), raw.value, raw.is_implicit_VR, raw.is_little_endian)
            if key in self._sequences:
                return self._sequences[key]
        name = keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"
        items, changed = [], False
        for n, item in enumerate(items_of(ds, tag, self.parsed)):
            new, item_changed = self._walk(item, f"{path}{name}[{n}].")
            items.append(new)
            changed |= item_changed
        if not changed:
            result = _UNCHANGED
        elif key is not None:  # encoded once: an RTSTRUCT writes the same few hundred values thousands of times
            result = encode_items(raw, items, character_set(ds))
        else:
            result = DataElement(tag, "SQ", Sequence(items))
        if key is not None:
            self._sequences[key] = result
        return result

    def _shift(self, element: DataElement, path: str):
        values = list(element.value) if element.VM > 1 else [element.value]
        shifted: list[str] = []
        for value in values:
            text = str(value or "").replace(".", "") if element.VR == "DA" else str(value or "")
            if not text:
                shifted.append(text)
                continue
            try:
                date = dt.datetime.strptime((text[:8] + "0101"[max(0, len(text) - 4):])[:8], "%Y%m%d") + self.offset
            except ValueError:
                # An unreadable date cannot be shifted, and kept it would date the patient's care: emptied.
                self.malformed_dates.append(path + (element.keyword or str(element.tag)))
                shifted.append("")
                continue
            shifted.append(date.strftime("%Y%m%d")[:min(8, len(text))] + text[8:])
        return DataElement(element.tag, element.VR, shifted if element.VM > 1 else shifted[0])

    def _uid(self, element: DataElement):
        """A new keyed UID for each value (one already issued by this map stays as it is)."""
        return _map_uids(element, lambda v: v if self.uids.issued(v) else self.uids.new(v))

    def _known_uid(self, element: DataElement):
        """Only the values that are original UIDs of the set: class and transfer syntax UIDs stay."""
        return _map_uids(element, self.uids.get)

    def _clean(self, ds: Dataset, element: DataElement, path: str):
        if element.value in (None, "", b""):
            return _UNCHANGED
        values = element.value if element.VM > 1 else [element.value]
        if not self.identifiers.contains("\\".join(str(v) for v in values)):
            return _UNCHANGED
        self.cleaned.append(path + (element.keyword or str(element.tag)))
        if element.keyword == "ROIName" and "ROINumber" in ds:
            self.renamed[element.value] = f"ROI_{ds.ROINumber}"
            return DataElement(element.tag, element.VR, self.renamed[element.value])
        return DataElement(element.tag, element.VR, None)

    def _beam_label(self, ds: Dataset, element: DataElement, path: str):
        """``BEAM 3`` for the beam numbered 3: distinct per beam, the same in a plan (BeamNumber) and in what
        refers to its beams (ReferencedBeamNumber, as treatment records do), and deterministic."""
        if element.value in (None, ""):
            return _UNCHANGED
        number = ds.get("BeamNumber", ds.get("ReferencedBeamNumber"))
        if number is None or str(number).strip() == "":
            return self._dummy(element, path)  # no number to tell the beam by: the dummy of every other label
        return DataElement(element.tag, element.VR, f"BEAM {str(number).strip()}")

    def _dummy(self, element: DataElement, path: str):
        vr = element.VR
        if vr in ("DA", "DT"):
            return self._shift(element, path) if self.profile.shift_dates else DataElement(
                element.tag, vr, "19000101" if vr == "DA" else "19000101000000")
        if vr == "TM":
            return _UNCHANGED if self.profile.shift_dates else DataElement(element.tag, vr, "000000")
        if vr == "UI":
            return self._uid(element)
        if vr in _NUMERIC:
            return DataElement(element.tag, vr, 0)
        if vr in ("PN", "LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE"):
            return DataElement(element.tag, vr, _TEXT_DUMMY)
        return DataElement(element.tag, vr, None)

    def _file_meta(self, meta: FileMetaDataset, ds: Dataset) -> FileMetaDataset:
        """``meta`` (a copy of the read one, which keeps its encoding: a new FileMetaDataset, with none, made
        pydicom convert its elements when writing) with only what identifies the file's format."""
        for tag in [tag for tag in meta._dict if tag not in _FILE_META_KEPT]:
            del meta._dict[tag]
        # What pydicom's enforce_file_format would add (PS3.10 7.1), so that the set is written without it: its
        # checks converted every file meta element of every CT slice again.
        for meta_tag, vr, value in _FILE_META_DEFAULTS:
            if meta_tag not in meta._dict:
                meta[meta_tag] = DataElement(meta_tag, vr, value)
        for meta_tag, uid_tag in ((0x00020002, 0x00080016), (0x00020003, 0x00080018)):  # SOP class and instance
            element = ds.get_item(uid_tag)
            if element is not None:
                meta._dict[BaseTag(meta_tag)] = _meta_uid(meta_tag, element)
        return meta

    def _mark(self, ds: Dataset) -> None:
        """PS3.15 E.1.1: Patient Identity Removed, the method, and a code per option applied (CID 7050)."""
        encoding = tuple(ds.original_encoding)
        if encoding not in self._marks:
            self._marks[encoding] = self._marks_for(*encoding)
        for element in self._marks[encoding]:
            ds[element.tag] = element

    def _marks_for(self, implicit: bool | None, little: bool | None) -> list:
        """The marking elements, built once per encoding: encoding the code sequence for every CT slice
        was a third of the time of writing the set."""
        codes = list(self.profile.options) + ([("113102", "Clean Recognizable Visual Features Option")]
                                              if self.defaced else [])
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        method = f"deface-ts {__version__}: {self.profile.name} (PS3.15 E.1-1 {self.profile.edition})"
        marks: list[DataElement] = [DataElement(0x00120062, "CS", "YES"),  # PatientIdentityRemoved
                 DataElement(0x00120063, "LO", (method + ("; face removed" if self.defaced else ""))[:64])]
        if self.profile.shift_dates:
            marks.append(DataElement(0x00280303, "CS", "MODIFIED"))  # LongitudinalTemporalInformationModified
        if implicit is None or little is None:
            return [*marks, DataElement(0x00120064, "SQ", Sequence(items))]
        empty = RawDataElement(BaseTag(0x00120064), "SQ", 0, b"", 0, implicit, little, True, False)
        # As bytes in the file's encoding (ASCII values): written like the elements read, not through the writers.
        return [*(encode_element(mark, empty) for mark in marks),
                encode_sequence(empty, items, "iso8859")]  # DeidentificationMethodCodeSequence


def _map_uids(element: DataElement, new):
    if element.VR != "UI" or not element.value:
        return _UNCHANGED
    values = [str(v) for v in (element.value if element.VM > 1 else [element.value])]
    mapped = [new(v) for v in values]
    if mapped == values:
        return _UNCHANGED
    return DataElement(element.tag, "UI", mapped if element.VM > 1 else mapped[0])


def _meta_uid(tag: int, element: DataElement | RawDataElement) -> DataElement | RawDataElement:
    """A UID of the dataset as the file meta element ``tag`` (explicit VR little endian). A raw one keeps its
    bytes, which are the same in every encoding (PS3.5 9.1: ASCII, padded with NUL); the file meta is then
    written without converting it."""
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes):
        return RawDataElement(BaseTag(tag), "UI", len(element.value), element.value, 0, False, True, True, False)
    return DataElement(tag, "UI", element.value)


def _as_uid(element: DataElement) -> DataElement | None:
    """A UN element's bytes as a UI element, when they are UIDs (digits and dots, backslash-separated, padded
    with NUL or space as PS3.5 6.2 allows); else None."""
    value = element.value
    if not isinstance(value, bytes):
        return None
    text = value.rstrip(b"\x00 ")
    if not text or not _UID_BYTES.fullmatch(text):
        return None
    values = text.decode("ascii").split("\\")
    return DataElement(element.tag, "UI", values if len(values) > 1 else values[0])


def _ascii(value) -> bool:
    """Whether ``value`` is encoded the same in every character set a dataset may declare."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(v is None or isinstance(v, (int, float)) or (isinstance(v, (str, PersonName)) and str(v).isascii())
               for v in values)


def _vr(tag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"
