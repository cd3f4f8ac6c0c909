"""`evaluate` on a real cohort: 2 patients x 2 scans, written as DICOM-RT and defaced by the pipeline.

The phantom has one anatomy: "patients" differ only in PatientID, noise seed and position
(one scan HFS, one HFP each). Face recognition cannot tell them apart, so the test checks
what is meaningful here: faces found on every original and no two detectors agreeing on
any defaced render, embeddings moved far by defacing, the re-identification machinery
running, and the utility numbers of the eye-landmark defacing (targets kept exactly, eyes
clipped, dose zeroed only in the removal).
"""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ElementTree

import pytest

from deface_ts.config import load_config
from deface_ts.errors import InputError
from deface_ts.phantom import PhantomOptions, write_phantom_study
from deface_ts.pipeline import deface
from deface_ts.reporting.evaluate import evaluate
from deface_ts.reporting.pairs import Pair, pairs_from_roots, read_pairs
from deface_ts.vision import faces
from tests.conftest import SMALL

SCANS = {"P1_a": ("P1", 1, "HFS"), "P1_b": ("P1", 2, "HFP"), "P2_a": ("P2", 3, "HFS"), "P2_b": ("P2", 4, "HFP")}
ANGLES = (0.0, 45.0, -45.0)
PROTECTED = ("PTV_70", "PTV_54", "CTV_70", "GTV")


def needs_detectors() -> list[str]:
    names = [n for n in faces.VERIFY_DETECTORS if n in faces.available_detectors()]
    if len(names) < 2 or not faces.embedding_available():
        pytest.skip(f"needs two face detectors and dlib's embedding (have {names})")
    return names


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    config = load_config(None, {"method": "eyes", "verify.mode": "off"})
    for name, (patient, seed, position) in SCANS.items():
        options = PhantomOptions(**SMALL, seed=seed, patient_id=patient, patient_name=f"Phantom^{patient}",
                                 position=position)
        write_phantom_study(root / "original" / name, options)
        deface(root / "original" / name, root / "defaced" / name, config)
    (root / "original" / "P3_a").mkdir()  # a case the pipeline refused: no defaced folder
    return root


@pytest.fixture(scope="module")
def evaluated(cohort):
    needs_detectors()
    pairs = pairs_from_roots(cohort / "original", cohort / "defaced")
    return evaluate(pairs, cohort / "evaluation", angles=ANGLES), cohort / "evaluation"


def test_pairs_from_roots_and_from_csv(cohort):
    pairs = pairs_from_roots(cohort / "original", cohort / "defaced")
    assert [(p.patient, p.scan) for p in pairs] == [(v[0], k) for k, v in SCANS.items()]  # P3_a left out
    listing = cohort / "pairs.csv"
    listing.write_text("original,defaced,patient\n" + "".join(f"original/{k},defaced/{k},{v[0]}\n"
                                                              for k, v in SCANS.items()))
    assert read_pairs(listing) == pairs


def test_bad_pairs_are_named(cohort, tmp_path):
    listing = tmp_path / "pairs.csv"
    listing.write_text(f"original,defaced,patient\n{cohort}/original/P1_a,{cohort}/defaced/P9,P1\n")
    with pytest.raises(InputError, match=r"pairs.csv, line 2: defaced folder .*P9 not found"):
        read_pairs(listing)
    listing.write_text("original,patient\nx,P1\n")
    with pytest.raises(InputError, match="missing defaced"):
        read_pairs(listing)
    # an HFS original paired with an HFP defaced scan: not on one grid; the error names the pair, nothing is written
    wrong = Pair(cohort / "original" / "P1_a", cohort / "defaced" / "P1_b", "P1", "P1_a")
    with pytest.raises(InputError, match=r"pair P1/P1_a .*not on the original's grid"):
        evaluate([wrong], tmp_path / "out", detectors=[])
    assert not (tmp_path / "out").exists()


def test_outputs_written(evaluated):
    results, folder = evaluated
    assert json.loads((folder / "results.json").read_text())["cohort"]["pairs"] == 4
    with open(folder / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["scan"] for r in rows] == list(SCANS)
    assert all(int(r["detections_original"]) > int(r["detections_defaced"]) for r in rows)
    page = (folder / "summary.html").read_text()
    svgs = re.findall(r"<svg.*?</svg>", page, re.S)
    assert len(svgs) >= 4 and "ROC-AUC" in page
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed


