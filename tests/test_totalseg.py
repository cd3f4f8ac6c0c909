"""TotalSegmentator backend: real TotalSegmentator + nnU-Net calls on generated rule-based model folders.

Nothing of TotalSegmentator is mocked: tests write small nnU-Net v2 model folders
(tests/nnunet_models.py) for datasets 303, 775 and 298 in TotalSegmentator's
layout, point TOTALSEG_HOME_DIR at them (with a test-only placeholder licence)
and run ``totalsegmentator.python_api.totalsegmentator`` on a phantom CT.
Tests that need no network run without torch or TotalSegmentator installed.
"""

from __future__ import annotations

import json
import socket
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from deface_ts.config import load_config
from deface_ts.errors import DefaceError, InputError, LicenceError, MissingWeightsError, ModelError, PrivacyError
from deface_ts.geometry.masks import body_from_hu
from deface_ts.geometry.volume import ANTERIOR, Volume
from deface_ts.locate.base import FaceLocation
from deface_ts.locate.eyes import MaskEyeLocator
from deface_ts.locate.totalseg import runtime, weights
from deface_ts.locate.totalseg.runtime import TotalSegLocator, TotalSegOptions, choose_method
from deface_ts.phantom import EYE_CENTRES, NOSE_TIP, PhantomOptions, evaluate
from deface_ts.removal.face_mask import face_region_from_mask
from deface_ts.removal.plan import plan_removal
from tests.conftest import HARDWARE_ABSENT

SMALL = dict(rows=128, columns=128, pixel_spacing=2.0, slices=64, slice_thickness=3.0, noise_hu=0.0)


def _needs_totalsegmentator():
    pytest.importorskip("torch")
    pytest.importorskip("totalsegmentator.python_api")


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def phantom_ct():
    """Noise-free small phantom as a Volume, with its truth masks (the rule models need noise_hu=0)."""
    hu, masks, affine = evaluate(PhantomOptions(**SMALL))
    return Volume(hu, affine), masks


@pytest.fixture(scope="session")
def ts_home(tmp_path_factory):
    """A TotalSegmentator home with rule models for 303, 775 and 298 and a placeholder licence."""
    _needs_totalsegmentator()
    from nnunet_models import write_licence_config, write_test_models

    home = tmp_path_factory.mktemp("totalseg-home")
    write_licence_config(home)
    write_test_models(home / "nnunet" / "results")
    return home


@pytest.fixture
def use_home(monkeypatch):
    def use(home: Path) -> Path:
        monkeypatch.setenv("TOTALSEG_HOME_DIR", str(home))
        monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
        return home

    return use


@contextmanager
def no_network():
    """Record and refuse every attempt to resolve a name or open a connection (TotalSegmentator swallows errors)."""
    attempts: list[str] = []
    saved = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection

    def refuse(what):
        def fn(*args, **kwargs):
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise OSError(f"test: network access refused ({what})")
        return fn

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.getaddrinfo = refuse("getaddrinfo")
    socket.create_connection = refuse("create_connection")
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo, socket.create_connection = saved


@pytest.fixture(scope="session")
def union_result(ts_home, phantom_ct, tmp_path_factory):
    """One real union run (face + head_glands_cavities + total 6 mm), shared by the tests that inspect it."""
    import os

    ct, _ = phantom_ct
    saved = os.environ.get("TOTALSEG_HOME_DIR")
    os.environ["TOTALSEG_HOME_DIR"] = str(ts_home)
    try:
        options = TotalSegOptions(device="cpu", threads=2)
        with no_network() as attempts:
            location = TotalSegLocator("union", options).locate(ct)
        config = json.loads((ts_home / "config.json").read_text())
    finally:
        if saved is None:
            os.environ.pop("TOTALSEG_HOME_DIR", None)
        else:
            os.environ["TOTALSEG_HOME_DIR"] = saved
    return location, attempts, config, options


def _hfs_volume(shape=(20, 30, 40), spacing=(2.0, 1.0, 1.0), prone=False) -> Volume:
    """Axial grid: rows run posterior (supine) or anterior (prone), columns left."""
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    affine[:3, :3] = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float) * np.array(spacing)[None, :]
    if prone:
        affine[:3, 1] *= -1
        affine[:3, 2] *= -1
    return Volume(np.zeros(shape, np.float32), affine)


