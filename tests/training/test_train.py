"""train_model / load_trained_model on the synthetic artifact with a tiny model."""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from gpo_vae.module import GPOVAE, LOSS_TERMS
from gpo_vae.module.generate import grn_dataframe, sample_cells
from gpo_vae.preprocessing.artifact import MARKER_FILE
from gpo_vae.training.train import load_trained_model, read_events, train_model
from tests.training.conftest import TINY_MODEL, TINY_TRAINING

#: Mask AUROC the test demands; 0.81 measured (seed 0), 0.78 for ranking by mean ΔX, chance 0.5
#: with a standard deviation of ~0.04 for 61 edges among ~1,400 pairs.
MIN_MASK_AUROC = 0.7


def metrics(run_dir, version=0) -> pd.DataFrame:
    return pd.read_csv(run_dir / "logs" / f"version_{version}" / "metrics.csv")


def val_rows(run_dir, version=0) -> pd.DataFrame:
    return metrics(run_dir, version).dropna(subset=["val/loss"]).set_index("epoch")


def state_dict(path, key="state_dict") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"tensors differ: {different}"


class KillAtEpochStart(pl.Callback):
    """Simulates a job killed as ``epoch`` starts, after the previous epoch's checkpoints."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


@pytest.fixture(scope="module")
def short_run(artifact_dir, tmp_path_factory):
    """20 epochs of the tiny model (~15 s): enough to learn, short enough for every test run."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    training = TINY_TRAINING.replace(max_epochs=20)
    return train_model(artifact_dir, TINY_MODEL, training, run_dir, progress=False)


