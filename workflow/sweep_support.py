"""Helpers of the ``sweep`` and ``evaluate`` entry points (plain functions, no redun tasks)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gpo_vae.config import ConfigError, to_dict
from gpo_vae.errors import InputFileError
from gpo_vae.run_config import RunConfig, load_run_config
from gpo_vae.sweeps import SweepSpec, expand_sweep, load_sweep, point_id, point_label
from gpo_vae.wandb_logging import require_wandb


def sweep_point_configs(base: Path, sweep_path: str, points: list[dict[str, Any]]) -> list[RunConfig]:
    """The run config of every sweep point (``base`` with the point's dotted overrides), validated.

    An invalid or unknown key names the sweep file, the point and the key.
    """
    configs = []
    for point in points:
        try:
            configs.append(load_run_config(base, point))
        except ConfigError as err:
            raise ConfigError(f"{sweep_path}: point {point_label(point)}: {err}") from None
    return configs


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def preprocess_groups(run_configs: list[RunConfig]) -> list[int]:
    """For each run config, the index of its group of identical ``preprocess`` sections
    (groups numbered in order of first appearance): one preprocessing per group."""
    keys: dict[str, int] = {}
    return [
        keys.setdefault(json.dumps(to_dict(c.preprocess), sort_keys=True), len(keys)) for c in run_configs
    ]


def find_artifact(run_dir: Path, checksum: str) -> Path:
    """The complete artifact whose checksum is ``checksum``, under the run's dataset results
    (``<results>/<dataset>/preprocessed/*/``; the run dir is ``<results>/<dataset>/runs/<key>``)."""
    from gpo_vae.preprocessing.artifact import ArtifactError, artifact_checksum, artifact_path

    root = run_dir.parent.parent / "preprocessed"
    for candidate in sorted(root.glob("*/")):
        try:
            if artifact_checksum(candidate) == checksum:
                return artifact_path(candidate, verify=False)
        except ArtifactError:
            continue
    raise InputFileError(
        f"--run {run_dir}: the artifact it was trained on (checksum {checksum[:12]}…) is not under "
        f"{root}; pass --artifact PATH/artifact.h5ad, or copy the run's preprocessed folder beside its runs/ folder"
    )


def recorded_dataset_files(dataset_results: Path) -> dict[str, Any]:
    """The dataset's files as ``main``/``sweep`` recorded them in ``dataset_summary.json``
    (paths of files that still exist, and the sheet name); empty when there is no record."""
    path = dataset_results / "dataset_summary.json"
    if not path.exists():
        return {}
    from gpo_vae.io import read_json

    files = read_json(path, "delete it: main and sweep write it again").get("dataset", {})
    found: dict[str, Any] = {"summary_sheet": files.get("summary_sheet")}
    for key in ("summary_stats", "network"):
        value = files.get(key)
        if value and Path(dataset_results.parent.parent, value).is_file():
            found[key] = str(Path(dataset_results.parent.parent, value))
        elif value and Path(value).is_file():
            found[key] = value
    return found


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A sweep file read and checked before anything runs: its points' run configs (from the
    base config ``base``), the points trained at once, and the wandb project (or None)."""

    spec: SweepSpec
    points: list[dict[str, Any]]
    base: Path
    run_configs: list[RunConfig]
    width: int
    project: str | None

    @classmethod
    def from_options(
        cls, sweep: str, base: Path, max_concurrent: int | None, wandb_project: str | None
    ) -> SweepPlan:
        from workflow.datasets import check_devices

        spec = load_sweep(sweep)
        points = expand_sweep(spec)
        run_configs = sweep_point_configs(base, sweep, points)
        for point_config in run_configs:
            check_devices(point_config, base)
        width = spec.max_concurrent if max_concurrent is None else max_concurrent
        project = wandb_project or spec.wandb_project
        if project:
            require_wandb("--wandb-project / the sweep's wandb_project is set")  # before any training
        if width < 1:
            given = "--max-concurrent" if max_concurrent is not None else f"{sweep}: max_concurrent"
            raise ConfigError(f"{given} {width}: give at least 1 (the points trained at once)")
        return cls(spec, points, base, run_configs, width, project)

    def preprocess_sections(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The distinct ``preprocess`` sections of the points (one preprocessing each), and for
        every point the index of its section."""
        groups = preprocess_groups(self.run_configs)
        firsts = [groups.index(group) for group in range(max(groups) + 1)]
        return [to_dict(self.run_configs[first].preprocess) for first in firsts], groups

    def described_points(self) -> list[dict[str, Any]]:
        """Each point's id, label and parameters, as the leaderboard lists them."""
        return [{"id": point_id(p), "label": point_label(p), "parameters": p} for p in self.points]

    def info(self) -> dict[str, Any]:
        """The sweep's name, metric, goal and description, as the leaderboard heads them."""
        spec = self.spec
        return {"name": spec.name, "metric": spec.metric, "goal": spec.goal, "description": spec.description}