# ----------------------------------------------------------------------------------------------- pure logic
def test_choose_method_prefers_the_strongest():
    assert choose_method({"face", "head_glands_cavities"}, has_eye_rois=False) == "union"
    assert choose_method({"face"}, has_eye_rois=True) == "union"
    assert choose_method({"face"}, has_eye_rois=False) == "face"
    assert choose_method(set(), has_eye_rois=True) == "eyes"
    assert choose_method({"head_glands_cavities"}, has_eye_rois=False) == "eyes"
    with pytest.raises(InputError, match="no eye ROI and no TotalSegmentator weights"):
        choose_method([], has_eye_rois=False)


@pytest.mark.parametrize("prone", [False, True])
def test_face_region_grows_the_mask_and_fills_to_the_front(prone):
    ct = _hfs_volume(prone=prone)
    mask = np.zeros(ct.shape, bool)
    mask[10, 15, 20] = True
    region = face_region_from_mask(ct, mask, margin_mm=2.0)
    anterior = ct.axis_coordinate(ANTERIOR)
    centre = anterior[10, 15, 20]
    # Everything in front of the voxel on its column is removed, up to the image edge; nothing behind the margin.
    column = region[10, :, 20]
    in_front = anterior[10, :, 20] >= centre
    assert column[in_front].all()
    assert not column[anterior[10, :, 20] < centre - 2.0 - 1e-6].any()
    # The margin grows sideways (1 mm columns: two each side) but no further.
    assert region[10, 15, 18] and region[10, 15, 22] and not region[10, 15, 23]
    assert not region[12, 15, 20] and region[11, 15, 20]  # 2 mm slices: one slice up and down
    assert region.sum() > mask.sum()


@pytest.mark.parametrize("prone", [False, True])
def test_flattened_face_region_leaves_no_relief(prone):
    """A face layer of constant thickness would leave the face's relief; flattened, each slice is cut by a plane."""
    ct = _hfs_volume(prone=prone)
    mask = np.zeros(ct.shape, bool)
    mask[10, 15, 20] = True  # a deep point (the eye socket) ...
    front = 15 + (3 if prone else -3)
    mask[10, front, 26] = True  # ... and one 3 mm further anterior (the cheek)
    mask[9, front, 20] = mask[11, front, 20] = True  # shallow neighbours, 2 mm above and below
    mask[13, front, 20] = True  # 6 mm away: outside the 2 mm window
    region = face_region_from_mask(ct, mask, margin_mm=0.0, flatten_mm=2.0)
    anterior = ct.axis_coordinate(ANTERIOR)
    deepest, shallow = anterior[10, 15, 20], anterior[10, front, 26]
    for k in (9, 10, 11):  # the deep slice and its neighbours within 2 mm: cut flat at its depth, full width
        assert np.array_equal(region[k], anterior[k] >= deepest - 1e-6)
    assert np.array_equal(region[13], anterior[13] >= shallow - 1e-6)  # its own depth
    assert not region[12].any() and not region[8].any()


def test_face_region_of_an_empty_mask_fails_closed():
    ct = _hfs_volume()
    with pytest.raises(PrivacyError, match="face mask is empty"):
        face_region_from_mask(ct, np.zeros(ct.shape, bool), 5.0)


@pytest.mark.parametrize("position", ["HFS", "FFP"])
def test_head_box_keeps_the_face_in_any_position(position):
    hu, masks, affine = evaluate(PhantomOptions(**{**SMALL, "position": position}))
    ct = Volume(hu, affine)
    options = TotalSegOptions()
    face_box = runtime.head_box(ct, options, anterior_only=True)
    head_box = runtime.head_box(ct, options, anterior_only=False)
    inside = np.zeros(ct.shape, bool)
    inside[face_box] = True
    # The whole front of the body (in front of the eye centres) lies inside the face crop ...
    anterior = ct.axis_coordinate(ANTERIOR)
    front = masks["body"] & (anterior >= -EYE_CENTRES["left"][1] - 5)
    assert inside[front].all()
    # ... which is much smaller than the head crop, itself no larger than the image.
    face_voxels = np.prod([s.stop - s.start for s in face_box])
    head_voxels = np.prod([s.stop - s.start for s in head_box])
    assert face_voxels < 0.75 * head_voxels <= 0.75 * hu.size


def test_head_box_without_a_body_fails_closed():
    ct = _hfs_volume()
    ct.array[:] = -1000
    with pytest.raises(PrivacyError, match="no patient body"):
        runtime.head_box(ct, TotalSegOptions(), anterior_only=True)


