"""Typed configuration loaded from YAML, validated on load; command-line flags override it.

An unknown key or a value of the wrong type is an error naming the key and the
file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import site
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from deface_ts.choices import (
    PROTECTED_ROLES,
    VERIFY_ANGLES,
    Detector,
    Method,
    RegionKind,
    RenderBackend,
    Role,
    VerifyMode,
)
from deface_ts.errors import ConfigError

#: Where named configs (``--config public``) are found: the repository's configs/ folder (source checkout,
#: editable install), else the copy a wheel installs as data files (pyproject's data-files) under the data
#: path of the install scheme: the venv, /usr/local on Debian's system Python, or ~/.local with --user.
#: configs/hnc.yaml equals the built-in defaults (a test checks it).
CONFIG_DIRS = (
    Path(__file__).resolve().parent.parent / "configs",
    Path(sysconfig.get_path("data")) / "share" / "deface-ts" / "configs",
    Path(site.USER_BASE or "~/.local").expanduser() / "share" / "deface-ts" / "configs",
)
CONFIG_DIR = next((folder for folder in CONFIG_DIRS if folder.is_dir()), CONFIG_DIRS[0])

# Eye ROI names seen in practice: Eye_L, Eye Lt, Globe_R, "OPTIC GLOBE L", Orbit_R, "EYE LEFT", Bulbus_L.
DEFAULT_EYE_INCLUDE = [r"(^|[^a-z])(l|r|lt|rt|left|right)?(eye|globe|orbit|bulbus)(s|l|r|lt|rt|left|right)?([^a-z]|$)"]
# Lenses, corneas, retinas, PRVs, rings and helper structures (z_..., "opt ...") are not the eyeball.
DEFAULT_EYE_EXCLUDE = [
    r"lens", r"cornea", r"retina", r"prv", r"ring", r"nerve", r"nrv", r"chiasm", r"^z", r"^x_", r"^opt[_ ]",
    r"\+\s*\d", r"\d+\s*mm", r"avoid", r"dose",
]


@dataclass
class EyesConfig:
    include: list[str] = field(default_factory=lambda: list(DEFAULT_EYE_INCLUDE))
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EYE_EXCLUDE))
    margin_mm: float = 5.0  # the cut starts this far below the inferior-most eye boundary (upper region)


@dataclass
class RegionConfig:
    kind: RegionKind = "full"  # "full" (whole face) or "upper" (defaceRT's box)
    plane_offset_mm: float = 0.0  # moves the cut plane posterior (+) or anterior (-) of the eyes' AP midpoint
    chin_search_mm: float = 160.0  # how far below the eyes the lower face may reach
    chin_margin_mm: float = 10.0  # extra removal below the detected chin
    keep_brain: bool = True  # above the eyes remove only tissue and bone in front of the cranial cavity
    bone_hu: float = 250.0  # threshold for the skull when keep_brain is on
    body_hu: float = -400.0  # skin threshold for the face profile
    face_margin_mm: float = 5.0  # a face mask (method face/union) is grown by this much, then filled to the front
    flatten_mm: float = 0.0  # > 0: each slice is also cut flat at the face mask's deepest point within this distance


@dataclass
class ProtectConfig:
    roles: list[Role] = field(default_factory=lambda: list(PROTECTED_ROLES))
    patterns: list[str] = field(default_factory=list)  # extra ROI name regexes, e.g. "^brain$"
    margin_mm: float = 3.0


@dataclass
class FillConfig:
    hu: float = -1000.0
    noise: bool = False  # noise matched to the air outside the patient, so the cut is not a flat region
    seed: int = 0


@dataclass
class OutputConfig:
    nifti: bool = True
    uid_salt: str | None = None  # deterministic new UIDs when set


@dataclass
class TotalSegConfig:
    """TotalSegmentator backend (methods face, union; eyes without eye ROIs)."""

    device: str = "auto"  # auto | cpu | gpu | gpu:N
    threads: int | None = None  # torch CPU threads (None: torch's default)
    home: str | None = None  # TotalSegmentator home (weights, licence); None: $TOTALSEG_HOME_DIR or ~/.totalsegmentator
    crop: bool = True  # segment only the head (for face: its front), then paste back
    keep_models: bool = True  # keep networks loaded between the cases of one process


@dataclass
class VerifyConfig:
    """Render the defaced skin; a face detected on it, or a face still as near its original as the same
    person's, fails the case (docs/verification.md)."""

    mode: VerifyMode = "enforce"  # enforce: a face found or recognised, or a case not judged, fails; report; off
    backend: RenderBackend = "auto"  # auto (VTK offscreen, else numpy ray caster) | vtk | numpy
    detectors: list[Detector] = field(default_factory=list)  # empty: every packaged detector that runs here
    min_detectors: int = 2  # at least this many detectors must be available, or the case fails
    agreement: int = 2  # a face found by this many detectors at one place fails the case ...
    single_score: float = 0.95  # ... and so does one detection this confident on its own,
    consistent_views: int = 0  # ... or one detector finding a face in this many views (0: off)
    angles: list[float] = field(default_factory=lambda: list(VERIFY_ANGLES))
    # The defaced face must be at least this far from the original (mean L2 of dlib descriptors over the views
    # within ±30°): as far as any two different people of the calibration are (docs/verification.md).
    identity_threshold: float = 0.54
    pictures: bool = True  # QC pictures (renders before/after, slices, dose) in the output's qc/ folder
    skin_hu: float = -300.0  # iso-level of the rendered skin
    strip_opening_mm: float = 3.0  # opening radius that removes the immobilisation shell (sheets < 2x this)
    strip_margin_mm: float = 2.0  # the skin is the threshold within this distance of the stripped patient


