"""Config loading: unknown keys, wrong types and impossible values name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from gpo_vae.config import ConfigError, from_dict, load_config, to_dict


@dataclass(frozen=True)
class _Inner:
    hop: int = 5
    rate: float = 0.3
    mode: Literal["concat", "sum"] = "concat"

    def __post_init__(self):
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")


@dataclass(frozen=True)
class _Outer:
    name: str = "x"
    layers: tuple[int, ...] = (400,)
    seed: int | None = None
    inner: _Inner = field(default_factory=_Inner)


def test_defaults_and_nested_values():
    config = from_dict(_Outer, {"inner": {"hop": 3, "rate": 1}, "layers": [200, 200]})
    assert config.inner == _Inner(hop=3, rate=1.0, mode="concat")
    assert isinstance(config.inner.rate, float) and config.layers == (200, 200)
    assert to_dict(config) == {
        "name": "x",
        "layers": [200, 200],
        "seed": None,
        "inner": {"hop": 3, "rate": 1.0, "mode": "concat"},
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inner": {"hopp": 3}}, "unknown key inner.hopp; valid keys of inner: hop, mode, rate"),
        ({"inner": {"hop": "3"}}, "inner.hop: expected an integer, got '3'"),
        ({"inner": {"hop": True}}, "inner.hop: expected an integer"),
        ({"inner": {"mode": "product"}}, "inner.mode: 'product' is not one of ['concat', 'sum']"),
        ({"inner": {"rate": 1.5}}, "inner: rate must be in (0, 1], got 1.5"),
        ({"layers": [200, "wide"]}, "layers[1]: expected an integer"),
        ({"seed": 1.5}, "seed: 1.5 is not any of"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as err:
        from_dict(_Outer, data)
    assert message in str(err.value)


def test_load_config_names_the_file_and_applies_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("name: demo\ninner:\n  hop: 2\n")
    assert load_config(_Outer, path, {"inner.hop": 4}).inner.hop == 4
    path.write_text("inner:\n  hop: [1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: not valid YAML"):
        load_config(_Outer, path)
    path.write_text("nmae: demo\n")
    with pytest.raises(ConfigError, match=r"run.yaml: unknown key nmae"):
        load_config(_Outer, path)
