"""Evaluation settings (design §7–§8), validated like every other config section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Device = Literal["auto", "cpu", "cuda"]
#: torch.manual_seed and numpy accept 32-bit unsigned seeds (as training).
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class EvaluationConfig:
    """How a trained run is evaluated; defaults are the published settings.

    Attributes
    ----------
    n_generated_cells
        Cells generated per perturbation (and for the controls) for the model's ATE and QC ratio.
    generated_library_size
        Library size of every generated cell: 10,000 as published, or ``median_library`` (the
        median UMIs per training cell), so that generated cells are as deep as the screen's and
        their log-normalised means carry the same counting noise as the data's.
    iwelbo_particles
        K of the test IWELBO.
    iwelbo_batch_size
        Test cells per IWELBO batch (memory only, not results).
    top_de
        Genes with the largest ``|data ATE|`` scored by ``pearson_top<k>`` / ``r2_top<k>``.
    jaccard_ks
        Sizes of the top-DE sets compared by ``jaccard_top<k>``.
    grn_threshold
        An edge of the learned graph has mask probability above this.
    grn_density
        When every mask probability started at ``grn_threshold`` (the published start), p above
        it would count edges that rose by noise: the model's graph is then its top
        ``grn_density`` share of the pairs from a perturbed gene (the expected density of a sparse
        GRN, GPO-VAE+'s ``mask_prior``), :func:`gpo_vae.grn.calibration.calibrated_threshold`.
    grn_ks
        Top-K graphs evaluated by the CausalBench statistics (the model's own edge count is
        always added, so that methods are compared at matched K).
    n_negatives, max_path_length, p_value
        CausalBench: random non-edges for the false omission rate, path length of the path
        statistics, Mann-Whitney significance level.
    seed
        Seeds generation, the IWELBO particles, the split halves, the random GRN baseline and
        the negatives.
    summary_stats_cells
        Generated cells per perturbation from which the predicted knockdown and number of DEGs
        are computed (with ``compute_summary_stats``, like the data's own statistics).
    n_scatter
        Perturbations (largest held-out effect first) whose ATE is drawn gene by gene.
    split_half_corrected
        Spearman-Brown correct the split-half ceiling's Pearson columns to full size.
    device
        ``auto`` (CUDA when available), ``cpu`` or ``cuda`` for IWELBO and generation.
    cpu_threads
        torch intra-op CPU threads during evaluation; None keeps torch's default.
    unseen_single_prediction
        How the model doses a gene no training cell carries (:mod:`gpo_vae.evaluation.unseen`):
        ``regulators`` (through the perturbations that move its expression) or ``neighbours``
        (through its GRN neighbours); the other mode is scored beside it.
    unseen_regulator_z
        With a positive value, only seen perturbations whose training effect on an unseen gene
        is beyond this many noise standard deviations dose it (0: every one, weighted by it).
    unseen_neighbours
        GRN neighbours of ``neighbours`` and of the ``grn_neighbour_mean`` baseline.
    interaction_z
        A held-out pair's observed interaction is significant beyond this ``|z|``.
    unseen_cells
        Generated cells per unseen label written to ``unseen_cells.h5ad`` (at most
        ``n_generated_cells``; 0 writes none).
    ate_target_sum
        The ATE's scale: every cell (data and generated) is scaled to this many counts before
        ``log2(1 + x)``. 10,000 as the published evaluation (comparable across the published
        screens); ``median_library``: the median UMIs per training cell, so that one UMI of a
        shallow panel is not blown up to ~90 counts. ``run.json`` records the value used.
    cell_eval_cells
        Generated cells per test perturbation (and controls) in ``predictions.h5ad`` for
        cell-eval: None every cell the evaluation scored (``n_generated_cells``: cell-eval's
        ``pearson_delta`` then equals ours), a number at most that many (a smaller file, a
        noisier estimate; ``run.json`` records the file sizes and what every cell would take),
        0 writes no cell-eval file.
    """

    n_generated_cells: int = 2500
    generated_library_size: float | Literal["median_library"] = 1e4
    iwelbo_particles: int = 100
    iwelbo_batch_size: int = 512
    top_de: int = 20
    jaccard_ks: tuple[int, ...] = (20, 50)
    grn_threshold: float = 0.5
    grn_density: float = 0.05
    grn_ks: tuple[int, ...] = (100, 250, 500, 1000)
    n_negatives: int = 500
    max_path_length: int = 3
    p_value: float = 0.05
    seed: int = 0
    summary_stats_cells: int = 300
    n_scatter: int = 9
    split_half_corrected: bool = False
    device: Device = "auto"
    cpu_threads: int | None = None
    unseen_single_prediction: Literal["regulators", "neighbours"] = "regulators"
    unseen_regulator_z: float = 0.0
    unseen_neighbours: int = 5
    interaction_z: float = 3.0
    unseen_cells: int = 200
    ate_target_sum: float | Literal["median_library"] = 1e4
    cell_eval_cells: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_generated_cells", "iwelbo_particles", "iwelbo_batch_size", "top_de"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("n_negatives", "n_scatter"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.summary_stats_cells < 2:
            problems.append(f"summary_stats_cells must be at least 2, got {self.summary_stats_cells}")
        if self.summary_stats_cells > self.n_generated_cells:
            problems.append(
                f"summary_stats_cells ({self.summary_stats_cells}) cannot exceed "
                f"n_generated_cells ({self.n_generated_cells}): they are taken from the generated cells"
            )
        for name in ("generated_library_size", "ate_target_sum"):
            value = getattr(self, name)
            if value != "median_library" and not (isinstance(value, int | float) and value > 0):
                problems.append(f"{name} must be a positive number or median_library, got {value!r}")
        for name in ("jaccard_ks", "grn_ks"):
            values = getattr(self, name)
            if not values or any(k < 1 for k in values):
                problems.append(f"{name} must be a non-empty list of positive integers, got {list(values)}")
        if not 0.0 < self.grn_threshold < 1.0:
            problems.append(f"grn_threshold must be in (0, 1), got {self.grn_threshold}")
        if not 0.0 < self.grn_density <= 1.0:
            problems.append(f"grn_density must be in (0, 1], got {self.grn_density}")
        if not 0.0 < self.p_value < 1.0:
            problems.append(f"p_value must be in (0, 1), got {self.p_value}")
        if self.max_path_length < 1 and self.max_path_length != -1:
            problems.append(
                f"max_path_length must be at least 1 (or -1: unbounded), got {self.max_path_length}"
            )
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device {self.device!r} is not auto, cpu or cuda")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            problems.append(f"cpu_threads must be at least 1 or null, got {self.cpu_threads}")
        if self.unseen_single_prediction not in ("regulators", "neighbours"):
            problems.append(
                f"unseen_single_prediction must be regulators or neighbours, got {self.unseen_single_prediction!r}"
            )
        if self.unseen_neighbours < 1:
            problems.append(f"unseen_neighbours must be at least 1, got {self.unseen_neighbours}")
        if not self.unseen_regulator_z >= 0:
            problems.append(f"unseen_regulator_z must be non-negative, got {self.unseen_regulator_z}")
        if not self.interaction_z > 0:
            problems.append(f"interaction_z must be positive, got {self.interaction_z}")
        if self.unseen_cells < 0:
            problems.append(f"unseen_cells must be non-negative, got {self.unseen_cells}")
        if self.cell_eval_cells is not None and self.cell_eval_cells < 0:
            problems.append(f"cell_eval_cells must be non-negative (or null), got {self.cell_eval_cells}")
        if problems:
            raise ValueError("invalid EvaluationConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> EvaluationConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
