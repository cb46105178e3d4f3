"""The whole report from synthetic evaluation tables: figures, verdict, escaping, missing inputs, atomicity.

The fixture tables are computed with the real metric functions (``prediction_metrics``,
``edges_from_probabilities``, ``ranking_metrics``, ...) on small synthetic numbers, so they
have exactly the shape the evaluation stage writes.
"""

from __future__ import annotations

import base64
import html
import json
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gpo_vae.evaluation import unseen
from gpo_vae.evaluation.metrics import prediction_metrics
from gpo_vae.grn.baselines import random_scores
from gpo_vae.grn.curves import (
    edge_precision_recall,
    edges_from_probabilities,
    precision_recall_table,
    ranking_metrics,
)
from gpo_vae.grn.ranking import matched_k_ranking
from gpo_vae.report import build_report, load_tables
from gpo_vae.report.html import format_number

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_PREFIX = '<img src="data:image/png;base64,'
NODES = ["G0", "G1", "G2", "<script>", "G4", "D0", "D1", "D2", "D3", "D4", "D5", "D6"]
PERTURBED = NODES[:5]
N_GENES = 30
#: ranked r, scatter, distributions, unseen interactions, QC, summary stats, heatmap, network, PR,
#: stats vs K
FULL_FIGURES = 10


def _ate(rng: np.random.Generator, noise: float, truth: pd.DataFrame) -> pd.DataFrame:
    return truth + rng.normal(0.0, noise, truth.shape)


def write_unseen_tables(root: Path, rng: np.random.Generator, genes: list[str]) -> None:
    """Unseen tables from the real metric functions: 3 held-out pairs, 4 unseen genes."""
    pairs = ["P0+P1", "P1+P2", "P2+P3"]
    additive = pd.DataFrame(rng.normal(0, 1, (3, len(genes))), index=pairs, columns=genes)
    observed = additive * 0.7 + rng.normal(0, 0.05, additive.shape)  # buffered pairs
    errors = np.full(additive.shape, 0.05)
    frames = {
        ("combination", "model"): unseen.combination_metrics(
            observed, additive * 0.75, additive, errors, 20, 3.0
        ),
        ("combination", "additive"): unseen.combination_metrics(
            observed, additive, additive, errors, 20, 3.0
        ),
    }
    singles = ["U0", "U1", "U2", "U3"]
    truth = pd.DataFrame(rng.normal(0, 1, (4, len(genes))), index=singles, columns=genes)
    shift = pd.Series(0.0, index=genes)
    frames["single", "model"] = unseen.single_metrics(truth, truth + rng.normal(0, 1, truth.shape), shift, 20)
    frames["single", "noncontrol_mean"] = unseen.single_metrics(truth, truth * 0.0, shift, 20)
    unseen.unseen_table(frames).to_csv(root / unseen.METRICS_FILE, index=False)
    unseen.interaction_scatter(observed, additive * 0.75, additive, 20).to_csv(
        root / unseen.SCATTER_FILE, index=False
    )
    pd.DataFrame(
        {
            "method": "model",
            "mode": "regulators",
            "gene": singles,
            "neighbour": "P0",
            "weight": [0.5, -1.0, 2.0, 0.1],
        }
    ).to_csv(root / unseen.NEIGHBOURS_FILE, index=False)


