"""K-hop accumulation, GRN alignment (both variants) and sparsity against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpo_vae.module.grn_loss import (
    grn_accumulation,
    grn_alignment_loss,
    khop_accumulation,
    min_max_columns,
    sparsity_penalty,
)


def test_khop_accumulation_is_the_scaled_sum_of_matrix_powers() -> None:
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = a + sum(torch.linalg.matrix_power(a, k + 1) / 4**k for k in range(1, 6))
    torch.testing.assert_close(khop_accumulation(a, hop=5), expected)
    unscaled = a + sum(torch.linalg.matrix_power(a, k + 1) for k in range(1, 3))
    torch.testing.assert_close(khop_accumulation(a, hop=2, scaled=False), unscaled)
    torch.testing.assert_close(khop_accumulation(a, hop=0), a)


def test_khop_accumulation_on_a_path_graph_by_hand() -> None:
    # 0 → 1 → 2: A² has the single path 0 → 2, scaled by 1/T = 1/3; A³ = 0
    a = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    expected = torch.tensor([[0.0, 1.0, 1 / 3], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(khop_accumulation(a, hop=5), expected)


def test_logits_alignment_loss_by_hand() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    dosage = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # last cell: control
    delta_x = torch.tensor([[0.5, 1.0], [2.0, 0.0], [0.0, 0.0]])
    # D S = [[1, 2], [3, −1], [0, 0]]; target ΔX − 0.5 = [[0, .5], [1.5, −.5], [−.5, −.5]]
    # |diff| = [[1, 1.5], [1.5, .5], [.5, .5]] → mean over 6 entries = 5.5 / 6
    loss = grn_alignment_loss(s, dosage, delta_x, fc_criteria=0.5, variant="logits")
    assert loss.item() == pytest.approx(5.5 / 6)


def test_probs_accumulation_and_alignment_by_hand() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.5], [-0.5, 1.5, 0.0]], dtype=torch.float64)
    p = 1 / (1 + np.exp(-logits.numpy()))
    a = p / p.sum(axis=1, keepdims=True)
    s = a + a @ a + a @ a @ a  # hop = 2, no 1/T scaling in this variant
    s = (s - s.min(axis=0)) / (s.max(axis=0) - s.min(axis=0) + 1e-8)
    accumulation = grn_accumulation(logits, hop=2, variant="probs")
    np.testing.assert_allclose(accumulation.numpy(), s, rtol=1e-10)
    dosage = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    delta_x = torch.tensor([[0.2, 0.9, 3.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    target = 1 / (1 + np.exp(-(delta_x.numpy() - 0.5)))
    expected = np.abs(dosage.numpy() @ s - target).mean()
    loss = grn_alignment_loss(accumulation, dosage, delta_x, fc_criteria=0.5, variant="probs")
    assert loss.item() == pytest.approx(expected)


def test_min_max_columns_scales_each_column_to_unit_range() -> None:
    scaled = min_max_columns(torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 7.0]]))
    torch.testing.assert_close(scaled, torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]]), atol=1e-6, rtol=0)


def test_logits_variant_uses_the_logits_themselves() -> None:
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    torch.testing.assert_close(grn_accumulation(logits, 3, "logits"), khop_accumulation(logits, 3))


def test_sparsity_penalty_by_hand() -> None:
    logits = torch.tensor([[0.0, np.log(3.0)], [-np.log(3.0), 0.0]], dtype=torch.float32)
    # sigmoid: 0.5, 0.75, 0.25, 0.5 → sum 2 → / T² = 0.5
    assert sparsity_penalty(logits).item() == pytest.approx(0.5)


def test_alignment_skips_unmeasured_node_columns() -> None:
    s = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    dosage = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    delta_x = torch.tensor([[0.5, 0.0], [2.0, 0.0], [0.0, 0.0]])  # node 1 not measured: ΔX ≡ 0
    # column 0 alone: |D S − (ΔX − .5)| = |1 − 0|, |3 − 1.5|, |0 + .5| → mean 3 / 3
    kept = grn_alignment_loss(s, dosage, delta_x, 0.5, "logits", columns=torch.tensor([True, False]))
    assert kept.item() == pytest.approx(1.0)
    every = grn_alignment_loss(s, dosage, delta_x, 0.5, "logits", columns=torch.tensor([True, True]))
    assert every.item() == pytest.approx(grn_alignment_loss(s, dosage, delta_x, 0.5, "logits").item())
    none = grn_alignment_loss(
        s.requires_grad_(), dosage, delta_x, 0.5, "logits", columns=torch.tensor([False, False])
    )
    assert none.item() == 0.0 and none.requires_grad


def test_the_old_module_names_still_import_with_a_warning():
    """gpo_vae.models (now gpo_vae.module) and gpo_vae.models.grn (now module.grn_loss) import for
    one release, warn, and are the new modules themselves."""
    import importlib
    import sys

    import gpo_vae.module
    import gpo_vae.module.config
    import gpo_vae.module.grn_loss as grn_loss

    for name in [name for name in sys.modules if name.startswith("gpo_vae.models")]:
        sys.modules.pop(name)
    with pytest.warns(DeprecationWarning, match="gpo_vae.models moved to gpo_vae.module"):
        package = importlib.import_module("gpo_vae.models")
    assert package.ModelConfig is gpo_vae.module.ModelConfig
    assert package.GPOVAE is gpo_vae.module.GPOVAE
    assert importlib.import_module("gpo_vae.models.config") is gpo_vae.module.config
    from gpo_vae.models.module import GPOVAE

    assert GPOVAE is gpo_vae.module.GPOVAE
    with pytest.warns(DeprecationWarning, match="moved to gpo_vae.module.grn_loss"):
        old = importlib.import_module("gpo_vae.models.grn")
    assert old.grn_alignment_loss is grn_loss.grn_alignment_loss
