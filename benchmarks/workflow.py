"""Cold and fully cached wall time of `redun run workflow.py main --dataset synthetic`.

    python benchmarks/workflow.py [--args "--dataset synthetic ..."]

Runs the real command twice in a throw-away copy of the project (its own redun database and
results), and prints the wall time of each run, how many task bodies ran (from redun's job
records), and the machine's CPU count. Goals (issue 7): cold ≤ 5 min, fully cached ≤ 15 s.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.workflow_sandbox import WorkflowSandbox  # after the path: needs the repository root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--args", default="--dataset synthetic", help="arguments of main")
    args = shlex.split(parser.parse_args().args)
    with tempfile.TemporaryDirectory() as scratch:
        sandbox = WorkflowSandbox.create(Path(scratch))
        for label in ("cold", "fully cached"):
            start = time.perf_counter()
            execution, _ = sandbox.redun("main", *args, timeout=3600)
            seconds = time.perf_counter() - start
            ran = sorted(sandbox.executed(execution))
            print(f"{label:<13} {seconds:8.1f} s   task bodies run: {len(ran)} {ran}")
    print(f"({os.cpu_count()} CPU cores; main {' '.join(args)})")


if __name__ == "__main__":
    main()
