"""One UID map for a whole derived study, so CT → RTSTRUCT → RTPLAN → RTDOSE links survive."""

from __future__ import annotations

import secrets

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid


def shallow_copy(ds: Dataset) -> Dataset:
    """A new dataset sharing ``ds``'s elements; assigning a new element to it leaves ``ds`` alone.

    ``Dataset.copy()`` shares the element dictionary itself, so replacing an
    element in the copy would change the original (pydicom 3).
    """
    out = Dataset(dict(ds.items()))
    if hasattr(ds, "file_meta"):
        out.file_meta = FileMetaDataset()
        for element in ds.file_meta:
            out.file_meta.add(element)
    out.preamble = getattr(ds, "preamble", None)
    return same_encoding(out, ds)


def same_encoding(new: Dataset, like: Dataset) -> Dataset:
    """Give ``new`` the read encoding of ``like`` so pydicom writes raw elements as they are.

    Without it pydicom decodes and re-encodes every raw element of the item
    (seconds for an RTSTRUCT's ContourData).
    """
    new.set_original_encoding(*like.original_encoding, like.original_character_set)
    if hasattr(like, "_parent_encoding"):  # a sequence item inherits its parent's character set (pydicom 3)
        new._parent_encoding = like._parent_encoding
    return new


class UidMap:
    """Maps original UIDs to new ones, generated on first use.

    With a ``salt`` the new UIDs are a deterministic hash of salt and old UID
    (re-running gives the same output); without one, a random salt is drawn.
    """

    def __init__(self, salt: str | None = None):
        self.salt = salt if salt is not None else secrets.token_hex(16)
        self.mapping: dict[str, str] = {}

    def new(self, uid: str) -> str:
        uid = str(uid)
        if uid not in self.mapping:
            self.mapping[uid] = generate_uid(entropy_srcs=[self.salt, uid])
        return self.mapping[uid]

    def get(self, uid: str) -> str:
        return self.mapping.get(str(uid), str(uid))

    def remap(self, ds: Dataset) -> Dataset:
        """A copy of ``ds`` with every mapped UI value replaced, in nested sequences too.

        The copy is shallow where nothing changes (pixel data and other large
        values are shared, not duplicated); sequences are rebuilt.
        """
        out = shallow_copy(ds)
        for tag, raw in ds.items():
            # Look at the VR without converting the value: converting every DS of an
            # RTSTRUCT's ContourData into Python objects costs seconds per study.
            vr = raw.VR or _dictionary_vr(tag)
            if vr not in ("UI", "SQ"):
                continue
            element = ds[tag]
            if element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                new = [self.get(v) for v in values]
                if new != [str(v) for v in values]:
                    out[tag] = DataElement(tag, "UI", new if element.VM > 1 else new[0])
            elif element.VR == "SQ":
                out[tag] = DataElement(tag, "SQ", Sequence([self.remap(item) for item in element.value]))
        return out


def _dictionary_vr(tag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown tags carry no UIDs we map
        return None
