"""The design of the synthetic screen: everything drawn before the cells (design §9).

Used by :func:`gpo_vae.data.synthetic.simulate_perturbseq`, which then samples the cells.

- Genes: real HGNC symbols (``gene_symbols.txt``): the 13 ``MT-`` genes, ~80 ``RPS``/``RPL``
  genes, haemoglobins (``HBA1``…), the ordinary genes ``HBP1`` (which ``^HB[^P]`` must skip),
  ``HBS1L`` and ``HBEGF`` (which it catches, as in real data), perturbation targets from the RPE1
  essential screen and other expressed genes. Baseline shares: ``MT-`` genes ``mt_fraction`` of
  the counts, ribosomal genes ``ribo_fraction``, haemoglobins almost none, the rest log-normal
  (heavy-tailed, floored at 0.03 UMI per cell), targets twice as high.
- GRN: a DAG over genes in three tiers (with ``feedback_fraction`` > 0, negative feedback loops
  between regulators close cycles), regulators (the perturbed genes) → hubs (unperturbed
  transcription factors; ``TFAM`` drives the ``MT-`` genes) → leaves. "Active" regulators have
  edges to later regulators, to hubs and to leaves; hubs to leaves and later hubs; signed
  weights. The total effect of regulator p on gene g is the sum over paths of the product of
  weights (``R = (I − W)⁻¹``), so a knockdown moves grandchildren too. A fraction
  ``unreached_fraction`` of genes has no incoming edge at all.
- Targets: knockdown classes ("poor" knockdowns, "inert" targets without outgoing edges,
  "active"), a design CRISPRi efficiency each; per-perturbation library-size shifts; per-gene
  negative-binomial dispersions and basal-factor loadings.
- Optional shapes of real screens, each drawn after everything above so that a screen without
  them is unchanged: CRISPRa activation folds per target, dual-target combinations ``A+B``
  among the targets with effects, and per-batch (cell line) shifts of every gene's baseline
  share and of the library size.

The design draws from the first child of ``SeedSequence(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from gpo_vae.data.contract import GENE_ID_KEY

if TYPE_CHECKING:
    from gpo_vae.data.synthetic_config import SyntheticConfig

SYMBOLS_FILE = Path(__file__).with_name("gene_symbols.txt")
_MT_WEIGHTS = {  # relative MT- expression, roughly as in 10x data (MT-CO1 highest, MT-ND6 lowest)
    "MT-CO1": 20, "MT-CO3": 15, "MT-ATP6": 14, "MT-CO2": 13, "MT-CYB": 10, "MT-ND4": 7,
    "MT-ND1": 6, "MT-ND2": 5, "MT-ND3": 4, "MT-ND5": 2, "MT-ATP8": 2, "MT-ND4L": 1, "MT-ND6": 1,
}  # fmt: skip
_MT_HUB = "TFAM"
_FIXED_UMIS = {"HBS1L": 1.2, "HBEGF": 0.4, "HBP1": 0.8}
#: Downstream genes a pair must share to be drawn as a combination of a saturating screen.
MIN_SHARED_GENES = 5


@dataclass(frozen=True)
class ScreenDesign:
    """Everything drawn before the cells: genes, roles, GRN, targets and their total effects."""

    genes: pd.DataFrame  # var: index symbols, gene_id, sim_role
    targets: pd.DataFrame  # gene, gene_id, measured, knockdown_class, strong, efficiency, ...
    target_col: np.ndarray  # column of each target in var, -1 when not measured
    effect: np.ndarray  # (P + 1) × G total effect per unit log-signal; last row (controls) zero
    umi_shift: np.ndarray  # P + 1 log library-size shifts
    log_share: np.ndarray  # G baseline log shares
    inv_dispersion: np.ndarray  # G negative-binomial shape r (variance mu + mu² / r)
    loadings: np.ndarray  # K × G basal factor loadings
    network: pd.DataFrame
    combinations: np.ndarray  # C × 2 target codes of the dual perturbations (first < second)
    log_activation: np.ndarray  # P + 1 CRISPRa log fold of each target at full efficiency (0: CRISPRi)
    batch_shift: np.ndarray  # n_batches × G log baseline-share shift per batch (row 0 zero)
    batch_umi: np.ndarray  # n_batches log library-size shift per batch (0 for the first)
    saturation: float = 0.0  # downstream log effects pass through s·tanh(x / s); 0: clipped at ±4


def read_gene_symbols(path: str | Path = SYMBOLS_FILE) -> pd.DataFrame:
    """The shipped symbol table: ``symbol``, ``category``, and a stable ``gene_id`` (SYNTH + row)."""
    table = pd.read_csv(path, sep="\t", comment="#", names=["symbol", "category"])
    table["gene_id"] = [f"SYNTH{i:05d}" for i in range(len(table))]
    return table


def _signed(rng: np.random.Generator, magnitude: np.ndarray) -> np.ndarray:
    return magnitude * rng.choice([-1.0, 1.0], size=magnitude.size)


def _degree(rng: np.random.Generator, median: float, sigma: float, available: int) -> int:
    return int(min(available, round(rng.lognormal(np.log(max(median, 1.0)), sigma))))


def _choose_genes(config: SyntheticConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick targets (essential genes first) and measured genes; assign GRN roles."""
    table = read_gene_symbols().set_index("symbol")
    by_category = {c: table.index[table.category == c].to_numpy() for c in table.category.unique()}
    # Always measured: the MT- hub, and ordinary genes that HB-prefix rules trip over (HBP1 must not
    # match ^HB[^P]; HBS1L and HBEGF do, and keep the haemoglobin share off zero as in real data).
    special = {_MT_HUB, "HBP1", "HBS1L", "HBEGF"}
    candidates = [s for s in rng.permutation(by_category["essential"]) if s not in special]
    candidates += [
        s for s in rng.permutation(np.r_[by_category["tf"], by_category["gene"]]) if s not in special
    ]
    n_targets = config.n_perturbations
    targets = np.asarray(candidates[:n_targets])
    n_unmeasured = round(config.unmeasured_fraction * n_targets)
    unmeasured = set(rng.choice(targets, n_unmeasured, replace=False))
    ribo = rng.choice(by_category["ribo"], min(config.n_ribo_genes, by_category["ribo"].size), replace=False)
    fixed = [
        *by_category["mt"],
        *ribo,
        *by_category["hb"],
        *special,
        *(t for t in targets if t not in unmeasured),
    ]
    spare = np.asarray(candidates[n_targets:])
    n_fill = config.n_genes - len(fixed)
    if n_fill < 0 or n_fill > spare.size:
        raise ValueError(f"n_genes={config.n_genes} needs between {len(fixed)} and {len(fixed) + spare.size}")
    fill = rng.choice(spare, n_fill, replace=False)

    n_hubs = max(1, round(config.hub_fraction * config.n_genes) - 1)
    is_tf = (table.category.reindex(fill) == "tf").to_numpy()  # hubs: transcription factors first
    hubs = [*rng.permutation(fill[is_tf])[:n_hubs], *fill[~is_tf][: max(0, n_hubs - is_tf.sum())]]
    genes = pd.DataFrame(index=pd.Index(sorted([*fixed, *fill]), name=None))
    genes[GENE_ID_KEY] = table.gene_id.reindex(genes.index).to_numpy()
    role = pd.Series("leaf", index=genes.index)
    role[list(set(targets) - unmeasured)] = "regulator"
    role[[*hubs, _MT_HUB]] = "hub"
    free = role.index[(role == "leaf") & ~role.index.str.startswith(("MT-", "HB"))].to_numpy()
    hb = role.index[role.index.str.match(r"^HB[AB-DEGMQZ]\d*$")]  # the haemoglobins proper
    n_unreached = max(0, round(config.unreached_fraction * config.n_genes) - len(hb))
    role[[*hb, *rng.choice(free, min(n_unreached, free.size), replace=False)]] = "unreached"
    genes["sim_role"] = role.to_numpy()

    target_table = pd.DataFrame({"gene": targets, GENE_ID_KEY: table.gene_id.reindex(targets).to_numpy()})
    target_table["measured"] = [t not in unmeasured for t in targets]
    n_poor = round(config.poor_knockdown_fraction * n_targets)
    n_inert = max(0, round(config.weak_fraction * n_targets) - n_poor)
    classes = np.array(["poor"] * n_poor + ["inert"] * n_inert + ["active"] * (n_targets - n_poor - n_inert))
    target_table["knockdown_class"] = rng.permutation(classes)
    target_table["strong"] = target_table.knockdown_class == "active"
    return genes, target_table.sort_values("gene", ignore_index=True)