def test_resolve_device_refuses_a_missing_gpu():
    torch = pytest.importorskip("torch")
    assert runtime.resolve_device("cpu") == "cpu"
    assert runtime.resolve_device("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="gpu:7"):
        runtime.resolve_device("gpu:7")
    with pytest.raises(InputError, match="not one of"):
        runtime.resolve_device("tpu")


# ----------------------------------------------------------------------------------------------- models.py
def _fake_dataset(root: Path, task: str, checkpoint: bytes = b"weights") -> Path:
    info = weights.TASKS[task]
    model = root / info.folder / info.model_folder
    (model / "fold_0").mkdir(parents=True)
    (model / "dataset.json").write_text("{}")
    (model / "plans.json").write_text("{}")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(checkpoint)
    return root / info.folder


def test_status_of_an_empty_home(tmp_path, use_home):
    use_home(tmp_path / "home")
    status = weights.status()
    assert status["weights_dir"] == str(tmp_path / "home" / "nnunet" / "results")
    assert status["available"] == []
    assert status["licence"] == "missing"
    assert status["usage_statistics"] == "unset"
    assert {name: t["dataset"] for name, t in status["tasks"].items()} == {
        "face": 303, "head_glands_cavities": 775, "total_6mm": 298}
    assert not status["tasks"]["face"]["present"] and status["tasks"]["face"]["licensed"]


def test_private_config_switches_statistics_off_and_keeps_other_keys(tmp_path, use_home):
    home = use_home(tmp_path / "home")
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"totalseg_id": "abc", "send_usage_stats": True,
                                                  "prediction_counter": 7, "license_number": "x" * 18}))
    weights.ensure_private_config()
    config = json.loads((home / "config.json").read_text())
    assert config["send_usage_stats"] is False
    assert (config["totalseg_id"], config["prediction_counter"], config["license_number"]) == ("abc", 7, "x" * 18)
    assert weights.status()["usage_statistics"] == "off" and weights.licence_state() == "configured"


def test_import_weights_from_a_zip_and_a_folder(tmp_path, use_home):
    use_home(tmp_path / "home")
    source = tmp_path / "download"
    _fake_dataset(source, "head_glands_cavities")
    _fake_dataset(source / "nested" / "deeper", "total_6mm")
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in source.rglob("*"):
            zf.write(path, path.relative_to(source))
    assert sorted(weights.import_weights(archive)) == ["head_glands_cavities", "total_6mm"]
    assert weights.available_tasks() == ["head_glands_cavities", "total_6mm"]
    with pytest.raises(InputError, match="exists already"):
        weights.import_weights(source / "nested")
    assert weights.import_weights(source / "nested", overwrite=True) == ["total_6mm"]
    face = _fake_dataset(tmp_path / "face", "face")
    assert weights.import_weights(face) == ["face"]
    assert "face" not in weights.available_tasks()  # licensed: weights alone are not enough
    weights.set_licence("Y" * 18)
    assert "face" in weights.available_tasks()


def test_import_weights_refuses_bad_archives(tmp_path, use_home):
    use_home(tmp_path / "home")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.txt", "x")
    with pytest.raises(InputError, match="outside the archive"):
        weights.import_weights(evil)
    incomplete = _fake_dataset(tmp_path / "src", "face")
    (incomplete / weights.TASKS["face"].model_folder / "plans.json").unlink()
    with pytest.raises(InputError, match="incomplete model for task 'face'"):
        weights.import_weights(incomplete)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="holds none of the model folders"):
        weights.import_weights(tmp_path / "other")
    assert not (tmp_path / "home" / "nnunet" / "results" / weights.TASKS["face"].folder).exists()


def test_missing_weights_name_the_task_and_folder(tmp_path, use_home, phantom_ct):
    home = use_home(tmp_path / "home")
    ct, _ = phantom_ct
    with pytest.raises(MissingWeightsError, match=r"task 'face' \(dataset 303\).*Dataset303_face_1559subj"):
        runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True)
    # head_glands_cavities also needs the 6 mm total model, which TotalSegmentator would download.
    _fake_dataset(home / "nnunet" / "results", "head_glands_cavities")
    with pytest.raises(MissingWeightsError, match=r"'total_6mm' \(needed by 'head_glands_cavities'\) \(dataset 298\)"):
        runtime.run_task(ct, "head_glands_cavities", TotalSegOptions(device="cpu"))


