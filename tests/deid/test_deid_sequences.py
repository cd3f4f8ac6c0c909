"""The fast sequence reader and writer give what pydicom itself gives, in every encoding and item form."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deface_ts.deid.sequences import encode_items, split_items
from deface_ts.io.dicom.uids import encode_sequence, sequence_items


def _study(tmp_path, syntax) -> Dataset:
    """A dataset read back from a file: two levels of items, long values (an OB over 64 kB in an item) and an
    item of undefined length, in the given transfer syntax."""
    inner = Dataset()
    inner.ReferencedSOPClassUID, inner.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5"
    contour = Dataset()
    contour.ContourImageSequence = Sequence([inner, inner])
    contour.ContourGeometricType, contour.NumberOfContourPoints = "CLOSED_PLANAR", 3
    contour.ContourData = [1.5, -2.25, 3.0] * 3
    contour.ContourNumber = 1
    big = Dataset()
    big.add_new(0x00420011, "OB", b"\x01" * 70000)  # EncapsulatedDocument: a 32-bit length
    big.ROIName = "PTV_70"
    ds = Dataset()
    ds.SOPInstanceUID, ds.Modality = "1.2.3", "RTSTRUCT"
    ds.ContourSequence = Sequence([contour, big])
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", "1.2.3"
    path = tmp_path / "set.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian])
@pytest.mark.parametrize("undefined_item", [False, True])
def test_fast_encoding_equals_pydicoms(tmp_path, syntax, undefined_item):
    ds = _study(tmp_path, syntax)
    raw = ds.get_item(BaseTag(0x30060040))
    assert isinstance(raw, RawDataElement)
    items = list(sequence_items(ds, raw.tag))
    items[0].is_undefined_length_sequence_item = undefined_item
    assert encode_items(raw, items, ds._character_set) == encode_sequence(raw, items, ds._character_set)


def test_items_that_are_not_raw_go_through_pydicom(tmp_path):
    ds = _study(tmp_path, ExplicitVRLittleEndian)
    raw = ds.get_item(BaseTag(0x30060040))
    items = list(sequence_items(ds, raw.tag))
    items[1].ROIName = "changed"  # a DataElement now: pydicom's writer encodes it
    fast = encode_items(raw, items, ds._character_set)
    assert fast == encode_sequence(raw, items, ds._character_set) and b"changed" in fast.value


def _as_read(items) -> list:
    return [(item.original_encoding, item.original_character_set, item.is_undefined_length_sequence_item,
             {tag: (e.VR, e.length, e.value, e.is_implicit_VR, e.is_little_endian) for tag, e in item._dict.items()})
            for item in items]


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fast_split_equals_pydicoms_reading(tmp_path, syntax):
    ds = _study(tmp_path, syntax)
    raw = ds.get_item(BaseTag(0x30060040))
    split = split_items(raw, ds._character_set)
    assert split is not None and len(split) == 2
    assert _as_read(split) == _as_read(sequence_items(ds, raw.tag))
    nested = split[0].get_item(BaseTag(0x30060016))  # ContourImageSequence, still raw: split in turn
    assert _as_read(split_items(nested, "iso8859")) == _as_read(sequence_items(split[0], nested.tag))
    assert [item.ReferencedSOPInstanceUID for item in split_items(nested, "iso8859")] == ["1.2.3.4.5"] * 2


def test_sequences_the_fast_reader_leaves_to_pydicom(tmp_path):
    ds = _study(tmp_path, ExplicitVRBigEndian)
    assert split_items(ds.get_item(BaseTag(0x30060040)), "iso8859") is None  # big endian
    little = _study(tmp_path, ExplicitVRLittleEndian).get_item(BaseTag(0x30060040))
    undefined_item = little._replace(value=little.value[:4] + b"\xff\xff\xff\xff" + little.value[8:])
    assert split_items(undefined_item, "iso8859") is None
    unknown_vr = little._replace(value=little.value.replace(b"CS", b"Q9", 1))
    assert split_items(unknown_vr, "iso8859") is None
