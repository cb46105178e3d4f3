"""Settings of the preprocessing stage (design §2–§5), with the published defaults.

Plain dataclasses with no scientific imports: the workflow reads and validates run configs
without loading scanpy or anndata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

Backend = Literal["auto", "cpu", "rapids"]
#: How the screen perturbs its targets; ``auto`` reads it from the measured targets' change.
Modality = Literal["auto", "crispri", "crispra", "knockout"]
#: Genes of the Replogle 2022 RPE1 counts file, on which CausalBench's ``> 50 DEGs`` rule was set.
REPLOGLE_GENES = 8749
#: MAD multiples of the QC flags (design §2).
DEFAULT_NMADS = (3, 4, 5)
DEFAULT_TARGET_SUM = 1e4


@dataclass(frozen=True)
class PerturbationFilterConfig:
    """Thresholds of the perturbation filters (design §3), read by modality.

    Every count threshold ``min_*`` keeps what has AT LEAST that many (``min_degs: 0`` keeps
    every perturbation, ``min_cells: 50`` keeps one with exactly 50 cells); CausalBench's "more
    than 50 DEGs", "more than 25 cells" and "more than 100 cells" are ``min_degs: 51``,
    ``min_filtered_cells: 26`` and ``min_cells: 101``.

    Strong perturbations, from the summary statistics: at least ``min_degs`` DEGs, at least
    ``min_filtered_cells`` QC-passing cells and an on-target change of at most ``max_knockdown``
    (CRISPRi), at least ``|max_knockdown|`` (CRISPRa) or any (knockout). ``min_degs: auto``
    scales CausalBench's "more than 50" (set on Replogle's 8,749 genes) to the genes measured:
    at least ``max(3, round(50 · G / 8749)) + 1``, 4 on a 500-gene panel. A target that is not
    measured (or not expressed in controls) has no on-target change: ``unmeasured_targets``
    keeps or drops it. Then the on-target cell filter: CRISPRi keeps a cell whose target is at
    most the controls' ``knockdown_percentile``-th percentile, CRISPRa one above the
    ``(100 − knockdown_percentile)``-th, knockout every cell. Last, at least ``min_cells`` cells.

    The singles ``A`` and ``B`` of a kept pair ``A+B`` are kept whatever their DEGs, on-target
    change and cells (they are the inputs of the pair's prediction); their cells still pass the
    on-target cell filter. Fewer than ``min_perturbations`` kept perturbations stop the run
    (:class:`~gpo_vae.preprocessing.filter_table.PerturbationFilterError`): a GRN of one or two
    nodes and a verdict over them would mean nothing. ``min_perturbations: 1`` proceeds.
    """

    min_degs: int | Literal["auto"] = 51
    max_knockdown: float = -0.3
    min_filtered_cells: int = 26
    knockdown_percentile: float = 10.0
    min_cells: int = 101
    keep_unknown_perturbations: bool = False
    unmeasured_targets: Literal["keep", "drop"] = "keep"
    min_perturbations: int = 3
    target_sum: float = DEFAULT_TARGET_SUM

    def __post_init__(self) -> None:
        if not 0.0 < self.knockdown_percentile < 100.0:
            raise ValueError(f"knockdown_percentile must be in (0, 100), got {self.knockdown_percentile}")
        if self.min_cells < 1:
            raise ValueError(f"min_cells must be at least 1, got {self.min_cells}")
        if self.min_perturbations < 1:
            raise ValueError(f"min_perturbations must be at least 1, got {self.min_perturbations}")
        if self.min_degs != "auto" and self.min_degs < 0:
            raise ValueError(f"min_degs must be auto or >= 0, got {self.min_degs}")
        if self.unmeasured_targets not in ("keep", "drop"):
            raise ValueError(f"unmeasured_targets must be keep or drop, got {self.unmeasured_targets!r}")

    def resolved_min_degs(self, n_genes: int) -> int:
        """``min_degs``, with ``auto`` scaled to ``n_genes`` measured genes (class docstring)."""
        if self.min_degs == "auto":
            return max(3, round(50 * n_genes / REPLOGLE_GENES)) + 1
        return int(self.min_degs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PerturbationFilterConfig:
        data = dict(data or {})
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown perturbation-filter settings {sorted(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QCConfig:
    """QC flags (design §2). ``fit_on="train"`` keeps test cells out of the thresholds."""

    nmads: tuple[float, ...] = tuple(float(t) for t in DEFAULT_NMADS)
    default_nmads: float = 3.0
    doublets: bool = True
    backend: Backend = "auto"
    max_cells_per_chunk: int = 20_000
    fit_on: Literal["train", "all"] = "train"

    def __post_init__(self) -> None:
        if self.default_nmads not in self.nmads:
            raise ValueError(f"default_nmads {self.default_nmads} must be one of nmads {self.nmads}")


@dataclass(frozen=True)
class SplitConfig:
    """Splits (design §5): random by cell 64/16/20, or held-out perturbations in test only.

    ``heldout_perturbations`` puts ``heldout_fraction`` of the perturbations (and every pair
    holding a held-out gene) in test only; ``heldout_combinations`` puts that fraction of the
    ``A+B`` pairs in test only and keeps their singles in training, or with ``unseen_single``
    holds one single of each held-out pair out too.

    ``stratify`` splits every perturbation (and batch) in the fractions instead of drawing
    cells regardless of their label (the published way). ATEs are measured against the test
    split's controls: a split leaving fewer than ``min_test_controls`` control cells in test
    (per batch) moves control cells from train to test while train keeps at least as many as
    test. When that cannot reach ``min_test_controls`` (a screen with ~100 controls),
    ``scarce_controls: balance`` moves as many as keep train and test equal and records the
    batch as scarce (the report says how many controls each ATE used and that its numbers are
    noisy); ``stop`` stops the run instead. Either way no test cell is seen in training.
    """

    mode: Literal["random", "heldout_perturbations", "heldout_combinations"] = "random"
    fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)
    heldout_fraction: float = 0.2
    unseen_single: bool = False
    stratify: bool = False
    min_test_controls: int = 50
    scarce_controls: Literal["balance", "stop"] = "balance"

    def __post_init__(self) -> None:
        if self.min_test_controls < 1:
            raise ValueError(f"min_test_controls must be at least 1, got {self.min_test_controls}")
        if self.scarce_controls not in ("balance", "stop"):
            raise ValueError(f"scarce_controls must be balance or stop, got {self.scarce_controls!r}")
        if abs(sum(self.fractions) - 1) > 1e-9 or min(self.fractions) <= 0:
            raise ValueError(f"fractions must be positive and sum to 1, got {self.fractions}")
        if not 0 < self.heldout_fraction <= 1 or (
            self.heldout_fraction == 1 and self.mode != "heldout_combinations"
        ):
            raise ValueError(
                f"heldout_fraction must be in (0, 1) (up to 1 for heldout_combinations), got "
                f"{self.heldout_fraction}"
            )
        if self.unseen_single and self.mode != "heldout_combinations":
            raise ValueError("unseen_single applies to mode heldout_combinations only")


@dataclass(frozen=True)
class DEGConfig:
    """FC3 genes (design §4): |logFC| > lfc and adjusted p < pval_adj, on training cells."""

    lfc: float = 3.0
    pval_adj: float = 0.01
    restrict_to_hvg: bool = False
    tie_correct: bool = True


@dataclass(frozen=True)
class PairingConfig:
    """OT pairing (design §5): entropic by default (reg 1.0, cost Euclidean / 100).

    ``features``: ``targets`` pairs on the log-normalised measured perturbed genes (published),
    ``pca`` on the top ``n_pcs`` principal components of the ``n_hvgs`` most variable
    log-normalised genes (fitted on training cells), ``auto`` on the targets when at least
    ``min_measured_targets`` are measured and on the components otherwise (a panel that does
    not measure the targets).

    ``max_controls``: at most this many controls of a split (and batch) are the candidates a
    group is paired with, drawn once per split with the preprocessing seed (``null``: all, as
    published). A screen the size of the published ones holds fewer (the RPE1-shaped simulated
    screen: 8 % of 242,438 cells, about 19,400 controls in all), so its pairing is the
    published one; on larger screens each group's cost matrix stops growing with the controls,
    and the pairing's time grows with the cells, not their square.
    """

    method: Literal["sinkhorn", "emd", "hungarian"] = "sinkhorn"
    reg: float = 1.0
    cost_scale: float = 100.0
    features: Literal["auto", "targets", "pca"] = "auto"
    min_measured_targets: int = 5
    n_pcs: int = 20
    n_hvgs: int = 2000
    max_controls: int | None = 20_000

    def __post_init__(self) -> None:
        if self.reg <= 0 or self.cost_scale <= 0:
            raise ValueError("reg and cost_scale must be positive")
        if self.max_controls is not None and self.max_controls < 1:
            raise ValueError(
                f"pairing.max_controls must be at least 1 or null (all), got {self.max_controls}"
            )
        if self.n_pcs < 1 or self.n_hvgs < 2 or self.min_measured_targets < 1:
            raise ValueError("n_pcs and min_measured_targets must be at least 1, n_hvgs at least 2")


#: What to do with a file the GPO-VAE authors already processed (:mod:`gpo_vae.preprocessing.published`).
PreprocessMode = Literal["auto", "published", "ours"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Every setting of the preprocessing stage, with the published defaults.

    ``mode``: ``published`` keeps the cells, perturbations, DE genes, split and pairing of a file
    the GPO-VAE authors already processed, as their code trains on it; ``ours`` runs every step
    below on any file; ``auto`` is ``published`` for such a file and ``ours`` otherwise.
    """

    mode: PreprocessMode = "auto"
    seed: int = 0
    modality: Modality = "auto"
    target_sum: float = 1e4
    counterfactual_cells: int = 50
    filters: PerturbationFilterConfig = field(default_factory=PerturbationFilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    deg: DEGConfig = field(default_factory=DEGConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)

    def __post_init__(self) -> None:
        if self.mode not in get_args(PreprocessMode):
            raise ValueError(f"mode must be one of {', '.join(get_args(PreprocessMode))}, got {self.mode!r}")
        if self.modality not in ("auto", "crispri", "crispra", "knockout"):
            raise ValueError(f"modality must be auto, crispri, crispra or knockout, got {self.modality!r}")
        if self.counterfactual_cells < 1:
            raise ValueError(f"counterfactual_cells must be >= 1, got {self.counterfactual_cells}")
