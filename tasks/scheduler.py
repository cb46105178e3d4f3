"""The redun scheduler that both profiles use (``[scheduler] setup_scheduler`` in redun.ini).

It is redun's own :class:`~redun.Scheduler` with a quieter terminal and one fix for shared
databases:

- A run stopped by an error the user can fix (:class:`gpo_vae.errors.UserError`: bad input, a
  config value, a filter that leaves nothing, a Ctrl-C) ends with that error's message as its
  last lines, on standard error, without redun's task traceback and argument dump;
  ``GPO_VAE_DEBUG=1`` (or ``--debug true`` on an entry point) keeps them.
- The first Ctrl-C asks the running stages to stop at their next safe point
  (:mod:`gpo_vae.interrupt`: training before its next batch, keeping its last checkpoint);
  the second aborts as redun does.
- One line per job (``Run Job 1a2b3c4d: gpo_vae.train_run``) instead of the call with every
  argument, no ``JOB STATUS`` table every 20 s, and the run's headline printed once at the
  end of every run, served from cache or not (as the run's last lines: redun's printed result is left out). ``GPO_VAE_VERBOSE=1`` (or ``job_status_interval``
  in redun.ini's ``[scheduler]`` section) brings redun's full output back. redun (0.44)
records values, tasks, call nodes and jobs by checking that a row is absent and then inserting
it, in separate statements and transactions. Two runs on one database (team mode: two sweeps
sharing configurations, or a colleague's run) that record the same things at the same moment
then fail with an ``IntegrityError``: a duplicate ``call_node`` or ``value`` key, or a job whose
task row the other run has not committed yet (all three seen in our concurrency test).
:func:`serialise_recording` makes each of redun's ``record_*`` calls one critical section
across the processes sharing the database: a PostgreSQL advisory lock (on a connection of its
own, so it is released if the process dies) or, for SQLite, a ``flock`` beside the database
file. Recording is a few queries per job, so runs still execute their tasks in parallel; only
their bookkeeping takes turns.

This module stays light (of gpo_vae only the tiny interrupt and errors modules, no torch): redun
imports it for every command, including
``redun db upgrade`` and ``redun log``.
"""

import contextlib
import fcntl
import functools
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from redun import Scheduler
from redun.config import Config

#: The methods of redun's database backend that write rows.
RECORDING_METHODS = (
    "record_execution",
    "record_updated_time",
    "record_job_start",
    "record_job_end",
    "record_value",
    "record_call_node",
    "record_call_node_context",
    "record_tags",
)
#: Key of the PostgreSQL advisory lock that recording takes (fixed, arbitrary: "gpov").
ADVISORY_KEY = 0x67706F76


class RecordingLock:
    """One lock per process: a reentrant thread lock, whose outermost holder also takes the
    cross-process lock of the backend's database (see the module docstring)."""

    def __init__(self) -> None:
        self._threads = threading.RLock()
        self._depth = 0
        self._release: Callable[[], None] | None = None
        self._pg_connections: dict[str, Any] = {}

    @contextlib.contextmanager
    def held(self, backend: Any) -> Iterator[None]:
        with self._threads:
            if self._depth == 0:
                self._release = self._acquire_across_processes(backend)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._release is not None:
                    release, self._release = self._release, None
                    release()

    def _acquire_across_processes(self, backend: Any) -> Callable[[], None] | None:
        uri: str = backend.db_uri
        if uri.startswith("sqlite:///") and ":memory:" not in uri:
            handle = open(Path(uri.removeprefix("sqlite:///")).with_suffix(".record-lock"), "a")
            fcntl.flock(handle, fcntl.LOCK_EX)

            def release_file() -> None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

            return release_file
        if uri.startswith("postgresql") and backend.engine is not None:
            from sqlalchemy import text

            connection = self._pg_connections.get(uri)
            if connection is None or connection.closed:
                connection = backend.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self._pg_connections[uri] = connection
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_KEY})
            return lambda: connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_KEY})
        return None


RECORDING_LOCK = RecordingLock()


