"""Time the evaluation at RPE1 scale on synthetic arrays (design §7, §8).

    python benchmarks/evaluate.py [--cells 90000] [--genes 8749] [--nodes 655] [--perturbed 600]
                                  [--density 0.35] [--generated 2500] [--ks 500,2000,10000]
                                  [--export-cells 100] [--export-dir DIR]

Parts: ATE of the data (sparse counts, one pass), ATE of generated cells (``--generated`` dense
cells per perturbation, read one perturbation at a time through a lazy mapping; the counts come
from a small pool of pre-drawn blocks so that drawing them is not timed), prediction metrics,
CausalBench statistics of a T × T score matrix at several K (paths up to length 3, 500
negatives), curves and baselines, and the cell-eval files streamed to disk (``--export-cells``
generated cells per perturbation and controls, as the published-scale configs export; the real
test cells and the training-mean baseline's training cells of every perturbation, through
:func:`gpo_vae.evaluation.cell_eval.write_label_cells`). Prints seconds per part, each part's own peak resident memory
(the kernel's high-water mark, reset before the part; it includes the inputs already held) and
the process peak, which includes drawing the synthetic inputs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from _memory import peak_rss_gb

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.evaluation.ate import ate_from_generated, ate_perturbseq
from gpo_vae.evaluation.cell_eval import (
    BASELINE_FILE,
    PREDICTIONS_FILE,
    REAL_TEST_FILE,
    CellsWriter,
    write_label_cells,
)
from gpo_vae.evaluation.metrics import prediction_metrics, summarise_metrics
from gpo_vae.grn.baselines import correlation_scores, random_scores
from gpo_vae.grn.curves import (
    edge_precision_recall,
    edges_from_probabilities,
    precision_recall_table,
    ranking_metrics,
)
from gpo_vae.grn.statistical import StatisticalEvaluator, causalbench_expression
from gpo_vae.preprocessing.normalize import DEFAULT_TARGET_SUM

T = TypeVar("T")


def export_generated(
    path: Path, generated: Mapping[str, np.ndarray], order: list[str], n_cells: int, genes: pd.Index
) -> int:
    """Stream ``n_cells`` generated cells of every label into ``path``, a label at a time, as the
    evaluation's export does; returns the cells written."""
    with CellsWriter(path, genes, DEFAULT_TARGET_SUM, "predicted") as writer:
        for label in order:
            writer.add(sp.csr_matrix(generated[label][:n_cells]), label)
        return writer.n_cells


