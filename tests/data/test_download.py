"""Download and extraction against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from gpo_vae.data.acquire import acquire_published_dataset
from gpo_vae.data.download import COMPLETE_MARKER, DownloadError, download_file, extract_tarball
from gpo_vae.data.registry import DATASETS
from tests.http_server import LocalServer, tarball


@pytest.fixture()
def payload() -> bytes:
    return tarball({"datasets/a.txt": b"alpha" * 1000, "datasets/b.txt": b"beta" * 50_000})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/datasets.tar.gz"


def test_download_and_extract_success(tmp_path, payload):
    digest = hashlib.sha256(payload).hexdigest()
    with LocalServer({"datasets.tar.gz": payload}) as server:
        dest = download_file(f"{server.url}/datasets.tar.gz", tmp_path / "dl" / "datasets.tar.gz", digest)
    assert dest.read_bytes() == payload
    assert _leftovers(tmp_path / "dl") == ["datasets.tar.gz"]
    out = extract_tarball(dest, tmp_path / "x")
    assert (out / "datasets" / "b.txt").read_bytes() == b"beta" * 50_000
    assert (out / COMPLETE_MARKER).exists()
    assert _leftovers(tmp_path) == ["dl", "x"]


def test_existing_file_is_not_downloaded_again(tmp_path, payload):
    with LocalServer({"datasets.tar.gz": payload}) as server:
        url = f"{server.url}/datasets.tar.gz"
        download_file(url, tmp_path / "datasets.tar.gz")
        download_file(url, tmp_path / "datasets.tar.gz")
    assert server.requests == ["/datasets.tar.gz"]


def test_checksum_mismatch_leaves_nothing(tmp_path, payload):
    with LocalServer({"datasets.tar.gz": payload}) as server:
        with pytest.raises(DownloadError, match="Checksum mismatch") as err:
            download_file(f"{server.url}/datasets.tar.gz", tmp_path / "datasets.tar.gz", "0" * 64)
    assert str(tmp_path / "datasets.tar.gz") in str(err.value)
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_leaves_nothing(tmp_path, payload):
    with LocalServer({"datasets.tar.gz": payload}) as server:
        with pytest.raises(DownloadError):
            download_file(f"{server.url}/truncated/datasets.tar.gz", tmp_path / "datasets.tar.gz")
    assert _leftovers(tmp_path) == []


def test_truncated_archive_is_not_extracted(tmp_path, payload):
    broken = tmp_path / "datasets.tar.gz"
    broken.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DownloadError, match="not a complete tar archive"):
        extract_tarball(broken, tmp_path / "x")
    assert _leftovers(tmp_path) == ["datasets.tar.gz"]


def test_offline_message_says_what_to_do(tmp_path):
    url = _closed_port_url()
    with pytest.raises(DownloadError) as err:
        download_file(url, tmp_path / "cache" / "datasets.tar.gz")
    message = str(err.value)
    assert "by hand" in message and url in message
    assert str(tmp_path / "cache" / "datasets.tar.gz") in message and "--data-dir" in message
    assert _leftovers(tmp_path / "cache") == []


def test_published_dataset_download_through_mirror(tmp_path):
    record = DATASETS["adamson"]
    datasets = tarball({f"datasets/{record.counts_file}": b"counts"})
    stats = tarball({"summary_stats/summary_stats_adamson.csv": b"genetic perturbation\n"})
    with LocalServer({"datasets.tar.gz": datasets, "summary_stats.tar.gz": stats}) as server:
        files = acquire_published_dataset(record, cache_dir=tmp_path, mirror=server.url, quiet=True)
        again = acquire_published_dataset(record, cache_dir=tmp_path, mirror=server.url, quiet=True)
    assert files.counts.read_bytes() == b"counts"
    assert files.summary_stats.name == "summary_stats_adamson.csv"
    assert again == files
    assert sorted(server.requests) == ["/datasets.tar.gz", "/summary_stats.tar.gz"]


def test_local_data_dir_needs_no_network(tmp_path):
    record = DATASETS["rpe1"]
    (tmp_path / "mine" / "nested").mkdir(parents=True)
    (tmp_path / "mine" / "nested" / record.counts_file).write_bytes(b"x")
    (tmp_path / "mine" / "summary_stats.xlsx").write_bytes(b"y")
    files = acquire_published_dataset(
        record, data_dir=tmp_path / "mine", cache_dir=tmp_path / "cache", mirror=_closed_port_url()
    )
    assert files.counts == tmp_path / "mine" / "nested" / record.counts_file
    assert files.summary_sheet == "TabC_RPE1_summary_statistic"
    assert not (tmp_path / "cache").exists()


def test_offline_dataset_error_names_archive_and_id(tmp_path):
    record = DATASETS["k562"]
    with pytest.raises(DownloadError) as err:
        acquire_published_dataset(record, cache_dir=tmp_path, mirror=_closed_port_url().rsplit("/", 1)[0])
    assert "datasets.tar.gz" in str(err.value) and "by hand" in str(err.value)


def test_summary_statistics_inside_the_counts_archive_need_no_second_download(tmp_path):
    """The authors' configs read both files from ``datasets/``: statistics that come in the counts
    archive (or beside the counts) are taken from there, and summary_stats.tar.gz is not fetched."""
    record = DATASETS["rpe1"]
    datasets = tarball({f"datasets/{record.counts_file}": b"counts", "datasets/summary_stats.xlsx": b"stats"})
    with LocalServer({"datasets.tar.gz": datasets}) as server:
        files = acquire_published_dataset(record, cache_dir=tmp_path, mirror=server.url, quiet=True)
    assert server.requests == ["/datasets.tar.gz"]
    assert files.summary_stats.read_bytes() == b"stats" and files.summary_stats_problem is None


def test_unreachable_summary_statistics_are_optional_and_say_why(tmp_path):
    """Offline with the counts at hand, the statistics archive cannot come: acquisition goes on
    without it (a published processed file needs none) and keeps the reason for our own
    preprocessing, which stops with it."""
    record = DATASETS["adamson"]
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / record.counts_file).write_bytes(b"counts")
    files = acquire_published_dataset(
        record,
        data_dir=tmp_path / "datasets",
        cache_dir=tmp_path / "cache",
        mirror=_closed_port_url().rsplit("/", 1)[0],
    )
    assert files.counts.read_bytes() == b"counts"
    assert files.summary_stats is None
    assert "summary_stats.tar.gz" in files.summary_stats_problem and "by hand" in files.summary_stats_problem