def test_missing_licence_is_our_error_not_sys_exit(tmp_path, use_home, phantom_ct):
    home = use_home(tmp_path / "home")
    _fake_dataset(home / "nnunet" / "results", "face")
    ct, _ = phantom_ct
    with pytest.raises(LicenceError, match="licensed.*missing") as info:
        runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True)
    assert isinstance(info.value, DefaceError)  # a batch catches DefaceError and goes on


# ----------------------------------------------------------------------------------------------- real calls
def test_union_locates_face_and_eyes_with_no_network(union_result, phantom_ct):
    location, attempts, config, options = union_result
    ct, masks = phantom_ct
    assert attempts == []  # no name lookup, no connection, not even for usage statistics
    assert config["send_usage_stats"] is False and config["prediction_counter"] >= 1
    assert location.method == "union"
    region = face_region_from_mask(ct, location.face_mask, margin_mm=5.0)  # as the planner builds it
    # The nose tip is inside; the back of the head is not. The flat cut behind the face layer reaches into the
    # brain near the top of the head, and the planner's keep-brain rule must take all of it out again.
    nose = tuple(np.rint(ct.lps_to_index(NOSE_TIP[None])[0]).astype(int))
    assert region[nose]
    plan = plan_removal(ct, body_from_hu(ct.array, -400.0), location, [], load_config())
    assert plan.removed[nose] and (plan.removed & masks["brain"]).sum() < 0.002 * masks["brain"].sum()
    assert (region & masks["brain"]).sum() < 0.02 * masks["brain"].sum()  # the 5 mm margin behind the forehead
    anterior = ct.axis_coordinate(ANTERIOR)
    assert not (region & masks["body"] & (anterior < -25)).any()
    # Eyes: two, sides from the affine, centres within 3 mm of the truth.
    assert sorted(e.side for e in location.eyes) == ["left", "right"]
    for eye in location.eyes:
        assert np.linalg.norm(eye.centre_mm - EYE_CENTRES[eye.side]) < 3.0
    assert set(options.timings) == {"face", "head_glands_cavities"}


def test_crop_matches_the_uncropped_call(ts_home, use_home, phantom_ct, union_result):
    use_home(ts_home)
    ct, _ = phantom_ct
    cropped = runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True) == 1
    whole = runtime.run_task(ct, "face", TotalSegOptions(device="cpu", crop=False), anterior_only=True) == 1
    box = runtime.head_box(ct, TotalSegOptions(), anterior_only=True)
    outside = np.ones(ct.shape, bool)
    outside[box] = False
    assert not cropped[outside].any()  # nothing outside the crop is segmented
    # Inside it the two agree up to a voxel, but for ~2 % under the chin where the skin runs nearly parallel to
    # the anterior axis: TotalSegmentator's 1.5 mm grid starts at another phase in the crop.
    near = ndimage.binary_dilation
    assert not whole[outside].any()
    assert (cropped & near(whole)).sum() > 0.97 * cropped.sum()
    assert (whole & near(cropped)).sum() > 0.97 * whole.sum()


def test_models_are_loaded_once_per_process(ts_home, use_home, phantom_ct, union_result, monkeypatch):
    import torch

    use_home(ts_home)
    ct, _ = phantom_ct
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True)
    assert loads == []  # the union run loaded it already
    runtime.run_task(ct, "face", TotalSegOptions(device="cpu", keep_models=False), anterior_only=True)
    assert len(loads) == 1


def test_face_mode_fails_when_the_mask_misses_the_eyes(tmp_path, use_home, phantom_ct):
    _needs_totalsegmentator()
    from nnunet_models import FACE_RULES, write_licence_config, write_rule_model

    home = use_home(tmp_path / "home")
    write_licence_config(home)
    thin = [{**FACE_RULES[0], "reach": 1}]  # a 1.5 mm skin layer: nowhere near the eyes
    write_rule_model(home / "nnunet" / "results", "face", rules=thin)
    ct, masks = phantom_ct
    eyes = MaskEyeLocator(masks["eye_left"] | masks["eye_right"], "truth")
    options = TotalSegOptions(device="cpu")
    config = load_config(None, {"region.face_margin_mm": 0.0})  # the mask alone, as predicted
    body = body_from_hu(ct.array, config.region.body_hu)
    location = TotalSegLocator("face", options, eye_locator=eyes).locate(ct)
    with pytest.raises(PrivacyError, match="does not cover the front of the (left|right) eye.*--method union"):
        plan_removal(ct, body, location, [], config)
    location = TotalSegLocator("union", options, eye_locator=eyes).locate(ct)
    assert isinstance(location, FaceLocation) and len(location.eyes) == 2
    assert any("covered by the eye region" in n for n in plan_removal(ct, body, location, [], config).notes)