def serialise_recording() -> None:
    """Wrap each of redun's :data:`RECORDING_METHODS` in :data:`RECORDING_LOCK` (once)."""
    from redun.backends.db import RedunBackendDb

    for name in RECORDING_METHODS:
        original = getattr(RedunBackendDb, name)
        if getattr(original, "serialised", False):
            continue

        def make(method: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(method)
            def serialised(self: RedunBackendDb, *args: Any, **kwargs: Any) -> Any:
                with RECORDING_LOCK.held(self):
                    return method(self, *args, **kwargs)

            serialised.serialised = True  # type: ignore[attr-defined]
            return serialised

        setattr(RedunBackendDb, name, make(original))


#: Set to 1 to see redun's task traceback of input errors too.
DEBUG_ENV = "GPO_VAE_DEBUG"
#: Set to 1 for redun's full terminal output (job arguments, status tables).
VERBOSE_ENV = "GPO_VAE_VERBOSE"
_JOB_LINE = re.compile(r"^(\s*(?:Run|Cached|Dryrun|Resolve)\s+Job [0-9a-f]+:\s+[\w.]+)\(.*$")
STOPPING = (
    "Ctrl-C: stopping at the next safe point (training before its next batch, keeping its last "
    "checkpoint); Ctrl-C again aborts at once."
)


#: The executor names of the running scheduler (its redun config's [executors.NAME] sections):
#: entry-point bodies run in executor threads, where redun's thread-local current scheduler is
#: not set, and check their --executor options against this.
KNOWN_EXECUTORS: set[str] = set()


def user_error(error: BaseException) -> BaseException | None:
    """``error`` (or the error it was raised from) when it is a :class:`gpo_vae.errors.UserError`.

    Identified by class name along the MRO so this module imports nothing of gpo_vae.
    """
    seen = 0
    while error is not None and seen < 5:
        if any(
            klass.__name__ == "UserError" and klass.__module__ == "gpo_vae.errors"
            for klass in type(error).__mro__
        ):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def debugging() -> bool:
    return _flag(DEBUG_ENV)


def verbose() -> bool:
    return _flag(VERBOSE_ENV)


class GpoVaeScheduler(Scheduler):
    """redun's scheduler with the terminal of the module docstring."""

    _quiet = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verbose = verbose() or "job_status_interval" in self.config.get("scheduler", {})
        if not self._verbose:
            self.job_status_interval = None  # no periodic status table

    def log(self, *messages: Any, **kwargs: Any) -> None:
        if self._quiet:
            return
        if not self._verbose and len(messages) == 1 and isinstance(messages[0], str):
            messages = (_JOB_LINE.sub(r"\1", messages[0]),)
        super().log(*messages, **kwargs)

    def log_job_statuses(self) -> None:
        if self._verbose:
            super().log_job_statuses()

    def load(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().load(*args, **kwargs)
        except Exception as error:
            if type(error).__module__.startswith("sqlalchemy") and not debugging():
                uri = str(getattr(self.backend, "db_uri", ""))
                where = (
                    uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else "the redun database"
                )
                fix = (
                    f"move it aside (mv {where} {where}.damaged) and run again: every finished output on "
                    "disk is reused (README: Losing the database)"
                    if uri.startswith("sqlite:///")
                    else "check the database server and the profile's db_uri"
                )
                first = str(getattr(error, "orig", error)).splitlines()[0]
                print(f"redun's database {where} cannot be read ({first}); {fix}.", file=sys.stderr)
                raise SystemExit(1) from None
            raise

    def _reject_job_main_thread(self, job: Any, error: Any, *args: Any, **kwargs: Any) -> None:
        if user_error(error) is not None and not debugging():
            self._quiet = True  # redun's "Reject Job" lines, the traceback and the status table
        super()._reject_job_main_thread(job, error, *args, **kwargs)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        from gpo_vae.interrupt import sigint_requests_stop

        KNOWN_EXECUTORS.clear()
        KNOWN_EXECUTORS.update(self.executors)
        try:
            with sigint_requests_stop(STOPPING):
                result = super().run(*args, **kwargs)
            headline = result.get("headline") if isinstance(result, dict) else None
            if isinstance(headline, list) and all(isinstance(line, str) for line in headline):
                print("\n".join(headline), flush=True)
                # redun prints what run returns unless it is None: the headline is the run's end,
                # not followed by the dict of its files (the report's path is among its lines)
                return None
            return result
        except Exception as error:
            found = user_error(error)
            if found is None or debugging():
                raise
            print(f"\nThe run stopped ({DEBUG_ENV}=1 or --debug true shows the traceback):", file=sys.stderr)
            print(f"{type(found).__name__}: {found}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            self._quiet = False


def setup_scheduler(config: Config) -> Scheduler:
    """The gpo-vae scheduler for ``config``: user errors as one message, recording safe for
    concurrent runs."""
    serialise_recording()
    return GpoVaeScheduler(config=config)