def _grn(
    config: SyntheticConfig, rng: np.random.Generator, genes: pd.DataFrame, targets: pd.DataFrame
) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw the DAG (regulators → hubs → leaves) and each target's total effect on var genes."""
    nodes = pd.Index([*genes.index, *targets.gene[~targets.measured]])
    node = pd.Series(np.arange(nodes.size), index=nodes)
    regulators = node[rng.permutation(targets.gene.to_numpy())].to_numpy()  # a topological order
    has_edges = targets.set_index("gene").knockdown_class.reindex(nodes[regulators]).to_numpy() != "inert"
    hubs = node[rng.permutation(genes.index[genes.sim_role == "hub"])].to_numpy()
    mt_hub = node[_MT_HUB]
    others = hubs[hubs != mt_hub]
    leaves = node[genes.index[(genes.sim_role == "leaf") & ~genes.index.str.startswith("MT-")]].to_numpy()
    mt = node[genes.index[genes.index.str.startswith("MT-")]].to_numpy()
    src, dst, weight = [], [], []

    def connect(source: int, children: np.ndarray, weights: np.ndarray) -> None:
        src.extend([source] * children.size)
        dst.extend(children.tolist())
        weight.extend(weights.tolist())

    for k, regulator in enumerate(regulators):
        if not has_edges[k]:
            continue
        later = regulators[k + 1 :]
        n = min(rng.poisson(config.regulator_children), later.size)
        connect(regulator, rng.choice(later, n, replace=False), _signed(rng, rng.uniform(0.4, 0.9, n)))
        n = min(1 + rng.poisson(config.regulator_hubs - 1.0), others.size)
        connect(regulator, rng.choice(others, n, replace=False), _signed(rng, rng.uniform(0.4, 0.9, n)))
        if rng.random() < config.mt_link_probability:
            connect(regulator, np.array([mt_hub]), _signed(rng, rng.uniform(0.2, 0.6, 1)))
        n = _degree(rng, config.direct_children * leaves.size, 0.8, leaves.size)
        strength = np.clip(rng.lognormal(np.log(0.35), 0.5, n), 0.1, 1.5)
        connect(regulator, rng.choice(leaves, n, replace=False), _signed(rng, strength))
    for k, hub in enumerate(hubs):
        if nodes[hub] == _MT_HUB:  # the mitochondrial transcription factor drives all MT- genes
            connect(hub, mt, rng.uniform(0.25, 0.4, mt.size))
            continue
        later = hubs[k + 1 :]
        n = min(rng.poisson(0.3), later.size)
        connect(hub, rng.choice(later, n, replace=False), _signed(rng, rng.uniform(0.4, 0.9, n)))
        n = _degree(rng, config.hub_children * leaves.size, 0.7, leaves.size)
        strength = np.clip(rng.lognormal(np.log(0.3), 0.5, n), 0.08, 1.2)
        connect(hub, rng.choice(leaves, n, replace=False), _signed(rng, strength))

    if config.feedback_fraction > 0:  # drawn last: a screen without loops keeps every draw above
        _feedback_loops(config, rng, set(regulators.tolist()), src, dst, weight)
    w = sp.csr_matrix((weight, (src, dst)), shape=(nodes.size, nodes.size))
    step = w[node[targets.gene].to_numpy()]
    if config.feedback_fraction > 0:
        # paths of every length around the loops: step (I − W)⁻¹, finite as W's spectral radius < 1
        total = sp.csr_matrix(np.linalg.solve((np.eye(nodes.size) - w.toarray()).T, step.toarray().T).T)
    else:
        total = step.copy()
        while step.nnz:  # sum over paths of every length; ends because the graph is acyclic
            step = step @ w
            total = total + step
    network = pd.DataFrame({"source": nodes[src], "target": nodes[dst], "weight": weight})
    return network.sort_values(["source", "target"], ignore_index=True), total[:, : len(genes)].toarray()