def test_empty_face_prediction_fails_the_case(tmp_path, use_home, phantom_ct):
    _needs_totalsegmentator()
    from nnunet_models import FACE_RULES, write_licence_config, write_rule_model

    home = use_home(tmp_path / "home")
    write_licence_config(home)
    write_rule_model(home / "nnunet" / "results", "face", rules=[{**FACE_RULES[0], "tissue_hu": 1e6}])
    ct, _ = phantom_ct
    with pytest.raises(PrivacyError, match="found no face"):
        TotalSegLocator("face", TotalSegOptions(device="cpu")).locate(ct)


def test_empty_eye_prediction_fails_the_case(tmp_path, use_home, phantom_ct):
    _needs_totalsegmentator()
    from nnunet_models import write_rule_model

    home = use_home(tmp_path / "home")
    results = home / "nnunet" / "results"
    write_rule_model(results, "head_glands_cavities", rules=[{"kind": "band", "label": 1, "lo": 1e5, "hi": 1e6}])
    write_rule_model(results, "total_6mm")
    ct, _ = phantom_ct
    with pytest.raises(PrivacyError, match="no eye found"):
        runtime.TotalSegEyeLocator(TotalSegOptions(device="cpu")).locate(ct)


def test_corrupt_checkpoint_is_a_model_error(tmp_path, use_home, phantom_ct):
    _needs_totalsegmentator()
    from nnunet_models import write_licence_config, write_rule_model

    home = use_home(tmp_path / "home")
    write_licence_config(home)
    folder = write_rule_model(home / "nnunet" / "results", "face")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    ct, _ = phantom_ct
    with pytest.raises(ModelError, match=r"task 'face' failed.*Dataset303_face_1559subj") as info:
        runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True)
    assert isinstance(info.value, DefaceError) and info.value.exit_code == 7  # a model failure, not bad input


def test_network_guard_sees_usage_statistics(tmp_path, use_home):
    """Control for the no-network test: TotalSegmentator's statistics call is caught by the guard when on."""
    _needs_totalsegmentator()
    from totalsegmentator.config import send_usage_stats

    use_home(tmp_path / "home")
    with no_network() as attempts:
        send_usage_stats({"send_usage_stats": True, "totalseg_id": "t", "prediction_counter": 1},
                         {"task": "face", "fast": False, "preview": False, "multilabel": True, "roi_subset": None,
                          "statistics": False, "radiomics": False})
    assert attempts


@pytest.mark.gpu
def test_face_on_the_gpu(ts_home, use_home, phantom_ct):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"{HARDWARE_ABSENT} no CUDA GPU")
    use_home(ts_home)
    ct, _ = phantom_ct
    gpu = runtime.run_task(ct, "face", TotalSegOptions(device="gpu"), anterior_only=True)
    cpu = runtime.run_task(ct, "face", TotalSegOptions(device="cpu"), anterior_only=True)
    assert (gpu == cpu).mean() > 0.999


# ----------------------------------------------------------------------------------------------- the pipeline
@pytest.mark.parametrize("method, flatten", [("union", 0.0), ("auto", 0.0), ("face", 20.0)])
def test_deface_through_totalsegmentator_end_to_end(method, flatten, ts_home, use_home, phantom_cache, tmp_path):
    """The real TotalSegmentator path drives the whole pipeline: face gone, protected PTV intact, DICOM valid."""
    from deface_ts.io.dicom.case import load_case
    from deface_ts.pipeline import deface
    from tests.checkers import dciodvfy_errors
    from tests.conftest import tree_digest

    use_home(ts_home)
    study = phantom_cache(noise_hu=0.0)  # the rule networks threshold HU bands
    before = tree_digest(study.folder)
    config = load_config(None, {"method": method, "totalseg.device": "cpu", "totalseg.threads": 2,
                                "region.flatten_mm": flatten})
    with no_network() as attempts:
        report = deface(study.folder, tmp_path / "out", config)
    assert attempts == [] and tree_digest(study.folder) == before
    assert report["method"] == ("union" if method == "auto" else method)  # auto: weights + eye ROIs → union
    original, written = load_case(study.folder), load_case(tmp_path / "out" / "dicom")
    ct, new = original.ct.hu, written.ct.hu
    nose = tuple(np.rint(ct.lps_to_index(NOSE_TIP[None])[0]).astype(int))
    assert ct.array[nose] > 0 and new.array[nose] == -1000  # the nose is gone
    ptv = next(r for r in original.structures.rois if r.name == study.roi_names["ptv_face"]).mask.full(ct.shape)
    assert np.array_equal(new.array[ptv], ct.array[ptv])  # the protected PTV reaching into the face is intact
    removed = new.array != ct.array
    assert removed.any() and not (removed & ptv).any()
    assert report["post_check"]["passed"] and report["verify"]["status"].startswith("verified")
    assert report["removed"]["by_rule_voxels"].get("face mask", 0) > 0
    for path in [*sorted((tmp_path / "out" / "dicom").glob("CT_*.dcm"))[:1], tmp_path / "out" / "dicom" / "RTSTRUCT.dcm"]:
        assert dciodvfy_errors(path, tmp_path) == []