@pytest.fixture(scope="module")
def four_epochs(artifact_dir, tmp_path_factory):
    """An uninterrupted 4-epoch run, the reference for resume and reproducibility."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return train_model(artifact_dir, TINY_MODEL, TINY_TRAINING, run_dir, progress=False)


def test_validation_elbo_decreases(short_run):
    val = val_rows(short_run)
    assert list(val.index) == list(range(20))
    loss = val["val/loss"]
    assert loss[19] < loss[10] < loss[0]
    assert loss[19] < 0.9 * loss[0], loss.to_dict()
    assert val["val/reconstruction"][19] < val["val/reconstruction"][0]
    train = metrics(short_run).dropna(subset=["train/loss"]).set_index("epoch")["train/loss"]
    assert train[19] < train[0]


def test_run_directory_records(short_run, artifact_dir):
    assert (short_run / ".complete").exists()
    for name in ("config.json", "model.pt", "run.json", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (short_run / name).is_file(), name
    config = json.loads((short_run / "config.json").read_text())
    sha = (artifact_dir / MARKER_FILE).read_text().strip()
    assert config["artifact_sha256"] == sha and config["seed"] == 0
    assert config["model"]["n_latent"] == 8 and config["training"]["max_epochs"] == 20
    run = json.loads((short_run / "run.json").read_text())
    val = val_rows(short_run)["val/loss"]
    assert run["epochs"] == 20 and run["device"] == "cpu" and not run["resumed"]
    assert run["best_epoch"] == int(val.idxmin())
    assert run["best_val_loss"] == pytest.approx(val.min(), rel=1e-6)
    assert run["training_seconds"] > 0 and run["packages"]["torch"] and run["config"] == config
    columns = set(metrics(short_run).columns)
    assert {f"{stage}/{term}" for stage in ("train", "val") for term in LOSS_TERMS} <= columns
    assert {"train/loss", "val/loss", "train/step_loss"} <= columns


def test_load_trained_model_gives_the_best_weights(short_run, artifact_dir):
    model, info = load_trained_model(short_run)
    assert isinstance(model, GPOVAE) and not model.training
    best = state_dict(short_run / "checkpoints/best.ckpt")
    assert_bitwise_equal(model.state_dict(), {k.removeprefix("model."): v for k, v in best.items()})
    assert info["best_epoch"] == json.loads((short_run / "run.json").read_text())["best_epoch"]
    assert len(info["node_names"]) == model.n_nodes and len(info["gene_names"]) == model.n_genes
    cells = sample_cells(model, 0, 16, seed=1)
    assert cells.shape == (16, model.n_genes) and torch.all(cells >= 0)
    graph = grn_dataframe(model.mask_probabilities(), info["node_names"])
    assert list(graph.index) == info["node_names"] and graph.shape == (model.n_nodes, model.n_nodes)


def test_finished_run_is_returned_without_training(short_run, artifact_dir):
    model_file = short_run / "model.pt"
    before = model_file.stat().st_mtime_ns
    assert train_model(artifact_dir, TINY_MODEL, TINY_TRAINING.replace(max_epochs=20), short_run) == short_run
    assert model_file.stat().st_mtime_ns == before
    assert [e["event"] for e in read_events(short_run)][-1] == "reused"
    with pytest.raises(ValueError, match="differs in training"):
        train_model(artifact_dir, TINY_MODEL, TINY_TRAINING.replace(max_epochs=21), short_run)


def test_mask_ranks_true_edges_above_non_edges(short_run, synthetic_dataset):
    model, info = load_trained_model(short_run)
    nodes, n_perturbed = info["node_names"], info["n_perturbed"]
    index = {name: i for i, name in enumerate(nodes)}
    network = pd.read_csv(synthetic_dataset["network"])
    truth = np.zeros((len(nodes), len(nodes)), dtype=bool)
    for source, target in zip(network["source"], network["target"], strict=True):
        if source in index and target in index:
            truth[index[source], index[target]] = True
    # rows of perturbed nodes (the only rows the data informs), every other node as target
    pairs = ~np.eye(len(nodes), dtype=bool)
    pairs[n_perturbed:] = False
    auroc = roc_auc_score(truth[pairs], model.mask_probabilities().numpy()[pairs])
    print(f"mask AUROC {auroc:.3f} over {truth[pairs].sum()} edges among {pairs.sum()} pairs")
    assert truth[pairs].sum() >= 30
    assert auroc > MIN_MASK_AUROC


def test_killed_run_resumes_to_the_same_weights(four_epochs, artifact_dir, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_model(
            artifact_dir, TINY_MODEL, TINY_TRAINING, run_dir, progress=False, callbacks=[KillAtEpochStart(2)]
        )
    assert not (run_dir / ".complete").exists() and not (run_dir / "model.pt").exists()
    assert torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1

    train_model(artifact_dir, TINY_MODEL, TINY_TRAINING, run_dir, progress=False)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["resumed"] and run["epochs"] == 4
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.pt"):
        assert_bitwise_equal(state_dict(four_epochs / name), state_dict(run_dir / name))
    optimizer = [
        torch.load(d / "checkpoints/last.ckpt", weights_only=True)["optimizer_states"][0]
        for d in (four_epochs, run_dir)
    ]
    for a, b in zip(optimizer[0]["state"].values(), optimizer[1]["state"].values(), strict=True):
        assert_bitwise_equal(a, b)
    # the resumed session logged epochs 2 and 3 exactly as the uninterrupted run did
    pd.testing.assert_frame_equal(val_rows(run_dir, version=1), val_rows(four_epochs).loc[[2, 3]])
    events = [(e["event"], e.get("resume_from_epoch")) for e in read_events(run_dir)]
    assert events == [("fit", None), ("fit", 1), ("complete", None)]


def test_an_unreadable_last_checkpoint_is_set_aside_and_training_starts_again(
    four_epochs, artifact_dir, tmp_path
):
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_model(
            artifact_dir, TINY_MODEL, TINY_TRAINING, run_dir, progress=False, callbacks=[KillAtEpochStart(2)]
        )
    last = run_dir / "checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # a kill in the middle of writing it
    train_model(artifact_dir, TINY_MODEL, TINY_TRAINING, run_dir, progress=False)
    events = read_events(run_dir)
    assert [e["event"] for e in events] == ["fit", "unreadable_checkpoint", "fit", "complete"]
    assert events[2]["resume_from_epoch"] is None and (run_dir / "checkpoints/last.ckpt.unreadable").exists()
    assert_bitwise_equal(state_dict(four_epochs / "model.pt"), state_dict(run_dir / "model.pt"))


def test_same_seed_same_metrics_other_seed_not(four_epochs, artifact_dir, tmp_path):
    again = train_model(artifact_dir, TINY_MODEL, TINY_TRAINING, tmp_path / "again", progress=False)
    reference = (four_epochs / "logs/version_0/metrics.csv").read_text()
    assert (again / "logs/version_0/metrics.csv").read_text() == reference
    other = train_model(
        artifact_dir, TINY_MODEL, TINY_TRAINING.replace(seed=1), tmp_path / "seed1", progress=False
    )
    assert (other / "logs/version_0/metrics.csv").read_text() != reference


def test_bf16_mixed_precision_trains_on_cpu(artifact_dir, tmp_path):
    training = TINY_TRAINING.replace(max_epochs=1, precision="bf16-mixed")
    run_dir = train_model(artifact_dir, TINY_MODEL, training, tmp_path / "bf16", progress=False)
    assert np.isfinite(json.loads((run_dir / "run.json").read_text())["best_val_loss"])
    assert load_trained_model(run_dir)[0].guide.mask_logits.dtype == torch.float32


def test_wandb_enabled_but_missing_is_a_clear_error(artifact_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install .gpo-vae\[wandb\]"):
        train_model(artifact_dir, TINY_MODEL, TINY_TRAINING.replace(wandb=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(artifact_dir, tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        train_model(artifact_dir, TINY_MODEL, TINY_TRAINING.replace(device="cuda"), tmp_path / "run")


def test_unfinished_run_cannot_be_loaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        load_trained_model(tmp_path)


def test_plus_run_starts_from_the_effect_prior_and_reloads_its_target(artifact_dir, tmp_path):
    from gpo_vae.grn.effects import effect_prior_logits, effect_zscores, prior_logit
    from gpo_vae.training.data import ArtifactCells

    config = TINY_MODEL.replace(mask_init="effects", grn_target="effects", hop=0, mask_prior=0.05)
    cells = ArtifactCells.read(artifact_dir)
    z = effect_zscores(
        cells.counts, cells.dosage, cells.rows("train"), cells.nodes, cells.genes, cells.n_perturbed
    )
    expected = effect_prior_logits(z, cells.n_perturbed, config.mask_init_density, prior_logit(0.05))
    run = train_model(
        artifact_dir, config, TINY_TRAINING.replace(max_epochs=1), tmp_path / "plus", progress=False
    )
    model, _ = load_trained_model(run)
    np.testing.assert_allclose(model.grn_effect_target.numpy(), expected, rtol=1e-5, atol=1e-5)
    logits = model.guide.mask_logits.detach().numpy()
    # one epoch at lr 3e-4 moves a logit by at most ~steps × lr: the start was the effect prior
    assert np.abs(logits - expected).max() < 0.05
    off = ~np.eye(len(logits), dtype=bool)
    assert ((logits > 0) & off).sum() == ((expected > 0) & off).sum()


def test_a_deconvolved_start_is_network_deconvolution_of_the_effects_and_evaluation_rebuilds_it(
    artifact_dir, tmp_path
):
    """``effect_statistic: deconvolved``: the mask starts from, and the GRN term aligns with, the
    effect prior of the deconvolved |effect z|; the evaluation's ``model_init`` is that start."""
    from gpo_vae.evaluation.grn_benchmark import initial_mask_probabilities
    from gpo_vae.grn.baselines import deconvolution_scores
    from gpo_vae.grn.effects import effect_prior_logits, effect_zscores, prior_logit
    from gpo_vae.training.data import ArtifactCells

    config = TINY_MODEL.replace(
        mask_init="effects", grn_target="effects", hop=0, mask_prior=0.05, effect_statistic="deconvolved"
    )
    cells = ArtifactCells.read(artifact_dir)
    z = effect_zscores(
        cells.counts, cells.dosage, cells.rows("train"), cells.nodes, cells.genes, cells.n_perturbed
    )
    direct = deconvolution_scores(np.abs(z))
    expected = effect_prior_logits(direct, cells.n_perturbed, config.mask_init_density, prior_logit(0.05))
    assert not np.allclose(expected, effect_prior_logits(z, cells.n_perturbed, 0.05, prior_logit(0.05)))
    run = train_model(
        artifact_dir, config, TINY_TRAINING.replace(max_epochs=1), tmp_path / "plus", progress=False
    )
    model, info = load_trained_model(run)
    assert info["model_config"]["effect_statistic"] == "deconvolved"
    np.testing.assert_allclose(model.grn_effect_target.numpy(), expected, rtol=1e-5, atol=1e-5)
    start = 1.0 / (1.0 + np.exp(-expected))
    np.testing.assert_allclose(initial_mask_probabilities(model, z), start, rtol=1e-6, atol=1e-6)


