"""Configuration files are validated on load; flags override them; hnc.yaml equals the defaults."""

from __future__ import annotations

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
     ("fill: {noise: 'yes'}\n", "'fill.noise' must be bool")],
)
def test_bad_config_names_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_overrides_win_and_missing_file():
    config = load_config("hnc", {"region.kind": "upper", "protect.margin_mm": 5})
    assert config.region.kind == "upper" and config.protect.margin_mm == 5.0
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")
