"""Every value of the reconstruction config is typed and range-checked from one schema (the dataclass
fields' hints plus ``spectre.config.setting`` metadata), before any work, naming key, value and what is
allowed."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from spectre.errors import ConfigError
from spectre.reconstruct.config import ReconstructConfig, make_config


def _leaves(cls, prefix=""):
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(getattr(cls(), f.name)):  # nested settings (fit, learned, pipeline)
            sub = type(getattr(cls(), f.name))
            yield from _leaves(sub, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def _yaml_for(key: str, value) -> dict:
    head, _, leaf = key.rpartition(".")
    return {head: {leaf: value}} if head else {leaf: value}


LEAVES = list(_leaves(ReconstructConfig))


def test_the_schema_covers_the_fit_and_learned_settings():
    keys = [k for k, _ in LEAVES]
    assert "fit.iterations" in keys and "fit.lr" in keys and "learned.chunk_length" in keys
    assert len(keys) >= 25


@pytest.mark.parametrize("key,field", LEAVES, ids=[k for k, _ in LEAVES])
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(key, field, tmp_path):
    wrong = [1, 2]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_yaml_for(key, wrong)))
    with pytest.raises(ConfigError) as info:
        make_config(cfg)
    msg = str(info.value)
    assert info.value.exit_code == 2 and key in msg and "[1" in msg and "not allowed" in msg, msg


@pytest.mark.parametrize("key,field", [(k, f) for k, f in LEAVES if "min" in f.metadata or "above" in f.metadata],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_a_value_below_its_range_is_refused(key, field):
    low = field.metadata.get("min", field.metadata.get("above"))
    below = low - 1 if isinstance(field.default, int) else low - 0.5
    head, _, leaf = key.rpartition(".")
    overrides = {head: {leaf: below}} if head else {leaf: below}
    with pytest.raises(ConfigError, match=rf"{key} = {below!r} is not allowed"):
        make_config(None, **overrides)


def test_choices_and_defaults():
    with pytest.raises(ConfigError, match="layout = 'sideways' is not allowed \\(one of grid"):
        make_config(None, layout="sideways")
    cfg = make_config(None, fit={"iterations": 3, "lr": 1})  # an int where a float is expected is fine
    assert cfg.fit.iterations == 3 and cfg.fit.lr == 1
    ReconstructConfig().validate()  # the defaults satisfy the schema
