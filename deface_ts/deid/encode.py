"""Sequences of raw elements encoded to bytes without pydicom's per-element writer.

An RTSTRUCT's ROIContourSequence holds thousands of contour items whose
ContourImageSequence gets new UIDs; every other element of an item is written
back as read. pydicom writes each raw element through ``write_data_element``
(a buffer object, a context manager and byte-order checks per element), which
was most of the time of de-identifying the RTSTRUCT. Here an item whose
elements are all raw is joined from its elements' bytes as ``write_sequence``
lays them out (PS3.5 7.1 and 7.5); anything else goes through pydicom.
tests/deid/test_deid_encode.py checks the bytes equal pydicom's.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from deface_ts.io.dicom.uids import encode_sequence

_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"  # (FFFE,E00D), length 0
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)


def encode_items(raw: RawDataElement, items: list[Dataset], charset: str | list[str]) -> RawDataElement:
    """``items`` as the raw element pydicom writes in place of ``raw`` (:func:`encode_sequence`), faster."""
    parts = [] if raw.is_little_endian else None
    for item in items if parts is not None else ():
        body = _item_body(item, raw.is_implicit_VR)
        if body is None:
            parts = None
            break
        if getattr(item, "is_undefined_length_sequence_item", False):
            parts.append(_ITEM + b"\xff\xff\xff\xff" + body + _ITEM_END)
        else:
            parts.append(_ITEM + struct.pack("<I", len(body)) + body)
    if parts is None:  # big endian, or an item pydicom must encode
        return encode_sequence(raw, items, charset)
    value = b"".join(parts)
    return raw._replace(VR="SQ", length=len(value), value=value)


def _item_body(item: Dataset, implicit: bool) -> bytes | None:
    """The item's elements as pydicom's ``write_dataset`` writes them, or None where pydicom would convert
    or re-encode something (another encoding or character set, an element not raw)."""
    if item.original_encoding != (implicit, True) or item.original_character_set != item._character_set:
        return None
    chunks = []
    for tag in sorted(item._dict):
        if tag & 0xFFFF == 0 and tag >> 16 > 6:  # retired group lengths are not written (PS3.5 7.2)
            continue
        element = item._dict[tag]
        if not isinstance(element, RawDataElement) or not isinstance(element.value, bytes) or tag == 0x7FE00010:
            return None  # (pixel data in an item: pydicom checks its encapsulation)
        header = _header(tag, element, implicit)
        if header is None:
            return None
        chunks.append(header)
        chunks.append(element.value)
        if element.length == _UNDEFINED:
            chunks.append(_SEQUENCE_END)
    return b"".join(chunks)


def _header(tag: int, element: RawDataElement, implicit: bool) -> bytes | None:
    """Tag, VR and length as ``write_data_element`` writes them for a raw element (little endian)."""
    undefined = element.length == _UNDEFINED
    length = _UNDEFINED if undefined else len(element.value)
    start = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return start + struct.pack("<I", length)
    vr = element.VR
    if not vr or len(vr) != 2:
        return None  # pydicom raises or converts: let it
    if vr not in _LONG and not undefined and length > 0xFFFF:
        vr = "UN"  # PS3.5 6.2.2, as pydicom writes it
    if vr in _LONG:
        return start + vr.encode() + b"\0\0" + struct.pack("<I", length)
    if undefined:
        return start + vr.encode() + struct.pack("<I", length)
    return start + vr.encode() + struct.pack("<H", length)
