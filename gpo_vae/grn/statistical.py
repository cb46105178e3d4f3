"""CausalBench statistical evaluation of a GRN on held-out cells (design §8).

For an edge ``a → b``: compare ``b``'s expression in cells perturbed at ``a`` with control
cells. A two-sided Mann-Whitney U test with ``p < 0.05`` makes the edge a true positive, else a
false positive; the 1-D Wasserstein distance of the two samples measures the effect size. This
reproduces ``causalscbench.evaluation.statistical_evaluation.Evaluator`` (causalbench 1.1.2):

- ``scipy.stats.mannwhitneyu(control, perturbed)`` defaults: continuity and tie corrections,
  exact p-value when a sample has ≤ 8 values and there are no ties;
- paths: the graph is expanded ``max_path_length − 1`` times by ``C ← (C ∪ C·C) \\ diag``
  (each step composes the expanded graph with itself, so step 2 reaches pairs 3 *or 4* edges
  apart) and each step's *new* pairs are tested;
- false omission rate: ``n_negatives`` distinct pairs ``(a, b)``, ``a ≠ b``, drawn with
  ``random.Random(seed).sample(range(len(nodes)), 2)`` and rejected while ``b`` is reachable from
  ``a`` in the last expanded graph; FOR = significant negatives / negatives.

Unlike CausalBench (which fails on them), pairs whose source has no perturbed cell among the
cells given, or whose target is not a measured gene, are skipped and counted; negatives are
drawn among testable pairs only (identical to CausalBench when every pair is testable).

Speed: pairs are grouped by target gene. Each target's control values are sorted once; every
perturbed value is located among them by ``searchsorted``, which gives the U statistic, the tie
correction and (through the integral of the control CDF) the Wasserstein distance of all pairs
into that target at once, in O(cells perturbed · log controls) per pair.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.grn.curves import Graph, graph_adjacency, rank_edges, tied_at_k
from gpo_vae.grn.two_sample import ControlColumn, two_sample_tests
from gpo_vae.preprocessing.normalize import as_csr, library_size, map_row_blocks, normalize_log1p

DEFAULT_P_VALUE = 0.05
# scipy's mannwhitneyu(method="auto") uses the exact distribution below this many values per sample
_EXACT_MAX = 8


def causalbench_expression(X_counts: Any, columns: np.ndarray | None = None) -> sp.csr_matrix:
    """CausalBench's expression values: counts scaled to the median library size, then log1p.

    ``columns``: keep only those genes (the library sizes still count every gene). Counts on
    disk (:class:`~gpo_vae.data.on_disk.CountsOnDisk`) are read a block of cells at a time, so
    only the kept columns of all cells are ever held.
    """
    lib = library_size(X_counts)
    target_sum = float(np.median(lib[lib > 0]))

    def expression(block: Any) -> sp.csr_matrix:
        values = normalize_log1p(block, target_sum=target_sum)
        return values if columns is None else values[:, np.asarray(columns)]

    return map_row_blocks(X_counts, expression)


SKIP_SOURCE = "source has no perturbed cell"
SKIP_TARGET = "target not measured"
DEFAULT_KS = (100, 250, 500, 1000, 2500, 5000)


@dataclass(frozen=True)
class NetworkEvaluation:
    """``summary``: see :func:`summarise_tests`; ``tests``: one row per tested or skipped pair,
    the columns of :meth:`StatisticalEvaluator.test_pairs` plus ``kind`` (``"edge"``,
    ``"path"``, ``"negative"``) and ``step`` (0 for edges, the expansion step for paths, −1)."""

    summary: pd.Series
    tests: pd.DataFrame

    def path_steps(self) -> pd.DataFrame:
        """CausalBench's ``all_path_results``: per expansion step, TP, FP and mean Wasserstein."""
        paths = self.tests[(self.tests["kind"] == "path") & self.tests["testable"]]
        grouped = paths.groupby("step")
        tp = grouped["significant"].sum().astype(int)
        return pd.DataFrame(
            {
                "true_positives": tp,
                "false_positives": grouped.size() - tp,
                "mean_wasserstein": grouped["wasserstein"].mean(),
            }
        )


@dataclass(frozen=True)
class _Plan:
    nodes: pd.Index
    rows: np.ndarray
    cols: np.ndarray
    kind: np.ndarray
    step: np.ndarray
    src: np.ndarray
    col: np.ndarray


