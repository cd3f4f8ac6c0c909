"""One UID map for a whole derived study, so CT → RTSTRUCT → RTPLAN → RTDOSE links survive."""

from __future__ import annotations

import secrets

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
    return out


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
        for element in ds:
            if element.VR == "UI" and element.value:
                values = element.value if element.VM > 1 else [element.value]
                new = [self.get(v) for v in values]
                if new != [str(v) for v in values]:
                    out[element.tag] = DataElement(element.tag, "UI", new if element.VM > 1 else new[0])
            elif element.VR == "SQ":
                items = Sequence([self.remap(item) for item in element.value])
                out[element.tag] = DataElement(element.tag, "SQ", items)
        return out
