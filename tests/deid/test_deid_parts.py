"""The parts of header de-identification on their own: identifier matching, profiles, keys, date shifts."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from deface_ts.config import DeidConfig
from deface_ts.deid.identifiers import Identifiers
from deface_ts.deid.keys import DeidKey, load_key
from deface_ts.deid.profile import builtin_profile, load_profile
from deface_ts.deid.session import prepare
from deface_ts.errors import ConfigError, InputError


def identifiers() -> Identifiers:
    found = Identifiers()
    found.add("Doe", "PatientName component")
    found.add("12345", "PatientID")
    found.add("20250310", "date")
    found.add("1.2.840.99.1", "UID")
    found.add("Q", "PatientName component")
    return found


@pytest.mark.parametrize("text, kind", [
    (b"DOE^JOHN", "PatientName component"), (b"mrn-doe1", "PatientName component"), (b"does not", None),
    (b"MRN12345", "PatientID"), (b"0.12345", None), (b"123456", None),
    (b"20250310120000.000", "date"), (b"x20250310", "date"), (b"120250310", None),
    (b"1.2.840.99.1\\1.2.3", "UID"), (b"1.2.840.99.12", None), (b"-1.5\\2.25", None),
])
def test_identifier_matching_respects_word_and_number_bounds(text, kind):
    assert identifiers().find(text) == kind


def test_too_short_values_are_counted_not_searched():
    found = identifiers()
    assert found.too_short == {"PatientName component"} and found.find(b"Q") is None


def test_profiles_resolve_compound_actions_and_rt_labels():
    research, basic = builtin_profile("rt-research"), builtin_profile("basic")
    institution, beam_name, roi_name, study_time = 0x00080080, 0x300A00C2, 0x30060026, 0x00080030
    assert research.action(institution, "LO") == basic.action(institution, "LO") == "D"  # X/Z/D
    assert research.action(beam_name, "LO") == basic.action(beam_name, "LO") == "N"  # the beam's own label
    assert (research.action(roi_name, "LO"), basic.action(roi_name, "LO")) == ("C", "Z")
    assert (research.action(study_time, "TM"), basic.action(study_time, "TM")) == ("K", "Z")
    assert (research.action(0x00100040, "CS"), basic.action(0x00100040, "CS")) == ("K", "Z")  # PatientSex
    assert research.action(0x300A0006, "DA") == "S" and basic.action(0x300A0006, "DA") == "D"  # RTPlanDate
    assert basic.action(0x30060008, "DA") == "Z"  # StructureSetDate: outside the table, no dates kept


@pytest.mark.parametrize("text, message", [
    ("actions: {NoSuchKeyword: X}", "not a DICOM attribute keyword"),
    ("actions: {BeamName: KEEP}", "expected one of"),
    ("base: strict", "unknown de-identification profile"),
    ("retain: [dates]", "unknown key(s) retain"),
    ("safe_private: ['GOTHAM TPS:1003:UI']", "'PRIVATE CREATOR:xx:UI' for an element that holds UIDs"),
])
def test_yaml_profile_errors_name_the_file_and_rule(tmp_path, text, message):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_profile(str(path))


def test_key_from_environment_must_be_long(monkeypatch):
    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "short")
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_key()
    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    assert load_key().source == "environment"


def test_date_offsets_are_whole_weeks_and_differ_per_patient_and_key():
    a, b = DeidKey(b"k" * 32, "test"), DeidKey(b"j" * 32, "test")
    offsets = {a.date_offset_days("P1"), a.date_offset_days("P2"), b.date_offset_days("P1")}
    assert len(offsets) == 3 and all(d % 7 == 0 and -3650 <= d <= -364 for d in offsets)
    assert a.date_offset_days("P1") == DeidKey(b"k" * 32, "other").date_offset_days("P1")


def _patient(patient_id: str) -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientName, ds.StudyDate = patient_id, "Doe^Jane", "20250310"
    return ds


def test_one_run_takes_one_patient(monkeypatch):
    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    with pytest.raises(InputError, match="2 different PatientIDs"):
        prepare([_patient("A1"), _patient("B2")], DeidConfig())


def test_pseudonym_holding_the_identifier_is_refused(monkeypatch):
    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    with pytest.raises(ConfigError, match="holds an identifier"):
        prepare([_patient("MRN777")], DeidConfig(), patient_id="STUDY-MRN777")


def test_malformed_and_partial_dates(monkeypatch):
    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    ds = _patient("A1")
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDateTime = "2025.03.10", "20251340", "2025"
    deid = prepare([ds], DeidConfig())
    out = deid.dataset(ds)
    shifted = deid.offset.days
    assert out.StudyDate != "20250310" and len(out.StudyDate) == 8 and out.SeriesDate == ""
    assert len(out.AcquisitionDateTime) == 4 and shifted < 0
    assert deid.malformed_dates == ["SeriesDate"]


def test_anchored_search_finds_every_occurrence():
    """The search looks for a token's rarest letter first: it must still find every start a plain search finds."""
    from deface_ts.deid.identifiers import _occurrences

    contour = b"\\".join(b"%.2f" % (i * 0.37 - 50) for i in range(400))
    data = b"doedoe" + contour + b"zdoe^jane\x00" + contour + b"12 harbour road" + b"55 5-0199" + b"555-0199" + b"jazz"
    for token in (b"doe", b"doedoe", b"doe^jane", b"jane", b"jazz", b"12 harbour road", b"555-0199", b"z",
                  b"50.00", b"q"):
        plain, start = [], data.find(token)
        while start >= 0:
            plain.append(start)
            start = data.find(token, start + 1)
        assert list(_occurrences(data, token)) == plain, token