def expand_paths(adjacency: np.ndarray, max_path_length: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """CausalBench's path expansion: ``([new pairs of each step], last expanded graph)``.

    ``C ← (C ∪ C·C)`` without self-pairs, ``max_path_length − 1`` times (``-1``: T times),
    stopping early when ``C`` no longer changes.
    """
    n = adjacency.shape[0]
    closure = adjacency.astype(bool)
    steps: list[np.ndarray] = []
    n_steps = n if max_path_length == -1 else max_path_length
    for _ in range(n_steps - 1):
        as_float = closure.astype(np.float32)
        deeper = closure | ((as_float @ as_float) > 0)
        np.fill_diagonal(deeper, False)
        if np.array_equal(deeper, closure):
            break
        steps.append(deeper & ~closure)
        closure = deeper
    return steps, closure


def sample_negatives(
    closure: np.ndarray, source_ok: np.ndarray, target_ok: np.ndarray, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Node index pairs ``(rows, cols)`` of ``n`` testable non-edges of ``closure``.

    Drawn as CausalBench does (``random.Random(seed).sample(range(T), 2)``, redrawn while the pair
    is an edge, or here untestable, until ``n`` distinct pairs); every eligible pair when there
    are no more than ``n``. Returned sorted.
    """
    eligible = source_ok[:, None] & target_ok[None, :] & ~closure
    np.fill_diagonal(eligible, False)
    if n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if eligible.sum() <= n:
        return np.nonzero(eligible)
    rng = random.Random(seed)
    population = range(closure.shape[0])
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < n:
        i, j = rng.sample(population, 2)
        if eligible[i, j]:
            chosen.add((i, j))
    pairs = np.array(sorted(chosen), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1]


def summarise_tests(tests: pd.DataFrame) -> pd.Series:
    """The CausalBench numbers of a test table (:class:`NetworkEvaluation`).

    ``n_edges``, ``n_tested``, ``n_skipped`` (= ``n_skipped_source`` + ``n_skipped_target``),
    ``true_positives``, ``false_positives``, ``precision`` (TP / tested), ``mean_wasserstein``;
    the same with a ``path_`` prefix for the pairs added by path expansion (all steps); and
    ``n_negatives``, ``false_omission_rate`` (significant negatives / negatives),
    ``negative_mean_wasserstein``. Empty sets give NaN.
    """
    out: dict[str, float] = {}
    for kind, prefix in (("edge", ""), ("path", "path_")):
        part = tests[tests["kind"] == kind]
        tested = part[part["testable"]]
        tp = int(tested["significant"].sum())
        out[f"{prefix}n_edges"] = len(part)
        out[f"{prefix}n_tested"] = len(tested)
        out[f"{prefix}n_skipped_source"] = int((part["skip_reason"] == SKIP_SOURCE).sum())
        out[f"{prefix}n_skipped_target"] = int((part["skip_reason"] == SKIP_TARGET).sum())
        out[f"{prefix}n_skipped"] = len(part) - len(tested)
        out[f"{prefix}true_positives"] = tp
        out[f"{prefix}false_positives"] = len(tested) - tp
        out[f"{prefix}precision"] = tp / len(tested) if len(tested) else np.nan
        out[f"{prefix}mean_wasserstein"] = float(tested["wasserstein"].mean()) if len(tested) else np.nan
    negatives = tests[tests["kind"] == "negative"]
    out["n_negatives"] = len(negatives)
    out["false_omission_rate"] = float(negatives["significant"].mean()) if len(negatives) else np.nan
    out["negative_mean_wasserstein"] = float(negatives["wasserstein"].mean()) if len(negatives) else np.nan
    return pd.Series(out, dtype=np.float64)


class StatisticalEvaluator:
    """Mann-Whitney and Wasserstein tests of (perturbed gene → measured gene) pairs on given cells.

    Parameters
    ----------
    expression
        Cells × genes expression (CSR or dense), e.g. :func:`causalbench_expression` of the TEST
        cells. Values are compared as float64.
    labels
        Perturbed gene of each cell (``control_label`` for controls).
    genes
        Column names of ``expression`` (unique).

    Results are cached per pair, so evaluating several graphs over the same cells (e.g.
    :meth:`statistics_at_k`) tests each pair once.
    """

    def __init__(
        self,
        expression: sp.spmatrix | sp.sparray | np.ndarray,
        labels: np.ndarray | pd.Series | list[str],
        genes: pd.Index | list[str] | np.ndarray,
        control_label: str = CONTROL_LABEL,
        p_value_threshold: float = DEFAULT_P_VALUE,
    ) -> None:
        self.genes = pd.Index(genes).astype(str)
        if not self.genes.is_unique:
            raise ValueError("gene names must be unique")
        if len(self.genes) != expression.shape[1]:
            raise ValueError(f"{len(self.genes)} gene names for {expression.shape[1]} columns")
        values = np.asarray(labels).astype(str)
        if values.shape != (expression.shape[0],):
            raise ValueError(f"{values.shape[0]} labels for {expression.shape[0]} cells")
        self.expression = as_csr(expression) if sp.issparse(expression) else np.asarray(expression)
        data = self.expression.data if sp.issparse(self.expression) else self.expression
        if np.isnan(data).any():
            raise ValueError("expression holds NaN values; the rank test needs finite values")
        self.control_label = control_label
        self.p_value_threshold = p_value_threshold
        self.control_rows = np.flatnonzero(values == control_label)
        if self.control_rows.size == 0:
            raise ValueError(f"no control cell ({control_label!r}) among the {values.size} cells given")
        groups = pd.Categorical(np.where(values == control_label, None, values))
        self.sources = pd.Index(groups.categories.astype(str))
        codes = groups.codes.astype(np.int64)
        perturbed = np.flatnonzero(codes >= 0)
        self._cell_order = perturbed[np.argsort(codes[perturbed], kind="stable")]
        self._group_size = np.bincount(codes[perturbed], minlength=len(self.sources))
        self._group_start = np.concatenate(([0], np.cumsum(self._group_size)[:-1]))
        # cached results: key = source code · n_genes + gene column, sorted; values per key
        self._keys = np.zeros(0, dtype=np.int64)
        self._cache = np.zeros((0, 4))

    @property
    def n_controls(self) -> int:
        return int(self.control_rows.size)

    def _compute(self, src: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Rows ``(n_perturbed, u_statistic, p_value, wasserstein)`` for pairs (source code, column)."""
        out = np.empty((src.size, 4))
        if src.size == 0:
            return out
        unique_cols, col_code = np.unique(col, return_inverse=True)
        block = self.expression[:, unique_cols]
        block = sp.csc_matrix(block) if sp.issparse(block) else np.asarray(block)
        by_col = np.argsort(col_code, kind="stable")
        bounds = np.searchsorted(col_code[by_col], np.arange(unique_cols.size + 1))
        for c in range(unique_cols.size):
            pairs = by_col[bounds[c] : bounds[c + 1]]
            column = block[:, [c]].toarray().ravel() if sp.issparse(block) else block[:, c]
            column = column.astype(np.float64)
            control = ControlColumn(column[self.control_rows])
            sizes = self._group_size[src[pairs]]
            segment = np.repeat(np.arange(pairs.size), sizes)
            offset = np.arange(segment.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            rows = self._cell_order[np.repeat(self._group_start[src[pairs]], sizes) + offset]
            values = column[rows]
            order = np.lexsort((values, segment))
            u, p, w = two_sample_tests(control, values[order], segment[order], pairs.size)
            out[pairs] = np.column_stack((sizes, u, p, w))
            exact = np.flatnonzero(np.minimum(sizes, control.n) <= _EXACT_MAX)
            for e in exact:
                group = values[segment == e]
                if np.unique(np.concatenate((control.sorted, group))).size == control.n + group.size:
                    out[pairs[e], 2] = stats.mannwhitneyu(control.sorted, group, method="exact").pvalue
        return out

    def _results(self, src: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Cached ``(n_perturbed, u, p, w)`` rows for pairs of source codes and gene columns (≥ 0)."""
        keys = src.astype(np.int64) * len(self.genes) + col
        unique_keys = np.unique(keys)
        known = np.zeros(unique_keys.size, dtype=bool)
        if self._keys.size:
            pos = np.minimum(np.searchsorted(self._keys, unique_keys), self._keys.size - 1)
            known = self._keys[pos] == unique_keys
        new = unique_keys[~known]
        if new.size:
            fresh = self._compute(new // len(self.genes), new % len(self.genes))
            merged = np.concatenate((self._keys, new))
            order = np.argsort(merged, kind="stable")
            self._keys = merged[order]
            self._cache = np.concatenate((self._cache, fresh))[order]
        return self._cache[np.searchsorted(self._keys, keys)]

    def _table(
        self, src: np.ndarray, col: np.ndarray, sources: np.ndarray, targets: np.ndarray
    ) -> pd.DataFrame:
        testable = (src >= 0) & (col >= 0)
        reason = np.where(src < 0, SKIP_SOURCE, np.where(col < 0, SKIP_TARGET, ""))
        results = np.full((src.size, 4), np.nan)
        idx = np.flatnonzero(testable)
        if idx.size:
            results[idx] = self._results(src[idx], col[idx])
        return pd.DataFrame(
            {
                "source": sources,
                "target": targets,
                "testable": testable,
                "skip_reason": reason,
                "n_perturbed": results[:, 0],
                "n_control": np.where(testable, float(self.n_controls), np.nan),
                "u_statistic": results[:, 1],
                "p_value": results[:, 2],
                "significant": testable & (results[:, 2] < self.p_value_threshold),
                "wasserstein": results[:, 3],
            }
        )

    def test_pairs(self, sources: list[str] | np.ndarray, targets: list[str] | np.ndarray) -> pd.DataFrame:
        """Test each pair ``sources[i] → targets[i]``.

        Returns
        -------
        One row per pair: ``source``, ``target``, ``testable`` (bool), ``skip_reason`` (``""``,
        :data:`SKIP_SOURCE` or :data:`SKIP_TARGET`), ``n_perturbed``, ``n_control``,
        ``u_statistic`` (U of the controls, as ``mannwhitneyu(control, perturbed)``), ``p_value``,
        ``significant`` (``p < p_value_threshold``), ``wasserstein``; NaN where not testable.
        """
        sources = np.asarray(sources).astype(str)
        targets = np.asarray(targets).astype(str)
        if sources.shape != targets.shape:
            raise ValueError("need as many sources as targets")
        return self._table(
            self.sources.get_indexer(sources), self.genes.get_indexer(targets), sources, targets
        )

    def _plan(
        self, graph: Graph, nodes: pd.Index, max_path_length: int, n_negatives: int, seed: int
    ) -> _Plan:
        adjacency = graph_adjacency(graph, nodes)
        steps, closure = expand_paths(adjacency, max_path_length)
        source_ok = self.sources.get_indexer(nodes) >= 0
        target_ok = self.genes.get_indexer(nodes) >= 0
        negatives = sample_negatives(closure, source_ok, target_ok, n_negatives, seed)
        parts = [(*np.nonzero(adjacency), "edge", 0)]
        parts += [(*np.nonzero(new), "path", s) for s, new in enumerate(steps, start=1)]
        parts.append((*negatives, "negative", -1))
        rows = np.concatenate([p[0] for p in parts]).astype(np.int64)
        cols = np.concatenate([p[1] for p in parts]).astype(np.int64)
        kind = np.concatenate([np.full(p[0].size, p[2]) for p in parts]).astype(object)
        step = np.concatenate([np.full(p[0].size, p[3]) for p in parts]).astype(np.int64)
        src = self.sources.get_indexer(nodes)[rows]
        col = self.genes.get_indexer(nodes)[cols]
        return _Plan(nodes, rows, cols, kind, step, src, col)

    def _finish(self, plan: _Plan) -> NetworkEvaluation:
        names = plan.nodes.to_numpy()
        tests = self._table(plan.src, plan.col, names[plan.rows], names[plan.cols])
        tests.insert(2, "kind", plan.kind)
        tests.insert(3, "step", plan.step)
        return NetworkEvaluation(summary=summarise_tests(tests), tests=tests)

    def evaluate(
        self,
        graph: Graph,
        nodes: list[str] | pd.Index | np.ndarray,
        max_path_length: int = 3,
        n_negatives: int = 500,
        seed: int = 0,
    ) -> NetworkEvaluation:
        """CausalBench's ``evaluate_network`` on this data, with skipped pairs counted.

        Parameters
        ----------
        graph
            Bool adjacency over ``nodes`` (``A[i, j]``: ``nodes[i] → nodes[j]``), or a DataFrame
            with ``source``/``target`` columns, or an iterable of ``(source, target)`` names.
        nodes
            The graph's node names; also the pool the negatives are drawn from (its order fixes
            the draw, as ``gene_names`` does in CausalBench).
        max_path_length
            Expansion steps + 1 (see the module docstring); ``-1``: until nothing changes.
        n_negatives, seed
            Negatives for the false omission rate (0: skip; all testable ones if fewer exist).
        """
        index = pd.Index(nodes).astype(str)
        if not index.is_unique:
            raise ValueError("nodes must be unique")
        return self._finish(self._plan(graph, index, max_path_length, n_negatives, seed))

    def statistics_at_k(
        self,
        scores: np.ndarray,
        nodes: list[str] | pd.Index | np.ndarray,
        ks: Sequence[int] = DEFAULT_KS,
        max_path_length: int = 3,
        n_negatives: int = 500,
        seed: int = 0,
    ) -> pd.DataFrame:
        """:meth:`evaluate` the top-K edges of a T × T score matrix for each K.

        Mean Wasserstein falls as a method keeps more (weaker) edges, so methods are compared at
        matched K. Self-loops and NaN scores are never edges; ties are broken by position.

        Returns
        -------
        One row per K (index ``k``): ``n_edges`` may be below K when fewer scores exist,
        ``min_score`` is the K-th score, ``tied`` how many of the K tie with the best score left
        out (:func:`~gpo_vae.grn.curves.tied_at_k`), then the columns of :func:`summarise_tests`.
        """
        index = pd.Index(nodes).astype(str)
        ranked = rank_edges(scores, len(index))
        plans = []
        for k in ks:
            adjacency = np.zeros((len(index), len(index)), dtype=bool)
            top = ranked[: int(k)]
            adjacency.flat[top] = True
            plans.append(self._plan(adjacency, index, max_path_length, n_negatives, seed))
        # one pass over the expression for the pairs of every K; the evaluations then hit the cache
        src = np.concatenate([p.src for p in plans])
        col = np.concatenate([p.col for p in plans])
        ok = (src >= 0) & (col >= 0)
        if ok.any():
            self._results(src[ok], col[ok])
        rows = []
        flat_scores = np.asarray(scores, dtype=np.float64).ravel()
        for k, plan in zip(ks, plans, strict=True):
            top = ranked[: int(k)]
            head = {
                "k": int(k),
                "min_score": float(flat_scores[top[-1]]) if top.size else np.nan,
                "tied": tied_at_k(flat_scores[ranked], int(k)),
            }
            rows.append({**head, **self._finish(plan).summary.to_dict()})
        return pd.DataFrame(rows).set_index("k")


def evaluate_network(
    expression: sp.spmatrix | sp.sparray | np.ndarray,
    labels: np.ndarray | pd.Series | list[str],
    genes: pd.Index | list[str] | np.ndarray,
    graph: Graph,
    nodes: list[str] | pd.Index | np.ndarray,
    control_label: str = CONTROL_LABEL,
    p_value_threshold: float = DEFAULT_P_VALUE,
    max_path_length: int = 3,
    n_negatives: int = 500,
    seed: int = 0,
) -> NetworkEvaluation:
    """One-shot :meth:`StatisticalEvaluator.evaluate` (build the evaluator once to reuse tests)."""
    evaluator = StatisticalEvaluator(expression, labels, genes, control_label, p_value_threshold)
    return evaluator.evaluate(graph, nodes, max_path_length, n_negatives, seed)


def statistics_at_k(
    scores: np.ndarray,
    nodes: list[str] | pd.Index | np.ndarray,
    expression: sp.spmatrix | sp.sparray | np.ndarray,
    labels: np.ndarray | pd.Series | list[str],
    genes: pd.Index | list[str] | np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    control_label: str = CONTROL_LABEL,
    p_value_threshold: float = DEFAULT_P_VALUE,
    max_path_length: int = 3,
    n_negatives: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """One-shot :meth:`StatisticalEvaluator.statistics_at_k`."""
    evaluator = StatisticalEvaluator(expression, labels, genes, control_label, p_value_threshold)
    return evaluator.statistics_at_k(scores, nodes, ks, max_path_length, n_negatives, seed)
