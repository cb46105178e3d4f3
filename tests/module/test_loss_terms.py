"""Each loss term of GPOVAE.loss against a hand computation on a tiny module."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from gpo_vae.module import LOSS_TERMS
from gpo_vae.module.grn_loss import grn_accumulation, grn_alignment_loss
from gpo_vae.module.guide import PlatedSample
from tests.module import N_LATENT, N_NODES, N_QC_FAIL, NODE_COUNTS, tiny_batch, tiny_config, tiny_module


def _fixed_plated(module, n_particles: int = 2) -> PlatedSample:
    torch.manual_seed(5)
    return module.guide.sample_plated(n_particles)


def test_plated_terms_weight_each_node_row_by_one_over_its_training_cells() -> None:
    module = tiny_module()
    batch = tiny_batch()
    plated = _fixed_plated(module)
    dosage, qc = batch["D"], batch["qc"]
    with torch.no_grad():
        terms = module._plated_terms(plated, dosage, qc)
        logits = module.guide.mask_logits
        for k in range(plated.n_particles):
            for b in range(dosage.shape[0]):
                emb = mask = 0.0
                for t in range(N_NODES):
                    if dosage[b, t] != 0:
                        e, m = plated.embedding[k, t], plated.mask[k, t]
                        log_ratio_e = Normal(0.0, 1.0).log_prob(e) - Normal(
                            plated.embedding_loc[k, t], plated.embedding_scale[k, t]
                        ).log_prob(e)
                        log_ratio_m = Bernoulli(probs=torch.tensor(0.3)).log_prob(m) - Bernoulli(
                            logits=logits[t]
                        ).log_prob(m)
                        emb += log_ratio_e.sum() / NODE_COUNTS[t]
                        mask += log_ratio_m.sum() / NODE_COUNTS[t]
                qc_e = plated.qc_embedding[k, 0]
                log_ratio_qc = Normal(0.0, 1.0).log_prob(qc_e) - Normal(
                    plated.qc_loc[k, 0], plated.qc_scale[k, 0]
                ).log_prob(qc_e)
                qc_term = qc[b] * log_ratio_qc.sum() / N_QC_FAIL
                assert terms["kl_embedding"][k, b].item() == pytest.approx(float(emb), abs=1e-5)
                assert terms["kl_mask"][k, b].item() == pytest.approx(float(mask), abs=1e-5)
                assert terms["kl_qc_embedding"][k, b].item() == pytest.approx(float(qc_term), abs=1e-5)
    # controls (cells 0, 1) carry no E/M term; QC-pass cells no qc_E term
    assert bool((terms["kl_embedding"][:, :2] == 0).all()) and bool(
        (terms["kl_qc_embedding"][:, 0] == 0).all()
    )


def test_loss_is_the_sum_of_its_named_terms() -> None:
    module = tiny_module()
    torch.manual_seed(0)
    out = module.loss(tiny_batch())
    assert tuple(out.terms) == LOSS_TERMS
    torch.testing.assert_close(out.loss, sum(out.terms.values()))
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.terms.values())


def _capture_decoder(module):
    calls = []
    original = module.decoder.log_likelihood

    def spy(z, x, library_size):
        value = original(z, x, library_size)
        calls.append((z.detach().clone(), value.detach().clone()))
        return value

    module.decoder.log_likelihood = spy
    return calls


@pytest.mark.parametrize("alpha", [None, 0.8])
def test_reconstruction_decodes_each_cell_once_under_its_own_branch(alpha) -> None:
    module = tiny_module(tiny_config(alpha=alpha))
    batch = tiny_batch()
    calls = _capture_decoder(module)
    torch.manual_seed(0)
    out = module.loss(batch)
    assert len(calls) == 1
    z, log_px = calls[0]
    k, n_cells = module.config.n_particles, batch["X"].shape[0]
    assert z.shape[:2] == (k, n_cells)  # K × B decoder rows, not 2 × K × B
    qc_part = z[..., -N_LATENT:]
    good, bad = batch["qc"] == 0, batch["qc"] == 1
    assert bool((qc_part[:, good] == 0).all())  # q·qc_E = 0: the good branch
    assert bool((qc_part[:, bad] != 0).all())  # the bad branch carries qc_E
    a = batch["qc"].mean() if alpha is None else alpha
    weight = a * (1 - batch["qc"]) + (1 - a) * batch["qc"]
    torch.testing.assert_close(out.terms["reconstruction"].detach(), -(weight * log_px).mean())


def test_good_cells_do_not_depend_on_the_bad_branch_parameters() -> None:
    # all cells QC-pass; a fixed α because the batch fraction of QC-fail cells would be 0
    module = tiny_module(tiny_config(counterfactual_coeff=0.0, alpha=0.5))
    batch = tiny_batch()
    batch["qc"] = torch.zeros_like(batch["qc"])
    torch.manual_seed(1)
    before = module.loss(batch).terms
    with torch.no_grad():
        for p in module.guide.qc_encoder.parameters():
            p.add_(0.1)
    torch.manual_seed(1)
    after = module.loss(batch).terms
    for name in ("reconstruction", "kl_z_basal", "kl_embedding", "kl_mask", "kl_qc_embedding"):
        assert torch.equal(before[name], after[name]), name
    # the same change does move a batch with QC-fail cells (the test can fail)
    mixed = tiny_batch()
    torch.manual_seed(1)
    moved = module.loss(mixed).terms["reconstruction"]
    with torch.no_grad():
        for p in module.guide.qc_encoder.parameters():
            p.sub_(0.1)
    torch.manual_seed(1)
    assert not torch.equal(moved, module.loss(mixed).terms["reconstruction"])


def test_counterfactual_term_is_the_exact_kl_over_cf_cells_summed_and_averaged_over_particles() -> None:
    module = tiny_module()
    batch = tiny_batch()
    plated = _fixed_plated(module, n_particles=3)
    with torch.no_grad():
        inference = module.inference(batch, plated)
        latent_offset = inference.latent_offset
        ours = module._counterfactual_kl(batch, inference)
        total = 0.0
        for b in torch.nonzero(batch["has_cf"]).squeeze(1).tolist():
            flipped = (1 - batch["qc"][b]) * plated.qc_embedding[:, :, :]  # (K, 1, L)
            offset = latent_offset[:, b : b + 1]
            real = module.guide.basal(module.guide.project_counts(batch["X"][b : b + 1]), offset, flipped)
            cf = module.guide.basal(module.guide.project_counts(batch["cf_X"][b : b + 1]), offset, flipped)
            total += kl_divergence(Normal(*cf), Normal(*real)).sum() / plated.n_particles
    assert ours.item() == pytest.approx(float(total), rel=1e-5)
    # cells without a counterfactual do not count, whatever their cf_X row holds
    batch["cf_X"][0] = 5.0
    with torch.no_grad():
        again = module._counterfactual_kl(batch, inference)
    assert again.item() == pytest.approx(ours.item())


def test_counterfactual_grn_and_sparsity_terms_carry_their_coefficients() -> None:
    module = tiny_module(tiny_config(counterfactual_coeff=0.1, grn_coeff=100.0, sparsity_coeff=10.0))
    batch = tiny_batch()
    torch.manual_seed(0)
    out = module.loss(batch)
    logits = module.guide.mask_logits.detach()
    grn = 100.0 * grn_alignment_loss(
        grn_accumulation(logits, 5, "logits"), batch["D"], batch["delta_x"], 0.5, "logits"
    )
    torch.testing.assert_close(out.terms["grn"].detach(), grn)
    torch.testing.assert_close(
        out.terms["sparsity"].detach(), 10.0 * torch.sigmoid(logits).sum() / N_NODES**2
    )
    assert out.terms["counterfactual"].item() > 0
    module_off = tiny_module(tiny_config(counterfactual_coeff=0.0, grn_coeff=0.0, sparsity_coeff=0.0))
    torch.manual_seed(0)
    off = module_off.loss(batch)
    for name in ("counterfactual", "grn", "sparsity"):
        assert off.terms[name].item() == 0.0 and not off.terms[name].requires_grad


def test_probs_variant_term_in_the_loss() -> None:
    module = tiny_module(tiny_config(grn_variant="probs"))
    batch = tiny_batch()
    torch.manual_seed(0)
    out = module.loss(batch)
    logits = module.guide.mask_logits.detach()
    expected = 100.0 * grn_alignment_loss(
        grn_accumulation(logits, 5, "probs"), batch["D"], batch["delta_x"], 0.5, "probs"
    )
    torch.testing.assert_close(out.terms["grn"].detach(), expected)


def test_mask_prior_probabilities_initialise_the_logits() -> None:
    probs = torch.full((N_NODES, N_NODES), 0.2)
    probs[0, 1] = 0.9
    module = tiny_module(mask_prior_probs=probs)
    torch.testing.assert_close(module.mask_probabilities(), probs)
