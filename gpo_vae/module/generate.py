"""Generation from a trained module, and the learned graph as a table (what evaluation reads)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

if TYPE_CHECKING:
    from gpo_vae.module.module import GPOVAE

#: Cells decoded at once: bounds the (cells × G) and (cells × active nodes × C) tensors.
CELL_CHUNK = 1024
QC_BRANCHES = {"good": 0.0, "bad": 1.0}


def _dosage_rows(dosage: torch.Tensor | int, n_nodes: int, device: torch.device) -> torch.Tensor:
    if isinstance(dosage, int):
        if not 0 <= dosage < n_nodes:
            raise ValueError(f"node index {dosage} is outside 0..{n_nodes - 1}")
        rows = torch.zeros(1, n_nodes, device=device)
        rows[0, dosage] = 1.0
        return rows
    rows = torch.as_tensor(dosage, dtype=torch.float32, device=device)
    rows = rows.unsqueeze(0) if rows.dim() == 1 else rows
    if rows.dim() != 2 or rows.shape[1] != n_nodes:
        raise ValueError(f"dosage must be a node index, (T,) or (R, T) with T = {n_nodes}")
    return rows


def _batch_one_hot(module: GPOVAE, batch: int | None, device: torch.device) -> torch.Tensor | None:
    if not module.n_batches:
        if batch not in (None, 0):
            raise ValueError(f"batch={batch}: this model has no batches")
        return None
    if batch is None or not 0 <= int(batch) < module.n_batches:
        raise ValueError(
            f"this model conditions on {module.n_batches} batches: pass batch in 0..{module.n_batches - 1}"
        )
    one_hot = torch.zeros(1, module.n_batches, device=device)
    one_hot[0, int(batch)] = 1.0
    return one_hot


def _sample_row(
    module: GPOVAE,
    dosage: torch.Tensor,
    n_cells: int,
    library: torch.Tensor,
    qc: float,
    plated: str,
    batch: torch.Tensor | None,
    basal: torch.Tensor | None,
) -> torch.Tensor:
    guide, latent = module.guide, module.config.n_latent
    nodes = torch.nonzero(dosage).squeeze(1)
    chunks = []
    for start in range(0, n_cells, CELL_CHUNK):
        size = min(CELL_CHUNK, n_cells - start)
        # one guide particle per generated cell (a single shared one for "mean")
        draw = guide.plated_mode(nodes) if plated == "mean" else guide.sample_plated(size, nodes)
        cell_dosage = dosage.unsqueeze(0)
        latent_offset, qc_offset = module.offsets(
            draw, cell_dosage, torch.full((1,), qc, device=dosage.device)
        )
        latent_offset = latent_offset.squeeze(1).expand(size, -1)
        qc_offset = qc_offset.squeeze(1).expand(size, -1)
        if basal is None:
            z_basal = torch.randn(size, latent, device=dosage.device)
        else:
            z_basal = basal[start : start + size]
        decoder_input = module.decoder_input(z_basal, latent_offset, qc_offset, batch)
        chunks.append(module.decoder.sample(decoder_input, library[start : start + size]))
    return torch.cat(chunks)


@torch.no_grad()
def sample_cells(
    module: GPOVAE,
    dosage: torch.Tensor | int,
    n_cells: int,
    library_size: float | torch.Tensor = 1e4,
    qc_branch: str = "good",
    plated: str = "sample",
    seed: int | None = None,
    batch: int | None = None,
    basal: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generate cells: z_basal from the prior (or given), M/E/qc_E from the guide, counts from
    the decoder.

    Parameters
    ----------
    module
        A GPO-VAE module (put it in eval mode yourself if that matters).
    dosage
        A node index, a (T,) dosage vector (zeros = control) or (R, T) dosage rows.
    n_cells
        Cells per dosage row.
    library_size
        A scalar or an (n_cells,) tensor; used by the ``library_nb`` likelihood only.
    qc_branch
        ``good`` (q = 0) or ``bad`` (q = 1).
    plated
        ``sample``: each cell gets its own draw of M, E and qc_E from the guide (as the reference
        generates); ``mean``: every cell shares M = 1[p > 0.5], E = mean of q(E | M), qc_E = mean.
    seed
        Makes the result reproducible without touching the global random state.
    batch
        Index of the batch (cell line) the cells come from; required by a model trained on a
        screen with batches, None otherwise.
    basal
        (n_cells, L) z_basal of the cells (e.g. :func:`encode_basal` of control cells: the
        counterfactual "these cells, had they been perturbed"); None draws it from the prior.

    Returns
    -------
    (n_cells, G) for a node index or a (T,) vector, (R, n_cells, G) for dosage rows; counts are
    non-negative integers (as floats) for ``library_nb`` and ``poisson``.
    """
    if qc_branch not in QC_BRANCHES:
        raise ValueError(f"qc_branch must be one of {sorted(QC_BRANCHES)}, not {qc_branch!r}")
    if plated not in ("sample", "mean"):
        raise ValueError(f"plated must be 'sample' or 'mean', not {plated!r}")
    device = module.guide.mask_logits.device
    rows = _dosage_rows(dosage, module.n_nodes, device)
    batch_one_hot = _batch_one_hot(module, batch, device)
    library = torch.as_tensor(library_size, dtype=torch.float32, device=device).reshape(-1)
    library = library.expand(n_cells) if library.numel() == 1 else library
    if library.shape != (n_cells,):
        raise ValueError(f"library_size must be a scalar or have {n_cells} entries")
    if basal is not None:
        basal = torch.as_tensor(basal, dtype=torch.float32, device=device)
        if basal.shape != (n_cells, module.config.n_latent):
            raise ValueError(
                f"basal must have shape {(n_cells, module.config.n_latent)}, not {tuple(basal.shape)}"
            )
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        samples = torch.stack(
            [
                _sample_row(
                    module, row, n_cells, library, QC_BRANCHES[qc_branch], plated, batch_one_hot, basal
                )
                for row in rows
            ]
        )
    single = isinstance(dosage, int) or torch.as_tensor(dosage).dim() == 1
    return samples[0] if single else samples


