"""Scrublet's chunks of cells as jobs: the same doublet calls and artifact, spread as redun jobs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from gpo_vae.config import from_dict
from gpo_vae.data.layout import ScreenLayout
from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.doublet_chunks import doublet_chunk_calls, plan_doublets_of_file
from gpo_vae.preprocessing.from_file import build_artifact
from tests.preprocessing.test_deg_chunks import ProcessRuns

SHEET = "TabS_synthetic_summary_stat"


def _inputs(screen, config: PreprocessConfig) -> tuple:
    return screen["counts"], screen["summary_stats"], SHEET, config


@pytest.mark.parametrize(("preset", "max_cells"), [("default", 400), ("batches", 700)])
def test_the_artifact_built_from_chunked_doublet_calls_has_the_same_bytes(preset, max_cells, tmp_path):
    """QC's scrublet chunks run one by one outside QC call the same cells doublets, so the
    artifact (QC flags, the cells the counterfactual medians draw on, everything after) is the
    same file; within cell lines the chunks are dealt per line, as QC deals them."""
    screen = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset(preset))
    layout = (
        ScreenLayout(batch_key=SyntheticConfig.preset(preset).batch_column) if preset == "batches" else None
    )
    config = from_dict(PreprocessConfig, {"qc": {"max_cells_per_chunk": max_cells}})
    inputs = _inputs(screen, config)
    chunks = plan_doublets_of_file(*inputs, tmp_path / "doublets", layout)
    calls = [doublet_chunk_calls(chunk.spec) for chunk in chunks]
    assert len(chunks) >= 3 and all(c["skipped"] is None for c in calls)
    assert all(chunk.n_cells <= max_cells for chunk in chunks)
    if preset == "batches":
        assert len({chunk.batch for chunk in chunks}) == 2
    called = [name for c in calls for name in c["doublets"]]
    assert called and len(called) == len(set(called))
    whole = build_artifact(*inputs, tmp_path / "whole", layout, progress=False, print_table=False)
    chunked = build_artifact(
        *inputs, tmp_path / "chunked", layout, progress=False, print_table=False, doublets=called
    )
    assert (whole / "artifact.h5ad").read_bytes() == (chunked / "artifact.h5ad").read_bytes()
    obs = ad.read_h5ad(whole / "artifact.h5ad", backed="r").obs
    assert set(obs.index[obs["qc_doublet"].to_numpy(dtype=bool)]) == set(called) & set(obs.index)


def test_no_chunks_when_qc_calls_no_doublets(tmp_path):
    screen = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset("default"))
    config = from_dict(PreprocessConfig, {"qc": {"doublets": False}})
    assert plan_doublets_of_file(*_inputs(screen, config), tmp_path / "doublets") == []


def test_a_missing_spec_says_how_to_recover(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"spec of this doublet chunk is gone.*--no-cache"):
        doublet_chunk_calls(tmp_path / "gone.pkl")


def test_the_process_executor_spreads_scrublet_chunks_and_a_changed_cell_reruns_its_chunk(tmp_path):
    """Chunks run as doublet_chunk jobs on redun's process executor; after one cell's counts
    change in the screen file (same path), only its chunk runs scrublet again, and the artifact
    built from the calls is the one QC builds itself."""
    from tasks.preprocess import in_chunks, preprocessed

    runs = ProcessRuns(tmp_path)
    out, section = str(tmp_path / "out"), {"qc": {"max_cells_per_chunk": 400}}
    first, ran = runs.run(in_chunks("doublets", runs.dataset, section, out, "process"))
    assert ran.count("doublet_chunk") >= 3 and "plan_doublet_chunks" in ran and first

    labels = ad.read_h5ad(runs.screen["counts"], backed="r").obs["gene"].astype(str).to_numpy()
    runs.add_a_count(np.flatnonzero(labels == "non-targeting")[:1])  # one count of one kept cell
    _, ran = runs.run(in_chunks("doublets", runs.dataset, section, out, "process"))
    assert "plan_doublet_chunks" in ran and ran.count("doublet_chunk") == 1

    chunked, _ = runs.run(preprocessed(runs.dataset, section, out, doublet_chunks=True, executor="process"))
    config = from_dict(PreprocessConfig, section)
    whole = build_artifact(
        *_inputs(runs.screen, config), tmp_path / "whole", progress=False, print_table=False
    )
    assert open(chunked.path, "rb").read() == (whole / "artifact.h5ad").read_bytes()
