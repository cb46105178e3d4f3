"""The model a user holds: train or load a run, then ask it questions in AnnData and DataFrames.

The layout follows scvi-tools: :class:`~gpo_vae.module.GPOVAE` is the torch module,
:class:`~gpo_vae.training.GPOVAETrainingPlan` the Lightning training plan, and
:class:`GPOVAEModel` what a notebook uses::

    from gpo_vae import GPOVAEModel, pp

    artifact = pp.prepare(adata)                      # a screen's raw counts → the artifact
    model = GPOVAEModel.train(artifact, run_dir="runs/first")
    cells = model.predict(["GENE1", "GENE2+GENE3"], n_cells=500)   # AnnData of counts
    shift = model.predict_shift(["GENE1"])            # genes × labels, the ATE
    edges = model.grn(threshold=0.5)                  # source, target, probability

A run directory written by the workflow (``results/…/runs/<key>``) loads the same way
(:meth:`GPOVAEModel.load`). Generation is seeded exactly as in evaluation, and
:meth:`~GPOVAEModel.predict_shift` defaults to the run's evaluation settings, so at its defaults it
gives the report's model ATE.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from gpo_vae.config import to_dict
from gpo_vae.data.contract import CONTROL_LABEL
from gpo_vae.data.labels import label_genes
from gpo_vae.errors import UserError
from gpo_vae.evaluation.config import EvaluationConfig
from gpo_vae.evaluation.generation import (
    basal_draws,
    generate_and_summarise,
    generate_label_cells,
    label_dosage,
)
from gpo_vae.evaluation.grn_benchmark import initial_mask_probabilities
from gpo_vae.evaluation.prediction import EvaluationData
from gpo_vae.grn.calibration import calibrated_threshold
from gpo_vae.grn.curves import edges_from_probabilities
from gpo_vae.io import resolve_recorded
from gpo_vae.module.generate import basal_means, grn_dataframe
from gpo_vae.prediction_settings import PredictionSettings, resolve_settings, write_run_evaluation
from gpo_vae.preprocessing.artifact import (
    ARTIFACT_FILE,
    holds_same_artifact,
    is_artifact,
    read_artifact,
    validate_artifact,
    write_artifact,
)
from gpo_vae.presets import run_config_from
from gpo_vae.report.build import model_family
from gpo_vae.run_config import RunConfig
from gpo_vae.training.run_dir import CONFIG_FILE, load_trained_model, require_run_folder
from gpo_vae.training.train import train_model
from gpo_vae.version import __version__

if TYPE_CHECKING:
    import anndata as ad

    from gpo_vae.module.module import GPOVAE

#: Where :meth:`GPOVAEModel.train` writes an in-memory artifact, inside the run directory.
ARTIFACT_DIR = "artifact"
#: The obs column of a label in :meth:`GPOVAEModel.predict`.
PREDICTION_KEY = "perturbation"


class PredictionError(UserError, ValueError):
    """A label, batch or input the model cannot answer for; the message says why and what to do."""


class GPOVAEModel:
    """A trained GPO-VAE (or SAMS-VAE) and the screen it was trained on.

    Build it with :meth:`train` or :meth:`load`, not directly.

    Attributes
    ----------
    module
        The torch module (:class:`~gpo_vae.module.GPOVAE`), in eval mode.
    run_dir
        The run directory (``model.pt``, ``config.json``, ``run.json``, checkpoints).
    nodes
        The treatment nodes: the perturbed genes first (:attr:`perturbations`), then the
        downstream DEG nodes.
    genes
        The measured genes, the columns of every prediction.
    batches
        The batch (cell line) names the model conditions on; empty for a screen of one batch.
    """

    def __init__(
        self,
        module: GPOVAE,
        info: dict[str, Any],
        run_dir: str | Path,
        evaluation: str | Path | EvaluationConfig | dict[str, Any] | None = None,
    ) -> None:
        self.module = module
        self._evaluation = evaluation
        self.info = info
        self.run_dir = Path(run_dir)
        self.nodes = [str(node) for node in info["node_names"]]
        self.genes = pd.Index([str(gene) for gene in info["gene_names"]], name="gene")
        self.batches = [str(b) for b in info.get("batch_names", [])]
        self._node_index = {node: i for i, node in enumerate(self.nodes)}

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        device: str = "cpu",
        evaluation: str | Path | EvaluationConfig | dict[str, Any] | None = None,
    ) -> GPOVAEModel:
        """The best-validation model of a finished run directory (the workflow's or :meth:`train`'s).

        ``evaluation`` sets what :meth:`predict_shift` defaults to (:attr:`prediction_settings`):
        an evaluation folder of the workflow or its ``run.json``, an
        :class:`~gpo_vae.evaluation.config.EvaluationConfig` or its dict; None: the run's own
        (:mod:`gpo_vae.prediction_settings` says where it is looked for).
        """
        module, info = load_trained_model(run_dir, device)
        return cls(module, info, run_dir, evaluation)

    @classmethod
    def train(
        cls,
        data: ad.AnnData | str | Path,
        config: RunConfig | str | Path | dict[str, Any] | None = None,
        run_dir: str | Path | None = None,
        progress: bool = True,
    ) -> GPOVAEModel:
        """Train on a preprocessed screen and return the trained model.

        Parameters
        ----------
        data
            The artifact AnnData of :func:`gpo_vae.pp.prepare`, an artifact directory (the
            workflow's ``preprocessed/<key>``), or a raw screen in the default layout (then
            ``pp.prepare`` runs first with ``config.preprocess``; call it yourself for another
            layout).
        config
            A :class:`~gpo_vae.run_config.RunConfig`, a YAML file such as
            ``configs/gpo_vae_plus_custom.yaml``, its dict, or None: that file, GPO-VAE+ sized
            for a laptop (:func:`gpo_vae.presets.load_preset`; ``load_preset("gpo_vae",
            "custom_published")`` is the published method at its published size). Its ``model``
            and ``training`` sections train; its ``evaluation`` section is recorded in the run
            (``evaluation.json``) as what :meth:`predict_shift` defaults to.
        run_dir
            Where the run is written (reloadable with :meth:`load`); None: a new temporary
            folder. A finished run of the same settings and data there is reused, a killed
            one resumes.
        progress
            Show Lightning's progress bar.
        """
        config = run_config_from(config)
        run_dir = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="gpo_vae_run_"))
        require_run_folder(run_dir)
        if isinstance(data, str | Path):
            artifact_dir = Path(data)
            artifact_dir = artifact_dir.parent if artifact_dir.name == ARTIFACT_FILE else artifact_dir
        else:
            if not is_artifact(data):
                # a raw screen: the preprocessing stage first, with this config's section
                from gpo_vae.pp import prepare

                data = prepare(data, config.preprocess, progress=progress)
            validate_artifact(data)
            artifact_dir = run_dir / ARTIFACT_DIR
            if not holds_same_artifact(artifact_dir, data):
                if (run_dir / CONFIG_FILE).exists():
                    # never overwrite the artifact a run there was trained on
                    raise PredictionError(
                        f"{run_dir} holds a run trained on another preprocessing of the screen (other "
                        "cells, config or code version); pass a new run_dir"
                    )
                run_dir.mkdir(parents=True, exist_ok=True)
                write_artifact(data, artifact_dir)
        train_model(artifact_dir, config.model, config.training, run_dir, progress=progress)
        write_run_evaluation(config.evaluation, run_dir)
        return cls.load(run_dir)

    def __repr__(self) -> str:
        kind = model_family(to_dict(self.module.config))
        batches = f", {len(self.batches)} batches" if self.batches else ""
        return (
            f"GPOVAEModel({kind}: {len(self.perturbations)} perturbations, {len(self.nodes)} nodes, "
            f"{len(self.genes)} genes{batches}; run {self.run_dir})"
        )

    # -- what it was trained on ----------------------------------------------------------------
    @property
    def perturbations(self) -> list[str]:
        """The perturbed genes seen in training (each a node with training cells)."""
        return self.nodes[: int(self.info["n_perturbed"])]

    @property
    def config(self) -> dict[str, Any]:
        """The run's ``config.json``: model and training sections, artifact checksum and path."""
        return json.loads((self.run_dir / CONFIG_FILE).read_text())

    @cached_property
    def _artifact(self) -> EvaluationData:
        path = resolve_recorded(self.config["artifact_path"], self.run_dir)
        if not path.exists():
            raise PredictionError(
                f"{self.run_dir}: the artifact this run was trained on ({path}) is gone; this answer needs "
                "its training cells. Rerun the preprocessing (the workflow rebuilds it under the same name)."
            )
        return EvaluationData.from_anndata(read_artifact(path))

    @cached_property
    def median_library_size(self) -> float:
        """The median UMI count of the training cells: the default depth of :meth:`predict`."""
        return self._artifact.median_training_library()

    @cached_property
    def prediction_settings(self) -> PredictionSettings:
        """What :meth:`predict_shift` defaults to: the run's evaluation settings (cells per
        label, seed, library size, ATE scale) and where they were read."""
        try:
            return resolve_settings(self.run_dir, self.median_library_size, self._evaluation)
        except (OSError, ValueError, KeyError) as error:
            raise PredictionError(f"{self.run_dir}: cannot read the evaluation settings: {error}") from None

    # -- questions -------------------------------------------------------------------------------
    def _dosage(self, label: str) -> tuple[torch.Tensor, list[int]]:
        if label == CONTROL_LABEL:
            return torch.zeros(self.module.n_nodes), []
        genes = label_genes(label)
        unknown = [g for g in genes if g not in self._node_index]
        if unknown:
            raise PredictionError(
                f"{label!r}: {unknown} {'is' if len(unknown) == 1 else 'are'} not a node of this model. "
                f"Its perturbations are {', '.join(self.perturbations[:8])}"
                f"{' …' if len(self.perturbations) > 8 else ''} (model.perturbations); pairs are written "
                f"'A+B', controls {CONTROL_LABEL!r}."
            )
        weight = self.module.node_weight  # 1 / training cells of the node; 0 for none
        unseen = [g for g in genes if float(weight[self._node_index[g]]) == 0]
        if unseen:
            raise PredictionError(
                f"{label!r}: no training cell carries {unseen} (a downstream DEG node, or a gene held out "
                f"of training), so the model has not learned {'its' if len(unseen) == 1 else 'their'} "
                "effect. Held-out genes are scored by the workflow's unseen evaluation "
                "(--split heldout_perturbations)."
            )
        return label_dosage(label, self._node_index, self.module.n_nodes)

    def _batch_index(self, batch: str | int | None) -> int | None:
        if not self.batches:
            if batch not in (None, 0):
                raise PredictionError(f"batch={batch!r}: this model was trained on a screen of one batch")
            return None
        if batch is None:
            raise PredictionError(f"this model conditions on batches {self.batches}: pass batch=NAME")
        if isinstance(batch, str):
            if batch not in self.batches:
                raise PredictionError(f"batch={batch!r}: not one of the model's batches {self.batches}")
            return self.batches.index(batch)
        if not 0 <= int(batch) < len(self.batches):
            raise PredictionError(
                f"batch={batch}: pass a name of {self.batches} or an index below {len(self.batches)}"
            )
        return int(batch)

    def _control_counts(self, batch: int | None) -> sp.csr_matrix:
        return self._artifact.training_controls(batch)

    def predict(
        self,
        labels: Sequence[str] | str,
        n_cells: int | None = None,
        batch: str | int | None = None,
        seed: int | None = None,
        library_size: float | None = None,
        controls: bool = True,
    ) -> ad.AnnData:
        """Generate cells of each perturbation (and control cells).

        Parameters
        ----------
        labels
            Perturbations: a gene of :attr:`perturbations`, a combination ``"A+B"`` of them, or
            the control label ``"non-targeting"``.
        n_cells
            Cells per label; None: the evaluation's (:attr:`prediction_settings`).
        batch
            The batch (cell line) name or index the cells come from; required by a model of a
            screen with batches.
        seed
            The cells of a label depend on the seed, the label and the batch alone; None: the
            evaluation's, so a label's cells are those the evaluation generated.
        library_size
            UMIs per generated cell; None: the evaluation's (the training cells' median for a
            screen of your own, 10,000 on the published screens).
        controls
            Also generate ``n_cells`` control cells (zero dosage), labelled ``non-targeting``.

        Returns
        -------
        AnnData
            ``X`` the counts (CSR float32), ``obs["perturbation"]`` the label (categorical, in the
            order asked, controls last), ``obs["batch"]`` with batches, ``var_names`` the gene
            symbols, ``uns["gpo_vae"]`` the run, model settings, seed and library size.
        """
        import anndata as ad

        labels = _label_list(labels)
        if controls and CONTROL_LABEL not in labels:
            labels.append(CONTROL_LABEL)
        settings = self.prediction_settings
        n_cells = settings.n_cells if n_cells is None else int(n_cells)
        seed = settings.seed if seed is None else int(seed)
        if n_cells < 1:
            raise PredictionError(f"n_cells must be at least 1, got {n_cells}")
        b = self._batch_index(batch)
        dosages = {label: self._dosage(label) for label in labels}  # every label checked first
        library = float(library_size) if library_size is not None else settings.library_size
        basal = basal_draws(self.module, [b], n_cells, seed, self._control_counts)[b]
        blocks = [
            sp.csr_matrix(
                generate_label_cells(self.module, *dosages[label], n_cells, library, seed, b, basal)
            )
            for label in labels
        ]
        obs = pd.DataFrame(
            {
                PREDICTION_KEY: pd.Categorical(
                    np.repeat(labels, n_cells), categories=list(dict.fromkeys(labels))
                )
            }
        )
        if b is not None:
            obs["batch"] = pd.Categorical([self.batches[b]] * len(obs), categories=self.batches)
        obs.index = [f"predicted_{i}" for i in range(len(obs))]
        cells = ad.AnnData(X=sp.vstack(blocks, format="csr", dtype=np.float32), obs=obs)
        cells.var_names = self.genes.astype(str)
        cells.uns["gpo_vae"] = {
            **self._provenance(),
            "seed": int(seed),
            "n_cells_per_label": int(n_cells),
            "library_size": library,
            "batch": None if b is None else self.batches[b],
        }
        return cells

    def predict_shift(
        self,
        labels: Sequence[str] | str,
        n_cells: int | None = None,
        batch: str | int | None = None,
        seed: int | None = None,
        library_size: float | None = None,
        target_sum: float | None = None,
    ) -> pd.DataFrame:
        """The predicted average treatment effect of each label: genes × labels.

        ``mean log2(1 + target_sum·x/library)`` of the label's generated cells minus that of
        generated controls of the same batch. A model with batches and ``batch=None`` combines
        the batches in the shares of the label's test cells, as the evaluation does (equal
        shares for a label without test cells). Every None is the run's evaluation setting
        (:attr:`prediction_settings`), so the defaults give the report's model ATE.
        """
        labels = _label_list(labels)
        settings = self.prediction_settings
        n_cells = settings.n_cells if n_cells is None else int(n_cells)
        if n_cells < 2:
            raise PredictionError(f"n_cells must be at least 2, got {n_cells}")
        dosages = {label: self._dosage(label) for label in labels if label != CONTROL_LABEL}
        if not dosages:
            raise PredictionError("predict_shift needs at least one perturbation (not only the controls)")
        weights = None
        if self.batches:
            weights = pd.DataFrame(0.0, index=list(dosages), columns=self.batches)
            if batch is None:
                shares = self._artifact.test_batch_shares(list(dosages))
                weights = shares.fillna(1.0 / len(self.batches)) if shares is not None else weights
            else:
                weights.iloc[:, self._batch_index(batch)] = 1.0
        else:
            self._batch_index(batch)
        config = EvaluationConfig(
            n_generated_cells=n_cells,
            generated_library_size=settings.library_size if library_size is None else library_size,
            seed=settings.seed if seed is None else seed,
            summary_stats_cells=2,
        )
        summary = generate_and_summarise(
            self.module,
            self.nodes,
            list(dosages),
            self.genes,
            config,
            CONTROL_LABEL,
            batch_weights=weights,
            control_counts=self._control_counts,
            dosages=dosages,
            target_sum=settings.target_sum if target_sum is None else target_sum,
        )
        shift = summary.ate().T
        shift.columns.name = PREDICTION_KEY
        return shift.reindex(columns=[label for label in labels if label in dosages])

    def grn(self, threshold: float | None = None, as_matrix: bool = False) -> pd.DataFrame:
        """The learned gene-regulatory network.

        ``source``, ``target``, ``probability`` of every edge above ``threshold``, highest first,
        no self-loops; with ``as_matrix`` the nodes × nodes probabilities (rows sources, diagonal
        NaN). ``threshold`` None is the report's: 0.5, or for a mask that started at 0.5
        everywhere (the published model) its top 5 % of pairs from a perturbed gene
        (:func:`gpo_vae.grn.calibration.calibrated_threshold`, ``evaluation.grn_density``).
        """
        if self.module.config.latent_mask:
            raise PredictionError(
                "a SAMS-VAE mask connects nodes to latent dimensions, not to genes: it has no GRN"
            )
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise PredictionError(f"threshold must be in [0, 1), got {threshold}")
        matrix = grn_dataframe(self.module.mask_probabilities(), self.nodes).astype(np.float64)
        if as_matrix:
            np.fill_diagonal(matrix.values, np.nan)
            matrix.index.name, matrix.columns.name = "source", "target"
            return matrix
        if threshold is None:
            defaults = EvaluationConfig()
            threshold = defaults.grn_threshold
            if self.module.config.mask_init != "effects":  # a uniform start: no effect statistics needed
                start = initial_mask_probabilities(self.module, None)
                threshold = calibrated_threshold(
                    matrix.to_numpy(), start, threshold, defaults.grn_density, len(self.perturbations)
                )
        edges = edges_from_probabilities(matrix.to_numpy(), self.nodes, threshold)
        return edges.rename(columns={"p": "probability"})

    @torch.no_grad()
    def latent(self, adata: ad.AnnData, layer: str | None = None, batch_key: str = "batch") -> np.ndarray:
        """Each cell's basal state: the posterior mean of z_basal given its counts (cells × L).

        ``adata`` holds raw counts (``X``, or ``layers[layer]``) of at least the model's genes
        (matched by name; other genes are ignored); with batches, ``obs[batch_key]`` names each
        cell's batch. Perturbed cells are encoded as if unperturbed: the basal state is what the
        model separates from the perturbation's effect.
        """
        missing = self.genes.difference(adata.var_names)
        if len(missing):
            raise PredictionError(
                f"adata lacks {len(missing)} of the model's {len(self.genes)} genes, e.g. {list(missing[:5])}"
            )
        matrix = adata.X if layer is None else adata.layers[layer]
        columns = adata.var_names.get_indexer(self.genes)
        matrix = sp.csr_matrix(matrix)[:, columns] if sp.issparse(matrix) else np.asarray(matrix)[:, columns]
        codes = None
        if self.batches:
            if batch_key not in adata.obs.columns:
                raise PredictionError(
                    f"this model conditions on batches {self.batches}: adata.obs has no column {batch_key!r}; "
                    "pass batch_key= the column naming each cell's batch"
                )
            codes = pd.Index(self.batches).get_indexer(adata.obs[batch_key].astype(str))
            if (codes < 0).any():
                raise PredictionError(
                    f"obs[{batch_key!r}] holds batches the model does not know: "
                    f"{sorted(set(adata.obs[batch_key].astype(str)) - set(self.batches))[:5]}"
                )
        return basal_means(self.module, matrix, codes if self.module.n_batches else None)

    def _provenance(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "model": to_dict(self.module.config),
            "artifact_sha256": self.info.get("artifact_sha256"),
            "best_epoch": self.info.get("best_epoch"),
            "gpo_vae_version": __version__,
        }


def _label_list(labels: Sequence[str] | str) -> list[str]:
    """One label or several, as a list of strings."""
    return [labels] if isinstance(labels, str) else [str(label) for label in labels]


__all__ = ["PREDICTION_KEY", "GPOVAEModel", "PredictionError"]
