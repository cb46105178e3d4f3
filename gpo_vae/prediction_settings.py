"""The evaluation settings a trained run's predictions default to, so that
:meth:`gpo_vae.GPOVAEModel.predict_shift` at its defaults gives the report's model ATE.

Where they come from, first found first:

1. an evaluation given to :meth:`~gpo_vae.GPOVAEModel.load` (an evaluation folder, its
   ``run.json``, an :class:`~gpo_vae.evaluation.config.EvaluationConfig` or its dict);
2. ``evaluation.json`` in the run directory, written by :meth:`~gpo_vae.GPOVAEModel.train` from
   the ``evaluation`` section of the config it trained with;
3. the workflow's layout: the newest finished evaluation of this run under
   ``results/<dataset>/evaluation/`` (its ``run.json`` names the run);
4. the config the workflow uses for a screen of your own (:func:`gpo_vae.presets.load_preset`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpo_vae.config import from_dict, to_dict
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.prediction import library_setting
from gpo_vae.evaluation.run import COMPLETE_MARKER, RUN_FILE
from gpo_vae.io import resolve_recorded, write_json_atomic
from gpo_vae.presets import load_preset

#: The run directory's record of the evaluation section it was trained with.
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class PredictionSettings:
    """The numbers generation and the ATE use, resolved for one screen.

    Attributes
    ----------
    n_cells
        Generated cells per label (``evaluation.n_generated_cells``).
    seed
        The evaluation's seed.
    library_size
        UMIs per generated cell (``evaluation.generated_library_size``, ``median_library`` resolved).
    target_sum
        Counts per cell before ``log2(1 + x)`` in the ATE (``evaluation.ate_target_sum``).
    source
        Where the settings were read (a file, or the shipped config).
    """

    n_cells: int
    seed: int
    library_size: float
    target_sum: float
    source: str


def settings_from_config(config: EvaluationConfig, median_library: float, source: str) -> PredictionSettings:
    """The settings of an evaluation config on a screen whose training cells' median library is
    ``median_library`` (what ``median_library`` in the config stands for)."""
    return PredictionSettings(
        n_cells=int(config.n_generated_cells),
        seed=int(config.seed),
        library_size=library_setting(config.generated_library_size, median_library),
        target_sum=library_setting(config.ate_target_sum, median_library),
        source=source,
    )


def settings_from_record(path: Path) -> PredictionSettings:
    """The settings an evaluation used, from its ``run.json`` (the numbers it resolved)."""
    record = json.loads(path.read_text())
    evaluation, data = record["config"]["evaluation"], record["data"]
    return PredictionSettings(
        n_cells=int(evaluation["n_generated_cells"]),
        seed=int(evaluation["seed"]),
        library_size=float(data["generated_library_size"]),
        target_sum=float(data["ate_target_sum"]),
        source=str(path),
    )


def write_run_evaluation(config: EvaluationConfig, run_dir: Path) -> Path:
    """Record the evaluation section a run was trained with (``evaluation.json``)."""
    return write_json_atomic(to_dict(config), Path(run_dir) / EVALUATION_FILE)


def workflow_evaluation(run_dir: Path) -> Path | None:
    """The ``run.json`` of the newest finished evaluation of ``run_dir`` in the workflow's
    results layout (``<results>/<dataset>/runs/<key>`` beside ``<results>/<dataset>/evaluation``)."""
    folder = Path(run_dir).parent.parent / "evaluation"
    if not folder.is_dir():
        return None
    target = Path(run_dir).resolve()
    found = []
    for record in folder.glob(f"*/{RUN_FILE}"):
        marker = record.parent / COMPLETE_MARKER
        if not marker.is_file():
            continue
        try:
            recorded = json.loads(record.read_text())["inputs"]["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # another tool's file, or a damaged record: not this run's
        if recorded and resolve_recorded(recorded, record.parent).resolve() == target:
            found.append((marker.stat().st_mtime_ns, str(record)))
    return Path(max(found)[1]) if found else None


def resolve_settings(
    run_dir: Path,
    median_library: float,
    evaluation: str | Path | EvaluationConfig | dict[str, Any] | None = None,
) -> PredictionSettings:
    """The prediction settings of a run, in the order of this module's docstring."""
    if isinstance(evaluation, dict):
        evaluation = from_dict(EvaluationConfig, evaluation, "evaluation")
    if isinstance(evaluation, EvaluationConfig):
        return settings_from_config(evaluation, median_library, "the evaluation config given to load")
    if evaluation is not None:
        path = Path(evaluation)
        path = path / RUN_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"evaluation={evaluation}: no evaluation record there; give an evaluation folder of the "
                f"workflow (results/<dataset>/evaluation/<key>, holding {RUN_FILE}) or its {RUN_FILE}"
            )
        return settings_from_record(path)
    own = Path(run_dir) / EVALUATION_FILE
    if own.is_file():
        config = from_dict(EvaluationConfig, json.loads(own.read_text()), "evaluation")
        return settings_from_config(config, median_library, str(own))
    record = workflow_evaluation(run_dir)
    if record is not None:
        return settings_from_record(record)
    return settings_from_config(
        load_preset().evaluation, median_library, "the shipped configs/gpo_vae_plus_custom.yaml"
    )


__all__ = [
    "EVALUATION_FILE",
    "PredictionSettings",
    "resolve_settings",
    "settings_from_config",
    "settings_from_record",
    "workflow_evaluation",
    "write_run_evaluation",
]
