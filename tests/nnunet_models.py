"""Small nnU-Net v2 model folders in TotalSegmentator's layout, for tests and benchmarks.

Each folder is a complete, loadable model: ``dataset.json``, ``plans.json`` and
``fold_0/checkpoint_final.pth`` under
``DatasetXXX_name/<trainer>__nnUNetPlans__<configuration>``, exactly where
TotalSegmentator looks. TotalSegmentator and nnU-Net run unmodified on them.

The networks are *rule-based*: :class:`RuleNet` computes its logits from HU
with fixed convolutions (thresholds, erosion, a one-sided line kernel), so the
predictions are sensible on the phantom and exactly predictable, and the logits
stay finite and moderate (±8). The rules see only what a convolution sees, so
they hold under nnU-Net's sliding window:

* face (303): soft tissue with air at most ``reach_mm`` in front of it (anterior
  is +axis 1 of nnU-Net's array, which TotalSegmentator feeds in RAS order) —
  the skin layer facing forwards: forehead, nose, lips, chin;
* head_glands_cavities (775): eyeball = HU in [2, 13] in a whole 3x3x3
  neighbourhood. On the noise-free phantom (``noise_hu=0``) that is the core of
  each eye (10 HU): parotids (15 HU) and partial-volume edges fall outside; with
  the phantom's default 8 HU noise it is not (use noise_hu=0). Eyeballs get
  label 1 whatever their side, and no lens label: deface-ts takes sides from the
  affine, never from TotalSegmentator's labels;
* total 6 mm (298): skull (label 91) = bone above 300 HU, which
  TotalSegmentator uses to crop before running 775.

:func:`write_architecture_model` writes nnU-Net's default 3d_fullres U-Net
(the architecture of the real face model) with random weights, for timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from deface_ts.locate.totalseg.weights import TASKS, Task

#: Labels of TotalSegmentator's ``total`` task (dataset 298 predicts all 117); only "skull" is produced here.
TOTAL_SKULL_LABEL = 91
TOTAL_LABEL_COUNT = 117

FACE_RULES = [{"kind": "anterior_air", "label": 1, "tissue_hu": -300.0, "air_hu": -500.0, "reach": 5, "axis": 1}]
EYE_RULES = [{"kind": "band", "label": 1, "lo": 2.0, "hi": 13.0, "erode": 1}]
SKULL_RULES = [{"kind": "band", "label": TOTAL_SKULL_LABEL, "lo": 300.0, "hi": 1e6, "erode": 0}]
#: The real models' spacings (z, y, x), so TotalSegmentator's own resampling already lands on them.
SPACINGS = {"face": [1.5, 1.5, 1.5], "head_glands_cavities": [1.0, 0.75, 0.75], "total_6mm": [6.0, 6.0, 6.0]}


class RuleNet(nn.Module):
    """Logits from fixed HU rules; background logit 0, a rule's label ±``scale``.

    ``rules`` come from the plans (``arch_kwargs``); the line kernels of the
    ``anterior_air`` rules and the logit scale are the checkpoint's weights.
    """

    def __init__(self, input_channels: int, num_classes: int, rules: list[dict], deep_supervision: bool = False,
                 **_ignored):
        super().__init__()
        self.rules = rules
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(8.0), requires_grad=False)
        for n, rule in enumerate(rules):
            if rule["kind"] == "anterior_air":
                reach, axis = int(rule["reach"]), int(rule["axis"])
                shape = [1, 1, 1]
                shape[axis] = 2 * reach + 1
                kernel = torch.zeros(1, 1, *shape)
                # Cross-correlation: taps reach+1 .. 2*reach see voxels 1 .. reach further along +axis.
                index = [0, 0, 0, 0, 0]
                for tap in range(reach + 1, 2 * reach + 1):
                    index[2 + axis] = tap
                    kernel[tuple(index)] = 1.0
                self.register_parameter(f"line_{n}", nn.Parameter(kernel, requires_grad=False))

    def _indicator(self, n: int, rule: dict, hu: torch.Tensor) -> torch.Tensor:
        if rule["kind"] == "band":
            inside = ((hu >= rule["lo"]) & (hu <= rule["hi"])).float()
            e = int(rule.get("erode", 0))
            if e:
                # All neighbours in the band (a mean of 1); avg_pool is much faster than a min-pool on CPU.
                inside = (F.avg_pool3d(inside, 2 * e + 1, stride=1, padding=e, count_include_pad=True) > 0.999).float()
            return inside
        if rule["kind"] == "anterior_air":
            kernel = getattr(self, f"line_{n}").to(hu.dtype)
            padding = [k // 2 for k in kernel.shape[2:]]
            air_ahead = F.conv3d((hu < rule["air_hu"]).to(hu.dtype), kernel, padding=padding)
            return ((hu > rule["tissue_hu"]) & (air_ahead > 0.5)).float()
        raise ValueError(f"unknown rule kind {rule['kind']!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x[:, :1].float()
        scale = self.scale.float()
        logits = (-scale).expand(x.shape[0], self.num_classes, *x.shape[2:]).clone()
        logits[:, 0] = 0.0
        for n, rule in enumerate(self.rules):
            m = self._indicator(n, rule, hu)[:, 0]
            logits[:, rule["label"]] = torch.maximum(logits[:, rule["label"]], scale * (2.0 * m - 1.0))
        return logits.to(x.dtype)


def _labels(task: Task) -> dict[str, int]:
    if task.name == "face":
        names = {1: "face"}
    elif task.name == "head_glands_cavities":
        names = {1: "eye_left", 2: "eye_right", 3: "eye_lens_left", 4: "eye_lens_right"}
    else:
        from totalsegmentator.map_to_binary import class_map

        names = dict(class_map["total"])
    return {"background": 0, **{name: label for label, name in sorted(names.items())}}


def _plans(task: Task, spacing: list[float], patch_size: list[int], architecture: dict) -> dict:
    configuration = {
        "data_identifier": f"nnUNetPlans_{task.configuration}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch_size,
        "median_image_size_in_voxels": [200, 200, 200],
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": architecture,
        "batch_dice": False,
    }
    return {
        "dataset_name": task.folder,
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [200, 200, 200],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {task.configuration: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        # CT normalisation with mean 0 and std 1: the network sees HU clipped to the scanner range.
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3071.0, "mean": 0.0, "median": 0.0, "min": -1024.0, "percentile_00_5": -1024.0,
                  "percentile_99_5": 3071.0, "std": 1.0}
        },
    }


def _write(weights_dir: Path, task: Task, plans: dict, network: nn.Module, labels: dict[str, int],
           trainer_name: str | None) -> Path:
    folder = Path(weights_dir) / task.folder / task.model_folder
    (folder / "fold_0").mkdir(parents=True, exist_ok=True)
    dataset = {"channel_names": {"0": "CT"}, "labels": labels, "numTraining": 1, "file_ending": ".nii.gz",
               "name": task.folder}
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"plans": plans, "configuration": task.configuration, "fold": 0, "dataset_json": dataset,
                      "device": "cpu"},
        "trainer_name": trainer_name or task.trainer,
        "inference_allowed_mirroring_axes": None,
        "current_epoch": 0,
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def write_rule_model(weights_dir: Path, task_name: str, rules: list[dict] | None = None,
                     patch_size: list[int] | None = None, trainer_name: str | None = None) -> Path:
    """Write a :class:`RuleNet` model for one of deface-ts's tasks; returns the model folder."""
    task = TASKS[task_name]
    rules = rules if rules is not None else {"face": FACE_RULES, "head_glands_cavities": EYE_RULES,
                                             "total_6mm": SKULL_RULES}[task_name]
    spacing = SPACINGS[task_name]
    patch_size = patch_size or {"face": [96, 96, 96], "head_glands_cavities": [128, 128, 128],
                                "total_6mm": [64, 64, 64]}[task_name]
    labels = _labels(task)
    architecture = {"network_class_name": f"{__name__}.RuleNet", "arch_kwargs": {"rules": rules},
                    "_kw_requires_import": []}
    network = RuleNet(1, len(labels), rules)
    return _write(weights_dir, task, _plans(task, spacing, patch_size, architecture), network, labels, trainer_name)


