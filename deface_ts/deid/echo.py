"""The echo scan: search everything under an output folder for the input's identifying values.

Every DICOM file is searched as bytes (file meta, every element at every depth,
private and UN values alike; pixel data excepted, which the de-identification
never changes and whose random bytes would match short values by chance). Only
where the bytes hold an identifier is the dataset walked, to name the attribute
path. Other files: names, report JSON and text as a whole, NIfTI header text
fields and extensions, PNG text chunks; unknown files as bytes. Findings name
the file, the place and the kind of identifier, never its value.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from deface_ts.deid.identifiers import Identifiers

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_HEAD = 1 << 13  # a CT header fits: its pixel data is then never read back (else the rest is read)
_TEXT_SUFFIXES = (".json", ".html", ".htm", ".csv", ".txt", ".yaml", ".yml", ".md", ".svg", ".xml", ".log")


def scan_folder(folder: Path, identifiers: Identifiers) -> list[str]:
    """One line per echo found: ``relative/path: place (kind)``; empty when the folder is clean."""
    findings = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder)
        kind = identifiers.find(str(relative).encode("utf-8"))
        if kind:
            findings.append(f"{relative}: file name ({kind})")
        if path.is_file():
            findings += [f"{relative}: {place}" for place in scan_file(path, identifiers)]
    return findings


def scan_file(path: Path, identifiers: Identifiers) -> list[str]:
    name = path.name.lower()
    with open(path, "rb") as handle:
        head = handle.read(_HEAD)
        if len(head) > 132 and head[128:132] == b"DICM":
            return _scan_dicom(path, _dicom_bytes(head, handle, path.stat().st_size), identifiers)
        data = head + handle.read()
    if name.endswith((".nii", ".nii.gz")):
        return _scan_nifti(path, identifiers)
    if name.endswith(".png"):
        return [f"PNG text chunk {key} ({kind})" for key, text in _png_text(data)
                if (kind := identifiers.find(text))]
    kind = identifiers.find(data)
    return [f"{'text' if name.endswith(_TEXT_SUFFIXES) else 'file bytes'} ({kind})"] if kind else []


def _scan_dicom(path: Path, searched: bytes, identifiers: Identifiers) -> list[str]:
    if not identifiers.find(searched):
        return []
    ds = pydicom.dcmread(path, force=True)
    places = _walk(ds.file_meta, "file meta ", identifiers) if hasattr(ds, "file_meta") else []
    places += _walk(ds, "", identifiers)
    return places or [f"file bytes outside any element ({identifiers.find(searched)})"]


def _dicom_bytes(head: bytes, handle, size: int) -> bytes:
    """The file's bytes without the pixel data values (never read from disk when they end the file)."""
    start = _pixel_data_at_end(head, size)
    if start is not None:
        return head[:start]
    data = head + handle.read()
    start = _pixel_data_at_end(data, size)
    return data[:start] if start is not None else _without_pixels_parsed(data)


def _pixel_data_at_end(data: bytes, size: int) -> int | None:
    """Where a Pixel Data element whose value ends the file starts in ``data`` (the file's first bytes), or None.

    The element is recognised by its tag and a length that ends exactly at the
    end of the file (as the writers here write it); a tag-like run of bytes inside
    an earlier value has no such length. Anything else is parsed.
    """
    start = data.find(_PIXEL_DATA_TAG)
    while start >= 0:
        for header in (12, 8):  # explicit VR (OB/OW, 4-byte length), implicit VR
            length = int.from_bytes(data[start + header - 4:start + header], "little")
            if start + header <= len(data) and start + header + length == size:
                return start
        start = data.find(_PIXEL_DATA_TAG, start + 1)
    return None


def _without_pixels_parsed(data: bytes) -> bytes:
    fp = io.BytesIO(data)
    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    start = fp.tell()
    if start >= len(data):
        return data
    implicit, little = ds.original_encoding
    header = 8 if implicit else 12
    length = int.from_bytes(data[start + header - 4:start + header], "little" if little is not False else "big")
    if length == 0xFFFFFFFF:  # encapsulated pixel data runs to its sequence delimiter, normally the file's end
        return data[:start]
    return data[:start] + data[start + header + length:]


def _walk(ds: Dataset, path: str, identifiers: Identifiers) -> list[str]:
    places = []
    for element in ds:
        name = path + (element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})")
        if element.VR == "SQ":
            for n, item in enumerate(element.value or []):
                places += _walk(item, f"{name}[{n}].", identifiers)
            continue
        if element.tag in _PIXEL_TAGS:
            continue
        value = element.value
        if isinstance(value, bytes):
            data = value
        else:
            data = "\\".join(str(v) for v in (value if element.VM > 1 else [value])).encode("utf-8", "replace")
        kind = identifiers.find(data)
        if kind:
            places.append(f"{name} ({kind})")
    return places


def _scan_nifti(path: Path, identifiers: Identifiers) -> list[str]:
    import nibabel

    image = nibabel.load(str(path))
    header: Any = image.header  # a Nifti1Header, which nibabel's stubs type as a plain FileBasedHeader
    places = []
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        if field in header:
            kind = identifiers.find(bytes(header[field].tobytes()))
            if kind:
                places.append(f"NIfTI header {field} ({kind})")
    for n, extension in enumerate(getattr(header, "extensions", []) or []):
        kind = identifiers.find(bytes(extension.get_content()) if isinstance(extension.get_content(), bytes)
                                else str(extension.get_content()).encode())
        if kind:
            places.append(f"NIfTI header extension {n} ({kind})")
    return places


def _png_text(data: bytes) -> list[tuple[str, bytes]]:
    """(chunk, text) of every tEXt, zTXt and iTXt chunk (PNG spec 11.3.4)."""
    texts, position = [], 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if kind == b"tEXt":
            texts.append(("tEXt", body))
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            texts.append(("zTXt", keyword + b" " + zlib.decompress(rest[1:])))
        elif kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]
            texts.append(("iTXt", keyword + b" " + (zlib.decompress(text) if compressed else text)))
        position += 12 + length
    return texts