def test_un_element_of_a_named_tag_is_collected():
    """An explicit-VR writer that stored Operators' Name as UN: its value is still an identifier of the patient."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    from deface_ts.deid.identifiers import collect
    from deface_ts.deid.table import load_table

    ds = Dataset()
    ds._dict[BaseTag(0x00081070)] = RawDataElement(BaseTag(0x00081070), "UN", 12, b"Welby^Marcus", 0, False, True)
    assert collect([ds], load_table()).find(b"seen by welby") == "OperatorsName component"


def test_beam_names_become_the_beams_own_labels(monkeypatch):
    """Photon and ion beams, and a treatment record's beams (numbered by ReferencedBeamNumber), get one distinct
    label each, "BEAM <number>", whatever their names were; the same label where the record refers to the beam."""
    from pydicom.sequence import Sequence

    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    ds = _patient("A1")

    def beam(number: int, name: str, field: str = "BeamNumber") -> Dataset:
        item = Dataset()
        setattr(item, field, number)
        item.BeamName, item.BeamDescription = name, "Doe field"
        return item

    ds.BeamSequence = Sequence([beam(1, "Doe LAO"), beam(2, "Doe LAO")])  # two beams of one name
    ds.IonBeamSequence = Sequence([beam(7, "Doe proton")])
    ds.TreatmentSessionBeamSequence = Sequence([beam(2, "Doe LAO", "ReferencedBeamNumber")])
    unnumbered = Dataset()
    unnumbered.BeamName = "Doe"
    ds.ReferencedBeamSequence = Sequence([unnumbered])
    out = prepare([ds], DeidConfig()).dataset(ds)
    assert [(b.BeamName, b.BeamDescription) for b in out.BeamSequence] == [("BEAM 1",) * 2, ("BEAM 2",) * 2]
    assert out.IonBeamSequence[0].BeamName == "BEAM 7"
    assert out.TreatmentSessionBeamSequence[0].BeamName == "BEAM 2"
    assert out.ReferencedBeamSequence[0].BeamName == "ANONYMIZED"  # no number to tell it by: the dummy


@pytest.mark.parametrize("implicit", [True, False])
def test_uids_mapped_on_their_bytes_equal_pydicoms_encoding(monkeypatch, implicit):
    """A UI value mapped without converting it (one per CT slice) is written as pydicom writes the new value."""
    from pydicom.dataelem import DataElement, RawDataElement
    from pydicom.tag import BaseTag

    from deface_ts.io.dicom.uids import encode_element

    monkeypatch.setenv("DEFACE_TS_DEID_KEY", "long-enough-secret-123")
    deid = prepare([_patient("A1")], DeidConfig())
    for old in ("1.2.840.99.1", "1.2.840.99.12", "1.2.3\\1.2.840.99.777"):  # odd and even lengths, two values
        value = old.encode() + b"\x00" * (len(old) % 2)
        raw = RawDataElement(BaseTag(0x00080018), None if implicit else "UI", len(value), value, 0, implicit, True)
        new = deid._uid_bytes(raw, "U")
        values = [deid.uids.get(v) for v in old.split("\\")]
        expected = encode_element(DataElement(0x00080018, "UI", values if len(values) > 1 else values[0]), raw)
        assert new.value == expected.value and new.length == expected.length and new.VR == "UI"
        assert deid._uid_bytes(raw, "K").value == new.value  # an original UID of the set, mapped where kept
        assert deid._uid_bytes(new, "U") is deid._uid_bytes(new, "K")  # an issued UID: unchanged (one sentinel)
