"""Tests of the GPO-VAE torch module; helpers build tiny modules and batches."""

from __future__ import annotations

import torch

from gpo_vae.module import GPOVAE, ModelConfig

N_GENES, N_NODES, N_PERTURBED, N_LATENT = 12, 5, 3, 4
NODE_COUNTS = torch.tensor([10.0, 4.0, 2.0, 0.0, 0.0])
N_QC_FAIL = 8.0


#: Published structure at toy width.
TINY = {
    "n_latent": N_LATENT,
    "decoder_n_hidden": 8,
    "basal_encoder_n_hidden": 6,
    "embedding_encoder_n_layers": 2,
    "embedding_encoder_n_hidden": 7,
    "n_particles": 3,
}


def tiny_config(**changes: object) -> ModelConfig:
    """GPO-VAE defaults at toy width, with some fields changed."""
    return ModelConfig(**TINY).replace(**changes)


def tiny_module(config: ModelConfig | None = None, seed: int = 0, **kwargs: object) -> GPOVAE:
    torch.manual_seed(seed)
    return GPOVAE(
        N_GENES,
        N_NODES,
        N_PERTURBED,
        NODE_COUNTS,
        N_QC_FAIL,
        torch.full((N_GENES,), 1.0),
        torch.full((N_GENES,), 0.5),
        config or tiny_config(),
        **kwargs,
    )


def tiny_batch(seed: int = 0, n_cells: int = 8) -> dict[str, torch.Tensor]:
    """Cells 0–1 controls, the rest one-hot over the perturbed nodes; cells 2, 5 QC-fail."""
    g = torch.Generator().manual_seed(seed)
    x = torch.poisson(3.0 * torch.rand(n_cells, N_GENES, generator=g), generator=g)
    dosage = torch.zeros(n_cells, N_NODES)
    for cell in range(2, n_cells):
        dosage[cell, cell % N_PERTURBED] = 1.0
    qc = torch.zeros(n_cells)
    qc[[2, 5]] = 1.0
    has_cf = torch.zeros(n_cells, dtype=torch.bool)
    has_cf[[3, 4, 5]] = True
    cf_x = torch.poisson(3.0 * torch.rand(n_cells, N_GENES, generator=g), generator=g) * has_cf.unsqueeze(1)
    return {
        "X": x,
        "D": dosage,
        "qc": qc,
        "library_size": x.sum(1),
        "delta_x": torch.rand(n_cells, N_NODES, generator=g),
        "cf_X": cf_x,
        "has_cf": has_cf,
    }
