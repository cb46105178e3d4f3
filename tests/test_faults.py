"""The faults users meet first, each drilled on the real command (tests/fault_drills.py)."""

from __future__ import annotations

import re
import sqlite3
import subprocess

import pytest
import yaml

from gpo_vae.config import load_yaml
from tests.fault_drills import (
    MAIN,
    drill_full_disk,
    drill_second_user,
    drill_sigint_training,
    drill_sigkill_preprocessing,
    make_sandbox,
    run_failing,
    small_filesystem,
)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return make_sandbox(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def finished(box):
    """One finished run of the panel screen: (run dir, evaluation dir)."""
    box.redun(*MAIN)
    results = box.root / "results" / "panel"
    return next((results / "runs").glob("*/model.pt")).parent, next(
        (results / "evaluation").glob("*/report.html")
    ).parent


def _last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).strip().splitlines()[-1]


def test_one_ctrl_c_stops_training_in_seconds_and_the_rerun_resumes(tmp_path):
    box = make_sandbox(tmp_path, epochs=60)
    drill = drill_sigint_training(box)
    assert drill["returncode"] == 1  # stopped (its seconds are measured in benchmarks/faults.py)
    last = drill["lines"][-1]
    assert (
        last.startswith("RunInterrupted: training stopped by Ctrl-C") and "run the same command again" in last
    )
    assert "last.ckpt holds" in last
    assert "model.pt" not in drill["left"] and ".complete" not in drill["left"]
    said = [i for i, line in enumerate(drill["lines"]) if line.startswith("Ctrl-C: stopping")]
    assert said and len(drill["lines"]) - said[0] <= 6, drill["lines"]  # the stop is said in a few lines
    assert drill["rerun"] == "resumed", drill["rerun_events"]
    assert (drill["run_dir"] / ".complete").exists() and (drill["run_dir"] / "model.pt").exists()


def test_sigkill_during_preprocessing_leaves_nothing_that_outlives_the_rerun(tmp_path):
    drill = drill_sigkill_preprocessing(make_sandbox(tmp_path))
    assert not [name for name in drill["after_rerun"] if name.endswith(".partial")], drill
    assert drill["rerun"] == "recomputed and completed"


def test_a_full_disk_stops_in_one_message_and_leaves_no_partial_output(box):
    try:
        drill = drill_full_disk(box)
    except PermissionError as err:
        pytest.skip(str(err))
    assert drill["returncode"] == 1
    last = drill["lines"][-1]
    assert last.startswith("OutputSpaceError: not enough space for the preprocessed artifact in ")
    assert "MB are free" in last and "--results-dir" in last
    assert not [name for name in drill["left"] if ".partial" in name or name.endswith(".tmp")], drill["left"]
    assert "Segmentation fault" not in "\n".join(drill["lines"])


def test_a_write_that_meets_a_full_disk_is_one_clear_error(tmp_path):
    from gpo_vae.io import OutputSpaceError, write_text_atomic

    try:
        with small_filesystem(64) as mount:
            with pytest.raises(OutputSpaceError, match=r"the disk holding .*big\.txt is full"):
                write_text_atomic("x" * 200_000, mount / "big.txt")
            assert list(mount.iterdir()) == []
    except PermissionError as err:
        pytest.skip(str(err))


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_outputs_follow_the_umask_and_a_colleague_reuses_them(box, finished):
    try:
        drill = drill_second_user(box)
    except PermissionError as err:
        pytest.skip(str(err))
    assert drill["returncode"] == 0, drill["output"][-3000:]
    modes = drill["modes"]
    files = {
        k: v for k, v in modes.items() if k.endswith(("report.html", "model.pt", "run.json", "artifact.h5ad"))
    }
    assert files and set(files.values()) == {"0o664"}, modes  # not 0600
    folders = {
        k: v for k, v in modes.items() if len(k.split("/")) == 3 and not k.split("/")[-1].startswith(".")
    }
    assert folders and all(int(v, 8) & 0o775 == 0o775 for v in folders.values()), modes  # not 0700
    assert drill["new_outputs"] == {"preprocessed": [], "runs": [], "evaluation": []}, drill["new_outputs"]
    assert drill["report_readable"] and drill["reused_events"] >= 1
    assert "mean_pearson" in drill["output"]