def reset_part_peak() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM), so a part's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def part_peak_gb() -> float:
    """VmHWM: the peak resident memory since the last :func:`reset_part_peak`."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def sparse_counts(
    rng: np.random.Generator, n_cells: int, detect: np.ndarray, block: int = 4096
) -> sp.csr_matrix:
    """Counts with per-gene detection probability ``detect`` and 1 + geometric values, in row blocks."""
    parts = []
    for start in range(0, n_cells, block):
        rows = min(block, n_cells - start)
        mask = rng.random((rows, detect.size), dtype=np.float32) < detect
        dense = np.zeros((rows, detect.size), dtype=np.float32)
        dense[mask] = rng.geometric(0.4, size=int(mask.sum()))
        parts.append(sp.csr_matrix(dense))
    return sp.vstack(parts, format="csr")


class PooledGenerated(Mapping[str, np.ndarray]):
    """A lazy ``perturbation → counts`` mapping cycling through pre-drawn dense blocks."""

    def __init__(self, keys: list[str], pool: list[np.ndarray]) -> None:
        self._keys = keys
        self._pool = pool

    def __getitem__(self, key: str) -> np.ndarray:
        return self._pool[self._keys.index(key) % len(self._pool)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class Timer:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    def __call__(self, name: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        resettable = reset_part_peak()
        start = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - start
        peak = part_peak_gb() if resettable else float("nan")
        self.rows.append((name, seconds, peak))
        print(f"{name:<52s} {seconds:7.1f} s   part peak RSS {peak:5.2f} GB", flush=True)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=90_000)
    parser.add_argument("--genes", type=int, default=8_749)
    parser.add_argument("--nodes", type=int, default=655)
    parser.add_argument("--perturbed", type=int, default=600)
    parser.add_argument("--controls", type=int, default=8_000)
    parser.add_argument("--density", type=float, default=0.35)
    parser.add_argument("--generated", type=int, default=2_500)
    parser.add_argument("--pool", type=int, default=3)
    parser.add_argument("--ks", default="500,2000,10000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export-cells", type=int, default=100, help="generated cells per label exported")
    parser.add_argument(
        "--export-dir", default=None, help="where the cell-eval files go (default: a temp dir)"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    ks = [int(k) for k in args.ks.split(",")]

    genes = pd.Index([f"GENE{i:05d}" for i in range(args.genes)])
    nodes = list(genes[: args.nodes])  # node genes are measured; the first P are perturbed
    perturbations = nodes[: args.perturbed]
    labels = np.array(
        [CONTROL_LABEL] * args.controls + list(rng.choice(perturbations, args.cells - args.controls))
    )
    rng.shuffle(labels)
    detect = np.clip(rng.beta(2.0, 2.0 * (1 - args.density) / args.density, size=args.genes), 0, 1).astype(
        np.float32
    )
    print(f"== synthetic data: {args.cells} cells × {args.genes} genes, {args.perturbed} perturbations")
    start = time.perf_counter()
    X = sparse_counts(rng, args.cells, detect)
    pool = [sparse_counts(rng, args.generated, detect).toarray() for _ in range(args.pool)]
    delta_x = rng.gamma(0.5, size=(args.cells, args.nodes)).astype(np.float32)
    print(
        f"   drawn in {time.perf_counter() - start:.1f} s (not timed below): {X.nnz / 1e6:.0f}M stored counts "
        f"(density {X.nnz / X.shape[0] / X.shape[1]:.2f}), {args.pool} pooled blocks of "
        f"{args.generated} × {args.genes} generated cells; peak RSS {peak_rss_gb():.2f} GB"
    )

    drawing_peak = peak_rss_gb()  # read before the parts reset the high-water mark
    timer = Timer()
    data_ate = timer("ATE of the data (sparse, all perturbations)", ate_perturbseq, X, labels, genes=genes)
    generated = PooledGenerated([CONTROL_LABEL, *perturbations], pool)
    gen_ate = timer(
        f"ATE of generated cells ({len(perturbations)} × {args.generated} cells)",
        ate_from_generated,
        generated,
        genes=genes,
    )
    metrics = timer("prediction metrics (per perturbation)", prediction_metrics, data_ate, gen_ate)
    timer("summarise metrics", summarise_metrics, metrics)

    export_dir = Path(args.export_dir or tempfile.mkdtemp(prefix="gpo_vae_export_"))
    export_dir.mkdir(parents=True, exist_ok=True)
    split = rng.choice(np.array(["train", "val", "test"]), size=args.cells, p=[0.64, 0.16, 0.20])
    order = [*perturbations, CONTROL_LABEL]
    timer(
        f"predictions.h5ad ({len(order)} labels × {args.export_cells} generated cells, streamed)",
        export_generated,
        export_dir / PREDICTIONS_FILE,
        generated,
        order,
        args.export_cells,
        genes,
    )
    for name, kind, part in ((REAL_TEST_FILE, "real", "test"), (BASELINE_FILE, "baseline", "train")):
        rows = np.flatnonzero(split == part)
        timer(
            f"{name} ({rows.size} {part} cells, streamed)",
            write_label_cells,
            export_dir / name,
            X,
            labels,
            rows,
            order,
            genes,
            DEFAULT_TARGET_SUM,
            kind,
        )
    sizes = {
        name: (export_dir / name).stat().st_size for name in (PREDICTIONS_FILE, REAL_TEST_FILE, BASELINE_FILE)
    }
    print("   cell-eval files: " + ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sizes.items()))
    if args.export_dir is None:
        shutil.rmtree(export_dir)

    expression = timer("CausalBench expression (median-norm log1p)", causalbench_expression, X)
    del X
    evaluator = timer("statistical evaluator setup", StatisticalEvaluator, expression, labels, genes)
    scores = random_scores(args.nodes, seed=1)
    at_k = timer(
        f"GRN statistics, K = {args.ks} (paths, 500 negatives)", evaluator.statistics_at_k, scores, nodes, ks
    )
    truth = random_scores(args.nodes, seed=2) < 0.02
    timer("edges_from_probabilities (p > 0.5)", edges_from_probabilities, scores, nodes)
    timer("AUPRC / AUROC", ranking_metrics, scores, truth)
    timer("precision-recall curve", precision_recall_table, scores, truth)
    timer(
        "precision / recall between perturbed genes",
        edge_precision_recall,
        scores > 0.5,
        truth,
        range(args.perturbed),
    )
    timer(f"|corr(ΔX)| baseline ({args.cells} × {args.nodes})", correlation_scores, delta_x)

    total = sum(seconds for _, seconds, _ in timer.rows)
    overall = max([drawing_peak, *(peak for _, _, peak in timer.rows)])
    print(f"{'total (timed parts)':<52s} {total:7.1f} s   process peak RSS {overall:5.2f} GB")
    columns = ["n_edges", "n_tested", "precision", "mean_wasserstein", "path_n_tested", "false_omission_rate"]
    with pd.option_context("display.width", 140):
        print(at_k[columns].round(4).to_string())


if __name__ == "__main__":
    main()
