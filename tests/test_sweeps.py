"""Sweep files expand into deterministic, validated lists of config overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpo_vae.config import ConfigError, from_dict
from gpo_vae.sweeps import SweepSpec, expand_sweep, load_sweep, point_id, point_label

SWEEPS = Path(__file__).resolve().parents[1] / "configs" / "sweeps"


def test_grid_is_the_cartesian_product_in_key_order():
    spec = from_dict(
        SweepSpec, {"name": "g", "parameters": {"model.hop": [1, 3], "training.seed": [0, 1, 2]}}
    )
    points = expand_sweep(spec)
    assert points == [{"model.hop": h, "training.seed": s} for h in (1, 3) for s in (0, 1, 2)]


def test_random_is_seeded_and_within_bounds():
    data = {
        "name": "r",
        "method": "random",
        "n_samples": 30,
        "parameters": {
            "model.mask_prior": {"distribution": "uniform", "min": 0.1, "max": 0.5},
            "model.grn_coeff": {"distribution": "log_uniform", "min": 10.0, "max": 1000.0},
            "model.hop": {"distribution": "int_uniform", "min": 1, "max": 5},
        },
    }
    first = expand_sweep(from_dict(SweepSpec, data))
    assert first == expand_sweep(from_dict(SweepSpec, data))
    assert first != expand_sweep(from_dict(SweepSpec, {**data, "seed": 1}))
    assert len(first) == 30
    assert all(0.1 <= p["model.mask_prior"] <= 0.5 and 10 <= p["model.grn_coeff"] <= 1000 for p in first)
    assert {p["model.hop"] for p in first} <= {1, 2, 3, 4, 5} and len({p["model.hop"] for p in first}) > 1


def test_duplicates_collapse_and_ids_are_stable():
    spec = from_dict(
        SweepSpec, {"name": "d", "parameters": {"model.hop": [1, 1, 2]}, "fixed": {"training.max_epochs": 3}}
    )
    points = expand_sweep(spec)
    assert points == [{"training.max_epochs": 3, "model.hop": 1}, {"training.max_epochs": 3, "model.hop": 2}]
    assert point_id({"a.b": 1, "c.d": 2}) == point_id({"c.d": 2, "a.b": 1})
    assert point_label({"model.hop": 3, "training.seed": 0}) == "hop=3,seed=0"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "parameters": {}}, "parameters is empty"),
        ({"name": "x", "parameters": {"hop": [1]}}, "dotted config key"),
        (
            {"name": "x", "parameters": {"model.hop": {"distribution": "uniform", "min": 1, "max": 5}}},
            "needs method: random",
        ),
        (
            {"name": "x", "method": "random", "parameters": {"model.hop": {"distribution": "normal"}}},
            "distribution must be",
        ),
        ({"name": "x", "method": "bayes", "parameters": {"model.hop": [1]}}, "method: 'bayes' is not one of"),
    ],
)
def test_bad_sweeps_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SweepSpec, data)


@pytest.mark.parametrize("path", sorted(SWEEPS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweeps_load(path):
    points = expand_sweep(load_sweep(path))
    assert len(points) >= 2 and all(all("." in k for k in p) for p in points)
