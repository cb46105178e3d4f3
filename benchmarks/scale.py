"""How time and memory grow with the number of cells: simulate, preprocess, one epoch, evaluate.

    python benchmarks/scale.py [--factors 0.5,1,2,4] [--out DIR] [--stages simulate,preprocess,epoch,evaluate]
                               [--generated 100] [--counts auto|memory|disk]

Each factor scales the RPE1 preset's cells per perturbation (the RPE1 input is 242,438 cells ×
8,700 genes, 2,500 perturbations; genes and perturbations stay fixed), so only the cells grow.
Every stage runs in a fresh spawned process, so its peak resident memory is its own (imports
included):

- simulate: ``write_synthetic_dataset(on_disk=True)``, each chunk of cells appended to the file
  as drawn, the summary statistics read back from disk;
- preprocess: ``build_artifact`` as ``main`` runs it (counts read a block of cells at a time);
- epoch: one training epoch of ``configs/gpo_vae_plus_rpe1.yaml`` (``max_epochs: 1``), its counts
  placed by ``--counts`` (``auto``: in memory while they take ≤ 1/4 of the memory available;
  ``disk``: each batch read from the artifact, memory bounded), in ``run-<counts>``;
- evaluate: ``evaluate_run`` of that run with the config's evaluation settings except
  ``--generated`` cells per perturbation (the published 2,500 make it a generation benchmark),
  its counts placed by ``--counts`` as well (``disk``: every stage reads the cells it needs a
  block at a time), in ``evaluation-<counts>``.

Prints per factor and stage: input cells, seconds, peak GB; then per stage how seconds and peak
grow from the smallest factor to the largest (a ratio near the cells' ratio is linear, near 1 is
flat). ``--out`` (a new folder) keeps the screens, artifacts, runs and evaluations. A stage that
fails (out of memory, say) is listed as failed and the next factor still runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from _memory import peak_rss_gb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("simulate", "preprocess", "epoch", "evaluate")
CONFIG = ROOT / "configs" / "gpo_vae_plus_rpe1.yaml"


def _peak_gb() -> float:
    return peak_rss_gb()


def simulate(folder: str, factor: float) -> dict:
    import dataclasses

    from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset

    base = SyntheticConfig.preset("rpe1")
    config = dataclasses.replace(base, cells_per_perturbation=base.cells_per_perturbation * factor)
    start = time.perf_counter()
    write_synthetic_dataset(Path(folder) / "data", config, on_disk=True)
    return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb()}


def preprocess(folder: str) -> dict:
    from gpo_vae.data.synthetic import SUMMARY_SHEET
    from gpo_vae.preprocessing.config import PreprocessConfig
    from gpo_vae.preprocessing.from_file import build_artifact

    data = Path(folder) / "data"
    start = time.perf_counter()
    build_artifact(
        data / "counts.h5ad",
        data / "summary_stats.xlsx",
        SUMMARY_SHEET,
        PreprocessConfig(),
        Path(folder) / "artifact",
        progress=False,
        print_table=False,
    )
    return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb()}


def epoch(folder: str, counts: str) -> dict:
    from gpo_vae.run_config import load_run_config
    from gpo_vae.training.train import train_model

    config = load_run_config(CONFIG, {"training.max_epochs": 1, "training.wandb": False})
    run = Path(folder) / f"run-{counts}"
    # train_model reuses a finished run of the same settings: measuring means training again
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    train_model(
        Path(folder) / "artifact",
        config.model,
        config.training,
        run,
        progress=False,
        counts=counts,
    )
    return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb()}


def evaluate(folder: str, generated: int, counts: str) -> dict:
    from gpo_vae.evaluation.run import evaluate_run
    from gpo_vae.run_config import load_run_config

    config = load_run_config(CONFIG, {"evaluation.n_generated_cells": generated})
    start = time.perf_counter()
    evaluate_run(
        Path(folder) / "artifact",
        Path(folder) / f"run-{counts}",
        config.evaluation,
        Path(folder) / f"evaluation-{counts}",
        progress=False,
        counts=counts,
    )
    return {"seconds": time.perf_counter() - start, "peak_gb": _peak_gb()}


def _in_child(function, *args) -> dict:
    """``function(*args)`` in a fresh spawned process (its peak RSS is its own)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factors", default="0.5,1,2,4")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--generated", type=int, default=100)
    parser.add_argument("--counts", choices=["auto", "memory", "disk"], default="auto")
    args = parser.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = args.out or Path(scratch)
        for factor in factors:
            folder = root / f"x{factor:g}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs = {
                "simulate": (simulate, str(folder), factor),
                "preprocess": (preprocess, str(folder)),
                "epoch": (epoch, str(folder), args.counts),
                "evaluate": (evaluate, str(folder), args.generated, args.counts),
            }
            for stage in stages:
                try:
                    result = _in_child(*jobs[stage])
                except Exception as err:  # a stage out of memory must not lose the others' rows
                    result = {
                        "seconds": float("nan"),
                        "peak_gb": float("nan"),
                        "error": f"{type(err).__name__}: {err}",
                    }
                cells = _input_cells(folder)
                rows.append({"factor": factor, "cells": cells, "stage": stage, **result})
                note = f"  FAILED {result['error']}" if "error" in result else ""
                if stage == "preprocess" and not note:
                    note = _kept(folder)
                print(
                    f"x{factor:<5g} {cells:>10,} cells  {stage:<11}{result['seconds']:9.1f} s"
                    f"{result['peak_gb']:8.2f} GB{note}",
                    flush=True,
                )
    print(_growth(rows))


def _input_cells(folder: Path) -> int:
    import json

    metadata = folder / "data" / "dataset.json"
    return int(json.loads(metadata.read_text())["n_cells"]) if metadata.is_file() else 0


def _kept(folder: Path) -> str:
    """Cells and nodes the preprocessing kept (the filters drop more perturbations when each has
    fewer cells, so kept cells do not grow in proportion)."""
    import json

    record = folder / "artifact" / "record.json"
    if not record.is_file():
        return ""
    output = json.loads(record.read_text())["output"]
    return f"  (kept {output['cells']:,} cells, {output['nodes']} nodes)"


def _growth(rows: list[dict]) -> str:
    """Per stage: seconds and peak at the smallest and largest factor, and their ratios."""
    lines = [
        "",
        f"{'stage':<11}{'cells ×':>9}{'seconds ×':>11}{'peak ×':>9}   (linear: seconds × = cells ×; flat: peak × = 1)",
    ]
    for stage in dict.fromkeys(r["stage"] for r in rows):
        mine = [r for r in rows if r["stage"] == stage and r["seconds"] == r["seconds"]]
        if len(mine) < 2:
            continue
        low, high = min(mine, key=lambda r: r["factor"]), max(mine, key=lambda r: r["factor"])
        lines.append(
            f"{stage:<11}{high['cells'] / max(low['cells'], 1):9.2f}{high['seconds'] / low['seconds']:11.2f}"
            f"{high['peak_gb'] / low['peak_gb']:9.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
