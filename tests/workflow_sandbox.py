"""Run the real `redun run workflow.py ...` command in a copy of the project, and read its job records."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: What a user's checkout needs for the command: the workflow, its tasks, configs and redun config.
PROJECT_ENTRIES = ("workflow", "tasks", "configs", "redun.ini", ".redun/redun.ini")


@dataclass
class WorkflowSandbox:
    """A throw-away copy of the project root with its own redun database and results."""

    root: Path

    @classmethod
    def create(cls, where: Path) -> WorkflowSandbox:
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
        return cls(root)

    def redun(
        self, *args: str, timeout: float = 900, env: dict[str, str] | None = None
    ) -> tuple[str, subprocess.CompletedProcess]:
        """Run ``redun run --execution-id ID workflow.py ARGS`` from the root (``env`` added to
        the environment); return (ID, result)."""
        execution_id = str(uuid.uuid4())
        redun_bin = Path(sys.executable).with_name("redun")
        cmd = [str(redun_bin), "run", "--execution-id", execution_id, "workflow.py", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        if not env or "REDUN_CONFIG" not in env:
            full_env.pop("REDUN_CONFIG", None)
        result = subprocess.run(
            cmd, cwd=self.root, env=full_env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
            )
        return execution_id, result

    def jobs(self, execution_id: str) -> list[tuple[str, bool]]:
        """(task name, served from cache) for every job of one execution, from redun's database."""
        with sqlite3.connect(self.root / ".redun" / "redun.db") as db:
            rows = db.execute(
                "SELECT task.name, job.cached FROM job JOIN task ON job.task_hash = task.hash "
                "WHERE job.execution_id = ?",
                (execution_id,),
            ).fetchall()
        return [(name, bool(cached)) for name, cached in rows]

    def executed(self, execution_id: str) -> set[str]:
        """Names of the tasks whose bodies ran (not served from cache) in one execution."""
        return {name for name, cached in self.jobs(execution_id) if not cached}
