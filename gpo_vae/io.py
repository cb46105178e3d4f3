"""Small I/O helpers: atomic writes, per-output locks and the provenance record every artifact carries."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import gpo_vae

#: Distributions whose versions go into every provenance record.
TRACKED_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "anndata",
    "scanpy",
    "torch",
    "pytorch-lightning",
    "pot",
    "scrublet",
    "redun",
    "rapids-singlecell",
)


def lock_path(target: str | Path) -> Path:
    """The lock file of an output folder or file: ``.<name>.lock`` beside it."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(target: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``target`` (an output folder) while the block runs.

    Two processes that build the same content-addressed output (two workflow runs sharing a
    redun database, two sweeps sharing a point) take turns instead of writing into it at once:
    the second waits, then finds the first one's complete output and reuses it. The lock is an
    advisory ``flock`` on :func:`lock_path` (works on local disks and NFSv4; released by the
    kernel when a holder dies, even by SIGKILL). The file holds the holder's pid and host, for
    the message that a waiter prints. Lock files are left in place: deleting one could let a
    third process lock a different file.
    """
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            print(f"waiting for {target}: {holder} is writing it", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            handle.flush()
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` through a private temporary file in the same folder and a rename, so a
    reader (or a concurrent writer) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_json_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` as indented JSON through a temporary file and a rename."""
    return write_text_atomic(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", path)


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape results (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=True
    ).stdout.strip()


def code_version() -> str:
    """The package version, plus the git commit of the source tree when it is a checkout."""
    root = Path(gpo_vae.__file__).resolve().parents[1]
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return gpo_vae.__version__
    return f"{gpo_vae.__version__}+g{commit}{'.dirty' if dirty else ''}"


def provenance(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record an artifact carries: config, code and package versions, Python, platform."""
    return {
        "config": config or {},
        "code_version": code_version(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
