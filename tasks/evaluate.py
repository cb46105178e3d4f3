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
    from gpo_vae.preprocessing.artifact import artifact_checksum
    from gpo_vae.report import REPORT_FILE

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


@task(version="4", cache=True)
def summarise_run(report: File) -> list[str]:
    """The end of a run: the headline (:func:`gpo_vae.report.headline.run_headline`: one
    table and its verdict), the report's path and the next commands, paths as seen from where the
    run was started; the scheduler prints them once at the end of every run, cached or not
    (tasks/scheduler.py)."""
    import sys

    from gpo_vae.io import resolve_recorded
    from gpo_vae.report.headline import next_steps, run_headline

    def shown(path: str | Path) -> str:
        """A path relative to the working folder when it lies below it, else absolute."""
        path = Path(path).absolute()
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)

    folder = Path(shown(Path(report.path).parent))
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").is_file() else {}
    run_dir = run.get("inputs", {}).get("run_dir")
    run_dir = shown(resolve_recorded(run_dir, folder)) if run_dir else None
    return [*run_headline(folder), *next_steps(folder, run_dir, shown(sys.executable))]
