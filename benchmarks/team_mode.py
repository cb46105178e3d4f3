"""What team mode costs: a fully cached rerun of `main` on PostgreSQL vs SQLite, same results.

    python benchmarks/team_mode.py [--args "--dataset synthetic"] [--repeats 3] [--tiny]

In a throw-away copy of the project: `main` cold on SQLite (the default profile), then fully
cached reruns on SQLite; then the team profile (deploy/team) on a local PostgreSQL 15 that the
script starts (tests/postgres_server.py): `redun db upgrade`, a first run on the empty database
(every task body runs but finds its content-addressed folder complete: the "database lost"
path), then fully cached reruns. Prints each wall time (median of the cached reruns) and how
many task bodies ran, from redun's job records. ``--tiny`` shrinks the model for a quick check.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.postgres_server import LocalPostgres  # after the path: needs the repository root
from tests.workflow_sandbox import WorkflowSandbox


def timed(box: WorkflowSandbox, args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    execution, _ = box.redun("main", *args, timeout=3600)
    return time.perf_counter() - start, len(box.executed(execution))


def report(label: str, seconds: float, bodies: int) -> None:
    print(f"{label:<44} {seconds:8.1f} s   task bodies run: {bodies}", flush=True)


def cached(box: WorkflowSandbox, args: list[str], repeats: int, backend: str) -> float:
    times = []
    for _ in range(repeats):
        seconds, bodies = timed(box, args)
        assert bodies == 0, f"a cached rerun on {backend} ran {bodies} task bodies"
        times.append(seconds)
    median = statistics.median(times)
    report(f"{backend}: fully cached (median of {repeats})", median, 0)
    print(f"{'':<44} runs: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--args", default="--dataset synthetic", help="arguments of main")
    parser.add_argument("--repeats", type=int, default=3, help="cached reruns per backend")
    parser.add_argument("--tiny", action="store_true", help="tiny model and 2 epochs (a quick check)")
    options = parser.parse_args()
    args = shlex.split(options.args)
    server = LocalPostgres.start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            sqlite = WorkflowSandbox.create(Path(scratch))
            if options.tiny:
                from tests.workflow_sandbox import TINY_SECTIONS

                sqlite.shrink_configs(TINY_SECTIONS, ("gpo_vae_synthetic",))
            report("sqlite: cold", *timed(sqlite, args))
            on_sqlite = cached(sqlite, args, options.repeats, "sqlite")

            env = {"GPO_VAE_DB_URI": server.create_database("bench"), **server.credentials_env()}
            team = WorkflowSandbox(
                sqlite.root, config_dir="deploy/team", env=env, postgres=server, database="bench"
            )
            subprocess.run(
                team.command("db", "upgrade"), cwd=team.root, env=team.environment(), check=True,
                capture_output=True,
            )  # fmt: skip
            report("postgres: empty database, results on disk", *timed(team, args))
            on_postgres = cached(team, args, options.repeats, "postgres")
    finally:
        server.stop()
    print(
        f"team mode costs {on_postgres - on_sqlite:+.2f} s per fully cached rerun "
        f"({on_postgres / on_sqlite:.2f}× SQLite); {os.cpu_count()} CPU cores; main {' '.join(args)}"
    )


if __name__ == "__main__":
    main()