def test_faces_found_before_and_not_agreed_on_after(evaluated):
    results, _ = evaluated
    rates = results["cohort"]["detection_rate"]
    for name in [*results["cohort"]["detectors"], "agreeing"]:
        assert rates["original"][name]["0"] == 1.0, name  # every original frontal render shows a face
    for view in [*(f"{a:g}" for a in ANGLES), "any"]:
        assert rates["original"]["agreeing"][view] == 1.0
        assert rates["defaced"]["agreeing"][view] == 0.0  # the pipeline's verification rule would pass all
        assert rates["defaced"]["mtcnn"][view] == 0.0
    # single detectors still fire on cut surfaces of this coarse 2 mm / 3 mm phantom (see the report)
    total = {kind: sum(v for n in results["cohort"]["detectors"] for k, v in rates[kind][n].items() if k != "any")
             for kind in rates}
    assert total["defaced"] < total["original"] / 2


def test_embeddings_move_and_reidentification_runs(evaluated):
    results, _ = evaluated
    recognition = results["cohort"]["recognition"]
    assert recognition is not None  # each patient has two scans
    original, defaced = recognition["original"], recognition["defaced"]
    assert original["same_pairs"] == defaced["same_pairs"] == 4 and defaced["different_pairs"] == 8
    assert defaced["rank1"]["other_scans"]["probes"] == defaced["rank1"]["with_own_scan"]["probes"] == 4
    for r in (original, defaced):
        assert 0.0 <= r["roc_auc"] <= 1.0
    # one anatomy: intact scans are near each other; every defaced render is far from every original,
    # its own included (same cameras, same face box)
    intact = original["same_distances"] + original["different_distances"]
    own = [c["embedding_distance_to_own_original"] for c in results["cases"]]
    assert min(defaced["same_distances"] + defaced["different_distances"] + own) > max(intact)


def test_utility_targets_kept_eyes_clipped_dose_zeroed_only_in_the_removal(evaluated):
    results, _ = evaluated
    for case in results["cases"]:
        rois = {r["name"]: r for r in case["rois"]}
        for name in PROTECTED:
            assert rois[name]["preserved_ratio"] == 1.0 and rois[name]["dice"] == 1.0
            assert not rois[name]["changed"] and rois[name]["hd95_mm"] == 0.0
        eye = rois["Eye_L"]
        assert eye["changed"] and 0.0 < eye["dice"] < 1.0 and eye["hd95_mm"] > 0.0
        assert rois["Lens_L"]["preserved_ratio"] == 0.0  # in front of the cut plane
        assert rois["SpinalCord"]["dice"] == 1.0 and not rois["SpinalCord"]["changed"]
        (dose,) = case["doses"]
        assert dose["max_abs_diff_gy"] > 10.0  # dose in the removed face is zeroed
        assert dose["max_abs_diff_outside_removal_gy"] == 0.0 and dose["removal_from"] == "removal_mask.nii.gz"
        dvh = {e["roi"]: e for e in dose["dvh"]}
        assert set(dvh) == set(PROTECTED)
        for entry in dvh.values():
            assert entry["max_abs_voxel_diff_gy"] == 0.0  # no dose voxel inside a protected ROI changed
        for name in PROTECTED:  # dose points next to targets are kept: even interpolated DVHs are identical
            assert all(v == 0.0 for v in dvh[name]["difference"].values()), (name, dvh[name]["difference"])


def test_evaluate_command_line(cohort, tmp_path, capsys):
    from deface_ts.apps.cli import main

    out = tmp_path / "eval"
    folders = ["--originals", str(cohort / "original"), "--defaced", str(cohort / "defaced")]
    assert main(["evaluate", str(out), *folders]) == 0
    assert "evaluated 4 pair(s)" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.csv", "summary.html"}
    assert main(["evaluate", str(out)]) == 3  # neither --pairs nor the two folders
    assert "--pairs" in capsys.readouterr().err
