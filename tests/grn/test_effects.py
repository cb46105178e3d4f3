"""Effect statistics of the node genes and the mask prior made from them (gpo_vae_plus)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from gpo_vae.grn.effects import (
    MAX_PRIOR_LOGIT,
    SELF_LOGIT,
    effect_prior_logits,
    effect_zscores,
    node_gene_columns,
    prior_logit,
)

NODES = ["A", "B", "C", "D"]  # A, B, C perturbed; D a DEG node
GENES = ["A", "B", "D", "other", "C"]


def toy_screen(seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """40 controls, 30 cells each of A, B, C, and 10 A+B cells; A doubles D, C halves B."""
    rng = np.random.default_rng(seed)
    groups = ["ctrl"] * 40 + ["A"] * 30 + ["B"] * 30 + ["C"] * 30 + ["A+B"] * 10
    rate = np.full((len(groups), len(GENES)), 20.0)
    for i, group in enumerate(groups):
        if "A" in group:
            rate[i, GENES.index("D")] *= 2.0
        if group == "C":
            rate[i, GENES.index("B")] *= 0.5
    counts = rng.poisson(rate).astype(np.float32)
    dosage = np.zeros((len(groups), len(NODES)), dtype=np.float32)
    for i, group in enumerate(groups):
        for gene in group.split("+"):
            if gene in NODES:
                dosage[i, NODES.index(gene)] = 1.0
    return sp.csr_matrix(counts), sp.csr_matrix(dosage), np.array(groups)


def hand_z(counts: sp.csr_matrix, groups: np.ndarray, group: str, gene: str) -> float:
    x = counts.toarray()
    log = np.log2(1.0 + x * (1e4 / x.sum(1, keepdims=True)))[:, GENES.index(gene)]
    control = log[groups == "ctrl"]
    cells = log[groups == group]
    return float(np.sqrt(len(cells)) * ((cells - control.mean()) / control.std(ddof=1)).mean())


def test_node_gene_columns_marks_unmeasured_nodes() -> None:
    assert node_gene_columns(["A", "X", "C"], GENES).tolist() == [0, -1, 4]


def test_effect_zscores_equal_the_hand_formula_and_skip_combinations() -> None:
    counts, dosage, groups = toy_screen()
    rows = np.arange(counts.shape[0])
    z = effect_zscores(counts, dosage, rows, NODES, GENES, 3)
    assert z.shape == (4, 4)
    assert z[0, 3] == pytest.approx(hand_z(counts, groups, "A", "D"), rel=1e-6)  # A+B cells left out
    assert z[2, 1] == pytest.approx(hand_z(counts, groups, "C", "B"), rel=1e-6)
    assert z[0, 3] > 5 and z[2, 1] < -5  # the planted effects stand out
    assert abs(z[1, 3]) < 4  # B does nothing to D
    assert (z[3] == 0).all()  # a DEG node is never dosed


def test_effect_zscores_read_only_the_rows_given_and_zero_unmeasured_columns() -> None:
    counts, dosage, groups = toy_screen()
    keep = np.flatnonzero(groups != "C")
    z = effect_zscores(counts, dosage, keep, NODES, GENES, 3)
    assert (z[2] == 0).all()  # C has no cell among the rows
    unmeasured = effect_zscores(counts, dosage, keep, ["A", "B", "C", "absent"], GENES, 3)
    assert (unmeasured[:, 3] == 0).all()


def test_effect_zscores_use_each_batch_own_controls() -> None:
    counts, dosage, groups = toy_screen()
    batch = np.zeros(counts.shape[0], dtype=np.int64)
    batch[groups == "B"] = 1  # every B cell, and half the controls, come from a second cell line
    batch[np.flatnonzero(groups == "ctrl")[::2]] = 1
    shifted = counts.toarray()
    shifted[batch == 1, GENES.index("D")] *= 3.0  # which expresses D three times as much
    rows = np.arange(len(batch))
    pooled = effect_zscores(sp.csr_matrix(shifted), dosage, rows, NODES, GENES, 3)
    per_batch = effect_zscores(sp.csr_matrix(shifted), dosage, rows, NODES, GENES, 3, batch)
    # B does nothing to D: against its own line's controls it stays near 0, pooled it does not
    assert abs(per_batch[1, 3]) < 4 < abs(pooled[1, 3])


def test_effect_zscores_block_by_block_equal_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The perturbed cells are read a block at a time: blocks of 7 cells (cutting groups and
    batches) give the same statistic, bit for bit, as one block of every cell."""
    from gpo_vae.grn import effects

    counts, dosage, groups = toy_screen(seed=3)
    batch = (np.arange(counts.shape[0]) % 2).astype(np.int64)
    rows = np.flatnonzero(groups != "B")
    whole = effect_zscores(counts, dosage, rows, NODES, GENES, 3, batch)
    monkeypatch.setattr(effects, "BLOCK_CELLS", 7)
    blocks = effect_zscores(counts, dosage, rows, NODES, GENES, 3, batch)
    assert np.array_equal(whole, blocks) and np.abs(whole).sum() > 0


def test_effect_prior_logits_calibrate_the_density() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 40))
    z[:10, 20:] = 0.0
    logits = effect_prior_logits(z, 10, 0.1, prior_logit(0.05))
    candidates = np.zeros_like(z, dtype=bool)
    candidates[:10] = True
    np.fill_diagonal(candidates, False)
    share = (logits[candidates] > 0).mean()
    assert share == pytest.approx(0.1, abs=0.02)
    assert (np.diag(logits)[:10] == SELF_LOGIT).all()
    assert np.allclose(logits[10:], prior_logit(0.05))  # DEG rows are never dosed
    assert np.abs(logits).max() <= MAX_PRIOR_LOGIT
    # a larger |z| never gets a smaller logit
    order = np.argsort(np.abs(z[candidates]))
    assert (np.diff(logits[candidates][order]) >= -1e-12).all()
    with pytest.raises(ValueError, match="mask_init_density"):
        effect_prior_logits(z, 10, 0.0, 0.0)
