"""GPO-VAE model: generative model, guide, ELBO loss and generation in plain torch (design §6)."""

from gpo_vae.models.config import ModelConfig
from gpo_vae.models.generate import grn_dataframe, sample_cells
from gpo_vae.models.guide import PlatedSample
from gpo_vae.models.module import GPOVAE, LOSS_TERMS, LossOutput

__all__ = [
    "GPOVAE",
    "LOSS_TERMS",
    "LossOutput",
    "ModelConfig",
    "PlatedSample",
    "grn_dataframe",
    "sample_cells",
]