def test_training_with_the_counts_on_disk_gives_the_same_run(four_epochs, artifact_dir, tmp_path):
    """counts="disk": each batch reads its cells from the artifact (memory no longer grows with
    the cells); same seed, same batches, same weights and losses, bit for bit."""
    run_dir = train_model(
        artifact_dir, TINY_MODEL, TINY_TRAINING, tmp_path / "run", progress=False, counts="disk"
    )
    assert_bitwise_equal(state_dict(four_epochs / "model.pt"), state_dict(run_dir / "model.pt"))
    pd.testing.assert_frame_equal(val_rows(run_dir), val_rows(four_epochs))
    fits = [e for e in read_events(run_dir) if e["event"] == "fit"]
    assert [e["counts"] for e in fits] == ["disk"]
    assert [e["counts"] for e in read_events(four_epochs) if e["event"] == "fit"] == ["memory"]  # auto, small


def test_auto_keeps_the_counts_in_memory_while_they_take_a_share_of_what_is_free(artifact_dir):
    from gpo_vae.data.on_disk import CountsOnDisk
    from gpo_vae.training.data import ArtifactCells, counts_place

    assert counts_place(artifact_dir) == "memory"  # a few MB
    assert counts_place(artifact_dir, share=0.0) == "disk"
    cells = ArtifactCells.read(artifact_dir, counts="disk")
    # the three matrices that grow with the cells stay in the file
    assert all(isinstance(m, CountsOnDisk) for m in (cells.counts, cells.delta_x, cells.cf_medians))
    memory = ArtifactCells.read(artifact_dir)
    with_cf, without_cf = np.flatnonzero(memory.cf_row >= 0), np.flatnonzero(memory.cf_row < 0)
    rows = np.array([7, 3, 3, 120, with_cf[5], with_cf[0], with_cf[5], without_cf[-1]])
    for key, value in memory.batch(rows).items():
        assert torch.equal(value, cells.batch(rows)[key]), key
    assert memory.batch(rows)["has_cf"][4:].tolist() == [True, True, True, False]
    with pytest.raises(ValueError, match="'auto', 'memory' or 'disk'"):
        ArtifactCells.read(artifact_dir, counts="gpu")