def test_damaged_files_are_named_with_what_to_do(box, finished):
    run_dir, _evaluation = finished
    # a truncated model.pt: retraining is the fix
    model = run_dir / "model.pt"
    intact = model.read_bytes()
    model.write_bytes(intact[: len(intact) // 2])
    try:
        result = run_failing(box, *MAIN)
        last = _last_line(result)
        assert (
            result.returncode == 1 and last.startswith("DamagedFileError: ") and "model.pt: damaged" in last
        )
        assert "Delete the run directory" in last or "delete the run directory" in last
        evaluated = run_failing(box, "evaluate", "--run", str(run_dir))
        assert evaluated.returncode == 1 and "model.pt" in _last_line(evaluated)
    finally:
        model.write_bytes(intact)
    # a run's config.json that is not JSON
    config = run_dir / "config.json"
    kept = config.read_text()
    config.write_text("{ not json")
    try:
        result = run_failing(box, "evaluate", "--run", str(run_dir))
        assert result.returncode == 1 and re.match(
            r"DamagedFileError: .*config\.json: not valid JSON", _last_line(result)
        )
    finally:
        config.write_text(kept)
    # redun's own database
    database = box.root / ".redun" / "redun.db"
    saved = database.read_bytes()
    database.write_bytes(b"this is no database")
    try:
        result = run_failing(box, *MAIN)
        lines = (result.stdout + result.stderr).strip().splitlines()
        assert result.returncode == 1 and len(lines) <= 5 and "redun.db.damaged" in lines[-1]
    finally:
        database.write_bytes(saved)
        sqlite3.connect(database).execute("PRAGMA quick_check").fetchall()


def test_bad_config_and_results_dir_stop_before_any_task(box, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("training:\n  lr: 0.1\n   batch_size: 8\n")
    result = run_failing(box, *MAIN, "--config", str(broken))
    assert result.returncode == 1 and _last_line(result).startswith(f"ConfigError: {broken}: not valid YAML")
    assert "line 3" in _last_line(result)
    a_file = tmp_path / "results.txt"
    a_file.write_text("")
    result = run_failing(box, *MAIN, "--results-dir", str(a_file))
    assert "InputFileError: --results-dir" in _last_line(result) and "a file, not a folder" in _last_line(
        result
    )
    try:
        with small_filesystem(64, read_only=True) as mount:
            result = run_failing(box, *MAIN, "--results-dir", str(mount / "results"))
            assert "cannot write there" in _last_line(result) and "Read-only file system" in _last_line(
                result
            )
    except PermissionError:
        pass  # no mount here: the file case above still ran
    cuda = box.root / "configs" / "cuda.yaml"
    raw = load_yaml(box.root / "configs" / "gpo_vae_plus_custom.yaml")
    raw["training"]["device"] = "cuda"
    cuda.write_text(yaml.safe_dump(raw))
    import torch

    if not torch.cuda.is_available():
        result = run_failing(box, *MAIN, "--config", str(cuda))
        assert "training.device is 'cuda' but torch sees no CUDA device" in _last_line(result)
        assert "preprocess_dataset" not in result.stdout + result.stderr
    network = tmp_path / "biogrid.csv"
    network.write_text("a,b\nX,Y\n")  # no recognisable columns
    result = run_failing(box, *MAIN, "--networks", str(network))
    assert result.returncode == 1 and "biogrid.csv" in _last_line(result)
    assert "preprocess_dataset" not in result.stdout + result.stderr
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\nmetric: pearson\nparameters:\n  model.hop: [1, 2]\n")
    result = run_failing(box, "sweep", "--dataset", "screens/panel.h5ad", "--sweep", str(sweep))
    assert "metric 'pearson' is not one the leaderboard can rank by" in _last_line(result)
    assert "train_run" not in result.stdout + result.stderr


def test_the_terminal_shows_a_line_per_job_and_the_same_headline_cached(box, finished):
    first = box.redun(*MAIN)[1]
    output = first.stdout + first.stderr
    assert "JOB STATUS" not in output
    jobs = [line for line in output.splitlines() if re.search(r" Job [0-9a-f]+:  gpo_vae\.", line)]
    assert jobs and all("(" not in line for line in jobs), jobs  # the task, not its arguments
    headline = [line for line in output.splitlines() if "mean_pearson" in line or line.startswith("report: ")]
    again = box.redun(*MAIN)[1]
    assert headline and headline == [
        line
        for line in (again.stdout + again.stderr).splitlines()
        if "mean_pearson" in line or line.startswith("report: ")
    ]
    verbose = box.redun(*MAIN, env={"GPO_VAE_VERBOSE": "1"})[1]
    assert "JOB STATUS" in verbose.stdout + verbose.stderr


def test_sweep_names_cannot_write_outside_the_results_dir(box, tmp_path):
    results = tmp_path / "results"
    outside = tmp_path / "outside"
    for name in (str(outside), "../../../../x", "../x"):
        sweep = tmp_path / "sweep.yaml"
        sweep.write_text(f"name: {name}\nmetric: val/loss\nparameters:\n  training.seed: [0]\n")
        result = run_failing(
            box,
            "sweep",
            "--dataset",
            "screens/panel.h5ad",
            "--sweep",
            str(sweep),
            "--results-dir",
            str(results),
        )
        last = _last_line(result)
        assert result.returncode == 1 and f"name {name!r} cannot be a folder name" in last, last
        assert "train_run" not in result.stdout + result.stderr
    assert not outside.exists() and not results.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]


def test_options_are_checked_before_any_task_even_when_everything_is_cached(box, finished, tmp_path):
    cases = {
        (
            "--executor",
            "nope",
        ): "--executor 'nope': the redun config defines no such executor; it defines default, process",
        ("--train-executor", "gpu"): "--train-executor 'gpu': the redun config defines no such executor",
        (
            "--synthetic-preset",
            "nope",
        ): "--synthetic-preset 'nope': no such preset; choose one of default, rpe1",
        ("--config", "configs"): "InputFileError: --config configs: a folder, not a file",
        (
            "--pairing-chunk-size",
            "-2",
        ): "--pairing-chunk-size -2: give 0 (the OT pairing inside preprocessing)",
    }
    for (option, value), expected in cases.items():
        result = run_failing(box, *MAIN, option, value)
        assert result.returncode == 1 and expected in _last_line(result), _last_line(result)
        assert "Cached Job" not in result.stdout + result.stderr  # stopped in the entry point
    (box.root / "screens" / "folder.h5ad").mkdir(exist_ok=True)
    result = run_failing(box, "main", "--dataset", "screens/folder.h5ad")
    assert "--dataset screens/folder.h5ad: a folder, not a file" in _last_line(result)
    sweep = run_failing(box, "sweep", "--dataset", "screens/panel.h5ad", "--max-concurrent", "0")
    assert "ConfigError: --max-concurrent 0: give at least 1" in _last_line(sweep)
    # a failing run leaves no results folder behind
    fresh = tmp_path / "new" / "results"
    result = run_failing(box, *MAIN, "--results-dir", str(fresh), "--config", str(tmp_path / "missing.yaml"))
    assert "--config" in _last_line(result) and "no such file" in _last_line(result)
    assert not (tmp_path / "new").exists()


def test_evaluate_names_what_a_copied_run_lacks(box, finished, tmp_path):
    import shutil

    run_dir, _evaluation = finished
    copy = tmp_path / "results" / "panel" / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    result = run_failing(box, "evaluate", "--run", str(copy))  # no preprocessed/ beside it
    last = _last_line(result)
    assert result.returncode == 1 and last.startswith("InputFileError: --run ") and "pass --artifact" in last
    (copy / "config.json").unlink()
    result = run_failing(box, "evaluate", "--run", str(copy))
    assert "not a finished run directory (config.json missing)" in _last_line(result)
    assert len((result.stdout + result.stderr).strip().splitlines()) <= 8
    loose = tmp_path / "loose"
    shutil.copytree(run_dir, loose)
    result = run_failing(box, "evaluate", "--run", str(loose))
    assert "not inside a <results>/<dataset>/runs/ folder" in _last_line(result)


def test_a_damaged_artifact_is_rebuilt_byte_identical_without_retraining(box, finished):
    run_dir, _evaluation = finished
    preprocessed = box.root / "results" / "panel" / "preprocessed"
    artifact = next(preprocessed.glob("*/artifact.h5ad"))
    intact = artifact.read_bytes()
    model_written = (run_dir / "model.pt").stat().st_mtime_ns
    artifact.write_bytes(intact[: len(intact) // 3])
    execution, _result = box.redun(*MAIN)
    assert "preprocess_dataset" in box.executed(execution)
    assert artifact.read_bytes() == intact
    # redun calls the training task again (the file's stamp changed), which finds the finished
    # run of the same artifact checksum and reuses it: no new model.pt
    assert (run_dir / "model.pt").stat().st_mtime_ns == model_written
    assert '"reused"' in (run_dir / "events.jsonl").read_text().splitlines()[-1]


#: The bad inputs of issue 34's battery that printed a traceback or ran silently, and the start of
#: the one line each must now end with (tests/fault_drills.py: bad_input_cases).
BATTERY = {
    "screen: a batch with no controls": (
        "SplitError: too few control cells: 0 in batch 'B'",
        "--batch-key out",
    ),
    "screen: a batch with 2 controls": ("SplitError: too few control cells: 2 in batch 'B'", "at least 5"),
    "screen: 4 controls in all": ("SplitError: too few control cells: 4 in all", "--control-label"),
    "screen: a 2-cell screen": ("SplitError: too few control cells: 1 in all", "at least 5"),
    "screen: one perturbation held out": (
        "SplitError: preprocess.split.mode heldout_perturbations",
        "--split",
    ),
    "screen: a label 'nan'": ("DataContractError: ", "holds 'nan' for"),
    "config: billion laughs": ("ConfigError: ", "anchors and aliases"),
    "config: billion laughs sweep": ("ConfigError: ", "anchors and aliases"),
    "config: a key written twice": ("ConfigError: ", "the key 'lr' is written twice"),
    "config: an empty config": ("ConfigError: ", "the file is empty"),
    "--results-dir on a dangling symlink": ("InputFileError: --results-dir ", "which does not exist"),
    "--results-dir ''": ("InputFileError: --results-dir ''", "give a folder"),
}


def test_the_battery_stops_in_one_line_naming_the_fix(box, tmp_path):
    """Each case stops before training with its last line naming the file, key or value and the fix,
    no traceback, and nothing written outside results (a config or a link is never followed into
    a billion items or another folder)."""
    from tests.fault_drills import bad_input_cases, lines_of

    cases = bad_input_cases(box, tmp_path / "scratch")
    for name, (start, phrase) in BATTERY.items():
        before = {p.name for p in box.root.iterdir()}
        result = run_failing(box, *cases[name])
        assert {p.name for p in box.root.iterdir()} <= before | {"results"}, name
        lines = lines_of(result.stdout + result.stderr)
        assert result.returncode == 1, (name, lines[-5:])
        assert not any(line.startswith("Traceback") for line in lines), (name, lines[-5:])
        assert lines[-1].startswith(start) and phrase in lines[-1], (name, lines[-1])
        assert "train_run" not in result.stdout + result.stderr, name


def test_evaluate_on_a_read_only_results_folder_says_where_to_write(box, finished, tmp_path):
    """A finished run on a read-only mount (a colleague's share, an archive): the evaluation
    would be written beside it; the run names the folder and --results-dir before any task."""
    import shutil

    run_dir, _evaluation = finished
    try:
        with small_filesystem(20_000) as mount:
            shutil.copytree(box.root / "results", mount / "results")
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
            copied = mount / "results" / "panel" / "runs" / run_dir.name
            result = run_failing(box, "evaluate", "--run", str(copied))
            last = _last_line(result)
            assert result.returncode == 1 and last.startswith(
                f"InputFileError: --run {copied}: the evaluation"
            )
            assert "Read-only file system" in last and "pass --results-dir" in last
            elsewhere = run_failing(
                box, "evaluate", "--run", str(copied), "--results-dir", str(tmp_path / "mine")
            )
            assert elsewhere.returncode == 0, _last_line(elsewhere)
            assert next((tmp_path / "mine" / "panel" / "evaluation").glob("*/report.html"))
    except (PermissionError, subprocess.CalledProcessError):
        pytest.skip("no tmpfs mount here")
