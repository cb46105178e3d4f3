"""How a screen's counts file is laid out: which obs column, control label, matrix, batches.

Public screens are saved in many ways: the perturbation in a column of any name, controls
called ``non-targeting``, ``NT`` or ``ctrl``, raw counts in ``X`` or in ``layers["counts"]``
beside normalised ``X``, labels per guide (``TP53_1``, ``TP53_2``), dual perturbations
``A+B``, several cell lines in one file, genes indexed by Ensembl id. A :class:`ScreenLayout`
says how to read one; :func:`gpo_vae.data.contract.read_counts_h5ad` turns the file into the raw
contract. Plain data, no scientific imports: the workflow builds and validates it before any
task runs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gpo_vae.errors import UserError

PERTURBATION_KEY = "gene"
CONTROL_LABEL = "non-targeting"
#: The batch column of the raw contract (``obs[BATCH_KEY]``), present when a layout names one.
BATCH_KEY = "batch"
#: Separator of the genes of a combination in canonical labels.
CANONICAL_SEPARATOR = "+"
#: Counts matrices tried, in order, when ``counts_layer`` is ``auto`` and ``X`` is not counts.
AUTO_COUNTS_LAYERS = ("counts", "raw_counts", "umi_counts", "umis", "raw")
#: A guide label's gene is what precedes a guide suffix such as ``_1``, ``-2``, ``_sg3``, ``_g1``.
AUTO_GUIDE_PATTERN = r"^(?P<gene>.+?)[_.-](?:sg|g|guide|sgRNA)?\d+$"

DuplicateGenes = Literal["sum", "first", "error"]


class LayoutError(UserError, ValueError):
    """An impossible layout option; the message names the option and what is allowed."""


@dataclass(frozen=True)
class ScreenLayout:
    """How to read one counts ``.h5ad`` into the raw contract.

    Attributes
    ----------
    perturbation_key
        ``obs`` column naming each cell's perturbation (``--perturbation-key``).
    control_label
        Its value for control cells (``--control-label``); matched ignoring case.
    counts_layer
        Where the raw counts are: ``auto`` (``X`` when it holds counts, else the first of
        :data:`AUTO_COUNTS_LAYERS` that does, else ``.raw``), ``X``, ``raw`` (``adata.raw.X``) or
        the name of a layer (``--counts-layer``).
    batch_key
        ``obs`` column of the batch or cell line (``--batch-key``); none when the file is one batch.
    guide_pattern
        Maps guide-level labels to genes: a regular expression whose group ``gene`` (or first
        group) is the gene, ``auto`` (:data:`AUTO_GUIDE_PATTERN`, applied only when every label
        matches it), or ``none`` (``--guide-pattern``).
    combination_separator
        Separates the genes of a cell that received several perturbations (``A+B``);
        ``--combination-separator``.
    duplicate_genes
        A gene symbol on several columns: ``sum`` their counts, keep the ``first``, or stop with
        an ``error`` naming them (``--duplicate-genes``).
    """

    perturbation_key: str = PERTURBATION_KEY
    control_label: str = CONTROL_LABEL
    counts_layer: str = "auto"
    batch_key: str | None = None
    guide_pattern: str = "auto"
    combination_separator: str = CANONICAL_SEPARATOR
    duplicate_genes: DuplicateGenes = "sum"

    def __post_init__(self) -> None:
        if not self.perturbation_key:
            raise LayoutError("--perturbation-key must name an obs column")
        if not self.control_label:
            raise LayoutError("--control-label must not be empty")
        if not self.combination_separator or self.combination_separator.isalnum():
            raise LayoutError(
                f"--combination-separator {self.combination_separator!r} must be a non-alphanumeric "
                "string such as '+', '|' or '__'"
            )
        if self.duplicate_genes not in ("sum", "first", "error"):
            raise LayoutError(f"--duplicate-genes must be sum, first or error, got {self.duplicate_genes!r}")
        if self.guide_pattern not in ("auto", "none"):
            try:
                compiled = re.compile(self.guide_pattern)
            except re.error as err:
                raise LayoutError(
                    f"--guide-pattern {self.guide_pattern!r} is not a regular expression: {err}"
                ) from None
            if compiled.groups < 1:
                raise LayoutError(
                    f"--guide-pattern {self.guide_pattern!r} needs a group around the gene, e.g. '^(.+)_\\d+$'"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScreenLayout:
        data = dict(data or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise LayoutError(
                f"unknown layout options {unknown}; the options are {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)


def layout_notes(record: dict[str, Any]) -> list[str]:
    """What reading a file decided (``uns["layout_record"]`` of the raw contract), in words."""
    notes = [f"counts from {record.get('counts', 'X')}"]
    if record.get("symbol_column"):
        notes.append(f"gene symbols from var[{record['symbol_column']!r}]")
    if record.get("control_label"):
        notes.append(f"controls labelled {record['control_label']!r}")
    if record.get("guide_pattern"):
        genes = record.get("guides_per_gene") or {}
        notes.append(f"guide labels mapped to {len(genes)} genes with {record['guide_pattern']}")
    if record.get("combinations"):
        combinations = record["combinations"]
        separator = record.get("combination_separator", CANONICAL_SEPARATOR)
        lacking = record.get("combinations_without_singles") or []
        example = combinations[0]
        notes.append(
            f"{len(combinations)} combinations cut on {separator!r} (e.g. {example} → "
            f"{' + '.join(example.split(CANONICAL_SEPARATOR))})"
            + (
                f", {len(lacking)} without every single in the file (trained and predicted; left out of "
                f"the additive baseline), e.g. {lacking[0]}"
                if lacking
                else ""
            )
        )
    if record.get("case_matched"):
        notes.append(f"{len(record['case_matched'])} target genes matched ignoring case")
    if record.get("id_matched"):
        notes.append(f"{len(record['id_matched'])} target genes matched by Ensembl id")
    if record.get("duplicate_genes"):
        notes.append(
            f"{len(record['duplicate_genes'])} duplicate gene symbols ({record.get('duplicate_genes_resolved')}): "
            + ", ".join(record["duplicate_genes"][:5])
        )
    return notes
