"""One UID map for a whole derived study, so CT → RTSTRUCT → RTPLAN → RTDOSE links survive."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_sequence
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32


def shallow_copy(ds: Dataset) -> Dataset:
    """A new dataset sharing ``ds``'s elements; assigning a new element to it leaves ``ds`` alone.

    ``Dataset.copy()`` shares the element dictionary itself, so replacing an
    element in the copy would change the original (pydicom 3). Copying the
    instance attributes with a new element dictionary keeps class, encoding
    and parent character set, and skips ``Dataset.__init__`` and ``copy.copy``,
    whose attribute access through pydicom's ``__getattr__``/``__setattr__``
    (a keyword lookup each) was most of the time of remapping the thousands of
    items of an RTSTRUCT.
    """
    out = object.__new__(type(ds))
    out.__dict__.update(ds.__dict__, _dict=dict(ds._dict), _private_blocks={})
    if isinstance(ds.__dict__.get("file_meta"), FileMetaDataset):
        # Copied the same way: iterating the file meta converted every element of it, once per CT slice.
        out.__dict__["file_meta"] = shallow_copy(ds.file_meta)
    return out


def same_encoding(new: Dataset, like: Dataset) -> Dataset:
    """Give ``new`` the read encoding of ``like`` so pydicom writes raw elements as they are.

    Without it pydicom decodes and re-encodes every raw element of the item
    (seconds for an RTSTRUCT's ContourData).
    """
    new.set_original_encoding(*like.original_encoding, like.original_character_set)  # type: ignore[call-arg]
    if hasattr(like, "_parent_encoding"):  # a sequence item inherits its parent's character set (pydicom 3)
        new._parent_encoding = like._parent_encoding
    return new


_SPECIFIC_CHARACTER_SET = 0x00080005


def sequence_items(ds: Dataset, tag, parsed: dict | None = None) -> Sequence:
    """The items of a sequence element, parsed aside when it is still raw.

    The original dataset keeps its raw element: fewer live objects, and a copy
    that is written unchanged writes the raw bytes as read instead of encoding
    every item again. With ``parsed``, a raw value is parsed once for all who
    read it (the items must then not be changed): header de-identification reads
    an RTSTRUCT's sequences to collect identifiers and again to transform them,
    and parsing its thousands of contour items was most of the time of both.
    """
    raw = ds.get_item(tag)
    if not isinstance(raw, RawDataElement):
        return ds[tag].value or Sequence()
    if parsed is None:
        return convert_raw_data_element(raw, encoding=ds._character_set, ds=ds).value
    encoding = ds._character_set
    key = (int(tag), raw.value, raw.is_implicit_VR, raw.is_little_endian, str(encoding))
    if key not in parsed:
        parsed[key] = convert_raw_data_element(raw, encoding=encoding, ds=ds).value
    return parsed[key]


class UidMap:
    """Maps original UIDs to new ones, generated on first use.

    With a ``salt`` the new UIDs are a deterministic hash of salt and old UID
    (re-running gives the same output); without one, a random salt is drawn.
    With a secret ``key`` (header de-identification) they are an HMAC of key and
    old UID under the 2.25 root, so only the key holder can link them back.
    """

    def __init__(self, salt: str | None = None, key: bytes | None = None):
        self.salt = salt if salt is not None else secrets.token_hex(16)
        self.key = key
        self.mapping: dict[str, str] = {}
        self._issued: set[str] = set()
        self._sequences: dict[tuple, RawDataElement] = {}

    def new(self, uid: str) -> str:
        uid = str(uid)
        if uid not in self.mapping:
            self.mapping[uid] = self._generate(uid)
            self._issued.add(self.mapping[uid])
            self._sequences.clear()  # remapped sequences may contain this UID
        return self.mapping[uid]

    def _generate(self, uid: str) -> str:
        if self.key is None:
            return generate_uid(entropy_srcs=[self.salt, uid])
        # 128 bits of the HMAC as a decimal integer under 2.25 (PS3.5 B.2): at most 44 characters.
        digest = hmac.new(self.key, b"uid\0" + uid.encode(), hashlib.sha256).digest()
        return f"2.25.{int.from_bytes(digest[:16], 'big')}"

    def issued(self, uid: str) -> bool:
        """Whether ``uid`` is one of the new UIDs this map generated (so it must not be mapped again)."""
        return str(uid) in self._issued

    def get(self, uid: str) -> str:
        return self.mapping.get(str(uid), str(uid))

    def remap(self, ds: Dataset, charset: str | list[str] = default_encoding) -> Dataset:
        """A copy of ``ds`` with every mapped UI value replaced, in nested sequences too.

        The copy is shallow where nothing changes (pixel data and other large
        values are shared, not duplicated); sequences are rebuilt. ``charset``
        is the Specific Character Set ``ds`` inherits (as pydicom's writer
        passes it down to sequence items).
        """
        if _SPECIFIC_CHARACTER_SET in ds:
            charset = ds[_SPECIFIC_CHARACTER_SET].value or default_encoding
        out = shallow_copy(ds)
        for tag, raw in ds.items():
            # Look at the VR without converting the value: converting every DS of an
            # RTSTRUCT's ContourData into Python objects costs seconds per study.
            vr = raw.VR or _dictionary_vr(tag)
            if vr not in ("UI", "SQ"):
                continue
            if vr == "SQ" and isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
                out[tag] = self._remap_raw_sequence(ds, raw, charset)
                continue
            element = ds[tag]
            if element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                new = [self.get(v) for v in values]
                if new != [str(v) for v in values]:
                    out[tag] = DataElement(tag, "UI", new if element.VM > 1 else new[0])
            elif element.VR == "SQ":
                out[tag] = DataElement(tag, "SQ", Sequence([self.remap(item, charset) for item in element.value]))
        return out

    def _remap_raw_sequence(self, ds: Dataset, raw: RawDataElement, charset: str | list[str]) -> RawDataElement:
        """A not yet parsed sequence, remapped and encoded back to raw bytes once per distinct value.

        An RTSTRUCT repeats the same few hundred ContourImageSequence values
        (one per CT slice) in thousands of contour items; parsing and writing
        each one through pydicom's objects was most of the time of writing the
        set. The bytes are what pydicom itself writes for the remapped sequence.
        """
        key = (raw.tag, raw.value, raw.is_implicit_VR, raw.is_little_endian, str(charset))
        if key not in self._sequences:
            items = [self.remap(item, charset) for item in sequence_items(ds, raw.tag)]
            self._sequences[key] = encode_sequence(raw, items, charset)
        return self._sequences[key]


def encode_sequence(raw: RawDataElement, items: list[Dataset], charset: str | list[str]) -> RawDataElement:
    """``items`` as the raw element pydicom itself would write in place of ``raw`` (same encoding)."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = raw.is_implicit_VR, raw.is_little_endian
    write_sequence(fp, DataElement(raw.tag, "SQ", Sequence(items)), charset)  # type: ignore[arg-type]
    value = fp.getvalue()
    return raw._replace(VR="SQ", length=len(value), value=value)


def encode_element(element: DataElement, like: RawDataElement) -> RawDataElement:
    """``element`` as the raw element pydicom itself would write, in ``like``'s encoding (implicit or explicit
    VR, byte order); for values whose bytes do not depend on the character set (ASCII)."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = like.is_implicit_VR, like.is_little_endian
    write_data_element(fp, element)
    encoded = fp.getvalue()
    header = 8 if like.is_implicit_VR or element.VR not in EXPLICIT_VR_LENGTH_32 else 12
    return like._replace(tag=element.tag, VR=element.VR, length=len(encoded) - header, value=encoded[header:])


def _dictionary_vr(tag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown tags carry no UIDs we map
        return None
