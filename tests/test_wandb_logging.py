"""Optional wandb logging of sweeps, against a fake ``wandb`` module that records its calls."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from gpo_vae.leaderboard import point_metrics, rank_rows
from gpo_vae.wandb_logging import STATUS_FILE, log_leaderboard_to_wandb, main, require_wandb

FAKE = Path(__file__).parent / "fake_wandb" / "wandb" / "__init__.py"
SWEEP = {"name": "tiny", "metric": "val/loss", "goal": "minimize"}


@pytest.fixture
def fake_wandb(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_WANDB_LOG", str(log))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    spec = importlib.util.spec_from_file_location("fake_wandb_module", FAKE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def ranked(losses: dict[str, float]) -> list[dict]:
    rows = [
        {
            "point": point,
            "label": f"grn_coeff={coeff}",
            "parameters": {"model.grn_coeff": coeff},
            "metrics": point_metrics({"best_val_loss": loss}, {"metrics": {"true_network_auroc": 0.7}}),
            "run_dir": f"runs/{point}",
            "evaluation_dir": f"evaluation/{point}",
        }
        for coeff, (point, loss) in enumerate(losses.items())
    ]
    return rank_rows(rows, "val/loss", "minimize")


def test_each_point_once_then_only_new_points_and_the_new_leaderboard(fake_wandb, tmp_path):
    module, log = fake_wandb
    out = tmp_path / "sweep"
    status = log_leaderboard_to_wandb(ranked({"a": 2.0, "b": 1.0}), SWEEP, "lab", out, module)
    inits = [c for c in calls(log) if c["call"] == "init"]
    assert status["error"] is None and status["logged_now"] == 3 and status["mode"] == "offline"
    assert [c["job_type"] for c in inits] == ["sweep-point", "sweep-point", "sweep-leaderboard"]
    assert {c["group"] for c in inits} == {"sweep-tiny"} and {c["mode"] for c in inits} == {"offline"}
    assert inits[0]["config"] == {"model.grn_coeff": 1, "sweep": "tiny", "point": "b"}  # ranked first
    summaries = {c["run"]: c["summary"] for c in calls(log) if c["call"] == "finish"}
    assert summaries[inits[0]["run"]]["rank"] == 1 and summaries[inits[0]["run"]]["val/loss"] == 1.0
    assert summaries[inits[1]["run"]]["metric_value"] == 2.0
    table = next(c["tables"]["leaderboard"] for c in calls(log) if c["call"] == "log")
    assert table["columns"][:4] == ["rank", "point", "label", "metric_value"]
    assert [row[1] for row in table["data"]] == ["b", "a"]
    assert json.loads((out / STATUS_FILE).read_text())["points"].keys() == {"a", "b"}

    again = log_leaderboard_to_wandb(ranked({"a": 2.0, "b": 1.0}), SWEEP, "lab", out, module)
    assert again["logged_now"] == 0 and len(calls(log)) == len(inits) + 4  # nothing new

    extended = log_leaderboard_to_wandb(ranked({"a": 2.0, "b": 1.0, "c": 0.5}), SWEEP, "lab", out, module)
    new = [c for c in calls(log) if c["call"] == "init"][3:]
    assert extended["logged_now"] == 2 and [c["config"].get("point") for c in new] == ["c", None]


def test_a_failure_is_recorded_not_raised_and_the_retry_logs_the_rest(fake_wandb, tmp_path, monkeypatch):
    module, log = fake_wandb
    out = tmp_path / "sweep"
    monkeypatch.setenv("FAKE_WANDB_FAIL_AFTER", "1")
    status = log_leaderboard_to_wandb(ranked({"a": 2.0, "b": 1.0}), SWEEP, "lab", out, module)
    assert status["error"] == "ConnectionError: fake wandb: network unreachable"
    assert status["logged_now"] == 1 and list(status["points"]) == ["b"] and not status["leaderboard"]
    monkeypatch.delenv("FAKE_WANDB_FAIL_AFTER")
    retry = log_leaderboard_to_wandb(ranked({"a": 2.0, "b": 1.0}), SWEEP, "lab", out, module)
    assert retry["error"] is None and retry["logged_now"] == 2 and set(retry["points"]) == {"a", "b"}
    points = [c["config"].get("point") for c in calls(log) if c["call"] == "init"]
    assert points == ["b", "a", None], "every point logged exactly once"


def test_another_project_logs_again_and_the_mode_follows_the_environment(fake_wandb, tmp_path, monkeypatch):
    module, log = fake_wandb
    out = tmp_path / "sweep"
    log_leaderboard_to_wandb(ranked({"a": 1.0}), SWEEP, "lab", out, module)
    monkeypatch.setenv("WANDB_MODE", "online")
    status = log_leaderboard_to_wandb(ranked({"a": 1.0}), SWEEP, "other", out, module)
    assert status["logged_now"] == 2 and status["mode"] == "online"
    assert [c["project"] for c in calls(log) if c["call"] == "init"] == ["lab", "lab", "other", "other"]


def test_missing_wandb_names_what_asked_for_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(
        ImportError, match=r"the sweep asks for it but wandb is not installed.*gpo-vae\[wandb\]"
    ):
        require_wandb("the sweep asks for it")


def test_command_line_retries_from_the_sweep_folder(fake_wandb, tmp_path, monkeypatch, capsys):
    _, log = fake_wandb
    monkeypatch.syspath_prepend(str(FAKE.parent.parent))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    with pytest.raises(SystemExit, match="2"):
        main([str(tmp_path / "nowhere"), "--project", "lab"])
    assert "leaderboard.json" in capsys.readouterr().err
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "leaderboard.json").write_text(json.dumps({"sweep": SWEEP, "rows": ranked({"a": 1.0})}))
    assert main([str(out), "--project", "lab"]) == 0
    assert json.loads(capsys.readouterr().out)["logged_now"] == 2
    assert len([c for c in calls(log) if c["call"] == "init"]) == 2
