"""Generation API: shapes, counts, branches, determinism, the mask as a table."""

from __future__ import annotations

import pytest
import torch

from gpo_vae.module import ModelConfig
from gpo_vae.module.generate import grn_dataframe, sample_cells
from tests.module import N_GENES, N_NODES, TINY, tiny_module

NAMES = [f"node{i}" for i in range(N_NODES)]


def test_sample_cells_shapes_and_integer_counts() -> None:
    module = tiny_module()
    single = sample_cells(module, 1, 7, seed=0)
    assert single.shape == (7, N_GENES)
    assert bool((single >= 0).all()) and torch.equal(single, single.round())
    vector = sample_cells(module, torch.eye(N_NODES)[2], 4, seed=0)
    assert vector.shape == (4, N_GENES)
    rows = sample_cells(module, torch.eye(N_NODES)[:3], 5, qc_branch="bad", plated="mean", seed=0)
    assert rows.shape == (3, 5, N_GENES)
    per_cell_library = sample_cells(module, 0, 3, library_size=torch.tensor([10.0, 1e4, 1e5]), seed=0)
    assert per_cell_library[0].sum() < per_cell_library[2].sum()


def test_sample_cells_library_size_sets_the_depth() -> None:
    module = tiny_module()
    shallow = sample_cells(module, 0, 200, library_size=100.0, seed=1).sum(1).mean()
    deep = sample_cells(module, 0, 200, library_size=1e4, seed=1).sum(1).mean()
    assert 50 < shallow < 200 and 5e3 < deep < 2e4


def test_sample_cells_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    module = tiny_module()
    state = torch.get_rng_state()
    first = sample_cells(module, 0, 20, seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, sample_cells(module, 0, 20, seed=11))
    assert not torch.equal(first, sample_cells(module, 0, 20, seed=12))


def test_good_and_bad_branches_differ() -> None:
    module = tiny_module()
    good = sample_cells(module, 0, 50, seed=3)
    bad = sample_cells(module, 0, 50, qc_branch="bad", seed=3)
    assert not torch.equal(good, bad)
    # same seed, same z and M/E draws: only the QC offset differs, so the expected counts differ
    dosage = torch.eye(N_NODES)[:1]
    draw = module.guide.plated_mode(torch.tensor([0]))
    with torch.no_grad():
        latent, qc_offset = module.offsets(draw, dosage, torch.ones(1))
        z = torch.zeros(1, 1, module.config.n_latent)
        mean_good = module.decoder.mean(
            module.decoder_input(z, latent, torch.zeros_like(qc_offset)), torch.ones(1)
        )
        mean_bad = module.decoder.mean(module.decoder_input(z, latent, qc_offset), torch.ones(1))
    assert not torch.allclose(mean_good, mean_bad)


def test_sample_cells_rejects_bad_arguments() -> None:
    module = tiny_module()
    with pytest.raises(ValueError, match="qc_branch"):
        sample_cells(module, 0, 2, qc_branch="ugly")
    with pytest.raises(ValueError, match="node index"):
        sample_cells(module, N_NODES, 2)
    with pytest.raises(ValueError, match="library_size"):
        sample_cells(module, 0, 2, library_size=torch.ones(3))


def test_mask_probabilities_and_the_named_table() -> None:
    module = tiny_module()
    with torch.no_grad():
        module.guide.mask_logits[0, 1] = 3.0
        module.guide.mask_logits[2, 0] = -3.0
    probs = module.mask_probabilities()
    assert probs.shape == (N_NODES, N_NODES) and not probs.requires_grad
    assert bool(((probs >= 0) & (probs <= 1)).all())
    table = grn_dataframe(module.mask_probabilities(), NAMES)
    assert list(table.index) == NAMES and list(table.columns) == NAMES
    assert table.loc["node0", "node1"] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert table.loc["node2", "node0"] < 0.1
    with pytest.raises(ValueError, match="node names"):
        grn_dataframe(module.mask_probabilities(), NAMES[:-1])


def test_latent_mask_table_has_latent_columns() -> None:
    module = tiny_module(ModelConfig.sams_vae(**TINY))
    table = grn_dataframe(module.mask_probabilities(), NAMES)
    assert list(table.columns) == [f"latent_{i}" for i in range(module.config.n_latent)]