def write_eval_dir(root: Path, model_better: bool = True, seed: int = 0) -> Path:
    """A complete evaluation directory: 5 perturbations, 4 prediction methods, 12 GRN nodes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    genes = [f"g{i}" for i in range(N_GENES)]
    truth = pd.DataFrame(rng.normal(0, 1, (len(PERTURBED), N_GENES)), index=PERTURBED, columns=genes)
    good, bad = 0.3, 3.0
    predictions = {
        "model": _ate(rng, good if model_better else bad, truth),
        "mean_baseline": _ate(rng, bad if model_better else good, truth),
        "control_baseline": truth * 0.0,
        "split_half_ceiling": _ate(rng, 0.1, truth),
    }
    frames = []
    for reference in ("heldout_test", "all_cells"):
        for subset in ("all_cells", "qc_pass"):
            for method, pred in predictions.items():
                frame = prediction_metrics(truth, pred).rename_axis("perturbation").reset_index()
                frames.append(frame.assign(method=method, reference=reference, subset=subset))
    pd.concat(frames).to_csv(root / "prediction_metrics.csv", index=False)

    scatter = []
    for name in PERTURBED:
        scatter.append(
            pd.DataFrame(
                {
                    "perturbation": name,
                    "gene": genes,
                    "observed": truth.loc[name].to_numpy(),
                    "predicted": predictions["model"].loc[name].to_numpy(),
                    "mean_baseline": predictions["mean_baseline"].loc[name].to_numpy(),
                    "target": [i == 0 for i in range(N_GENES)],  # the first gene stands for the target
                }
            )
        )
    pd.concat(scatter).to_csv(root / "ate_scatter.csv", index=False)
    pd.DataFrame(
        {
            "perturbation": PERTURBED,
            "target": genes[0],
            "observed": truth[genes[0]].to_numpy(),
            **{method: pred[genes[0]].to_numpy() for method, pred in predictions.items()},
        }
    ).to_csv(root / "on_target.csv", index=False)
    write_unseen_tables(root, rng, genes)

    pd.DataFrame(
        {"t": [3, 4, 5], "pass_ratio_generated": [0.81, 0.9, 0.95], "pass_ratio_data": [0.85, 0.93, 0.97]}
    ).to_csv(root / "qc_ratio.csv", index=False)
    pd.DataFrame({"quantity": ["knockdown", "n_degs"], "spearman": [0.6, 0.3], "n": [5, 5]}).to_csv(
        root / "summary_stats_agreement.csv", index=False
    )
    points = pd.DataFrame(
        {
            "perturbation": PERTURBED * 2,
            "quantity": ["knockdown"] * 5 + ["n_degs"] * 5,
            "predicted": [-0.9, -0.8, -0.7, -0.95, -0.5, 10, 40, 5, 300, 12],
            "reported": [-0.92, -0.85, -0.6, -0.97, -0.4, 8, 60, 4, 250, 30],
        }
    )
    points.to_csv(root / "summary_stats_points.csv", index=False)

    n = len(NODES)
    true_grn = np.zeros((n, n), dtype=bool)
    for source, target in [(0, 5), (0, 6), (1, 7), (3, 8), (3, 0), (2, 9), (4, 10), (1, 11), (0, 3)]:
        true_grn[source, target] = True
    true_grn[5:, :] = False  # downstream nodes regulate nothing
    mask = np.clip(0.8 * true_grn + rng.uniform(0, 0.45, (n, n)), 0, 1)
    mask[5:, :] *= 0.3
    pd.DataFrame(mask, index=NODES, columns=NODES).to_csv(root / "grn_mask.csv")
    # nodes listed A first: the report must still put P first
    kinds = ["A" if name.startswith("D") else "P" for name in NODES]
    pd.DataFrame({"node": NODES[::-1], "kind": kinds[::-1]}).to_csv(root / "grn_nodes.csv", index=False)
    edges = edges_from_probabilities(mask, NODES)
    edges.to_csv(root / "grn_edges.csv", index=False)

    scores = {"model": mask, "correlation": np.abs(mask - 0.2), "random": random_scores(n, seed=1)}
    reference_rows, curve_rows, stat_rows = [], [], []
    for method, score in scores.items():
        for network in ("true_grn", "string"):
            ref = true_grn if network == "true_grn" else np.triu(true_grn | true_grn.T)
            pr = edge_precision_recall(score > 0.5, ref)
            ranking = ranking_metrics(score, ref)
            reference_rows.append(
                {"method": method, "network": network, **pr.drop("reason").to_dict(), **ranking.to_dict()}
            )
            curve = precision_recall_table(score, ref)[["recall", "precision"]]
            curve_rows.append(curve.assign(method=method, network=network))
        for k in ("p>0.5", str(len(edges)), "20", "40"):
            n_edges = len(edges) if k in ("p>0.5", str(len(edges))) else int(k)
            tp = int(rng.integers(0, n_edges + 1))
            stat_rows.append(
                {
                    "method": method,
                    "k": k,
                    "n_edges": n_edges,
                    "n_tested": n_edges,
                    "true_positives": tp,
                    "false_positives": n_edges - tp,
                    "precision": tp / n_edges,
                    "mean_wasserstein": rng.uniform(0.05, 0.4),
                    "path_mean_wasserstein": rng.uniform(0.05, 0.3),
                    "false_omission_rate": rng.uniform(0.0, 0.2),
                    "negative_mean_wasserstein": rng.uniform(0.01, 0.1),
                }
            )
    pd.DataFrame(reference_rows).to_csv(root / "grn_reference.csv", index=False)
    pd.concat(curve_rows).to_csv(root / "grn_pr_curves.csv", index=False)
    pd.DataFrame(stat_rows).to_csv(root / "grn_statistical.csv", index=False)
    ranking = matched_k_ranking(
        pd.DataFrame(stat_rows).astype({"k": str}), pd.DataFrame(reference_rows), len(edges)
    )
    ranking.to_csv(root / "grn_ranking.csv", index=False)

    run = {
        "dataset": "synthetic",
        "seed": seed,
        "created": "2024-01-01T00:00:00",
        "code_version": "0.1.0+gabc123",
        "config": {"model": {"latent_dim": 8, "sparsity": 0.1}, "train": {"max_epochs": 3}},
        "packages": {"numpy": np.__version__, "torch": None},
        "data": {
            "n_cells": 1234,
            "n_test_cells": 247,
            "n_perturbations": 5,
            "n_nodes": n,
            "n_perturbed_nodes": 5,
        },
        "metrics": {"test_iwelbo": -1234.5},
    }
    (root / "run.json").write_text(json.dumps(run))
    screen = {
        "modality": {"resolved": "crispra", "requested": "auto", "basis": "median on-target change +2.10"},
        "pairing": {"requested": "auto", "features": "pca", "n_features": 20, "n_hvgs": 400,
                    "measured_targets": 1, "perturbed_genes": 5, "within_batch": True},
        "batches": {"key": "cell_line", "names": ["K562", "RPE1"]},
        "layout": {"counts": "counts", "control_label": "NTC", "combinations": ["G1+G2"]},
        "splits": {"mode": "random", "stratify": True, "test_controls": 64, "controls_moved_to_test": {"K562": 3},
                   "test_controls_by_batch": {"K562": 30, "RPE1": 34}, "min_test_controls": 30,
                   "scarce_controls": {"K562": 30}},
        "nodes": {"perturbed": 5, "additional": 3, "combinations": 1, "perturbed_not_measured": 4},
    }  # fmt: skip
    (root / "screen.json").write_text(json.dumps(screen))
    pd.DataFrame(
        {
            "perturbation": ["G1", "G1+G2", "<b>G3</b>"],
            "cells": [100, 80, 40],
            "measured": ["yes", "1 of 2", "no"],
            "on_target_change": [2.1, np.nan, np.nan],
            "degs": [120, 40, 1],
            "cells_filtered": [98, 78, 40],
            "cells_on_target": [60, 80, 40],
            "status": ["kept", "kept", "strong_perturbations"],
            "reason": [
                "",
                "target not measured (filters.unmeasured_targets: keep)",
                "DEGs 1 < 4 (filters.min_degs)",
            ],
        }
    ).to_csv(root / "perturbation_table.csv", index=False)
    return root


def _images(text: str) -> list[bytes]:
    return [
        base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    ]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _main_verdict(text: str) -> str:
    match = re.search(r'<p class="verdict (\w+)" id="verdict">(.*?)</p>', text)
    assert match is not None, "no main verdict paragraph"
    return html.unescape(match.group(2))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = write_eval_dir(tmp_path_factory.mktemp("eval") / "eval")
    path = build_report(root)
    return path, path.read_text(encoding="utf-8")


def test_full_report_has_every_figure_as_inline_png(full_report: tuple[Path, str]) -> None:
    path, text = full_report
    assert path.name == "report.html" and path.parent.name == "eval"
    assert text.count(IMG_PREFIX) == FULL_FIGURES
    images = _images(text)
    assert len(images) == FULL_FIGURES
    for png in images:
        assert png.startswith(PNG_MAGIC)
        width, height = _png_size(png)
        assert width >= 300 and height >= 200
    assert "not computed" not in text
    for anchor in ("headline", "baselines", "scatter", "grn-mask", "grn-statistical", "provenance"):
        assert f'id="{anchor}"' in text and f'href="#{anchor}"' in text


def test_report_is_self_contained(full_report: tuple[Path, str]) -> None:
    _, text = full_report
    assert "http://" not in text and "https://" not in text
    assert re.findall(r'src="(?!data:image/png;base64,)', text) == []
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', text))
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "<script" not in text.lower()  # no JS, and the node named <script> is escaped


def test_node_names_are_escaped(full_report: tuple[Path, str]) -> None:
    _, text = full_report
    assert "<td>&lt;script&gt;</td>" in text  # in the strongest-edges table


def test_headline_numbers_and_provenance(full_report: tuple[Path, str]) -> None:
    _, text = full_report
    assert "GPO-VAE report: synthetic" in text
    assert ">1,234<" in text and "247 test" in text  # cells
    headline = text[text.index('id="headline"') : text.index('id="screen"')]
    # a handful of tiles; every other number of run.json in a table below them
    assert 4 <= headline.count('class="card"') <= 6
    assert ">-1,234<" in headline or ">-1,235<" in headline  # test IWELBO, whole number
    assert "model.latent_dim" in text and "0.1.0+gabc123" in text


def test_matched_k_row_is_highlighted(full_report: tuple[Path, str]) -> None:
    path, text = full_report
    edges = pd.read_csv(path.parent / "grn_edges.csv")
    statistical = text[text.index('id="grn-statistical"') :]
    highlighted = re.findall(r'<tr class="highlight"><td>([^<]*)</td><td>([^<]*)</td>', statistical)
    k = len(edges)
    assert highlighted[0] == (f"p &gt; 0.5 (K = {k})", "the model")
    assert {label for label, _ in highlighted[1:]} == {f"top K = {k} (matched)"}
    assert len(highlighted) == 3  # one row per GRN method
    rows = re.findall(r"<tr(?: class=\"highlight\")?><td>([^<]*)</td><td>([^<]*)</td>", statistical)
    assert len(rows) == len(set(rows)), "no graph is listed twice (the matched-K row is the p > 0.5 one)"


@pytest.mark.parametrize("model_better", [True, False])
def test_verdict_says_below_or_above_with_the_numbers(tmp_path: Path, model_better: bool) -> None:
    full = write_eval_dir(tmp_path / "full", model_better=model_better)
    root = tmp_path / "eval"
    root.mkdir()
    (root / "prediction_metrics.csv").write_bytes((full / "prediction_metrics.csv").read_bytes())
    text = build_report(root).read_text(encoding="utf-8")
    verdict = _main_verdict(text)
    metrics = pd.read_csv(root / "prediction_metrics.csv")
    held = metrics[(metrics["reference"] == "heldout_test") & (metrics["subset"] == "all_cells")]
    model = held.loc[held["method"] == "model", "pearson"].mean()
    baseline = held.loc[held["method"] == "mean_baseline", "pearson"].mean()
    assert (model > baseline) == model_better
    relation = "above" if model_better else "below"
    expected = (
        f"The model's mean Pearson r on held-out ATE ({format_number(model)}) is {relation} "
        f"the per-perturbation training-mean baseline ({format_number(baseline)})"
    )
    assert verdict.startswith(expected)
    assert re.search(r'class="verdict (\w+)" id="verdict"', text).group(1) == (
        "good" if model_better else "bad"
    )
    # said once, in the headline; the baseline section points there
    assert text.count(html.escape(expected)) == 1
    assert text.index('id="verdict"') < text.index('id="baselines"')
    assert '<a href="#headline">headline</a>' in text[text.index('id="baselines"') :]


def test_missing_optional_tables_say_not_computed(tmp_path: Path) -> None:
    full = write_eval_dir(tmp_path / "full")
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    for name in ("run.json", "prediction_metrics.csv"):
        (sparse / name).write_bytes((full / name).read_bytes())
    text = build_report(sparse).read_text(encoding="utf-8")
    assert text.count(IMG_PREFIX) == 2  # the ranked per-perturbation r and the metric distributions
    # a section with nothing to show is left out, and listed once at the end with its files
    not_shown = text.split('<section id="not-shown">', 1)[1]
    missing = re.findall(r"<li>(.*?)</li>", not_shown)
    assert (
        len(missing) == 9
    )  # screen, unseen, QC, summary stats, ranking, mask, edges, reference, CausalBench
    assert all("not computed" in m for m in missing)
    for anchor in ("qc", "grn-mask", "grn-statistical", "unseen"):
        assert f'id="{anchor}"' not in text and f'href="#{anchor}"' not in text
    assert 'href="#scatter"' in text  # the ranked r is drawn from the metrics alone
    for name in ("qc_ratio.csv", "grn_mask.csv", "grn_edges.csv", "grn_statistical.csv"):
        assert f"<code>{name}</code>" in not_shown
    assert "is below" in _main_verdict(text) or "is above" in _main_verdict(text)


def test_run_json_alone_builds(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"dataset": "x"}))
    text = build_report(tmp_path).read_text(encoding="utf-8")
    assert IMG_PREFIX not in text
    assert text.count("not computed") == 12


def test_out_path_title_and_byte_identical_rebuild(tmp_path: Path, full_report: tuple[Path, str]) -> None:
    root = write_eval_dir(tmp_path / "eval")  # the same tables as the module fixture
    target = tmp_path / "elsewhere" / "r.html"
    assert build_report(root, target) == target
    assert target.read_bytes() == full_report[0].read_bytes()  # nothing run-dependent in the page
    assert not (root / "report.html").exists()
    text = build_report(root, target, title="My <run>").read_text(encoding="utf-8")
    assert "<title>My &lt;run&gt;</title>" in text


def test_write_is_atomic(
    tmp_path: Path, full_report: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = full_report[0].parent
    assert sorted(p.name for p in root.iterdir() if p.suffix not in (".csv", ".json")) == ["report.html"]

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    target = tmp_path / "report.html"
    target.write_text("previous report")
    monkeypatch.setattr("gpo_vae.io.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        build_report(root, target)
    assert target.read_text() == "previous report"  # a failed write leaves the old report
    assert list(tmp_path.iterdir()) == [target]  # and no temporary file


def test_contract_violations_raise(tmp_path: Path) -> None:
    root = write_eval_dir(tmp_path / "eval")
    metrics = pd.read_csv(root / "prediction_metrics.csv")
    metrics.drop(columns="pearson").to_csv(root / "prediction_metrics.csv", index=False)
    with pytest.raises(ValueError, match=r"prediction_metrics.csv: missing required columns \['pearson'\]"):
        build_report(root)
    metrics.to_csv(root / "prediction_metrics.csv", index=False)

    mask = pd.read_csv(root / "grn_mask.csv", index_col=0)
    mask.iloc[::-1].to_csv(root / "grn_mask.csv")  # rows no longer in the columns' order
    with pytest.raises(ValueError, match="same node names"):
        load_tables(root)
    mask.to_csv(root / "grn_mask.csv")

    nodes = pd.read_csv(root / "grn_nodes.csv")
    nodes.assign(kind="X").to_csv(root / "grn_nodes.csv", index=False)
    with pytest.raises(ValueError, match="kind must be"):
        load_tables(root)
    nodes.iloc[1:].to_csv(root / "grn_nodes.csv", index=False)
    with pytest.raises(ValueError, match="disagree on the nodes"):
        build_report(root)


def test_empty_or_absent_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="none of the evaluation files"):
        build_report(tmp_path)


def test_names_like_na_stay_names(tmp_path: Path) -> None:
    (tmp_path / "grn_edges.csv").write_text("source,target,p\nNA,nan,0.9\nG1,NA,\n")
    edges = load_tables(tmp_path).grn_edges
    assert edges["source"].tolist() == ["NA", "G1"] and edges["target"].tolist() == ["nan", "NA"]
    assert edges["p"].iloc[0] == 0.9 and np.isnan(edges["p"].iloc[1])


def test_screen_section_states_modality_pairing_batches_and_the_filter_table(full_report) -> None:
    _, text = full_report
    section = re.search(r'<section id="screen">(.*?)</section>', text, re.S).group(1)
    assert "crispra (median on-target change +2.10)" in section
    assert "pca (requested auto): 20 principal components of 400 variable genes" in section
    assert "2 from obs[&#x27;cell_line&#x27;]: K562, RPE1" in section
    assert "counts from counts" in section and "64 control cells in test (30 in K562, 34 in RPE1)" in section
    assert "3 moved from train" in section
    assert "Perturbations: 2 of 3 kept" in section and "DEGs 1 &lt; 4 (filters.min_degs)" in section
    # a batch with too few controls for min_test_controls: said in the screen section and the headline
    scarce = "the test split holds control cells 30 in &#x27;K562&#x27;, fewer than the 30"
    assert scarce in section
    headline = re.search(r'<section id="headline">(.*?)</section>', text, re.S).group(1)
    assert 'id="caution"' in headline and "Caution: " + scarce in headline
    assert "&lt;b&gt;G3&lt;/b&gt;" in section and "<b>G3</b>" not in section


def test_unseen_section_gives_the_verdict_against_each_baseline(full_report: tuple[Path, str]) -> None:
    _, text = full_report
    part = text[text.index('id="unseen"') :]
    part = part[: part.index("</section>")]
    # the model shrinks every pair towards what was observed: above additivity's interaction r of 0
    assert "interaction Pearson r is 0.985, above the additive prediction's 0 (" in html.unescape(part)
    assert "Held-out single genes" in part and "normalised rank" in part
    assert part.count(IMG_PREFIX) == 1


def test_the_report_names_the_family_of_the_model_it_scores():
    from gpo_vae.report.build import model_family

    assert model_family({"mask_init": "effects", "grn_target": "effects", "latent_mask": False}) == "GPO-VAE+"
    assert model_family({"mask_init": "constant", "grn_target": "cells", "latent_mask": False}) == "GPO-VAE"
    assert model_family({"latent_mask": True}) == "SAMS-VAE"
    assert model_family({}) == "GPO-VAE"
