"""The shipped run configs (``configs/*.yaml``, installed as ``gpo_vae.configs``) by name.

The workflow reads ``configs/<model>_<dataset>.yaml``; the Python API reads the same files, so a
notebook and ``redun run workflow.py main`` start from the same settings. With no config, the API
uses :data:`DEFAULT_MODEL` on a screen of your own (``gpo_vae_plus_custom.yaml``): the best family
we measured, sized for a laptop (minutes on 2 cores), with filters a 100-cell screen passes.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from gpo_vae.config import ConfigError, from_dict, load_config
from gpo_vae.run_config import RunConfig

#: The config family the workflow's ``main`` and the API use by default: ours (README, "Which model").
DEFAULT_MODEL = "gpo_vae_plus"
#: The dataset part of a config name for a screen of your own (an ``.h5ad`` path).
CUSTOM_DATASET = "custom"


def config_dir() -> Traversable:
    """The folder of the shipped run configs (``configs/`` of a checkout, or the installed copy)."""
    return files("gpo_vae.configs")


def preset_names(folder: Traversable | Path | None = None) -> list[str]:
    """The run configs' names in ``folder`` (default: the shipped ones), ``<model>_<dataset>``
    (sweeps not included)."""
    folder = config_dir() if folder is None else folder
    return sorted(
        entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml")
    )


def find_preset(model: str, dataset: str, folder: Traversable | Path | None = None) -> Path | None:
    """``<model>_<dataset>.yaml`` in ``folder`` (default: the shipped configs), or None.

    The one lookup of run configs by name: the API, ``main``, ``sweep``, ``inspect`` and
    ``evaluate`` all find them here (the workflow passes the ``configs/`` beside it).
    """
    entry = (config_dir() if folder is None else folder) / f"{model}_{dataset}.yaml"
    return Path(str(entry)) if entry.is_file() else None


def preset_path(
    model: str = DEFAULT_MODEL, dataset: str = CUSTOM_DATASET, folder: Traversable | Path | None = None
) -> Path:
    """:func:`find_preset`, or a :class:`ConfigError` that lists the names."""
    found = find_preset(model, dataset, folder)
    if found is None:
        raise ConfigError(
            f"no shipped config {model}_{dataset}.yaml for model {model!r} and dataset {dataset!r}; "
            f"the shipped ones are {preset_names(folder)}; pass a config file of your own "
            "(--config FILE on the command line)"
        )
    return found


def load_preset(
    model: str = DEFAULT_MODEL, dataset: str = CUSTOM_DATASET, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """The validated :class:`~gpo_vae.run_config.RunConfig` of a shipped config.

    Parameters
    ----------
    model
        ``gpo_vae_plus`` (ours, the default), ``gpo_vae`` (the published method) or ``sams_vae``.
    dataset
        ``custom`` (a screen of your own: laptop-sized), ``custom_published`` (the published
        sizes and filters), ``synthetic``, ``rpe1``, ``k562`` or ``adamson``.
    overrides
        Dotted keys to replace, e.g. ``{"training.max_steps": 500}``.
    """
    return load_config(RunConfig, preset_path(model, dataset), overrides)


def run_config_from(config: RunConfig | str | Path | dict[str, Any] | None) -> RunConfig:
    """A run config given as a :class:`~gpo_vae.run_config.RunConfig`, a YAML file, its dict, or
    None: the shipped default (:func:`load_preset`), the config ``main`` uses for a screen of your own."""
    if config is None:
        return load_preset()
    if isinstance(config, RunConfig):
        return config
    if isinstance(config, dict):
        return from_dict(RunConfig, config, "config")
    return load_config(RunConfig, config)


__all__ = [
    "CUSTOM_DATASET",
    "DEFAULT_MODEL",
    "config_dir",
    "find_preset",
    "load_preset",
    "preset_names",
    "preset_path",
    "run_config_from",
]
