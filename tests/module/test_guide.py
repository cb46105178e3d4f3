"""The guide's shortcuts (split first layers, row subsets) equal the plain computations."""

from __future__ import annotations

import torch

from tests.module import N_GENES, N_LATENT, N_NODES, tiny_batch, tiny_config, tiny_module


def test_basal_encoder_equals_the_mlp_on_the_concatenated_input() -> None:
    module = tiny_module()
    guide = module.guide
    x = tiny_batch()["X"]
    latent_offset = torch.randn(2, x.shape[0], N_NODES)
    qc_offset = torch.randn(2, x.shape[0], N_LATENT)
    x_tilde = (torch.log1p(x) - 1.0) / 0.5  # mean_log = 1, std_log = 0.5 in tiny_module
    full = torch.cat([x_tilde.expand(2, -1, -1), latent_offset, qc_offset], dim=-1)
    with torch.no_grad():
        ours = guide.basal(guide.project_counts(x), latent_offset, qc_offset)
        plain = guide.basal_encoder(full)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_mean_field_basal_encoder_sees_the_counts_only() -> None:
    guide = tiny_module(tiny_config(mean_field=True)).guide
    x = tiny_batch()["X"]
    assert guide.basal_encoder.first.in_features == N_GENES
    with torch.no_grad():
        loc, _ = guide.basal(guide.project_counts(x), None, None)
        plain, _ = guide.basal_encoder((torch.log1p(x) - 1.0) / 0.5)
    torch.testing.assert_close(loc, plain)


def test_embedding_encoder_on_a_row_subset_equals_the_mlp_on_mask_row_and_one_hot() -> None:
    guide = tiny_module().guide
    rows = torch.tensor([0, 2])
    mask = torch.bernoulli(torch.full((3, 2, N_NODES), 0.5))
    one_hot = torch.eye(N_NODES)[rows].expand(3, -1, -1)
    with torch.no_grad():
        ours = guide._embedding_params(mask, rows)
        plain = guide.embedding_encoder(torch.cat([mask, one_hot], dim=-1))
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_plated_sample_shapes_and_zero_std_genes() -> None:
    module = tiny_module()
    torch.manual_seed(0)
    draw = module.guide.sample_plated(4, torch.tensor([1, 3]))
    assert draw.mask.shape == draw.embedding.shape == (4, 2, N_NODES)
    assert draw.qc_embedding.shape == (4, 1, N_LATENT)
    assert draw.particles(slice(1, 3)).n_particles == 2
    std = torch.ones(N_GENES)
    std[0] = 0.0
    guide = type(module.guide)(N_GENES, N_NODES, N_NODES, tiny_config(), torch.zeros(N_GENES), std)
    assert bool(torch.isfinite(guide.project_counts(tiny_batch()["X"])).all())


def test_the_shared_iwelbo_draw_is_the_plated_draw_kept_as_its_effect() -> None:
    """sample_effect draws the same random numbers in the same order as sample_plated, so its
    M ⊙ E and qc_E are the plated draw's, bit for bit, and IWELBO scores the same; it holds one
    particles × nodes × latents tensor instead of four."""
    from gpo_vae.module.distributions import relaxed_bernoulli_straight_through

    module = tiny_module()
    module.eval()
    torch.manual_seed(5)
    with torch.no_grad():
        plated = module.guide.sample_plated(7)
    torch.manual_seed(5)
    lean = module.sample_plated(7)
    assert torch.equal(lean.effect(), plated.effect()) and torch.equal(lean.qc_embedding, plated.qc_embedding)
    assert torch.equal(lean.rows, plated.rows) and lean.n_particles == 7
    assert torch.equal(lean.particles(slice(2, 5)).effect(), plated.particles(slice(2, 5)).effect())
    batch = tiny_batch()
    for chunk in (7, 3):
        torch.manual_seed(9)
        expected = module.iwelbo(batch, 7, plated=plated, particle_chunk=chunk)
        torch.manual_seed(9)
        assert torch.equal(module.iwelbo(batch, 7, plated=lean, particle_chunk=chunk), expected)
    # the mask alone: the in-place path without a gradient is the straight-through value
    logits = torch.randn(5, 6, requires_grad=True)
    torch.manual_seed(1)
    with_grad = relaxed_bernoulli_straight_through(logits, 0.5, (4,))
    torch.manual_seed(1)
    with torch.no_grad():
        without = relaxed_bernoulli_straight_through(logits, 0.5, (4,))
    assert torch.equal(with_grad.detach(), without)