def test_face_mask_that_keeps_the_relief_is_refused_by_verify(ts_home, use_home, phantom_cache, tmp_path):
    """The test face model is a 7.5 mm skin layer: filled to the front it leaves eye sockets and nose root."""
    from deface_ts.pipeline import deface

    use_home(ts_home)
    study = phantom_cache(noise_hu=0.0)
    config = load_config(None, {"method": "face", "totalseg.device": "cpu", "totalseg.threads": 2})
    with pytest.raises(PrivacyError, match="face is still visible after defacing: .*mtcnn"):
        deface(study.folder, tmp_path / "out", config)
    assert not (tmp_path / "out").exists() and list((tmp_path / "out.verify-failed").glob("*.png"))


def test_deface_face_without_a_licence_fails_cleanly(tmp_path, use_home, phantom_cache, capsys):
    _needs_totalsegmentator()
    from nnunet_models import write_licence_config, write_test_models

    from deface_ts.apps.cli import main
    from tests.conftest import tree_digest

    home = use_home(tmp_path / "home")
    write_licence_config(home, licence=None)
    write_test_models(home / "nnunet" / "results")
    study = phantom_cache(noise_hu=0.0)
    before = tree_digest(study.folder)
    code = main(["deface", str(study.folder), str(tmp_path / "out"), "--method", "face", "--device", "cpu"])
    assert code == 3 and "licen" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and tree_digest(study.folder) == before


def test_models_cli_status_and_import(tmp_path, capsys):
    _needs_totalsegmentator()
    from nnunet_models import write_test_models

    from deface_ts.apps.cli import main

    source = write_test_models(tmp_path / "download" / "nnunet" / "results", tasks=("head_glands_cavities",))
    home = tmp_path / "home"
    assert main(["models", "--home", str(home), "status"]) == 0
    assert "head_glands_cavities" in capsys.readouterr().out
    assert main(["models", "--home", str(home), "import", str(source)]) == 0
    assert main(["models", "--home", str(home), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert status["tasks"]["head_glands_cavities"]["complete"] and status["usage_statistics"] != "on"
    assert main(["models", "--home", str(home), "import", str(source)]) == 3  # already there: refused
    assert main(["models", "--home", str(home), "licence", "short"]) == 3


def test_eyes_from_totalsegmentator_when_the_rtstruct_has_none(ts_home, use_home, phantom_cache, tmp_path):
    """Method eyes on an RTSTRUCT without eye ROIs: head_glands_cavities gives the landmarks."""
    from deface_ts.io.dicom.case import load_case
    from deface_ts.pipeline import deface

    use_home(ts_home)
    study = phantom_cache(noise_hu=0.0, include_eyes=False)
    config = load_config(None, {"method": "eyes", "totalseg.device": "cpu", "totalseg.threads": 2})
    with no_network() as attempts:
        report = deface(study.folder, tmp_path / "out", config)
    assert attempts == [] and report["method"] == "eyes"
    assert any("head_glands_cavities" in note for note in report["locator_notes"])
    centres = report["landmarks"]["eye_centres_mm"]
    assert sorted(key.split(":")[0] for key in centres) == ["left", "right"]
    for key, centre in centres.items():
        assert np.linalg.norm(np.array(centre) - EYE_CENTRES[key.split(":")[0]]) < 3.0
    ct, new = load_case(study.folder).ct.hu, load_case(tmp_path / "out" / "dicom").ct.hu
    nose = tuple(np.rint(ct.lps_to_index(NOSE_TIP[None])[0]).astype(int))
    assert ct.array[nose] > 0 and new.array[nose] == -1000
    assert report["post_check"]["passed"] and report["verify"]["status"].startswith("verified")
