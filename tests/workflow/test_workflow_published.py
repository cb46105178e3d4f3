"""``main --dataset rpe1|k562|adamson`` on files in the GPO-VAE authors' layout, offline: fetched
from a local HTTP server as gdown fetches a mirror, or read from ``--data-dir`` (issue 37).

The shipped published-scale configs are shrunk to a tiny model (as every workflow test does);
the preprocessing section is the shipped one.
"""

from __future__ import annotations

import json
import socket

import anndata as ad
import pytest

from gpo_vae.preprocessing.artifact import read_artifact
from tests.fault_drills import run_failing
from tests.http_server import LocalServer
from tests.published_files import write_authors_files
from tests.workflow_sandbox import TINY_SECTIONS, WorkflowSandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> WorkflowSandbox:
    box = WorkflowSandbox.create(tmp_path_factory.mktemp("published"))
    box.shrink_configs(TINY_SECTIONS, ("gpo_vae_plus_rpe1", "gpo_vae_plus_k562", "gpo_vae_plus_adamson"))
    return box


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _artifact_and_record(box: WorkflowSandbox, dataset: str):
    [artifact_dir] = [p for p in (box.root / "results" / dataset / "preprocessed").iterdir() if p.is_dir()]
    artifact = read_artifact(artifact_dir)
    return artifact, json.loads(artifact.uns["record"])


def test_main_downloads_the_authors_archives_and_trains_on_their_cells(sandbox, tmp_path):
    files = write_authors_files(tmp_path / "authors", "adamson")
    archives = {p.name: p.read_bytes() for p in files["archives"].iterdir()}
    with LocalServer(archives) as server:
        env = {"GPO_VAE_MIRROR": server.url, "GPO_VAE_CACHE": str(tmp_path / "cache")}
        _, result = sandbox.redun("main", "--dataset", "adamson", env=env)
    assert sorted(server.requests) == ["/datasets.tar.gz", "/summary_stats.tar.gz"]
    assert "report:" in result.stdout and "Traceback" not in result.stdout + result.stderr
    artifact, record = _artifact_and_record(sandbox, "adamson")
    shipped = ad.read_h5ad(files["counts"], backed="r")
    assert artifact.obs_names.equals(shipped.obs_names)
    assert record["preprocessing"]["mode"] == "published"
    assert record["splits"]["source"] == "as shipped in obs['split']"
    [report] = (sandbox.root / "results" / "adamson" / "evaluation").glob("*/report.html")
    html = report.read_text()
    assert "a file the GPO-VAE authors processed" in html and "kept as shipped" in html
    # the reported statistics, named by Ensembl id in Adamson's csv, met the generated cells
    assert (report.parent / "summary_stats_agreement.csv").is_file()


def test_main_reads_the_authors_files_from_data_dir_offline(sandbox, tmp_path):
    """rpe1 from a --data-dir holding both files; k562 from one holding the counts alone, with
    nothing to download from: the published file needs no statistics, our own preprocessing
    stops with the reason they are missing."""
    offline = {"GPO_VAE_MIRROR": _closed_port(), "GPO_VAE_CACHE": str(tmp_path / "cache")}
    rpe1 = write_authors_files(tmp_path / "rpe1", "rpe1")
    _, result = sandbox.redun(
        "main", "--dataset", "rpe1", "--data-dir", str(rpe1["counts"].parent), env=offline
    )
    assert "report:" in result.stdout
    artifact, record = _artifact_and_record(sandbox, "rpe1")
    assert (
        record["preprocessing"]["mode"] == "published"
        and artifact.n_obs == ad.read_h5ad(rpe1["counts"]).n_obs
    )

    k562 = write_authors_files(tmp_path / "k562", "k562")
    k562["summary_stats"].unlink()
    args = ("main", "--dataset", "k562", "--data-dir", str(k562["counts"].parent))
    _, result = sandbox.redun(*args, env=offline)
    assert "report:" in result.stdout
    assert "no summary statistics for k562" in result.stdout + result.stderr

    failed = run_failing(sandbox, *args, "--preprocess-mode", "ours", env=offline)
    last = [line for line in (failed.stdout + failed.stderr).splitlines() if line.strip()][-1]
    assert failed.returncode == 1 and last.startswith("MissingSummaryStatsError: ")
    assert "filters perturbations by their summary statistics" in last and "summary_stats.tar.gz" in last
