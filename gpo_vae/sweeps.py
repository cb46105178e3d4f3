"""Hyperparameter sweeps: a YAML spec expanded into a list of config overrides.

A sweep file names dotted config keys (``model.grn_coeff``) and the values to try::

    name: grn_loss
    method: grid              # every combination; or "random": n_samples draws
    n_samples: 20             # random only
    seed: 0                   # random only
    metric: val/loss          # what the leaderboard ranks by
    goal: minimize            # or maximize
    wandb_project: my-lab     # optional: also log the results to wandb (see gpo_vae.wandb_logging)
    parameters:
      model.grn_coeff: [10, 100, 1000]
      model.hop: [1, 3, 5]
      model.mask_prior: {distribution: uniform, min: 0.1, max: 0.5}       # random only
      model.sparsity_coeff: {distribution: log_uniform, min: 0.5, max: 20} # random only

Expansion is deterministic: a grid in the order of the keys (last key fastest), random draws
from ``numpy.random.default_rng(seed)``. Each point is a flat ``{dotted key: value}`` mapping,
validated later when it is applied to a run config.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gpo_vae.config import ConfigError, from_dict, load_yaml

Point = dict[str, Any]

#: A sweep's ``name`` becomes the folder ``<results-dir>/<dataset>/sweeps/<name>/``: one path part
#: of letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, so that a sweep file
#: from a colleague or a repository cannot write outside the results tree (``/x``, ``../x``).
SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


#: What a leaderboard can rank by: the run's validation loss and the evaluation's metrics.
SWEEP_METRICS = (
    "val/loss",
    "best_val_loss",
    "test_iwelbo",
    "model_mean_pearson",
    "mean_baseline_mean_pearson",
    "grn_edges",
    "true_network_auroc",
    "true_network_auprc",
)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    parameters: dict[str, Any]
    method: Literal["grid", "random"] = "grid"
    n_samples: int = 10
    seed: int = 0
    metric: str = "val/loss"
    goal: Literal["minimize", "maximize"] = "minimize"
    max_concurrent: int = 2
    description: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)
    wandb_project: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not SWEEP_NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name!r} cannot be a folder name: it becomes <results-dir>/<dataset>/sweeps/<name>/, "
                "so use up to 100 letters, digits, '.', '_' or '-', starting with a letter or digit "
                "(no '/', no '..'), e.g. name: grn_loss"
            )
        if not self.parameters:
            raise ValueError("parameters is empty: name at least one config key to sweep")
        if self.n_samples < 1 or self.max_concurrent < 1:
            raise ValueError("n_samples and max_concurrent must be at least 1")
        if self.metric not in SWEEP_METRICS:
            raise ValueError(
                f"metric {self.metric!r} is not one the leaderboard can rank by; choose one of {list(SWEEP_METRICS)}"
            )
        for key, values in self.parameters.items():
            if "." not in key:
                raise ValueError(f"parameter {key!r} must be a dotted config key such as model.hop")
            if isinstance(values, Mapping):
                if self.method == "grid":
                    raise ValueError(f"{key}: a distribution needs method: random (grid takes a list)")
                _check_distribution(key, values)
            elif not isinstance(values, list) or not values:
                raise ValueError(f"{key}: expected a non-empty list of values or a distribution")


def _check_distribution(key: str, spec: Mapping[str, Any]) -> None:
    kind = spec.get("distribution")
    if kind == "choice":
        if not spec.get("values"):
            raise ValueError(f"{key}: distribution choice needs values")
        return
    if kind not in ("uniform", "log_uniform", "int_uniform"):
        raise ValueError(
            f"{key}: distribution must be uniform, log_uniform, int_uniform or choice, got {kind!r}"
        )
    low, high = spec.get("min"), spec.get("max")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
        raise ValueError(f"{key}: {kind} needs numbers min < max, got min={low!r} max={high!r}")
    if kind == "log_uniform" and low <= 0:
        raise ValueError(f"{key}: log_uniform needs min > 0")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; errors name the file and the key."""
    data = load_yaml(path)  # its errors name the file already
    try:
        return from_dict(SweepSpec, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _draw(spec: Any, rng: np.random.Generator) -> Any:
    if not isinstance(spec, Mapping):
        return spec[int(rng.integers(len(spec)))]
    kind = spec["distribution"]
    if kind == "choice":
        values = spec["values"]
        return values[int(rng.integers(len(values)))]
    low, high = float(spec["min"]), float(spec["max"])
    if kind == "uniform":
        return float(rng.uniform(low, high))
    if kind == "log_uniform":
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return int(rng.integers(int(low), int(high) + 1))


def expand_sweep(spec: SweepSpec) -> list[Point]:
    """The sweep's points, each ``{**fixed, **{key: value}}``, duplicates removed in order."""
    keys = list(spec.parameters)
    if spec.method == "grid":
        combos = itertools.product(*(spec.parameters[k] for k in keys))
        points = [dict(zip(keys, combo, strict=True)) for combo in combos]
    else:
        rng = np.random.default_rng(spec.seed)
        points = [{k: _draw(spec.parameters[k], rng) for k in keys} for _ in range(spec.n_samples)]
    unique: dict[str, Point] = {}
    for point in points:
        full = {**spec.fixed, **point}
        unique.setdefault(point_id(full), full)
    return list(unique.values())


def point_id(point: Mapping[str, Any]) -> str:
    """A short stable identifier of a sweep point (its sorted JSON, hashed)."""
    return hashlib.sha256(json.dumps(dict(point), sort_keys=True).encode()).hexdigest()[:10]


def point_label(point: Mapping[str, Any]) -> str:
    """A readable label: ``grn_coeff=100,hop=3`` (the last part of each key)."""
    return ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
