"""The DE test in chunks of perturbations: the same picks and artifact, spread as redun jobs."""

from __future__ import annotations

import sqlite3
import uuid

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from gpo_vae.data.on_disk import CountsOnDisk
from gpo_vae.data.synthetic import SyntheticConfig, write_synthetic_dataset
from gpo_vae.preprocessing.config import PreprocessConfig
from gpo_vae.preprocessing.deg_chunks import deg_chunk_picks, plan_deg_of_file, row_fingerprints
from gpo_vae.preprocessing.from_file import build_artifact

SHEET = "TabS_synthetic_summary_stat"


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("deg") / "data", SyntheticConfig.preset("default"))


@pytest.fixture(scope="module")
def whole_test_artifact(screen):
    from gpo_vae.preprocessing.from_file import preprocess_files

    return preprocess_files(*_inputs(screen), progress=False, print_table=False)


def _inputs(screen) -> tuple:
    return screen["counts"], screen["summary_stats"], SHEET, PreprocessConfig()


def test_row_fingerprints_follow_the_values_not_how_they_are_stored(tmp_path):
    rows = sp.csr_matrix(np.array([[0, 2, 0, 1], [0, 2, 0, 1], [3, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    # the same values with an explicit zero stored in row 1
    stored_zero = sp.csr_matrix(
        (np.array([2, 1, 2, 0, 1, 3], dtype=np.float32), [1, 3, 1, 2, 3, 0], [0, 2, 5, 6, 6]), shape=(4, 4)
    )
    changed = rows.copy()
    changed.data[-1] = 4.0  # row 2's only value
    hashes = []
    for name, matrix in {"a": rows, "b": stored_zero, "c": changed}.items():
        ad.AnnData(X=matrix).write_h5ad(tmp_path / f"{name}.h5ad")
        hashes.append(row_fingerprints(CountsOnDisk(tmp_path / f"{name}.h5ad", block_cells=2)))
    a, b, c = hashes
    assert a[0] == a[1] and len(set(a.tolist())) == 3  # equal rows hash equal; the others differ
    np.testing.assert_array_equal(a, b)
    assert (a != c).tolist() == [False, False, True, False]


@pytest.mark.parametrize("per_chunk", [1, 7, 10_000])
def test_chunked_picks_are_the_whole_tests_picks(per_chunk, screen, whole_test_artifact, tmp_path):
    chunks = plan_deg_of_file(*_inputs(screen), per_chunk, tmp_path)
    groups = [g for chunk in chunks for g in chunk.groups]
    assert len(groups) == len(set(groups)) and all(len(c.groups) <= per_chunk for c in chunks)
    picks = {}
    for chunk in chunks:
        picks.update(deg_chunk_picks(chunk.spec))
    artifact = whole_test_artifact
    # FC3 of the whole test, in the artifact of the in-memory path
    assert sorted(set(picks.values())) == sorted(artifact.var_names[artifact.var["FC3"].to_numpy()])
    assert set(groups) >= set(picks)


def test_the_artifact_built_from_chunked_picks_has_the_same_bytes(screen, tmp_path):
    chunks = plan_deg_of_file(*_inputs(screen), 5, tmp_path / "deg")
    picks = {g: p for chunk in chunks for g, p in deg_chunk_picks(chunk.spec).items()}
    whole = build_artifact(*_inputs(screen), tmp_path / "whole", progress=False, print_table=False)
    chunked = build_artifact(
        *_inputs(screen), tmp_path / "chunked", progress=False, print_table=False, deg_picks=picks
    )
    assert (whole / "artifact.h5ad").read_bytes() == (chunked / "artifact.h5ad").read_bytes()


def _scheduler(tmp_path):
    from redun import Scheduler
    from redun.config import Config

    config = Config()
    config.read_dict(
        {
            "backend": {"db_uri": f"sqlite:///{tmp_path / 'redun.db'}"},
            "executors.process": {"type": "local", "mode": "process", "max_workers": "2"},
        }
    )
    scheduler = Scheduler(config=config)
    scheduler.load()  # the database (redun run does this before running)
    return scheduler


def _executed(tmp_path, execution_id: str) -> list[str]:
    """Names of the tasks whose bodies ran (not served from cache) in one execution."""
    query = (
        "SELECT task.name FROM job JOIN task ON job.task_hash = task.hash "
        "WHERE job.execution_id = ? AND NOT job.cached"
    )
    with sqlite3.connect(tmp_path / "redun.db") as db:
        return sorted(name for (name,) in db.execute(query, (execution_id,)).fetchall())


class ProcessRuns:
    """A synthetic screen as the workflow's dataset spec, redun runs of it on the ``process``
    executor (each says which tasks ran rather than came from the cache), and edits of the
    screen file in place (same path)."""

    def __init__(self, tmp_path) -> None:
        from redun import File

        self.tmp_path = tmp_path
        self.screen = write_synthetic_dataset(tmp_path / "data", SyntheticConfig.preset("default"))
        self.dataset = {
            "counts": File(str(self.screen["counts"])),
            "summary_stats": File(str(self.screen["summary_stats"])),
            "summary_sheet": SHEET,
            "layout": {},
            "summary_stats_problem": None,
        }
        self.scheduler = _scheduler(tmp_path)

    def run(self, expression) -> tuple:
        """The result of ``expression`` and the names of the tasks that ran."""
        execution_id = str(uuid.uuid4())
        result = self.scheduler.run(expression, execution_id=execution_id)
        return result, _executed(self.tmp_path, execution_id)

    def add_a_count(self, cells: np.ndarray) -> ad.AnnData:
        """One more count of the first gene in each of ``cells`` (rows of the file); the file
        is rewritten at its path. Returns the screen as written."""
        from redun import File

        adata = ad.read_h5ad(self.screen["counts"])
        counts = adata.X.tolil()
        counts[cells, 0] = np.asarray(counts[cells, 0].todense()) + 1
        adata.X = counts.tocsr()
        adata.write_h5ad(self.screen["counts"])
        self.dataset["counts"] = File(str(self.screen["counts"]))
        return adata

    def cells_of_first_perturbation(self) -> tuple[str, np.ndarray]:
        labels = ad.read_h5ad(self.screen["counts"], backed="r").obs["gene"].astype(str).to_numpy()
        label = sorted(set(labels) - {"non-targeting"})[0]
        return label, np.flatnonzero(labels == label)


def test_the_process_executor_spreads_the_chunks_and_a_changed_chunk_reruns_alone(tmp_path):
    """Chunks run as deg_chunk jobs on redun's process executor; after one perturbation's cells
    change in the screen file (same path), only its chunk's job runs again."""
    from tasks.preprocess import in_chunks

    runs = ProcessRuns(tmp_path)
    first, ran = runs.run(in_chunks("deg", runs.dataset, {}, str(tmp_path / "out"), "process", 8))
    assert ran.count("deg_chunk") >= 3 and "plan_deg_chunks" in ran
    assert len(first) >= 10

    label, cells = runs.cells_of_first_perturbation()
    runs.add_a_count(cells)  # one gene, one perturbation
    second, ran = runs.run(in_chunks("deg", runs.dataset, {}, str(tmp_path / "out"), "process", 8))
    assert "plan_deg_chunks" in ran  # the file changed: the plan is made again ...
    assert ran.count("deg_chunk") == 1  # ... and only the changed chunk is tested again
    assert set(second) <= set(first) | {label}


@pytest.mark.parametrize("size", [-1, 2.5, True])
@pytest.mark.parametrize(
    ("option", "work"), [("--deg-chunk-size", "DE test"), ("--pairing-chunk-size", "OT pairing")]
)
def test_a_bad_chunk_size_names_the_option(size, option, work):
    from gpo_vae.config import ConfigError
    from workflow.datasets import check_chunk_size

    with pytest.raises(ConfigError, match=rf"{option} .*perturbations per job of the {work}"):
        check_chunk_size(option, size)
    check_chunk_size(option, 0)
    check_chunk_size(option, 50)


def test_a_missing_spec_says_how_to_recover(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the same command again with `redun run --no-cache"):
        deg_chunk_picks(tmp_path / "gone.pkl")