#: Largest spectral radius of a GRN with feedback loops (the path sums must converge).
MAX_LOOP_RADIUS = 0.8


def _feedback_loops(
    config: SyntheticConfig,
    rng: np.random.Generator,
    regulators: set[int],
    src: list[int],
    dst: list[int],
    weight: list[float],
) -> None:
    """Close a share ``feedback_fraction`` of the regulator → regulator edges into negative
    feedback loops (child → parent, the opposite sign), appended to the edge lists; the loop
    weights shrink until the graph's spectral radius is at most :data:`MAX_LOOP_RADIUS`."""
    forward = [
        i for i, (a, b) in enumerate(zip(src, dst, strict=True)) if a in regulators and b in regulators
    ]
    chosen = [i for i in forward if rng.random() < config.feedback_fraction]
    if not chosen:
        return
    start = len(src)
    for i in chosen:
        src.append(dst[i])
        dst.append(src[i])
        weight.append(-np.sign(weight[i]) * rng.uniform(0.3, 0.6))
    n = max(max(src), max(dst)) + 1
    dense = np.zeros((n, n))
    np.add.at(dense, (np.array(src), np.array(dst)), np.array(weight))
    radius = float(np.abs(np.linalg.eigvals(dense)).max())
    if radius > MAX_LOOP_RADIUS:
        factor = MAX_LOOP_RADIUS / radius
        for i in range(start, len(weight)):
            weight[i] *= factor


