"""A stand-in for the ``wandb`` package in tests: records every call as a JSON line.

Put ``tests/fake_wandb`` first on ``PYTHONPATH`` (or import this file) and set
``FAKE_WANDB_LOG`` to a file; ``FAKE_WANDB_FAIL_AFTER=N`` makes the (N+1)-th ``init`` raise.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path


def _record(event: dict) -> None:
    with Path(os.environ["FAKE_WANDB_LOG"]).open("a") as handle:
        handle.write(json.dumps(event, default=str) + "\n")


def _inits() -> int:
    path = Path(os.environ["FAKE_WANDB_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return sum(1 for line in lines if json.loads(line)["call"] == "init")


class Table:
    def __init__(self, columns, data):
        self.columns, self.data = list(columns), [list(row) for row in data]


class _Summary(dict):
    pass


class Run:
    def __init__(self, kwargs: dict):
        self.id = uuid.uuid4().hex[:8]
        self.kwargs = kwargs
        self.summary = _Summary()

    def log(self, payload: dict) -> None:
        tables = {
            k: {"columns": v.columns, "data": v.data} for k, v in payload.items() if isinstance(v, Table)
        }
        _record({"call": "log", "run": self.id, "tables": tables})

    def finish(self) -> None:
        _record({"call": "finish", "run": self.id, "summary": dict(self.summary)})


def init(**kwargs) -> Run:
    fail_after = os.environ.get("FAKE_WANDB_FAIL_AFTER")
    if fail_after is not None and _inits() >= int(fail_after):
        raise ConnectionError("fake wandb: network unreachable")
    run = Run(kwargs)
    _record({"call": "init", "run": run.id, **kwargs})
    return run
