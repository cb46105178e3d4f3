"""Stage 4, evaluation: prediction metrics, GRN benchmark and the HTML report of one run.

The evaluation directory is content-addressed: the SHA-256 of every input file's content (the
artifact's ``.h5ad`` through its completeness marker, ``model.pt``, the SAMS-VAE ``model.pt``,
the summary statistics and network files) and the validated evaluation config. A finished
evaluation (``.complete`` present) is therefore reused even without redun's database.

The task returns the directory's ``report.html`` as a ``File``: it is written once, just before
the marker, and its parent is the evaluation directory with every table of the report contract
(:mod:`gpo_vae.report`).
"""

import hashlib
import json
from pathlib import Path
from typing import Any

from redun import File, task

redun_namespace = "gpo_vae"


def evaluation_key(inputs: dict[str, Any], config: dict[str, Any]) -> str:
    """Content address of an evaluation: input checksums (by role) and the full config."""
    parts = {"inputs": inputs, "config": config}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _sha(file: File | None) -> str | None:
    from gpo_vae.io import sha256_of

    return sha256_of(Path(file.path)) if file is not None else None


# Resource hints for executors that place tasks (AWS Batch, Kubernetes); the local executor
# ignores them. Generation and the IWELBO run on a GPU when a cluster profile grants one.
@task(version="2", cache=True, memory=16, vcpus=2)
def evaluate_run_task(
    artifact: File,
    model: File,
    config: dict[str, Any],
    out_root: str,
    summary_stats: File | None = None,
    summary_sheet: str | None = None,
    networks: list[File] | None = None,
    true_network: File | None = None,
    sams_model: File | None = None,
    dataset: str | None = None,
) -> File:
    """Evaluate (or reuse the evaluation of) the run whose ``model.pt`` is ``model``.

    ``artifact`` is the artifact's ``.h5ad`` (what ``preprocess_dataset`` returns), ``model`` and
    ``sams_model`` the ``model.pt`` of runs on it (what ``train_run`` returns), ``config`` the
    evaluation section of a run config. Returns the evaluation's ``report.html``.
    """
    from gpo_vae.config import from_dict, to_dict
    from gpo_vae.evaluation.config import EvaluationConfig
    from gpo_vae.evaluation.run import COMPLETE_MARKER, evaluate_run
    from gpo_vae.io import exclusive_lock
    from gpo_vae.report import REPORT_FILE
    from gpo_vae.training.train import artifact_checksum

    evaluation = from_dict(EvaluationConfig, config, "evaluation")
    artifact_dir = Path(artifact.path).parent
    networks = list(networks or [])
    inputs = {
        "artifact": artifact_checksum(artifact_dir),
        "model": _sha(model),
        "sams_model": _sha(sams_model),
        "summary_stats": _sha(summary_stats),
        "summary_sheet": summary_sheet,
        "networks": [_sha(network) for network in networks],
        "true_network": _sha(true_network),
        "dataset": dataset,
    }
    out_dir = Path(out_root) / evaluation_key(inputs, to_dict(evaluation))
    with exclusive_lock(out_dir):  # a concurrent evaluation of the same inputs waits, then reuses it
        if not (out_dir / COMPLETE_MARKER).exists():
            evaluate_run(
                artifact_dir,
                Path(model.path).parent,
                evaluation,
                out_dir,
                summary_stats=summary_stats.path if summary_stats is not None else None,
                summary_sheet=summary_sheet,
                networks=[network.path for network in networks],
                true_network=true_network.path if true_network is not None else None,
                sams_vae_run_dir=Path(sams_model.path).parent if sams_model is not None else None,
                dataset=dataset,
                progress=False,
            )
    return File(str(out_dir / REPORT_FILE))


@task(version="3", cache=True)
def summarise_run(report: File) -> list[str]:
    """Where the report is and the headline (:func:`gpo_vae.evaluation.headline.run_headline`),
    one line per element: the scheduler prints them at the end of every run,
    served from cache or not (tasks/scheduler.py)."""

    from gpo_vae.evaluation.headline import run_headline

    folder = Path(report.path).parent
    lines = [f"report: {Path(report.path).resolve()}", *run_headline(folder)]
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    run_dir = run.get("inputs", {}).get("run_dir")
    if run_dir:
        from gpo_vae.io import resolve_recorded

        lines.append(f"from Python: gpo_vae.GPOVAEModel.load({str(resolve_recorded(run_dir, folder))!r})")
    if (folder / "predictions.h5ad").is_file():
        lines.append(
            f"cell-eval: cd {folder.resolve()} && cell-eval run -ap predictions.h5ad -ar real_test.h5ad "
            "--control-pert non-targeting"
        )
    return lines
