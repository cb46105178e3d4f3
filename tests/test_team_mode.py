"""Team mode: the real `redun -c deploy/team run workflow.py ...` against a real PostgreSQL.

The tests start their own PostgreSQL server (:mod:`tests.postgres_server`) and skip, saying why,
where one cannot be started (``GPO_VAE_REQUIRE_POSTGRES=1`` turns the skip into a failure; CI
sets it after installing PostgreSQL). Job records are read from the PostgreSQL database.
The database-loss test on SQLite needs no server.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from gpo_vae.config import load_yaml
from gpo_vae.training.train import read_events
from tests.postgres_server import ROLE, LocalPostgres, PostgresUnavailable
from tests.workflow_sandbox import REPO_ROOT, TINY_SECTIONS, WorkflowSandbox

TEAM_DIR = "deploy/team"
ONE_EPOCH = {**TINY_SECTIONS, "training": {**TINY_SECTIONS["training"], "max_epochs": 1}}
#: Settings of the training that the kill test interrupts: long enough to be caught mid-way.
KILLED_TRAINING = {"max_epochs": 12, "early_stopping_patience": 100, "seed": 11}


def sweep_file(box: WorkflowSandbox, name: str, coefficients: list[float]) -> str:
    spec = {
        "name": name,
        "method": "grid",
        "metric": "val/loss",
        "goal": "minimize",
        "max_concurrent": 2,
        "parameters": {"model.grn_coeff": coefficients},
    }
    path = box.root / "configs" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path.relative_to(box.root))


def fits(run_dir: Path) -> list[int | None]:
    """The epoch each training session of a run started from (None: from scratch)."""
    return [event["resume_from_epoch"] for event in read_events(run_dir) if event["event"] == "fit"]


@pytest.fixture(scope="module")
def postgres():
    try:
        server = LocalPostgres.start()
    except PostgresUnavailable as err:
        if os.environ.get("GPO_VAE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"GPO_VAE_REQUIRE_POSTGRES=1 but {err}")
        pytest.skip(f"no PostgreSQL server for the team-mode tests: {err}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def team(postgres, tmp_path_factory) -> WorkflowSandbox:
    """A project copy whose redun runs use deploy/team with a fresh, migrated database."""
    env = {"GPO_VAE_DB_URI": postgres.create_database("gpo_vae_team"), **postgres.credentials_env()}
    box = WorkflowSandbox.create(
        tmp_path_factory.mktemp("team"),
        config_dir=TEAM_DIR,
        env=env,
        postgres=postgres,
        database="gpo_vae_team",
    )
    box.shrink_configs(ONE_EPOCH, ("gpo_vae_plus_synthetic",))
    migrate(box)
    return box


def migrate(box: WorkflowSandbox) -> str:
    """``redun -c deploy/team db upgrade``: the schema, by redun's own migration command."""
    done = subprocess.run(
        box.command("db", "upgrade"), cwd=box.root, env=box.environment(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_team_profile_keeps_secrets_out_and_the_executors_in_step():
    team, solo = configparser.ConfigParser(interpolation=None), configparser.ConfigParser(interpolation=None)
    team.read(REPO_ROOT / TEAM_DIR / "redun.ini")
    solo.read(REPO_ROOT / "redun.ini")
    assert team["backend"]["db_uri"] == "${GPO_VAE_DB_URI}" and team["backend"]["automigrate"] == "False"
    assert solo["backend"]["db_uri"].startswith("sqlite:///"), "SQLite stays the zero-setup default"
    executors = [name for name in solo.sections() if name.startswith("executors.")]
    assert executors == [name for name in team.sections() if name.startswith("executors.")]
    for name in executors:
        assert dict(team[name]) == dict(solo[name]), f"[{name}] differs between the profiles"
    text = (REPO_ROOT / TEAM_DIR / "redun.ini").read_text()
    assert "password =" not in text.lower() and "postgresql://" not in text.split("[backend]")[1]


def test_main_on_postgres_then_a_rerun_runs_nothing_and_no_password_is_printed(team, postgres):
    info = subprocess.run(
        team.command("db", "info"), cwd=team.root, env=team.environment(), capture_output=True, text=True
    )
    assert info.returncode == 0 and "CLI compatible with db: True" in info.stdout, info.stdout + info.stderr
    first, cold = team.redun("main", "--dataset", "synthetic")
    assert {"simulate_dataset", "preprocess_dataset", "train_run", "evaluate_run_task"} <= team.executed(
        first
    )
    second, cached = team.redun("main", "--dataset", "synthetic")
    assert team.executed(second) == set(), team.jobs(second)
    for output in (cold, cached, info):
        assert postgres.password not in output.stdout + output.stderr


def test_the_password_can_come_from_a_pgpass_file_instead_of_the_environment(team, postgres, tmp_path):
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:{postgres.port}:*:{ROLE}:{postgres.password}\n")
    pgpass.chmod(0o600)  # libpq ignores a file that others can read
    env = {key: value for key, value in team.environment().items() if key != "REDUN_DB_PASSWORD"}
    command = team.command("db", "info")
    without = subprocess.run(command, cwd=team.root, env=env, capture_output=True, text=True)
    assert without.returncode != 0 and postgres.password not in without.stdout + without.stderr
    found = subprocess.run(
        command, cwd=team.root, env={**env, "PGPASSFILE": str(pgpass)}, capture_output=True, text=True
    )
    assert found.returncode == 0 and "CLI compatible with db: True" in found.stdout, found.stderr[-2000:]


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_two_sweeps_at_once_share_configurations_and_train_each_once(team):
    a = sweep_file(team, "team_a", [10.0, 100.0])
    b = sweep_file(team, "team_b", [100.0, 1000.0])  # grn_coeff 100 is in both
    started = [team.start("sweep", "--dataset", "synthetic", "--sweep", sweep) for sweep in (a, b)]
    for execution, process in started:
        assert process.wait(timeout=900) == 0, team.output(execution)[-6000:]
    results = team.root / "results" / "synthetic"
    boards = {
        name: pd.read_csv(results / "sweeps" / name / "leaderboard.csv") for name in ("team_a", "team_b")
    }
    shared = {name: board.loc[board["model.grn_coeff"] == 100.0].iloc[0] for name, board in boards.items()}
    assert shared["team_a"]["run_dir"] == shared["team_b"]["run_dir"], "one run directory per configuration"
    assert shared["team_a"]["val/loss"] == shared["team_b"]["val/loss"]
    run_dirs = {str(row) for board in boards.values() for row in board["run_dir"]}
    assert len(run_dirs) == 3
    for run_dir in run_dirs:
        path = run_dir if Path(run_dir).is_absolute() else team.root / run_dir
        assert fits(Path(path)) == [None], f"{run_dir} trained {len(fits(Path(path)))} times"
        assert (Path(path) / ".complete").exists()
    # no folder was left half-written and every artifact verifies
    assert not list(results.rglob("*.partial")) and not list(results.rglob(".*.tmp*"))
    assert len(list((results / "preprocessed").glob("*/.complete"))) == 1
    # the records both runs wrote are whole: the same commands again run no task body
    for sweep in (a, b):
        again, _ = team.redun("sweep", "--dataset", "synthetic", "--sweep", sweep)
        assert team.executed(again) == set(), team.jobs(again)


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_a_killed_run_resumes_training_and_reuses_every_finished_task(team):
    base = load_yaml(team.root / "configs" / "gpo_vae_plus_synthetic.yaml")
    config = {**base, "training": {**base["training"], **KILLED_TRAINING}}
    path = team.root / "configs" / "killed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    args = ("main", "--dataset", "synthetic", "--config", "configs/killed.yaml")
    execution, process = team.start(*args)
    runs = team.root / "results" / "synthetic" / "runs"
    deadline = time.monotonic() + 600
    checkpoint = None
    while checkpoint is None and time.monotonic() < deadline and process.poll() is None:
        for candidate in runs.glob("*/checkpoints/last.ckpt"):
            config_json = json.loads((candidate.parent.parent / "config.json").read_text())
            if config_json["training"]["seed"] == KILLED_TRAINING["seed"]:
                checkpoint = candidate
        time.sleep(0.2)
    assert checkpoint is not None, f"training never checkpointed:\n{team.output(execution)[-4000:]}"
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group: redun and its workers
    process.wait(timeout=60)
    run_dir = checkpoint.parent.parent
    assert not (run_dir / ".complete").exists(), "killed too late: training had already finished"
    assert not (run_dir / "model.pt").exists()

    rerun, _ = team.redun(*args)
    jobs = dict(team.jobs(rerun))
    assert jobs["simulate_dataset"] and jobs["preprocess_dataset"], f"finished tasks must be cached: {jobs}"
    assert jobs["train_run"] is False and "evaluate_run_task" in team.executed(rerun)
    resumed = fits(run_dir)
    assert len(resumed) == 2 and resumed[0] is None and resumed[1] >= 0, read_events(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["resumed"] and run["epochs"] == KILLED_TRAINING["max_epochs"]


def test_after_losing_the_postgres_database_a_rerun_recomputes_nothing_it_has(team, postgres):
    results = team.root / "results" / "synthetic"
    reports = {path: path.stat().st_mtime_ns for path in results.glob("evaluation/*/report.html")}
    events = {path.parent: len(read_events(path.parent)) for path in results.glob("runs/*/.complete")}
    assert reports and events
    postgres.drop_database(team.database)
    postgres.create_database(team.database)
    migrate(team)  # an administrator recreates the schema, as README says
    execution, _ = team.redun("main", "--dataset", "synthetic")
    assert not any(cached for _, cached in team.jobs(execution)), "a new database has no cache"
    new = {run: [e["event"] for e in read_events(run)[count:]] for run, count in events.items()}
    assert sorted(new.values()) == [[]] * (len(new) - 1) + [["reused"]], new  # main's run, not retrained
    for path, mtime in reports.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"


@pytest.mark.slow  # over a minute on 2 cores: `make test-all`
def test_after_losing_the_sqlite_database_a_rerun_reuses_the_results(tmp_path):
    box = WorkflowSandbox.create(tmp_path)
    box.shrink_configs(ONE_EPOCH, ("gpo_vae_plus_synthetic",))
    box.redun("main", "--dataset", "synthetic")
    results = box.root / "results" / "synthetic"
    (run_dir,) = [path.parent for path in results.glob("runs/*/.complete")]
    (report,) = results.glob("evaluation/*/report.html")
    written = {path: path.stat().st_mtime_ns for path in (report, run_dir / "model.pt")}

    (box.root / ".redun" / "redun.db").unlink()
    second, result = box.redun("main", "--dataset", "synthetic")
    assert {"simulate_dataset", "preprocess_dataset", "train_run", "evaluate_run_task"} <= box.executed(
        second
    )
    assert [event["event"] for event in read_events(run_dir)] == ["fit", "complete", "reused"]
    for path, mtime in written.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was recomputed"
    assert str(report.resolve()) in result.stdout + result.stderr

    # the results directory alone is enough to re-evaluate the finished run
    (box.root / ".redun" / "redun.db").unlink()
    third, result = box.redun("evaluate", "--run", str(run_dir))
    assert "evaluate_run_task" in box.executed(third) and "train_run" not in {n for n, _ in box.jobs(third)}
    assert "report:" in result.stdout + result.stderr


def test_scheduled_sweep_manifest_uses_the_team_profile_and_secrets():
    manifest = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "sweep-cronjob.yaml").read_text())
    (container,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert (
        env["REDUN_CONFIG"]["value"].endswith("/" + TEAM_DIR)
        and (REPO_ROOT / TEAM_DIR / "redun.ini").exists()
    )
    assert ":" not in env["GPO_VAE_DB_URI"]["value"].split("@")[0].removeprefix("postgresql://")
    for secret in ("REDUN_DB_USERNAME", "REDUN_DB_PASSWORD"):
        assert "secretKeyRef" in env[secret]["valueFrom"] and "value" not in env[secret]
    assert manifest["spec"]["concurrencyPolicy"] == "Forbid"
