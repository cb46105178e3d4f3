"""Sweep stages: a wave of train + evaluate calls, and the leaderboard of finished points.

A wave task returns the lazy train/evaluate expressions of its points; redun resolves them
before the wave counts as done, so a wave that takes the previous wave's result as its
``after`` argument starts only when that one has finished (``--max-concurrent``).
"""

from pathlib import Path
from typing import Any

from redun import File, task

from tasks.evaluate import evaluate_run_task
from tasks.train import train_run

redun_namespace = "gpo_vae"


@task(version="1", cache=True)
def sweep_wave(
    artifacts: list[File],
    configs: list[dict[str, Any]],
    evaluation_configs: list[dict[str, Any]],
    runs_root: str,
    evaluation_root: str,
    evaluation_inputs: dict[str, Any],
    executor: str = "default",
    after: list[Any] | None = None,
    train_executor: str | None = None,
) -> list[dict[str, File]]:
    """Train and evaluate points (``artifacts[i]`` with ``configs[i]``) concurrently.

    ``evaluation_inputs`` holds ``summary_stats``, ``summary_sheet``, ``networks``,
    ``true_network`` and ``dataset`` of :func:`tasks.evaluate.evaluate_run_task`; ``after`` is
    only there to order waves; ``train_executor`` (default ``executor``) places the training.
    """
    results = []
    for artifact, config, evaluation in zip(artifacts, configs, evaluation_configs, strict=True):
        model = train_run.options(executor=train_executor or executor)(artifact, config, runs_root)
        report = evaluate_run_task.options(executor=executor)(
            artifact,
            model,
            evaluation,
            evaluation_root,
            evaluation_inputs["summary_stats"],
            evaluation_inputs["summary_sheet"],
            evaluation_inputs["networks"],
            evaluation_inputs["true_network"],
            None,
            evaluation_inputs["dataset"],
        )
        results.append({"model": model, "report": report})
    return results


def _read_json(path: Path) -> dict[str, Any]:
    from gpo_vae.io import read_json

    return read_json(path) if path.exists() else {}


@task(version="2", cache=True)
def leaderboard(
    sweep: dict[str, Any],
    points: list[dict[str, Any]],
    results: list[dict[str, File]],
    out_dir: str,
    wandb_project: str | None = None,
) -> dict[str, Any]:
    """Write ``leaderboard.csv``, ``.html`` and ``.json`` (ranked rows) of a sweep into ``out_dir``.

    ``sweep`` holds ``name``, ``metric``, ``goal`` and ``description``; ``points`` the sweep's
    points (``id``, ``label``, ``parameters``) and ``results`` their ``model``/``report`` Files.
    With ``wandb_project`` the ranked rows are also logged to wandb (see
    :mod:`gpo_vae.wandb_logging`); its status, never an exception, is under ``wandb``.
    """
    from gpo_vae.io import write_json_atomic, write_text_atomic
    from gpo_vae.leaderboard import point_metrics, rank_rows, to_csv, to_html

    rows = []
    for point, result in zip(points, results, strict=True):
        run_dir = Path(result["model"].path).parent
        evaluation_dir = Path(result["report"].path).parent
        rows.append(
            {
                "point": point["id"],
                "label": point["label"],
                "parameters": point["parameters"],
                "metrics": point_metrics(
                    _read_json(run_dir / "run.json"), _read_json(evaluation_dir / "run.json")
                ),
                "run_dir": str(run_dir),
                "evaluation_dir": str(evaluation_dir),
            }
        )
    ranked = rank_rows(rows, sweep["metric"], sweep["goal"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"sweep": sweep, "rows": ranked}, out / "leaderboard.json")
    csv_path = write_text_atomic(to_csv(ranked), out / "leaderboard.csv")
    html_path = write_text_atomic(
        to_html(ranked, sweep["name"], sweep["metric"], sweep["goal"], sweep.get("description", ""), out),
        out / "leaderboard.html",
    )
    board: dict[str, Any] = {"csv": File(str(csv_path)), "html": File(str(html_path))}
    if wandb_project:
        from gpo_vae.wandb_logging import log_leaderboard_to_wandb

        status = log_leaderboard_to_wandb(ranked, sweep, wandb_project, out)
        board["wandb"] = {key: status[key] for key in ("project", "mode", "logged_now", "error")}
        if status["error"]:
            print(
                f"wandb logging failed ({status['error']}); the leaderboard is in {out}; "
                f"retry with: python -m gpo_vae.wandb_logging {out} --project {wandb_project}"
            )
    return board