def write_test_models(weights_dir: Path, tasks=("face", "head_glands_cavities", "total_6mm")) -> Path:
    """All rule models deface-ts needs, under ``weights_dir``."""
    for name in tasks:
        write_rule_model(weights_dir, name)
    return Path(weights_dir)


def write_licence_config(home_dir: Path, licence: str | None = "TEST-ONLY-0000-000") -> Path:
    """TotalSegmentator config.json for tests: a placeholder licence of the right length, statistics off.

    The placeholder is syntactically valid for TotalSegmentator's offline check
    (18 characters) and is not a licence: tests only.
    """
    home_dir = Path(home_dir)
    home_dir.mkdir(parents=True, exist_ok=True)
    config = {"totalseg_id": "totalseg_TESTONLY", "send_usage_stats": False, "prediction_counter": 0,
              "statistics_disclaimer_shown": True}
    if licence is not None:
        config["license_number"] = licence
    path = home_dir / "config.json"
    path.write_text(json.dumps(config, indent=4))
    return path


def default_unet_architecture(patch_size=(128, 128, 128), stages: int = 6) -> dict:
    """nnU-Net's default 3d_fullres PlainConvUNet for a 1.5 mm CT dataset (the face model's family)."""
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [min(32 * 2**i, 320) for i in range(stages)],
            "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1),
            "n_conv_per_stage": [2] * stages,
            "n_conv_per_stage_decoder": [2] * (stages - 1),
            "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def write_architecture_model(weights_dir: Path, task_name: str = "face", patch_size=(128, 128, 128),
                             seed: int = 0) -> Path:
    """The real architecture with random weights (timing only: its predictions mean nothing)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    task = TASKS[task_name]
    labels = _labels(task)
    architecture = default_unet_architecture(list(patch_size))
    torch.manual_seed(seed)
    network = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                     architecture["_kw_requires_import"], 1, len(labels), deep_supervision=False)
    spacing = SPACINGS[task_name]
    plans = _plans(task, spacing, list(patch_size), architecture)
    return _write(weights_dir, task, plans, network, labels, None)
