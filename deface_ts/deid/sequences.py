"""Sequences of raw elements decoded and encoded without pydicom's per-element reader and writer.

An RTSTRUCT's ROIContourSequence holds thousands of contour items whose
ContourImageSequence gets new UIDs; every other element of an item is written
back as read. pydicom reads each item through ``read_dataset`` (a generator, a
``Dataset.__init__`` of dozens of attribute assignments) and writes each raw
element through ``write_data_element`` (a buffer object, a context manager and
byte-order checks per element): together most of the time of de-identifying
the RTSTRUCT. Here a little-endian sequence of defined-length items is split
into raw elements directly, and an item whose elements are all raw is joined
from their bytes, both laid out as PS3.5 7.1 and 7.5 say and as pydicom does;
anything else (big endian, undefined lengths, a character set of the item's
own, an unknown VR) goes through pydicom. tests/deid/test_deid_sequences.py
checks both against pydicom's own results.
"""

from __future__ import annotations

import struct
from functools import cache

from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from deface_ts.io.dicom.uids import encode_sequence, sequence_items

_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"  # (FFFE,E00D), length 0
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0
_UNDEFINED = 0xFFFFFFFF
_LONG = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_KNOWN_VRS = frozenset(str(vr) for vr in VR)
_SPECIFIC_CHARACTER_SET = 0x00080005


def items_of(ds: Dataset, tag, parsed: dict | None = None) -> Sequence | list[Dataset]:
    """The items of a sequence element, as :func:`deface_ts.io.dicom.uids.sequence_items` gives them (parsed
    once into ``parsed``, ``ds`` left as read), split here where the sequence allows it."""
    raw = ds.get_item(tag)
    if parsed is None or not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return sequence_items(ds, tag, parsed)
    encoding = character_set(ds)
    key = (int(tag), raw.value, raw.is_implicit_VR, raw.is_little_endian, str(encoding))
    if key not in parsed:
        split = split_items(raw, encoding)
        parsed[key] = split if split is not None else sequence_items(ds, tag, parsed)
    return parsed[key]


def character_set(ds: Dataset) -> str | list[str]:
    """``ds._character_set`` without converting Specific Character Set in ``ds`` (which that property does):
    an element left raw is written back as its bytes."""
    raw = ds.get_item(_SPECIFIC_CHARACTER_SET)
    if raw is None:
        return ds._parent_encoding
    if isinstance(raw, RawDataElement):  # the same few values in every item and file: converted once each
        encoding = _encoding_of(raw.value, raw.VR, raw.is_implicit_VR, raw.is_little_endian)
    else:
        encoding = convert_encodings(raw.value) if raw.value else None
    return encoding if encoding is not None else ds._parent_encoding


@cache
def _encoding_of(value: bytes | None, vr: str | None, implicit: bool, little: bool) -> str | list[str] | None:
    element = RawDataElement(BaseTag(_SPECIFIC_CHARACTER_SET), vr, len(value or b""), value, 0, implicit, little)
    converted = convert_raw_data_element(element).value
    return convert_encodings(converted) if converted else None


def split_items(raw: RawDataElement, encoding: str | list[str]) -> list[Dataset] | None:
    """The items of a raw sequence as pydicom's reader makes them (datasets of raw elements, with the read
    encoding), or None where pydicom must read it."""
    data, implicit = raw.value, raw.is_implicit_VR
    if not raw.is_little_endian or raw.length == _UNDEFINED or not isinstance(data, bytes):
        return None
    encoding = [encoding] if isinstance(encoding, str) else encoding  # as pydicom's convert_value passes it on
    template = Dataset(parent_encoding=encoding)
    template.set_original_encoding(implicit, True, encoding)
    template.is_undefined_length_sequence_item = False
    items, position = [], 0
    while position < len(data):
        if data[position:position + 4] != _ITEM or position + 8 > len(data):
            return None
        (length,) = struct.unpack_from("<I", data, position + 4)
        position += 8
        if length == _UNDEFINED or position + length > len(data):
            return None
        elements = _elements(data, position, position + length, implicit, raw.value_tell)
        if elements is None or _SPECIFIC_CHARACTER_SET in elements:
            return None
        items.append(_dataset(template, elements))
        position += length
    return items


def _elements(data: bytes, start: int, end: int, implicit: bool, tell: int) -> dict | None:
    """The raw elements of ``data[start:end]`` by tag, or None at anything pydicom reads its own way."""
    elements = {}
    position = start
    while position < end:
        if position + 8 > end:
            return None
        group, number = struct.unpack_from("<HH", data, position)
        tag = BaseTag(group << 16 | number)
        if implicit:
            vr = None
            (length,) = struct.unpack_from("<I", data, position + 4)
            header = 8
        else:
            vr = data[position + 4:position + 6].decode("latin-1")
            if vr not in _KNOWN_VRS:
                return None
            if vr in _LONG:
                (length,) = struct.unpack_from("<I", data, position + 8)
                header = 12
            else:
                (length,) = struct.unpack_from("<H", data, position + 6)
                header = 8
        position += header
        if length == _UNDEFINED or position + length > end or group == 0xFFFE:
            return None
        elements[tag] = RawDataElement(tag, vr, length, data[position:position + length], tell + position,
                                       implicit, True, True, False)
        position += length
    return elements


def _dataset(template: Dataset, elements: dict) -> Dataset:
    """A dataset like ``template`` holding ``elements``: ``Dataset.__init__`` (its attribute assignments go
    through pydicom's ``__setattr__``) was a third of the time of reading an RTSTRUCT's contour items."""
    item = object.__new__(Dataset)
    item.__dict__.update(template.__dict__, _dict=elements, _private_blocks={},
                         _pixel_array_opts=dict(template.__dict__.get("_pixel_array_opts", {})), _pixel_id={})
    return item


def encode_items(raw: RawDataElement, items: list[Dataset], charset: str | list[str]) -> RawDataElement:
    """``items`` as the raw element pydicom writes in place of ``raw`` (:func:`encode_sequence`), faster.

    The chunks of every item (headers and the values as read) are joined once: joining each item, then the
    items, copied the RTSTRUCT's megabytes of ContourData three times per level of nesting."""
    chunks: list[bytes] = []
    for item in items if raw.is_little_endian else ():
        body = _item_chunks(item, raw.is_implicit_VR)
        if body is None:
            return encode_sequence(raw, items, charset)  # an item pydicom must encode
        if getattr(item, "is_undefined_length_sequence_item", False):
            chunks += [_ITEM, b"\xff\xff\xff\xff", *body, _ITEM_END]
        else:
            chunks += [_ITEM, struct.pack("<I", sum(map(len, body))), *body]
    if not raw.is_little_endian:
        return encode_sequence(raw, items, charset)
    value = b"".join(chunks)
    return raw._replace(VR="SQ", length=len(value), value=value)


def _item_chunks(item: Dataset, implicit: bool) -> list[bytes] | None:
    """The item's elements as pydicom's ``write_dataset`` writes them (in pieces), or None where pydicom would
    convert or re-encode something (another encoding or character set, an element not raw)."""
    if item.original_encoding != (implicit, True) or item.original_character_set != item._character_set:
        return None
    chunks = []
    for tag in sorted(item._dict, key=int):  # int: BaseTag.__lt__ is Python code
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
    return chunks


def _header(tag: int, element: RawDataElement, implicit: bool) -> bytes | None:
    """Tag, VR and length as ``write_data_element`` writes them for a raw element (little endian)."""
    undefined = element.length == _UNDEFINED
    length = _UNDEFINED if undefined else len(element.value or b"")
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
