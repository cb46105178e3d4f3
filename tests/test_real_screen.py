"""Real cells under the shipped defaults, and simulated screens that reproduce what real ones did.

The real screen (``../shared/data/screens``: 9 CRISPRi knockdowns in three glioma lines, 100
controls per line, 500 genes, no target measured, almost no DEGs) goes through the plain command
a user types, with and without its cell lines as batches, with no config file: it must finish
with a report that says how few controls its ATEs used and that its held-out ATE is mostly
noise. Skipped where the shared data is absent. The simulated screens reproduce the failures a
real CRISPRa screen showed (100 controls in all, pairs whose singles are weak) without it.
"""

from __future__ import annotations

import json

import anndata as ad
import pandas as pd
import pytest
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.data.synthetic import SyntheticConfig, simulate_perturbseq
from gpo_vae.preprocessing.artifact import read_artifact
from gpo_vae.preprocessing.splits import split_heldout_combinations
from tests.shared_data import shared_file
from tests.workflow_sandbox import TINY_SECTIONS, WorkflowSandbox

REAL = "screens/mcfaline23_glioma_crispri.h5ad"
USER_ARGS = ("--perturbation-key", "gene", "--control-label", "non-targeting")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    box = WorkflowSandbox.create(tmp_path_factory.mktemp("real"))
    box.shrink_configs(TINY_SECTIONS, ("gpo_vae_plus_custom",))
    (box.root / "screens").mkdir()
    return box


def _only(folder, pattern: str):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("batches", [True, False], ids=["by_cell_line", "pooled"])
def test_the_real_screen_runs_under_the_defaults_and_says_how_far_to_trust_it(sandbox, batches):
    real = shared_file(REAL)
    target = sandbox.root / "screens" / real.name
    if not target.exists():
        target.symlink_to(real)
    extra = ("--batch-key", "cell_type") if batches else ()
    _, result = sandbox.redun("main", "--dataset", f"screens/{real.name}", *USER_ARGS, *extra)
    results = sandbox.root / "results" / real.stem
    artifacts = sorted((results / "preprocessed").glob("*/artifact.h5ad"))
    artifact = read_artifact(max(artifacts, key=lambda p: p.stat().st_mtime).parent)
    record = json.loads(artifact.uns["record"])
    table = pd.DataFrame(record["perturbation_table"]).set_index("perturbation")
    assert (table["status"] == "kept").sum() == 9  # weak perturbations are data (min_degs: 0)
    splits = record["splits"]
    obs = artifact.obs
    test_controls = ((obs["gene"] == "non-targeting") & (obs["split"] == "test")).sum()
    if batches:
        # 100 controls per line: shared equally between train and test, never stopping the run
        assert splits["scarce_controls"] == {"A172": 42, "T98G": 42, "U87MG": 42}
        assert test_controls == 126
    else:
        assert splits["scarce_controls"] == {} and test_controls >= 50
    train_cells = set(obs.index[obs["split"] == "train"])
    assert not train_cells & set(obs.index[obs["split"] == "test"])
    reports = sorted((results / "evaluation").glob("*/report.html"))
    report = max(reports, key=lambda p: p.stat().st_mtime).read_text()
    assert ("fewer than the 50 preprocess.split.min_test_controls" in report) == batches
    assert "held-out ATE is mostly counting noise" in report  # the screen's split-half ceiling
    assert "report: " in result.stdout + result.stderr


def _crispra_screen(tmp_path) -> tuple[ad.AnnData, pd.DataFrame]:
    """The CRISPRa shape of a real screen: singles and ``A+B`` pairs, 100 cells a label, 100
    controls in all, almost no target measured; and statistics in which every single of a pair
    has 0 DEGs (as a real pair's weak single had)."""
    from gpo_vae.data.summary_stats import compute_summary_stats

    config = SyntheticConfig.preset(
        "crispra", n_perturbations=10, n_combinations=3, n_genes=400, control_fraction=100 / 1400
    )
    adata = simulate_perturbseq(config).adata
    stats = compute_summary_stats(adata, progress=False)
    labels = adata.obs["gene"].astype(str)
    pairs = sorted({label for label in labels.unique() if "+" in label})
    singles = {gene for pair in pairs for gene in pair.split("+")}
    symbol = stats["genetic perturbation"].str.split("_").str[1]
    stats.loc[symbol.isin(singles), "Number of DEGs (anderson-darling)"] = 0
    assert int((labels == "non-targeting").sum()) == 100
    return adata, stats


