"""The scheduler setup of redun.ini (tasks/scheduler.py): recording serialised across runs."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import textwrap
import threading
import time

from redun import task
from redun.backends.db import RedunBackendDb
from redun.config import Config

from tasks.scheduler import RECORDING_METHODS, serialise_recording, setup_scheduler
from tests.workflow_sandbox import REPO_ROOT

# Another run holding the recording lock of a SQLite database for a while.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from types import SimpleNamespace
    from tasks.scheduler import RECORDING_LOCK
    with RECORDING_LOCK.held(SimpleNamespace(db_uri=sys.argv[1], engine=None)):
        print("holding", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


@task()
def double(x: int) -> int:
    return 2 * x


def test_recording_waits_for_another_process_and_nests_within_one(tmp_path, monkeypatch):
    for name in RECORDING_METHODS:  # restore redun's own methods after the test
        monkeypatch.setattr(RedunBackendDb, name, getattr(RedunBackendDb, name))
    serialise_recording()
    serialise_recording()  # idempotent: one wrapper, not two
    assert all(getattr(RedunBackendDb, name).serialised for name in RECORDING_METHODS)
    assert not getattr(RedunBackendDb.record_value.__wrapped__, "serialised", False)

    uri = f"sqlite:///{tmp_path / 'redun.db'}"
    backend = RedunBackendDb(db_uri=uri)
    backend.load(migrate=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, uri, "1.5"], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "holding"
    started = time.monotonic()
    recorded: list[str] = []
    worker = threading.Thread(target=lambda: recorded.append(backend.record_value(double)))
    worker.start()  # record_value nests record calls: it must not wait on itself
    worker.join(timeout=60)
    waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert recorded == [double.hash] and waited > 0.7, f"recording did not wait ({waited:.2f} s)"

    # with nobody holding it the lock is free, so recording cannot wait (no wall-clock bound: CI is loaded)
    with open(tmp_path / "redun.record-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
    assert isinstance(backend.record_value(21), str)


def test_both_profiles_set_up_this_scheduler(tmp_path, monkeypatch):
    for name in RECORDING_METHODS:
        monkeypatch.setattr(RedunBackendDb, name, getattr(RedunBackendDb, name))
    monkeypatch.setenv("GPO_VAE_DB_URI", "postgresql://user@127.0.0.1:1/none")
    for path in (REPO_ROOT / "redun.ini", REPO_ROOT / "deploy" / "team" / "redun.ini"):
        config = Config()
        config.read_path(str(path))
        assert config["scheduler"]["setup_scheduler"] == "tasks.scheduler::setup_scheduler"
    config = Config()
    config.read_string(f"[backend]\ndb_uri = sqlite:///{tmp_path / 'r.db'}\n")
    assert setup_scheduler(config).backend is not None
    assert RedunBackendDb.record_call_node.serialised
