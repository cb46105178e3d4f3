"""Settings of the preprocessing stage (design §2–§5), with the published defaults.

Plain dataclasses with no scientific imports: the workflow reads and validates run configs
without loading scanpy or anndata.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Backend = Literal["auto", "cpu", "rapids"]
#: MAD multiples of the QC flags (design §2).
DEFAULT_NMADS = (3, 4, 5)
DEFAULT_TARGET_SUM = 1e4


@dataclass(frozen=True)
class PerturbationFilterConfig:
    """Thresholds of the perturbation filters (design §3).

    ``min_degs``, ``max_knockdown`` and ``min_filtered_cells`` define the strong perturbations from
    the summary statistics; they are applied upstream where ``strong_genes`` is computed and are
    kept here so one config documents every threshold of the stage.
    """

    min_degs: int = 50
    max_knockdown: float = -0.3
    min_filtered_cells: int = 25
    knockdown_percentile: float = 10.0
    min_cells: int = 100
    keep_unknown_perturbations: bool = False
    target_sum: float = DEFAULT_TARGET_SUM

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
    """Splits (design §5): random by cell 64/16/20, or held-out perturbations in test only."""

    mode: Literal["random", "heldout_perturbations"] = "random"
    fractions: tuple[float, float, float] = (0.64, 0.16, 0.20)
    heldout_fraction: float = 0.2

    def __post_init__(self) -> None:
        if abs(sum(self.fractions) - 1) > 1e-9 or min(self.fractions) <= 0:
            raise ValueError(f"fractions must be positive and sum to 1, got {self.fractions}")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclass(frozen=True)
class DEGConfig:
    """FC3 genes (design §4): |logFC| > lfc and adjusted p < pval_adj, on training cells."""

    lfc: float = 3.0
    pval_adj: float = 0.01
    restrict_to_hvg: bool = False
    tie_correct: bool = True


@dataclass(frozen=True)
class PairingConfig:
    """OT pairing (design §5): entropic by default (reg 1.0, cost Euclidean / 100)."""

    method: Literal["sinkhorn", "emd", "hungarian"] = "sinkhorn"
    reg: float = 1.0
    cost_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.reg <= 0 or self.cost_scale <= 0:
            raise ValueError("reg and cost_scale must be positive")


@dataclass(frozen=True)
class PreprocessConfig:
    """Every setting of the preprocessing stage, with the published defaults."""

    seed: int = 0
    target_sum: float = 1e4
    counterfactual_cells: int = 50
    filters: PerturbationFilterConfig = field(default_factory=PerturbationFilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    deg: DEGConfig = field(default_factory=DEGConfig)
    pairing: PairingConfig = field(default_factory=PairingConfig)

    def __post_init__(self) -> None:
        if self.counterfactual_cells < 1:
            raise ValueError(f"counterfactual_cells must be >= 1, got {self.counterfactual_cells}")