def test_a_model_started_from_the_effects_trains_the_same_from_disk(artifact_dir, tmp_path):
    """GPO-VAE+ (mask and GRN target from the effect statistic) reads the training cells' effects
    from counts left on disk a block at a time: the same z-scores, bit for bit, and the same run."""
    from gpo_vae.data.on_disk import CountsOnDisk
    from gpo_vae.grn.effects import training_effect_zscores
    from gpo_vae.training.data import ArtifactCells

    memory, disk = ArtifactCells.read(artifact_dir), ArtifactCells.read(artifact_dir, counts="disk")
    assert isinstance(disk.counts, CountsOnDisk)
    disk = dataclasses.replace(disk, counts=disk.counts.with_fields(block_cells=300))  # several blocks
    np.testing.assert_array_equal(training_effect_zscores(disk), training_effect_zscores(memory))
    config = TINY_MODEL.replace(mask_init="effects", grn_target="effects", hop=0, mask_prior=0.05)
    training = TINY_TRAINING.replace(max_epochs=1)
    runs = [
        train_model(artifact_dir, config, training, tmp_path / place, progress=False, counts=place)
        for place in ("memory", "disk")
    ]
    assert_bitwise_equal(state_dict(runs[0] / "model.pt"), state_dict(runs[1] / "model.pt"))