@dataclass
class DeidConfig:
    """Header de-identification (PS3.15 Annex E) of the written DICOM set."""

    profile: str = "rt-research"  # rt-research | basic | off | a YAML file overriding actions per keyword
    key_file: str | None = None  # None: $DEFACE_TS_DEID_KEY, else ~/.config/deface-ts/deid.key (created, mode 600)
    linkage: str | None = None  # old -> new IDs and UIDs; None: OUTPUT.linkage.csv beside the output folder


@dataclass
class Config:
    method: Method = "auto"  # auto | eyes | face | union | render
    eyes: EyesConfig = field(default_factory=EyesConfig)
    region: RegionConfig = field(default_factory=RegionConfig)
    protect: ProtectConfig = field(default_factory=ProtectConfig)
    fill: FillConfig = field(default_factory=FillConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    totalseg: TotalSegConfig = field(default_factory=TotalSegConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    deid: DeidConfig = field(default_factory=DeidConfig)
    post_check: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)




#: Words users write for a switch. YAML 1.1 (PyYAML) reads them unquoted as booleans; quoted they stay words.
_SWITCH_WORDS = {"off": False, "false": False, "no": False, "on": True, "true": True, "yes": True}
#: Word options that are switches too: the value a YAML boolean stands for (``mode: off`` arrives as False).
_SWITCH_CHOICES = {"verify.mode": {False: "off", True: "enforce"}}


def _switch_word(hint, value, name: str):
    """``value`` as the option expects it when the user wrote a switch word: bool options take the words
    (quoted in YAML, or from the command line), word options listed in `_SWITCH_CHOICES` take the booleans
    and the words in any case."""
    word = value.strip().lower() if isinstance(value, str) else None
    if hint is bool and word in _SWITCH_WORDS:
        return _SWITCH_WORDS[word]
    if hint is str and name in _SWITCH_CHOICES:
        if isinstance(value, bool):
            return _SWITCH_CHOICES[name][value]
        if word in _SWITCH_WORDS:
            return _SWITCH_CHOICES[name][_SWITCH_WORDS[word]]
    return value


def _build(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    values = {}
    for key, value in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"{source}: unknown key '{name}' (known here: {known})")
        values[key] = _coerce(hints[key], value, name, source)
    return cls(**values)


def _coerce(hint, value, name: str, source: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name, source)
    origin, args = get_origin(hint), get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{name}' must be a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{name}[{n}]", source) for n, v in enumerate(value)]
    if origin is Literal:
        return _choice(args, _switch_word(str, value, name), name, source)
    if args and type(None) in args:  # Optional[...]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    value = _switch_word(hint, value, name)
    if hint in (bool, int, float, str) and (type(value) is not hint):
        hint_words = (" (YAML reads unquoted off/no/yes/on as booleans: quote the word)"
                      if hint is str and isinstance(value, bool) else "")
        raise ConfigError(f"{source}: '{name}' must be {hint.__name__}, got {type(value).__name__} "
                          f"({value!r}){hint_words}")
    return value


def _choice(choices: tuple[str, ...], value: Any, name: str, source: str) -> str:
    """One of ``choices`` (a Literal option)."""
    if not isinstance(value, str) or value not in choices:
        quote = " (YAML reads unquoted off/no/yes/on as booleans: quote the word)" if isinstance(value, bool) else ""
        raise ConfigError(f"{source}: '{name}' is {value!r}, expected one of {', '.join(choices)}{quote}")
    return value


def load_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML config and apply dotted-key overrides.

    ``path`` None means the built-in defaults (identical to configs/hnc.yaml);
    a bare name such as ``public`` means configs/public.yaml.
    """
    data: dict = {}
    if path is not None:
        import yaml  # here, not at the top: a run with the built-in defaults never parses YAML (~0.01 s)

        path = Path(path)
        if not path.exists() and not path.suffix and (CONFIG_DIR / f"{path}.yaml").exists():
            path = CONFIG_DIR / f"{path}.yaml"
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    path = path or "built-in defaults"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    config = _build(Config, data, "", str(path))
    for pattern in config.eyes.include + config.eyes.exclude + config.protect.patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{path}: invalid regular expression {pattern!r} ({exc})") from None
    return config