@torch.no_grad()
def encode_basal(
    module: GPOVAE,
    counts: torch.Tensor,
    n_cells: int,
    seed: int,
    batch: int | None = None,
) -> torch.Tensor:
    """``n_cells`` draws of z_basal from q(z_basal | x, D = 0, q = 0) of control cells, (n_cells, L).

    ``counts`` (B, G) are control cells (of ``batch`` for a model with batches); each draw picks a
    cell uniformly with replacement and samples its posterior, both from ``seed`` alone.
    """
    device = module.guide.mask_logits.device
    counts = torch.as_tensor(counts, dtype=torch.float32, device=device)
    if counts.dim() != 2 or counts.shape[0] == 0:
        raise ValueError("encode_basal needs a non-empty (cells, genes) matrix of control cells")
    one_hot = _batch_one_hot(module, batch, device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    pick = torch.randint(counts.shape[0], (n_cells,), generator=generator).to(device)
    noise = torch.randn(n_cells, module.config.n_latent, generator=generator).to(device)
    chunks = []
    for start in range(0, n_cells, CELL_CHUNK):
        index = pick[start : start + CELL_CHUNK]
        cell_batch = None if one_hot is None else one_hot.expand(index.numel(), -1)
        loc, scale = _basal_posterior(module, counts[index], cell_batch)
        chunks.append(loc + scale * noise[start : start + CELL_CHUNK])
    return torch.cat(chunks)


def _basal_posterior(
    module: GPOVAE, counts: torch.Tensor, batch_one_hot: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale of q(z_basal | x, D = 0, q = 0) of (B, G) counts, each (B, L)."""
    n, device = counts.shape[0], counts.device
    projected = module.guide.project_counts(counts, batch_one_hot)
    zero_offset = torch.zeros(1, n, module.n_cols, device=device)
    zero_qc = torch.zeros(1, n, module.config.n_latent, device=device)
    loc, scale = module.guide.basal(projected, zero_offset, zero_qc)
    return loc.reshape(n, -1), scale.reshape(n, -1)


@torch.no_grad()
def basal_means(
    module: GPOVAE, counts: np.ndarray | sp.spmatrix, batch_codes: np.ndarray | None
) -> np.ndarray:
    """The posterior mean of z_basal of each cell, (cells, L): ``counts`` (cells × the module's
    genes, dense or sparse; densified a chunk at a time), ``batch_codes`` each cell's batch index
    (None for a module without batches). Perturbed cells are encoded as if unperturbed."""
    device = module.guide.mask_logits.device
    out = []
    for start in range(0, counts.shape[0], CELL_CHUNK):
        block = counts[start : start + CELL_CHUNK]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        one_hot = None
        if batch_codes is not None:
            index = torch.as_tensor(batch_codes[start : start + CELL_CHUNK], device=device)
            one_hot = torch.nn.functional.one_hot(index, module.n_batches).float()
        loc, _ = _basal_posterior(module, torch.as_tensor(block, dtype=torch.float32, device=device), one_hot)
        out.append(loc.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, module.config.n_latent), dtype=np.float32)


def grn_dataframe(probabilities: torch.Tensor, node_names: Sequence[str]) -> pd.DataFrame:
    """Edge probabilities as a table: rows are source nodes, columns target nodes.

    A latent-sized (SAMS-VAE) mask gets columns ``latent_0 …``.
    """
    names = [str(name) for name in node_names]
    n_rows, n_cols = probabilities.shape
    if len(names) != n_rows:
        raise ValueError(f"{len(names)} node names for {n_rows} nodes")
    columns = names if n_cols == n_rows else [f"latent_{i}" for i in range(n_cols)]
    return pd.DataFrame(probabilities.cpu().float().numpy(), index=names, columns=columns)