def _baseline(config: SyntheticConfig, rng: np.random.Generator, genes: pd.DataFrame) -> np.ndarray:
    """Log baseline share of each gene in a cell's counts."""
    symbols = genes.index
    share = np.zeros(len(genes))
    is_mt = symbols.str.startswith("MT-")
    share[is_mt] = (
        config.mt_fraction * np.array([_MT_WEIGHTS[s] for s in symbols[is_mt]]) / sum(_MT_WEIGHTS.values())
    )
    is_ribo = symbols.str.match(r"^RP[SL]")
    ribo = rng.lognormal(0.0, 0.5, is_ribo.sum())
    share[is_ribo] = config.ribo_fraction * ribo / ribo.sum()
    is_hb = symbols.str.match(r"^HB[AB-DEGMQZ]\d*$")
    share[is_hb] = rng.uniform(0.005, 0.03, is_hb.sum()) / config.median_umi  # barely expressed
    # Typical UMIs per cell of the HB-prefixed ordinary genes: they set the haemoglobin QC metric.
    is_fixed = symbols.isin(list(_FIXED_UMIS))
    share[is_fixed] = [_FIXED_UMIS[s] / config.median_umi for s in symbols[is_fixed]]
    rest = ~(is_mt | is_ribo | is_hb | is_fixed)
    raw = rng.lognormal(0.0, config.expression_sigma, rest.sum()) * np.where(
        genes.sim_role[rest] == "regulator", 2.0, 1.0
    )
    remaining = 1.0 - share.sum()
    # Screens keep genes above ~0.03 UMI per cell: floor the tail, then renormalise.
    raw = np.maximum(raw / raw.sum() * remaining, 0.03 / config.median_umi)
    share[rest] = raw / raw.sum() * remaining
    return np.log(share)


