"""The fast sequence encoder writes the bytes pydicom itself writes, in every encoding and item form."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deface_ts.deid.encode import encode_items
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
