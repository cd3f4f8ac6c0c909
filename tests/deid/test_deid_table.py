"""The profiles' actions come from PS3.15 Table E.1-1's columns, read here from the CSV on its own.

For every attribute of the table and every option column, the action a
profile takes must be one the table's code allows for that attribute; the only
attributes where a profile departs from the table are the RT rules the issue
lists (labels the table misses or keeps, and the pseudonym).
"""

from __future__ import annotations

import csv

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from deface_ts.deid.profile import PSEUDONYM, RT_TEXT, Profile, builtin_profile
from deface_ts.deid.table import BASIC, OPTIONS, TABLE_FILE, load_table

# What each code of the table allows (PS3.15 E.1-1: "X/Z" is X unless Z is needed, ...). C (clean) is checked
# apart, by the VR of the value.
ALLOWED = {"X": {"X"}, "Z": {"Z"}, "D": {"D"}, "K": {"K"}, "U": {"U"}, "X/Z": {"X", "Z"}, "X/D": {"X", "D"},
           "Z/D": {"Z", "D"}, "X/Z/D": {"X", "Z", "D"}, "X/Z/U*": {"X", "Z", "U"}}
BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def table_rows() -> list[dict[str, str]]:
    with open(TABLE_FILE, newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def tags_of(row: dict[str, str]) -> list[int]:
    """The row's tag, or two members of a repeating group such as (60xx,3000)."""
    tag = row["tag"].lower()
    if "x" not in tag:
        return [int(tag, 16)]
    return [int(tag.replace("x", "0"), 16), int(tag.replace("x", "2"), 16)]


def vr_of(tag: int) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


def table_code(row: dict[str, str], columns: tuple[str, ...]) -> str:
    return next((row[c] for c in columns if row[c]), row[BASIC])


def assert_allowed(profile: Profile, row: dict[str, str], columns: tuple[str, ...]) -> None:
    code = table_code(row, columns)
    for tag in tags_of(row):
        vr = vr_of(tag)
        action = profile.action(tag, vr)
        where = f"{row['tag']} {row['keyword']} ({vr}): table {code}, profile {action}"
        if code != "C":
            assert action in ALLOWED[code], where
        elif vr in ("DA", "DT"):
            assert action == "S" and "retain_long_modified_dates" in columns, where  # the modified dates
        elif vr == "TM":
            assert action == "K", where  # whole-day shifts keep times of day consistent
        elif vr in BINARY:
            assert action in ALLOWED[row[BASIC]], where  # bytes cannot be cleaned: the Basic action
        else:
            assert action == "C", where


def rule_tags() -> set[int]:
    return {tag_for_keyword(k) for k in {**RT_TEXT, **PSEUDONYM}} - {None}  # type: ignore[misc]


@pytest.mark.parametrize("name", ["rt-research", "basic"])
def test_builtin_profiles_follow_the_whole_table(name):
    profile = builtin_profile(name)
    assert set(profile.overrides) == rule_tags()  # no hand-written rule but the RT list and pseudonym
    for row in table_rows():
        if not set(tags_of(row)) & rule_tags():
            assert_allowed(profile, row, profile.columns)


# Retain Safe Private's one row is Private Attributes, which no tag names: the profiles' safe_private list.
@pytest.mark.parametrize("column", [c for c in OPTIONS if c != "retain_safe_private"])
def test_each_option_column_gives_the_tables_actions(column):
    """A profile of the Basic column plus one option: every attribute the option lists takes the option's code,
    every other one the Basic code."""
    profile = Profile(f"basic+{column}", load_table(), (column,))
    listed = 0
    for row in table_rows():
        assert_allowed(profile, row, (column,))
        listed += bool(row[column])
    assert listed > 0  # the column is in the CSV and not empty


def test_rt_research_applies_its_four_options_and_they_never_disagree():
    profile = builtin_profile("rt-research")
    codes = {code for code, _ in profile.options}
    assert codes == {"113100", "113107", "113108", "113105", "113103"}  # Basic, modified dates, patient
    # characteristics, clean descriptors, clean graphics (CID 7050)
    for row in table_rows():
        cells = {row[c] for c in profile.columns if row[c]}
        assert len(cells) <= 1, row  # so the order in which the options are looked up cannot matter


def test_options_change_what_the_basic_profile_removes():
    research, basic = builtin_profile("rt-research"), builtin_profile("basic")
    weight, allergies, birth, content = (tag_for_keyword(k) for k in
                                         ("PatientWeight", "Allergies", "PatientBirthDate", "ContentDate"))
    assert (basic.action(weight, "DS"), research.action(weight, "DS")) == ("X", "K")  # Rtn. Pat. Chars.
    assert (basic.action(allergies, "LO"), research.action(allergies, "LO")) == ("X", "C")
    assert (basic.action(birth, "DA"), research.action(birth, "DA")) == ("Z", "Z")  # no option keeps it
    assert (basic.action(content, "DA"), research.action(content, "DA")) == ("D", "S")  # Z/D; modified dates
