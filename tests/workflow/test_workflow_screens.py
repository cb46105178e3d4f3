"""Screens shaped like real public ones, each written as a user's ``.h5ad`` and run through ``main``.

Every simulator preset of a real-screen shape (a panel without its targets, CRISPRa with
exactly 100 cells per perturbation, dual-guide ``A+B`` cells, two cell lines, counts in a layer,
guide-level labels) goes through the plain command a user types, with the laptop-sized custom
config shrunk to a tiny model, and each proves the property its shape is about.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.data.synthetic import SyntheticConfig, saved_layout, simulate_perturbseq
from gpo_vae.preprocessing.artifact import read_artifact
from tests.workflow_sandbox import REPO_ROOT, TINY_SECTIONS, WorkflowSandbox

SMALL = {"n_perturbations": 12, "cells_per_perturbation": 80.0, "control_fraction": 0.25, "n_genes": 600}
SIZES = {
    "panel": {"n_genes": 400},
    "crispra": {"cells_per_perturbation": 100.0, "n_combinations": 3},
    "combinatorial": {"n_combinations": 6},
    "nonadditive": {"n_combinations": 6},
}
USER_ARGS = ("--perturbation-key", "gene", "--control-label", "non-targeting")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    box = WorkflowSandbox.create(tmp_path_factory.mktemp("screens"))
    box.shrink_configs(TINY_SECTIONS, ("gpo_vae_plus_custom",))
    path = box.root / "configs" / "gpo_vae_plus_custom.yaml"
    raw = load_yaml(path)
    raw["preprocess"]["qc"]["doublets"] = False  # scrublet is tested elsewhere; seconds here
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    (box.root / "screens").mkdir()
    return box


def write_preset(box: WorkflowSandbox, preset: str) -> tuple[str, SyntheticConfig]:
    """The preset saved in its layout as ``screens/<preset>.h5ad``, its truth beside it."""
    config = SyntheticConfig.preset(preset, **{**SMALL, **SIZES.get(preset, {})})
    screen = simulate_perturbseq(config)
    saved_layout(screen.adata, config.layout).write_h5ad(box.root / "screens" / f"{preset}.h5ad")
    screen.network.to_csv(box.root / "screens" / f"{preset}_truth.csv", index=False)
    return f"screens/{preset}.h5ad", config


def run_main(box: WorkflowSandbox, preset: str, *extra: str) -> tuple[str, str]:
    dataset, _ = write_preset(box, preset)
    execution, result = box.redun("main", "--dataset", dataset, *USER_ARGS, *extra)
    return execution, result.stdout + result.stderr


def artifact_of(box: WorkflowSandbox, preset: str) -> ad.AnnData:
    found = list((box.root / "results" / preset / "preprocessed").glob("*/artifact.h5ad"))
    assert len(found) == 1, found
    return read_artifact(found[0].parent)


def report_of(box: WorkflowSandbox, preset: str) -> str:
    found = list((box.root / "results" / preset / "evaluation").glob("*/report.html"))
    assert len(found) == 1, found
    return found[0].read_text()


def test_panel_without_targets_pairs_on_components_and_keeps_a_node_per_target(sandbox):
    _, output = run_main(sandbox, "panel", "--networks", "screens/panel_truth.csv")
    artifact = artifact_of(sandbox, "panel")
    record = json.loads(artifact.uns["record"])
    assert record["pairing"]["features"] == "pca" and record["pairing"]["measured_targets"] == 0
    n_perturbed = int(artifact.uns["n_perturbed"])
    kept = sorted(set(artifact.obs["gene"].astype(str)) - {"non-targeting"})
    assert list(artifact.uns["nodes"])[:n_perturbed] == kept  # every target is a node
    assert not np.asarray(artifact.uns["node_measured"])[:n_perturbed].any()
    assert not artifact.obsm["delta_x"][:, :n_perturbed].any()  # ΔX of an unmeasured node is 0
    table = {row["perturbation"]: row for row in record["perturbation_table"]}
    assert all(row["measured"] == "no" for row in table.values())
    assert "target not measured" in " ".join(row["reason"] for row in table.values())
    assert "perturbations:" in output and "not measured" in output  # the table on the terminal
    reference = pd.read_csv(
        next((sandbox.root / "results" / "panel" / "evaluation").glob("*/grn_reference.csv")),
        keep_default_na=False,
    )
    truth = reference[reference["network"] == "panel_truth"].set_index("method")
    assert {"model", "correlation", "random"} <= set(truth.index)
    assert np.isfinite(pd.to_numeric(truth.loc["model", "auprc"]))
    html = report_of(sandbox, "panel")
    assert "principal components" in html and "one batch" in html and "crispri" in html


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_crispra_with_exactly_100_cells_keeps_its_activations(sandbox):
    run_main(sandbox, "crispra")
    artifact = artifact_of(sandbox, "crispra")
    record = json.loads(artifact.uns["record"])
    assert record["modality"]["resolved"] == "crispra"
    rows = pd.DataFrame(record["perturbation_table"]).set_index("perturbation")
    assert (rows["cells"] == 100).all()
    # a perturbation with exactly the rule's count of cells passes it (min_cells is "at least")
    on_target_unchanged = rows["cells_on_target"] == rows["cells"]
    assert not (on_target_unchanged & (rows["status"] == "min_cells")).any()
    unmeasured_strong = rows[(rows["measured"] == "no") & (rows["status"] != "strong_perturbations")]
    assert len(unmeasured_strong) and (unmeasured_strong["status"] == "kept").all()
    on_target = record["filters"][1]
    assert on_target["modality"] == "crispra"
    labels = artifact.obs["gene"].astype(str).to_numpy()
    library = np.asarray(artifact.X.sum(axis=1)).ravel()
    for gene, threshold in on_target["control_thresholds"].items():
        cells = np.flatnonzero(labels == gene)
        if cells.size:
            column = artifact.var_names.get_loc(gene)
            values = artifact.X[cells, column].toarray().ravel() / library[cells] * 1e4
            assert (values > threshold).all(), gene  # above the controls' 90th percentile
    combos = [label for label in set(labels) if "+" in label]
    assert combos
    dosage = artifact.obsm["D"].toarray()
    assert (dosage[np.isin(labels, combos)].sum(axis=1) == 2).all()


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_combinations_share_the_nodes_of_their_singles(sandbox):
    run_main(sandbox, "combinatorial")
    artifact = artifact_of(sandbox, "combinatorial")
    nodes = list(artifact.uns["nodes"])
    n_perturbed = int(artifact.uns["n_perturbed"])
    assert not any("+" in node for node in nodes)
    labels = artifact.obs["gene"].astype(str).to_numpy()
    dosage = artifact.obsm["D"].toarray()
    combos = sorted({label for label in labels if "+" in label})
    assert combos
    for combo in combos:
        expected = np.zeros(len(nodes))
        expected[[nodes.index(gene) for gene in combo.split("+")]] = 1.0
        assert (dosage[labels == combo] == expected).all(), combo
    assert not dosage[:, n_perturbed:].any()
    metrics = pd.read_csv(
        next((sandbox.root / "results" / "combinatorial" / "evaluation").glob("*/prediction_metrics.csv"))
    )
    model = metrics[(metrics["method"] == "model") & (metrics["reference"] == "heldout_test")]
    assert set(combos) & set(model["perturbation"])  # combinations are evaluated as their own rows


def test_heldout_pairs_of_a_nonadditive_screen_are_predicted_scored_and_reported(sandbox):
    run_main(sandbox, "nonadditive", "--split", "heldout_combinations")
    artifact = artifact_of(sandbox, "nonadditive")
    splits = json.loads(artifact.uns["record"])["splits"]
    held = splits["heldout_combinations"]
    assert held and splits["mode"] == "heldout_combinations" and splits["unseen_singles"] == []
    labels = artifact.obs["gene"].astype(str).to_numpy()
    split = artifact.obs["split"].astype(str).to_numpy()
    assert (split[np.isin(labels, held)] == "test").all()
    assert {g for pair in held for g in pair.split("+")} <= set(labels[split == "train"])
    folder = next((sandbox.root / "results" / "nonadditive" / "evaluation").glob("*/"))
    table = pd.read_csv(folder / "unseen_metrics.csv")
    pairs = table[table["kind"] == "combination"]
    assert set(pairs["perturbation"]) == set(held)
    assert {"model", "additive", "matching_mean", "noncontrol_mean"} <= set(pairs["method"])
    assert (pairs.loc[pairs["method"] == "additive", "interaction_pearson"] == 0).all()
    assert pairs.loc[pairs["method"] == "model", "interaction_pearson"].notna().all()
    cells = ad.read_h5ad(folder / "unseen_cells.h5ad")
    assert set(held) <= set(cells.obs["gene"].astype(str)) and cells.n_vars == artifact.n_vars
    html = report_of(sandbox, "nonadditive")
    assert "Held-out pairs A+B" in html and "interaction Pearson r" in html and "matching mean" in html


def test_batches_pair_qc_and_model_within_each_cell_line(sandbox):
    run_main(sandbox, "batches", "--batch-key", "cell_line")
    artifact = artifact_of(sandbox, "batches")
    batch = artifact.obs["batch"].astype(str).to_numpy()
    partner = artifact.obs["partner"].to_numpy()
    assert set(batch) == {"RPE1", "K562"}
    assert (batch[partner] == batch).all()  # pairing never crosses batches
    split = artifact.obs["split"].astype(str).to_numpy()
    assert (split[partner] == split).all()
    record = json.loads(artifact.uns["record"])
    assert set(record["qc"]["thresholds_by_batch"]) == {"K562", "RPE1"}
    assert record["pairing"]["within_batch"] and record["batches"]["key"] == "cell_line"
    model_file = next((sandbox.root / "results" / "batches" / "runs").glob("*/model.pt"))
    payload = torch.load(model_file, map_location="cpu", weights_only=True)
    assert payload["batch_names"] == ["K562", "RPE1"]
    html = report_of(sandbox, "batches")
    assert "2 from obs[&#x27;cell_line&#x27;]: K562, RPE1" in html


def test_counts_in_a_layer_are_what_the_model_sees(sandbox):
    run_main(sandbox, "counts_layer")
    artifact = artifact_of(sandbox, "counts_layer")
    saved = ad.read_h5ad(sandbox.root / "screens" / "counts_layer.h5ad")
    rows = saved.obs_names.get_indexer(artifact.obs_names)
    np.testing.assert_array_equal(artifact.X.toarray(), saved.layers["counts"][rows].toarray())
    assert json.loads(artifact.uns["record"])["layout"]["counts"] == "counts"
    assert "counts from counts" in report_of(sandbox, "counts_layer")


def test_guide_labels_become_genes(sandbox):
    run_main(sandbox, "guides")
    artifact = artifact_of(sandbox, "guides")
    labels = set(artifact.obs["gene"].astype(str))
    saved = set(ad.read_h5ad(sandbox.root / "screens" / "guides.h5ad").obs["gene"].astype(str))
    assert all(label.rsplit("_", 1)[-1] in {"1", "2", "3"} for label in saved)
    assert not any(label.endswith(("_1", "_2")) for label in labels)
    assert labels <= {label.rsplit("_", 1)[0] for label in saved}
    layout = json.loads(artifact.uns["record"])["layout"]
    assert layout["guide_pattern"] and set(layout["guides_per_gene"].values()) == {2}


def test_a_touched_input_keeps_its_derived_files_and_addresses(sandbox):
    """The summary statistics computed for a user's screen used to embed their write time, so a
    touched input (or a lost redun database) preprocessed and trained again."""
    results = sandbox.root / "results" / "panel"
    assert results.is_dir(), "runs after the panel test"
    stats = results / "data" / "summary_stats.csv"
    before = stats.read_bytes()
    artifacts = sorted(p.name for p in (results / "preprocessed").iterdir())
    runs = sorted(p.name for p in (results / "runs").iterdir())
    screen = sandbox.root / "screens" / "panel.h5ad"
    later = time.time() + 5
    os.utime(screen, (later, later))
    execution, _ = sandbox.redun(
        "main", "--dataset", "screens/panel.h5ad", *USER_ARGS, "--networks", "screens/panel_truth.csv"
    )
    assert "prepare_local_dataset" in sandbox.executed(execution)  # the file changed for redun
    assert stats.read_bytes() == before
    assert sorted(p.name for p in (results / "preprocessed").iterdir()) == artifacts
    assert sorted(p.name for p in (results / "runs").iterdir()) == runs
    assert "train_run" not in sandbox.executed(execution)


def test_bad_input_stops_in_one_message_and_inspect_previews_without_training(sandbox):
    dataset, _ = write_preset(sandbox, "guides")
    command = sandbox.command("run", "workflow.py", "main", "--dataset", dataset, "--control-label", "NT")
    result = subprocess.run(
        command, cwd=sandbox.root, env=sandbox.environment(), capture_output=True, text=True
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1
    assert len(lines) <= 20, "\n".join(lines)
    assert lines[-1].startswith("DataContractError: ") and "pass --control-label non-targeting" in lines[-1]
    assert "Traceback" not in result.stdout + result.stderr
    debug = subprocess.run(
        command,
        cwd=sandbox.root,
        env=sandbox.environment({"GPO_VAE_DEBUG": "1"}),
        capture_output=True,
        text=True,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stdout + debug.stderr
    for preset, extra in (("crispra", ()), ("batches", ("--batch-key", "cell_line"))):
        dataset, _ = write_preset(sandbox, preset)
        execution, result = sandbox.redun("inspect", "--dataset", dataset, *USER_ARGS, *extra)
        output = result.stdout + result.stderr
        # in seconds because it never preprocesses, trains or evaluates (its time is in benchmarks/)
        assert {name.split(".")[-1] for name, _ in sandbox.jobs(execution)} <= {
            "inspect",
            "prepare_local_dataset",
            "inspect_dataset",
        }
        assert "modality: " in output and "pairing: on " in output and "main would train on" in output
        assert ("batches (obs['cell_line'])" in output) == (preset == "batches")


def test_simulate_cli_writes_a_users_screen(tmp_path):
    out = tmp_path / "screen.h5ad"
    subprocess.run(
        [sys.executable, "benchmarks/simulate.py", "--preset", "counts_layer", "--h5ad", str(out),
         "--set", "n_perturbations=6", "--set", "n_genes=300"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    saved = ad.read_h5ad(out)
    assert "counts" in saved.layers and saved.n_vars == 300
    assert not np.allclose(saved.X.data, np.round(saved.X.data))  # X normalised, as tools leave it
