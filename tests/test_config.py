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


def test_a_config_never_holds_a_key_twice_an_alias_or_nothing(tmp_path):
    """YAML keeps the later of two equal keys silently, expands nine nested aliases into a billion
    items (memory exhausted wherever the value is walked), and reads an empty file as every default
    (the paper's model at full size): each is named with the line and the fix instead."""
    from gpo_vae.config import load_yaml

    cases = {
        "twice.yaml": (
            "training:\n  lr: 0.001\n  lr: 0.1\n",
            r"the key 'lr' is written twice in one section \(lines 2 and 3\)",
        ),
        "laughs.yaml": ("a: &a [x, x]\nb: [*a, *a]\n", r"an alias \*a at line 2: anchors and aliases"),
        "empty.yaml": ("", r"the file is empty; every key would take the published defaults"),
        "comments.yaml": ("# nothing but a comment\n", r"the file is empty"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError, match=message) as caught:
            load_yaml(path)
        assert str(caught.value).startswith(f"{path}: ")
    (tmp_path / "same_key_two_sections.yaml").write_text("model:\n  hop: 1\ntraining:\n  seed: 1\n")
    assert load_yaml(tmp_path / "same_key_two_sections.yaml") == {
        "model": {"hop": 1},
        "training": {"seed": 1},
    }
