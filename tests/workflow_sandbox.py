"""Run the real `redun run workflow.py ...` command in a copy of the project, and read its job records."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What a user's checkout needs for the command: the workflow, its tasks, configs and redun config.
PROJECT_ENTRIES = ("workflow", "tasks", "configs", "deploy", "redun.ini", ".redun/redun.ini")
#: Config sections that make a whole pipeline run take about a minute: a tiny model, 2 epochs,
#: few generated cells (the shipped configs are tested elsewhere).
TINY_SECTIONS = {
    "model": {
        "n_latent": 8,
        "decoder_n_hidden": 32,
        "basal_encoder_n_hidden": 32,
        "embedding_encoder_n_layers": 1,
        "embedding_encoder_n_hidden": 32,
        "n_particles": 2,
    },
    "training": {"max_epochs": 2, "batch_size": 256, "eval_batch_size": 1024, "cpu_threads": 1},
    "evaluation": {
        "n_generated_cells": 100,
        "iwelbo_particles": 8,
        "summary_stats_cells": 30,
        "grn_ks": [50, 100],
        "n_negatives": 100,
        "cpu_threads": 1,
    },
}


@dataclass
class WorkflowSandbox:
    """A throw-away copy of the project root with its own redun database and results.

    With ``config_dir`` (e.g. ``deploy/team``) every command gets ``redun -c config_dir`` and
    ``env``; job records are then read from ``postgres`` (a :class:`LocalPostgres`) database
    ``database`` instead of ``.redun/redun.db``.
    """

    root: Path
    config_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    postgres: Any = None
    database: str | None = None

    @classmethod
    def create(cls, where: Path, **options: Any) -> WorkflowSandbox:
        root = where / "project"
        for entry in PROJECT_ENTRIES:
            src, dst = REPO_ROOT / entry, root / entry
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            elif src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, dst)
        return cls(root, **options)

    def shrink_configs(self, sections: dict[str, dict[str, Any]], names: tuple[str, ...]) -> None:
        """Update sections of the sandbox's ``configs/<name>.yaml`` files (tiny models for tests)."""
        import yaml

        from gpo_vae.config import load_yaml

        for name in names:
            path = self.root / "configs" / f"{name}.yaml"
            raw = load_yaml(path)
            for section, values in sections.items():
                raw[section].update(values)
            path.write_text(yaml.safe_dump(raw, sort_keys=False))

    def command(self, *args: str) -> list[str]:
        """``redun [-c config_dir] ARGS`` with this environment's redun."""
        redun_bin = Path(sys.executable).with_name("redun")
        return [str(redun_bin), *(["-c", self.config_dir] if self.config_dir else []), *args]

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **(env or {})}
        if "REDUN_CONFIG" not in {**self.env, **(env or {})}:
            full_env.pop("REDUN_CONFIG", None)
        return full_env

    def start(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
        """Start ``redun run --execution-id ID workflow.py ARGS`` in its own process group, without
        waiting; output goes to ``<root>/<ID>.log``. Returns (ID, process)."""
        execution_id = str(uuid.uuid4())
        cmd = self.command("run", "--execution-id", execution_id, "workflow.py", *args)
        with open(self.root / f"{execution_id}.log", "w") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                cmd, cwd=self.root, env=self.environment(env), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, text=True,
            )  # fmt: skip
        return execution_id, process

    def output(self, execution_id: str) -> str:
        """What a started command printed so far."""
        return (self.root / f"{execution_id}.log").read_text()

    def redun(
        self, *args: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> tuple[str, subprocess.CompletedProcess]:
        """Run ``redun run --execution-id ID workflow.py ARGS`` from the root (``env`` added to
        the environment); return (ID, result)."""
        execution_id = str(uuid.uuid4())
        cmd = self.command("run", "--execution-id", execution_id, "workflow.py", *args)
        result = subprocess.run(
            cmd, cwd=self.root, env=self.environment(env), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
            )
        return execution_id, result

    def jobs(self, execution_id: str) -> list[tuple[str, bool]]:
        """(task name, served from cache) for every job of one execution, from redun's database."""
        query = (
            "SELECT task.name, job.cached FROM job JOIN task ON job.task_hash = task.hash "
            "WHERE job.execution_id = {}"
        )
        if self.postgres is not None:
            connection = self.postgres.connect(self.database)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(query.format("%s"), (execution_id,))
                    rows = cursor.fetchall()
            finally:
                connection.close()
        else:
            with sqlite3.connect(self.root / ".redun" / "redun.db") as db:
                rows = db.execute(query.format("?"), (execution_id,)).fetchall()
        return [(name, bool(cached)) for name, cached in rows]

    def executed(self, execution_id: str) -> set[str]:
        """Names of the tasks whose bodies ran (not served from cache) in one execution."""
        return {name for name, cached in self.jobs(execution_id) if not cached}