def draw_design(config: SyntheticConfig) -> ScreenDesign:
    """Draw genes, GRN, targets and per-gene parameters from the first child of ``SeedSequence(seed)``."""
    rng = np.random.default_rng(np.random.SeedSequence(config.seed).spawn(3)[0])
    genes, targets = _choose_genes(config, rng)
    network, effect = _grn(config, rng, genes, targets)
    good = np.clip(1.0 - np.exp(rng.normal(np.log(0.06), 0.8, len(targets))), 0.3, 0.998)
    targets["efficiency"] = np.where(
        targets.knockdown_class == "poor", rng.uniform(0.15, 0.55, len(targets)), good
    )
    col = pd.Series(np.arange(len(genes)), index=genes.index)
    target_col = col.reindex(targets.gene).fillna(-1).to_numpy(dtype=np.int64)
    targets["n_direct_targets"] = (
        network.source.value_counts().reindex(targets.gene).fillna(0).astype(int).to_numpy()
    )
    targets["n_reached_genes"] = (effect != 0).sum(axis=1)
    has_effects = (targets.knockdown_class != "inert").to_numpy()
    n_genes = len(genes)
    factors = config.n_basal_factors
    loadings = rng.normal(0.0, config.basal_sd, (factors, n_genes)) * (rng.random((factors, n_genes)) < 0.3)
    umi_shift = np.r_[rng.normal(0.0, config.perturbation_umi_sigma, len(targets)) * has_effects, 0.0]
    log_share = _baseline(config, rng, genes).astype(np.float32)
    inv_dispersion = 1.0 / np.clip(
        rng.lognormal(np.log(config.dispersion), 0.5, n_genes), 0.02, max(2.0, 4 * config.dispersion)
    )
    # The optional shapes draw last: a screen without them keeps every earlier draw.
    combinations = _combinations(
        config, rng, has_effects, effect if config.interaction == "saturating" else None
    )
    log_activation = np.zeros(len(targets) + 1)
    if config.modality == "crispra":
        folds = np.clip(
            rng.lognormal(np.log(config.activation_fold), config.activation_sigma, len(targets)), 1.5, 100
        )
        log_activation[:-1] = np.log(folds)
    batch_shift = np.zeros((max(config.n_batches, 1), n_genes), dtype=np.float32)
    batch_umi = np.zeros(max(config.n_batches, 1))
    if config.n_batches > 1:
        batch_shift[1:] = rng.normal(0.0, config.batch_effect, (config.n_batches - 1, n_genes))
        batch_umi[1:] = rng.normal(0.0, config.batch_umi_sigma, config.n_batches - 1)
    return ScreenDesign(
        genes=genes,
        targets=targets,
        target_col=target_col,
        effect=np.vstack([effect * config.effect_scale, np.zeros((1, n_genes))]).astype(np.float32),
        # Only perturbations with downstream effects change the cells' size (and so their UMIs).
        umi_shift=umi_shift,
        log_share=log_share,
        inv_dispersion=inv_dispersion,
        loadings=loadings.astype(np.float32),
        network=network,
        combinations=combinations,
        log_activation=log_activation,
        batch_shift=batch_shift,
        batch_umi=batch_umi,
        saturation=config.saturation if config.interaction == "saturating" else 0.0,
    )


def _combinations(
    config: SyntheticConfig,
    rng: np.random.Generator,
    has_effects: np.ndarray,
    effect: np.ndarray | None = None,
) -> np.ndarray:
    """``n_combinations`` distinct pairs of targets (codes, first < second), drawn among the
    targets with downstream effects when there are enough of them.

    With ``effect`` (P × G total effects), only pairs that reach at least
    :data:`MIN_SHARED_GENES` genes in common are drawn (when there are enough of them): a pair
    without shared downstream genes cannot interact.
    """
    pool = np.flatnonzero(has_effects)
    if pool.size < 2:
        pool = np.arange(has_effects.size)
    pairs = np.array([(a, b) for i, a in enumerate(pool) for b in pool[i + 1 :]], dtype=np.int64)
    if effect is not None and len(pairs):
        reached = (effect[: has_effects.size] != 0).astype(np.int64)
        shared = (reached @ reached.T)[pairs[:, 0], pairs[:, 1]]
        if (shared >= MIN_SHARED_GENES).sum() >= config.n_combinations:
            pairs = pairs[shared >= MIN_SHARED_GENES]
    if config.n_combinations == 0 or pairs.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if config.n_combinations > len(pairs):
        raise ValueError(f"n_combinations={config.n_combinations} exceeds the {len(pairs)} possible pairs")
    chosen = np.sort(rng.choice(len(pairs), config.n_combinations, replace=False))
    return pairs[chosen]
