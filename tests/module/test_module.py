"""GPOVAE as a whole: training, the SAMS-VAE configuration, determinism, IWELBO, variants."""

from __future__ import annotations

import math

import pytest
import torch

from gpo_vae.module import GPOVAE, ModelConfig
from gpo_vae.module.generate import sample_cells
from tests.module import N_GENES, N_LATENT, N_NODES, TINY, tiny_batch, tiny_config, tiny_module

ELBO_TERMS = ("reconstruction", "kl_z_basal", "kl_embedding", "kl_mask", "kl_qc_embedding")


def planted_batches(n_batches: int = 4, cells_per_group: int = 12) -> list[dict[str, torch.Tensor]]:
    """Controls and 3 perturbations, each multiplying its own 3 genes by 5; a third of cells QC-fail."""
    g = torch.Generator().manual_seed(7)
    base = 1.0 + 4.0 * torch.rand(N_GENES, generator=g)
    batches = []
    for _ in range(n_batches):
        rows, dosage = [], []
        for group in range(4):  # 0 = control, 1..3 = perturbed nodes 0..2
            rate = base.clone()
            if group:
                rate[3 * group - 3 : 3 * group] *= 5.0
            rows.append(torch.poisson(rate.expand(cells_per_group, -1), generator=g))
            d = torch.zeros(cells_per_group, N_NODES)
            if group:
                d[:, group - 1] = 1.0
            dosage.append(d)
        x, d = torch.cat(rows), torch.cat(dosage)
        qc = (torch.arange(x.shape[0]) % 3 == 0).float()
        x[qc == 1] = torch.floor(x[qc == 1] / 3)  # QC-fail cells: low UMI
        batches.append(
            {
                "X": x,
                "D": d,
                "qc": qc,
                "library_size": x.sum(1).clamp(min=1.0),
                "delta_x": torch.rand(x.shape[0], N_NODES, generator=g),
                "cf_X": torch.zeros_like(x),
            }
        )
    return batches


def test_training_decreases_the_negative_elbo_and_finds_the_planted_effect() -> None:
    batches = planted_batches()
    config = tiny_config(n_particles=2)
    torch.manual_seed(0)
    module = GPOVAE(
        N_GENES, N_NODES, 3, torch.tensor([48.0, 48.0, 48.0, 0.0, 0.0]), 64.0,
        torch.log1p(batches[0]["X"]).mean(0), torch.log1p(batches[0]["X"]).std(0), config,
    )  # fmt: skip

    def negative_elbo() -> float:
        torch.manual_seed(123)
        with torch.no_grad():
            outs = [module.loss(b, n_particles=8).terms for b in batches]
        return sum(sum(t[name] for name in ELBO_TERMS).item() for t in outs) / len(outs)

    before = negative_elbo()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(150):
        optimizer.zero_grad()
        module.loss(batches[step % len(batches)]).loss.backward()
        optimizer.step()
    after = negative_elbo()
    assert after < before - 1.0, (before, after)
    # node 0 multiplies genes 0–2 by 5: generated counts must rise there relative to the rest
    ratio = sample_cells(module, 0, 400, seed=0).mean(0) / sample_cells(
        module, torch.zeros(N_NODES), 400, seed=0
    ).mean(0)
    assert ratio[:3].min() > 1.5 * ratio[3:].max(), ratio


def test_sams_vae_has_no_grn_terms_and_no_gradient_from_them() -> None:
    config = ModelConfig.sams_vae(**TINY)
    module = tiny_module(config)
    assert module.guide.mask_logits.shape == (N_NODES, config.n_latent)
    batch = tiny_batch()
    torch.manual_seed(0)
    out = module.loss(batch)
    for name in ("counterfactual", "grn", "sparsity"):
        assert out.terms[name].item() == 0.0 and out.terms[name].grad_fn is None
    (grad_total,) = torch.autograd.grad(out.loss, module.guide.mask_logits, retain_graph=True)
    (grad_elbo,) = torch.autograd.grad(sum(out.terms[n] for n in ELBO_TERMS), module.guide.mask_logits)
    assert torch.equal(grad_total, grad_elbo)
    # ΔX and the counterfactual counts play no part (not even needed in the batch)
    reduced = {k: v for k, v in batch.items() if k not in ("delta_x", "cf_X", "has_cf")}
    torch.manual_seed(0)
    assert torch.equal(module.loss(reduced).loss, out.loss)


def test_gpo_vae_mask_logits_do_receive_grn_and_sparsity_gradients() -> None:
    module = tiny_module()
    torch.manual_seed(0)
    out = module.loss(tiny_batch())
    (grad_total,) = torch.autograd.grad(out.loss, module.guide.mask_logits, retain_graph=True)
    (grad_elbo,) = torch.autograd.grad(sum(out.terms[n] for n in ELBO_TERMS), module.guide.mask_logits)
    assert not torch.allclose(grad_total, grad_elbo)


def test_same_seed_gives_a_bitwise_identical_loss() -> None:
    batch = tiny_batch()
    losses = []
    for seed in (3, 3, 4):
        module = tiny_module(seed=0)
        torch.manual_seed(seed)
        losses.append(module.loss(batch).loss)
    assert torch.equal(losses[0], losses[1])
    assert not torch.equal(losses[0], losses[2])


