"""GPO-VAE model: generative model, guide, ELBO loss and generation in plain torch (design §6).

``GPOVAE`` is the module (``inference`` / ``generative`` / ``loss`` → ``LossOutput``, ``iwelbo``,
``mask_probabilities``); :mod:`gpo_vae.module.generate` draws cells from it (``sample_cells``,
``encode_basal``) and tabulates its graph (``grn_dataframe``). ``ModelConfig`` holds the
published hyperparameters, ``ModelConfig.sams_vae()`` the SAMS-VAE baseline. What a user holds
is :class:`gpo_vae.GPOVAEModel`.

Where this differs from the published research code, on purpose:

- the counterfactual KL is the exact Gaussian KL (the reference omits 1/σ₂² on (μ₁ − μ₂)²);
- the counterfactual encoder pass reuses the particle's M, E and qc_E draw (the reference draws
  them again), and runs on the cells with a counterfactual only;
- each cell is decoded once, under its own QC branch, and x is never sampled during training
  (the reference decodes and samples both branches for every cell): the loss is the same;
- only the mask/embedding rows of nodes dosed in the batch are drawn: the others carry zero
  weight in every term, so the loss has the same distribution;
- the ``probs`` GRN variant keeps the logit parameterisation of q(M) and uses sigmoid(logits)
  (the reference then parameterises q(M) by clamped probabilities, which stall at 0 and 1).
"""

from gpo_vae._lazy import lazy_attributes
from gpo_vae.module.config import ModelConfig

# Only the config is imported eagerly: the run config (and so the workflow) reads it without
# importing torch; the module and its helpers load on first use.
_LAZY = {
    "GPOVAE": "gpo_vae.module.module",
    "LOSS_TERMS": "gpo_vae.module.module",
    "InferenceOutputs": "gpo_vae.module.module",
    "LossOutput": "gpo_vae.module.module",
    "PlatedSample": "gpo_vae.module.guide",
    "encode_basal": "gpo_vae.module.generate",
    "grn_dataframe": "gpo_vae.module.generate",
    "sample_cells": "gpo_vae.module.generate",
}


__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = ["ModelConfig", *_LAZY]