def test_a_crispra_screen_with_100_controls_and_weak_singles_keeps_its_pairs_inputs(tmp_path):
    from gpo_vae.data.summary_stats_io import read_summary_stats
    from gpo_vae.preprocessing.config import PerturbationFilterConfig
    from gpo_vae.preprocessing.filtering import perturbation_filter_mask
    from gpo_vae.preprocessing.split_plan import make_splits
    from gpo_vae.run_config import load_run_config
    from tests.workflow_sandbox import REPO_ROOT

    adata, raw_stats = _crispra_screen(tmp_path)
    raw_stats.to_csv(tmp_path / "stats.csv", index=False)
    stats = read_summary_stats(tmp_path / "stats.csv")
    strict = PerturbationFilterConfig(min_degs="auto", min_cells=50)  # weak singles fail strength
    mask, records, table = perturbation_filter_mask(adata, stats, strict, "crispra")
    pairs = [label for label in table.index if "+" in label and table.loc[label, "status"] == "kept"]
    assert pairs
    for pair in pairs:
        for gene in pair.split("+"):
            assert table.loc[gene, "status"] == "kept"
            if table.loc[gene, "degs"] < 4:
                assert table.loc[gene, "reason"].startswith("single of kept pair ")
    assert records[0]["singles_of_kept_pairs"]
    labels = adata.obs["gene"].astype(str).to_numpy()[mask]
    config = load_run_config(REPO_ROOT / "configs" / "gpo_vae_plus_custom.yaml").preprocess
    held = split_heldout_combinations(labels, 0.5, seed=0)
    assert held.heldout and all("+" in label for label in held.heldout)
    split, _, _, controls = make_splits(labels, None, config, "non-targeting")
    assert controls["scarce"] == {"all": 42}  # 100 controls: 42 in test, 42 in train, none shared
    assert ((labels == "non-targeting") & (split == "test")).sum() == 42


def test_the_crispra_shape_runs_main_with_no_config_file_and_holds_out_its_pairs(sandbox, tmp_path):
    adata, stats = _crispra_screen(tmp_path)
    adata.write_h5ad(sandbox.root / "screens" / "crispra100.h5ad")
    stats_file = sandbox.root / "screens" / "crispra100_stats.csv"
    stats.to_csv(stats_file, index=False)
    sandbox.redun(
        "main", "--dataset", "screens/crispra100.h5ad", *USER_ARGS, "--split", "heldout_combinations",
        "--summary-stats", str(stats_file),
    )  # fmt: skip
    artifact = read_artifact(
        _only(sandbox.root / "results" / "crispra100" / "preprocessed", "*/artifact.h5ad").parent
    )
    record = json.loads(artifact.uns["record"])
    assert record["splits"]["heldout_combinations"]
    assert record["splits"]["scarce_controls"] == {"all": 42}
    report = _only(sandbox.root / "results" / "crispra100" / "evaluation", "*/report.html").read_text()
    assert "preprocess.split.min_test_controls" in report and "Unseen" in report


def test_too_few_perturbations_stop_with_the_table_and_the_keys_unless_told_to_proceed(sandbox):
    config = SyntheticConfig.preset("panel", n_perturbations=6, n_genes=300, cells_per_perturbation=60.0)
    screen = simulate_perturbseq(config)
    screen.adata.write_h5ad(sandbox.root / "screens" / "few.h5ad")
    strict = sandbox.root / "few.yaml"
    raw = load_yaml(sandbox.root / "configs" / "gpo_vae_plus_custom.yaml")
    raw["preprocess"]["filters"]["min_degs"] = 10_000
    raw["preprocess"]["filters"]["keep_unknown_perturbations"] = False
    strict.write_text(yaml.safe_dump(raw))
    import subprocess

    command = sandbox.command(
        "run", "workflow.py", "inspect", "--dataset", "screens/few.h5ad", *USER_ARGS, "--config", str(strict)
    )
    done = subprocess.run(
        command, cwd=sandbox.root, env=sandbox.environment(), capture_output=True, text=True
    )
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0 and "Traceback" not in "\n".join(output)
    assert "preprocess.filters.min_degs" in output[-1]
    # inspect prints every row of the table, not the error's short form
    assert sum(line.startswith(tuple(screen.perturbations["gene"])) for line in output) == 6
    raw["preprocess"]["filters"]["min_degs"] = 0
    raw["preprocess"]["filters"]["min_perturbations"] = 7  # more than the screen has
    strict.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        command, cwd=sandbox.root, env=sandbox.environment(), capture_output=True, text=True
    )
    last = (done.stdout + done.stderr).strip().splitlines()[-1]
    assert done.returncode != 0 and "fewer than the 7 a GRN and a verdict need" in "\n".join(
        (done.stdout + done.stderr).splitlines()
    )
    assert "--min-perturbations 1" in last
    _, result = sandbox.redun(
        "inspect",
        "--dataset",
        "screens/few.h5ad",
        *USER_ARGS,
        "--config",
        str(strict),
        "--min-perturbations",
        "1",
    )
    assert "main would train on" in result.stdout + result.stderr
