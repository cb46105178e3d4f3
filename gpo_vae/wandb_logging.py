"""Optional Weights & Biases logging of a sweep's results (nothing else depends on it).

A sweep logs to wandb only when asked (``wandb_project`` in the sweep file or
``--wandb-project``): one wandb run per sweep point (group = the sweep's name, config = the
point's parameters, summary = its metrics and rank) and one run holding the leaderboard as a
``wandb.Table``. Logging is idempotent: ``wandb.json`` in the sweep's folder records which
points and which leaderboard (by SHA-256 of its CSV) were already logged, so a rerun or an
extended sweep logs only what is new, and a failed upload is retried by the next run.
The mode comes from ``$WANDB_MODE`` (default ``offline``: files under the sweep's folder,
``wandb sync`` uploads them later), so a batch job never waits on a login prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from gpo_vae.io import write_json_atomic
from gpo_vae.leaderboard import table_columns, table_rows

#: Status file of the sweep's wandb logging, next to the leaderboard.
STATUS_FILE = "wandb.json"


def require_wandb(what: str) -> ModuleType:
    """The ``wandb`` module, or an ImportError that says what asked for it and how to proceed."""
    try:
        import wandb
    except ImportError as err:
        raise ImportError(
            f"{what} but wandb is not installed: pip install 'gpo-vae[wandb]' "
            "(or turn wandb off; CSV logs and leaderboards are always written)"
        ) from err
    return wandb


def _plain(value: Any) -> Any:
    """A JSON/wandb-friendly value (numpy scalars to Python, None kept)."""
    return value.item() if hasattr(value, "item") else value


def log_leaderboard_to_wandb(
    ranked: Sequence[Mapping[str, Any]],
    sweep: Mapping[str, Any],
    project: str,
    out_dir: str | Path,
    wandb_module: ModuleType | None = None,
) -> dict[str, Any]:
    """Log a ranked leaderboard (:func:`gpo_vae.leaderboard.rank_rows`) to wandb, idempotently.

    Parameters
    ----------
    ranked
        Rows with ``point``, ``label``, ``parameters``, ``metrics``, ``rank``, ``metric_value``.
    sweep
        ``name``, ``metric`` and ``goal`` of the sweep.
    project
        wandb project.
    out_dir
        The sweep's folder: ``wandb.json`` and offline wandb files go there.
    wandb_module
        The module to use (tests pass a fake); default ``import wandb``.

    Returns
    -------
    The status written to ``wandb.json``: ``project``, ``mode``, ``points`` (point id → wandb
    run id), ``leaderboard`` (CSV SHA-256 → run id), ``logged_now`` and ``error`` (the last
    failure's message, or None). A failure is recorded, not raised: the sweep's results are
    already on disk and the next run retries what is missing.
    """
    wandb = wandb_module or require_wandb("the sweep asks for wandb logging")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    status_path = out / STATUS_FILE
    previous = json.loads(status_path.read_text()) if status_path.exists() else {}
    same_project = previous.get("project") == project
    points: dict[str, str] = dict(previous.get("points", {})) if same_project else {}
    boards: dict[str, str] = dict(previous.get("leaderboard", {})) if same_project else {}
    mode = os.environ.get("WANDB_MODE", "offline")
    group = f"sweep-{sweep['name']}"
    columns = table_columns(ranked)
    cells = [[_plain(cell) for cell in row] for row in table_rows(ranked)]
    board_key = hashlib.sha256(json.dumps([columns, cells], default=str).encode()).hexdigest()
    logged_now = 0
    error = None
    try:
        for row in ranked:
            if row["point"] in points:
                continue
            run = wandb.init(
                project=project,
                group=group,
                job_type="sweep-point",
                name=row["label"],
                config={**row["parameters"], "sweep": sweep["name"], "point": row["point"]},
                dir=str(out),
                mode=mode,
            )
            summary = {k: _plain(v) for k, v in row["metrics"].items() if v is not None}
            summary.update(rank=row["rank"], metric=sweep["metric"], metric_value=row["metric_value"])
            run.summary.update(summary)
            run.finish()
            points[row["point"]] = run.id
            logged_now += 1
        if board_key not in boards:
            run = wandb.init(
                project=project,
                group=group,
                job_type="sweep-leaderboard",
                name=f"{sweep['name']}-leaderboard",
                config={"sweep": sweep["name"], "metric": sweep["metric"], "goal": sweep["goal"]},
                dir=str(out),
                mode=mode,
            )
            run.log({"leaderboard": wandb.Table(columns=columns, data=cells)})
            run.finish()
            boards[board_key] = run.id
            logged_now += 1
    except Exception as err:  # wandb's failures must not cost the sweep its results
        error = f"{type(err).__name__}: {err}"
    status = {
        "project": project,
        "mode": mode,
        "points": points,
        "leaderboard": boards,
        "logged_now": logged_now,
        "error": error,
    }
    write_json_atomic(status, status_path)
    return status


def log_sweep_dir_to_wandb(sweep_dir: str | Path, project: str) -> dict[str, Any]:
    """Log the leaderboard a finished sweep left in ``sweep_dir`` (its ``leaderboard.json``)."""
    path = Path(sweep_dir) / "leaderboard.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: pass the folder of a finished sweep (it holds leaderboard.csv)"
        )
    board = json.loads(path.read_text())
    return log_leaderboard_to_wandb(board["rows"], board["sweep"], project, sweep_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gpo_vae.wandb_logging SWEEP_DIR --project P``: (re)try logging a finished sweep."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m gpo_vae.wandb_logging", description=main.__doc__)
    parser.add_argument("sweep_dir", help="results/<dataset>/sweeps/<name>")
    parser.add_argument("--project", required=True, help="wandb project")
    args = parser.parse_args(argv)
    try:
        status = log_sweep_dir_to_wandb(args.sweep_dir, args.project)
    except (FileNotFoundError, ImportError) as err:
        parser.exit(2, f"error: {err}\n")
    print(json.dumps({k: status[k] for k in ("project", "mode", "logged_now", "error")}))
    return 1 if status["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
