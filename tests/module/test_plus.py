"""The gpo_vae_plus levers of the module: effect-prior mask, effect-aligned GRN term, encoded controls."""

from __future__ import annotations

import pytest
import torch

from gpo_vae.module import GPOVAE
from gpo_vae.module.generate import encode_basal, sample_cells
from gpo_vae.module.grn_loss import grn_accumulation
from gpo_vae.training.config import TrainingConfig
from gpo_vae.training.lightning import GPOVAETrainingPlan
from tests.module import N_GENES, N_LATENT, N_NODES, tiny_batch, tiny_config, tiny_module

EFFECTS = torch.linspace(-3.0, 3.0, N_NODES * N_NODES).reshape(N_NODES, N_NODES)


def test_effect_logits_initialise_the_mask_only_when_asked() -> None:
    plus = tiny_module(tiny_config(mask_init="effects"), effect_logits=EFFECTS)
    assert torch.allclose(plus.guide.mask_logits.detach(), EFFECTS, atol=1e-5)
    published = tiny_module(tiny_config(), effect_logits=EFFECTS)
    assert (published.guide.mask_logits.detach() == 0).all()
    assert "grn_effect_target" not in dict(published.named_buffers())


def test_effect_grn_target_is_the_l1_distance_to_the_dosed_rows() -> None:
    config = tiny_config(grn_target="effects", counterfactual_coeff=0.0, sparsity_coeff=0.0)
    module = tiny_module(config, effect_logits=EFFECTS)
    batch = tiny_batch()
    batch["delta_x"] = torch.full_like(batch["delta_x"], 123.0)  # ignored by this target
    terms = module.loss(batch).terms
    accumulation = grn_accumulation(module.guide.mask_logits.detach(), config.hop, "logits")
    expected = (batch["D"] @ accumulation - batch["D"] @ EFFECTS).abs().mean() * config.grn_coeff
    assert terms["grn"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_loaded_effect_module_gets_its_target_from_the_state_dict() -> None:
    config = tiny_config(grn_target="effects", mask_init="effects")
    trained = tiny_module(config, effect_logits=EFFECTS)
    fresh = tiny_module(config)  # as load_trained_model builds it: no statistics
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.grn_effect_target, EFFECTS)
    with pytest.raises(ValueError, match="effect_logits has shape"):
        tiny_module(config, effect_logits=torch.zeros(2, 2))


def test_mask_logits_get_their_own_learning_rate() -> None:
    module = tiny_module()
    plan = GPOVAETrainingPlan(module, TrainingConfig(lr=1e-3, mask_lr_scale=20.0))
    groups = plan.configure_optimizers().param_groups
    assert [len(g["params"]) for g in groups][1] == 1
    assert groups[1]["params"][0] is module.guide.mask_logits
    assert groups[1]["lr"] == pytest.approx(0.02) and groups[1]["weight_decay"] == 0.0
    assert groups[0]["lr"] == pytest.approx(1e-3)
    n_params = sum(1 for _ in module.parameters())
    assert sum(len(g["params"]) for g in groups) == n_params
    single = GPOVAETrainingPlan(module, TrainingConfig()).configure_optimizers().param_groups
    assert len(single) == 1  # the published optimiser is unchanged
    with pytest.raises(ValueError, match="mask_lr_scale"):
        TrainingConfig(mask_lr_scale=0.0)


def test_encoded_controls_are_seeded_and_shared_by_every_dosage() -> None:
    module: GPOVAE = tiny_module().eval()
    controls = tiny_batch(n_cells=6)["X"]
    basal = encode_basal(module, controls, 50, seed=3)
    assert basal.shape == (50, N_LATENT)
    assert torch.equal(basal, encode_basal(module, controls, 50, seed=3))
    assert not torch.equal(basal, encode_basal(module, controls, 50, seed=4))
    # the same basal cells with and without a perturbation: the offset is the only difference
    plain = sample_cells(module, torch.zeros(N_NODES), 50, seed=1, basal=basal, plated="mean")
    again = sample_cells(module, torch.zeros(N_NODES), 50, seed=1, basal=basal, plated="mean")
    assert torch.equal(plain, again) and plain.shape == (50, N_GENES)
    with pytest.raises(ValueError, match="basal must have shape"):
        sample_cells(module, 0, 10, basal=basal)


def test_config_rejects_effects_on_a_latent_mask() -> None:
    with pytest.raises(ValueError, match="latent-sized mask has no node columns"):
        tiny_config(
            latent_mask=True, mode="sum", n_latent=N_NODES, grn_coeff=0, sparsity_coeff=0, mask_init="effects"
        )
    with pytest.raises(ValueError, match="prediction_basal"):
        tiny_config(prediction_basal="posterior")