def test_iwelbo_is_the_log_mean_exp_of_the_importance_weights() -> None:
    module = tiny_module()
    batch = tiny_batch()
    plated = module.sample_plated(6)
    torch.manual_seed(9)
    iwelbo = module.iwelbo(batch, 6, plated=plated, particle_chunk=6)
    torch.manual_seed(9)
    with torch.no_grad():
        inference = module.inference(batch, plated)
        weights = module.generative(batch, inference) + inference.log_ratio()  # own branch, no α
    assert iwelbo.shape == (batch["X"].shape[0],)
    torch.testing.assert_close(iwelbo, torch.logsumexp(weights, 0) - math.log(6))
    assert bool((iwelbo >= weights.mean(0) - 1e-5).all())  # Jensen: IWELBO ≥ ELBO
    chunked = module.iwelbo(batch, 6, plated=plated, particle_chunk=4)
    assert chunked.shape == iwelbo.shape and bool(torch.isfinite(chunked).all())
    with pytest.raises(ValueError, match="particles"):
        module.iwelbo(batch, 5, plated=plated)


@pytest.mark.parametrize(
    "changes",
    [
        {"mean_field": True},
        {"likelihood": "poisson"},
        {"likelihood": "normal"},
        {"mode": "sum", "latent_mask": True, "grn_coeff": 0.0, "sparsity_coeff": 0.0},
        {"latent_mask": True, "grn_coeff": 0.0, "sparsity_coeff": 0.0},
    ],
)
def test_variants_give_finite_losses_and_gradients(changes) -> None:
    module = tiny_module(tiny_config(**changes))
    torch.manual_seed(0)
    out = module.loss(tiny_batch())
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_bf16_autocast_runs_and_keeps_the_loss_in_float32() -> None:
    module = tiny_module()
    torch.manual_seed(0)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = module.loss(tiny_batch())
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()


def test_config_validation_and_the_sams_vae_preset() -> None:
    sams = ModelConfig.sams_vae(n_latent=16)
    assert (sams.mode, sams.latent_mask, sams.n_latent) == ("sum", True, 16)
    assert sams.counterfactual_coeff == sams.grn_coeff == sams.sparsity_coeff == 0.0
    published = ModelConfig()
    assert (published.n_latent, published.mask_prior, published.hop, published.grn_coeff) == (
        200,
        0.3,
        5,
        100.0,
    )
    with pytest.raises(ValueError, match="latent-sized mask"):
        ModelConfig(latent_mask=True)
    with pytest.raises(ValueError, match="likelihood"):
        ModelConfig(likelihood="zinb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sum mode"):
        tiny_module(tiny_config(mode="sum"))  # T = 5 ≠ L = 4 with a node-sized mask
    with pytest.raises(ValueError, match="DEG nodes"):
        GPOVAE(
            N_GENES,
            N_NODES,
            3,
            torch.ones(N_NODES),
            1.0,
            torch.zeros(N_GENES),
            torch.ones(N_GENES),
            tiny_config(),
        )


def test_unmeasured_nodes_are_left_out_of_the_grn_term_when_skipped() -> None:
    from gpo_vae.module import grn_loss as grn

    batch = tiny_batch()
    measured = torch.tensor([True, False, True, True, True])
    for mode in ("skip", "zero"):
        module = tiny_module(tiny_config(grn_unmeasured=mode), node_measured=measured)
        config = module.config
        accumulation = grn.grn_accumulation(module.guide.mask_logits, config.hop, config.grn_variant)
        columns = measured if mode == "skip" else None
        expected = config.grn_coeff * grn.grn_alignment_loss(
            accumulation,
            batch["D"],
            batch["delta_x"],
            config.fc_criteria,
            config.grn_variant,
            columns=columns,
        )
        torch.testing.assert_close(module.loss(batch).terms["grn"], expected)
    # skipping changes the term exactly when a column is unmeasured
    skip = tiny_module(tiny_config(), node_measured=measured).loss(batch).terms["grn"]
    zero = tiny_module(tiny_config(grn_unmeasured="zero"), node_measured=measured).loss(batch).terms["grn"]
    assert not torch.isclose(skip, zero)


def test_batches_condition_encoder_and_decoder_and_generation_needs_a_batch() -> None:
    module = tiny_module(n_batches=2)
    assert module.guide.basal_encoder.first.in_features == N_GENES + N_NODES + N_LATENT + 2
    batch = tiny_batch()
    with pytest.raises(ValueError, match="conditions on 2 batches"):
        module.loss(batch)
    batch["batch"] = torch.nn.functional.one_hot(torch.arange(8) % 2, 2).float()
    assert torch.isfinite(module.loss(batch).loss)
    with pytest.raises(ValueError, match=r"pass batch in 0\.\.1"):
        sample_cells(module, 0, 5)
    first = sample_cells(module, 0, 200, seed=1, batch=0)
    second = sample_cells(module, 0, 200, seed=1, batch=1)
    assert first.shape == (200, N_GENES) and not torch.equal(first, second)
    assert tiny_module(n_batches=1).n_batches == 0  # one batch is no covariate
