"""Faults named by the library, each with the file, key or value and the fix (no workflow run)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from gpo_vae.config import ConfigError, from_dict
from gpo_vae.data.acquire import acquire_published_dataset, describe_counts
from gpo_vae.data.contract import DataContractError
from gpo_vae.data.download import manual_download_hint
from gpo_vae.data.networks import read_network
from gpo_vae.data.reference import ReferenceFormatError
from gpo_vae.data.registry import get_dataset_record
from gpo_vae.errors import InputFileError
from gpo_vae.io import file_problem
from gpo_vae.sweeps import SweepSpec


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "../x", "../../../../x", "a/b", "..", ".hidden", ""])
def test_a_sweep_name_that_is_not_one_folder_is_refused(name):
    with pytest.raises(
        ConfigError, match=r"cannot be a folder name: it becomes <results-dir>/<dataset>/sweeps"
    ):
        from_dict(SweepSpec, {"name": name, "parameters": {"model.hop": [1]}})


def test_a_plain_sweep_name_is_kept():
    assert (
        from_dict(SweepSpec, {"name": "grn_loss.v2-a", "parameters": {"model.hop": [1]}}).name
        == "grn_loss.v2-a"
    )


def test_file_problem_says_folder_missing_file_or_missing_folder(tmp_path):
    (tmp_path / "x.h5ad").mkdir()
    (tmp_path / "f.txt").write_text("")
    assert file_problem(tmp_path / "f.txt") is None
    assert file_problem(tmp_path / "x.h5ad") == "a folder, not a file"
    assert file_problem(tmp_path / "none.h5ad") == "no such file"
    assert file_problem(tmp_path / "gone" / "deeper" / "a.yaml") == (
        f"no such file (the folder {tmp_path / 'gone'} does not exist)"
    )


def test_a_zero_cell_file_is_called_empty_before_its_labels_are_read(tmp_path):
    path = tmp_path / "empty.h5ad"
    obs = pd.DataFrame({"gene": pd.Series([], dtype=str)}, index=pd.Index([], dtype=str))
    ad.AnnData(
        X=np.zeros((0, 3), dtype=np.float32), obs=obs, var=pd.DataFrame(index=["A", "B", "C"])
    ).write_h5ad(path)
    with pytest.raises(DataContractError, match=r"the dataset is empty \(0 cells × 3 genes\)"):
        describe_counts(path)


def test_a_missing_data_dir_is_named_and_a_searched_one_is_not_advised_again(tmp_path):
    record = get_dataset_record("rpe1")
    with pytest.raises(InputFileError, match=r"--data-dir /nonexistent/x: no such folder"):
        acquire_published_dataset(record, data_dir="/nonexistent/x", cache_dir=tmp_path)
    searched = manual_download_hint("http://u", "a.tar.gz", tmp_path / "a.tar.gz", searched=Path("/data"))
    assert "or pass --data-dir" not in searched and "in /data (the --data-dir searched" in searched
    assert "or pass --data-dir" in manual_download_hint("http://u", "a.tar.gz", tmp_path / "a.tar.gz")


def test_a_network_in_the_wrong_format_advises_what_the_cli_can_do(tmp_path):
    path = tmp_path / "biogrid.csv"
    path.write_text("a,b\nX,Y\n")
    with pytest.raises(ReferenceFormatError) as caught:
        read_network(path)
    message = str(caught.value)
    assert "For --networks, name the file after its format (e.g. trrust_biogrid.csv" in message
    assert "read_network(path, format=...)" in message


def test_loading_a_missing_or_unfinished_run_says_which(tmp_path):
    from gpo_vae import GPOVAEModel

    with pytest.raises(InputFileError, match=r"nowhere: no such folder; give a run directory"):
        GPOVAEModel.load(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    with pytest.raises(InputFileError, match=r"not a finished training run .*run the same main command"):
        GPOVAEModel.load(tmp_path / "half")
    with pytest.raises(FileNotFoundError):  # still a FileNotFoundError for callers that catch it
        GPOVAEModel.load(tmp_path / "nowhere")


def test_a_screens_results_folder_is_one_folder_inside_the_results_dir():
    from workflow.datasets import dataset_slug

    assert dataset_slug("screens/my screen.h5ad") == "my screen"
    assert dataset_slug("rpe1") == "rpe1"
    assert dataset_slug("x/...h5ad") == "screen"  # its stem '..' would name the folder above
    assert dataset_slug("x/.hidden.h5ad") == "hidden"
