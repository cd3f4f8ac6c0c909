"""Configuration files are validated on load; flags override them; hnc.yaml equals the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from deface_ts.config import CONFIG_DIR, Config, load_config
from deface_ts.errors import ConfigError


def test_shipped_configs_load():
    assert load_config(CONFIG_DIR / "hnc.yaml") == Config()
    public = load_config("public")
    assert public.fill.noise and public.region.plane_offset_mm > 0


@pytest.mark.parametrize(
    "text, message",
    [("regionn: {kind: full}\n", "unknown key 'regionn'"), ("region: {knd: full}\n", "unknown key 'region.knd'"),
     ("protect: {margin_mm: three}\n", "'protect.margin_mm' must be float"),
     ("region: {kind: sideways}\n", "expected one of full, upper"), ("protect: {roles: [ptv, tumour]}\n", "protect.roles"),
     ("eyes: {include: ['(']}\n", "invalid regular expression"), ("region: [1]\n", "'region' must be a mapping"),
     ("fill: {noise: 'maybe'}\n", "'fill.noise' must be bool"),
     ("verify: {backend: off}\n", "quote the word")],
)
def test_bad_config_names_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("word, mode, switch", [("off", "off", False), ("false", "off", False), ("no", "off", False),
                                                ("on", "enforce", True), ("true", "enforce", True),
                                                ("yes", "enforce", True), ("'off'", "off", False),
                                                ("'No'", "off", False), ("'ON'", "enforce", True)])
def test_switch_words_as_users_write_them(tmp_path, word, mode, switch):
    """YAML reads unquoted off/no/yes/on as booleans: a word option takes them, a switch takes the words."""
    path = tmp_path / "words.yaml"
    path.write_text(f"verify: {{mode: {word}, pictures: {word}}}\noutput: {{nifti: {word}}}\npost_check: {word}\n")
    config = load_config(path)
    assert config.verify.mode == mode
    assert config.verify.pictures is switch and config.output.nifti is switch and config.post_check is switch
    # Dotted overrides (command line, batch) take the same words.
    assert load_config(None, {"verify.mode": switch, "fill.noise": word.strip("'")}).fill.noise is switch


def test_overrides_win_and_missing_file():
    config = load_config("hnc", {"region.kind": "upper", "protect.margin_mm": 5})
    assert config.region.kind == "upper" and config.protect.margin_mm == 5.0
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_wheel_installs_the_named_configs(tmp_path):
    """A wheel carries configs/*.yaml to <prefix>/share/deface-ts/configs, the second place CONFIG_DIRS looks."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from deface_ts.config import CONFIG_DIRS

    source, root = tmp_path / "src", CONFIG_DIR.parent  # pip builds in the tree it is given: a copy keeps ours clean
    for name in ("deface_ts", "configs"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    names = zipfile.ZipFile(next(tmp_path.glob("deface_ts-*.whl"))).namelist()
    shipped = sorted(n.rsplit("/", 1)[1] for n in names if "/data/share/deface-ts/configs/" in n)
    assert shipped == sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) and "public.yaml" in shipped
    import sysconfig

    assert CONFIG_DIRS[1] == Path(sysconfig.get_path("data")) / "share" / "deface-ts" / "configs"


def test_demo_with_a_missing_config_writes_nothing(tmp_path, capsys):
    from deface_ts.apps.cli import main

    assert main(["demo", str(tmp_path / "demo"), "--config", "no-such-config"]) == 5
    assert "no-such-config: configuration file not found" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
