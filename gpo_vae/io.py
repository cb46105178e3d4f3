"""Small I/O helpers: atomic writes, per-output locks and the provenance record every artifact carries.

Every output is written under a temporary sibling name and renamed into place. Those names
carry the writer's host and pid (``.<name>.<host>.<pid>.<token>.partial``), so a later run can
remove what a killed run left (:func:`remove_stale_temps`), and they take the permissions a
plain file or folder would get under the umask (``tempfile`` makes them private), so that a
colleague on a shared results root can read every output.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from gpo_vae.errors import DamagedFileError, UserError
from gpo_vae.version import __version__

T = TypeVar("T")

#: Temporary siblings: ``.<name>.<host>.<pid>.<token><suffix>``.
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[a-z0-9_]+(\.partial|\.tmp)$")
#: errno values that mean "this disk cannot take the output".
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class OutputSpaceError(UserError, OSError):
    """An output does not fit where it must be written; the message names the folder and sizes."""


def recorded_path(path: str | Path, folder: str | Path) -> str:
    """``path`` as a record in ``folder`` keeps it: relative to ``folder``, so that moving the
    results tree (both together) keeps the record valid."""
    return os.path.relpath(Path(path).resolve(), Path(folder).resolve())


def resolve_recorded(path: str | Path, folder: str | Path) -> Path:
    """A path read from a record in ``folder``: relative ones (:func:`recorded_path`) against
    ``folder``, absolute ones (older records) as they are."""
    path = Path(path)
    return path if path.is_absolute() else (Path(folder) / path).resolve()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(is_dir: bool) -> int:
    """The mode a new file (0666) or folder (0777) gets under the process's umask."""
    return (0o777 if is_dir else 0o666) & ~_read_umask()


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


def temp_sibling(target: str | Path, is_dir: bool, suffix: str = ".partial") -> Path:
    """Create a temporary file or folder beside ``target`` (same filesystem: the rename is atomic),
    named after the writer's host and pid and with the umask's default permissions."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{_host_tag()}.{os.getpid()}."
    if is_dir:
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
        os.close(fd)
        path = Path(name)
    # keep the set-group-id bit a shared folder passes on (so colleagues' group owns the output)
    os.chmod(path, default_mode(is_dir) | (os.stat(path).st_mode & stat.S_ISGID))
    return path


@contextlib.contextmanager
def folder_swapped_in(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; when the block ends without an error it
    replaces ``target`` (an existing one is moved aside first and removed after, so a crash never
    loses both), otherwise it is removed and ``target`` is left as it was.

    Temporaries that a dead process of this host left beside ``target`` are removed first.
    """
    target = Path(target)
    remove_stale_temps(target.parent)
    tmp = temp_sibling(target, is_dir=True)
    try:
        yield tmp
        if target.exists():
            old = temp_sibling(target, is_dir=True, suffix=".partial")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary siblings in ``folder`` that a dead process of this host left; return them.

    Another host's (a shared results root) and live processes' temporaries are kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host_tag(), []
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def require_space(folder: str | Path, n_bytes: int, what: str) -> None:
    """Raise :class:`OutputSpaceError` when ``folder``'s filesystem has less than ``n_bytes`` free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < n_bytes:
        raise OutputSpaceError(
            f"not enough space for {what} in {folder}: it needs about {n_bytes / 2**20:,.0f} MB and "
            f"{free / 2**20:,.0f} MB are free. Free some space there or choose another --results-dir."
        )


def estimated_bytes(adata: Any) -> int:
    """About how many bytes an AnnData takes as an uncompressed ``.h5ad`` (its arrays, plus 10 %)."""
    import numpy as np
    import scipy.sparse as sp

    def size(value: object) -> int:
        if sp.issparse(value):
            return int(value.data.nbytes + value.indices.nbytes + value.indptr.nbytes)
        if isinstance(value, np.ndarray):
            return int(value.nbytes)
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        return 0

    total = size(adata.X) + sum(size(adata.obsm[k]) for k in adata.obsm) + size(dict(adata.uns))
    total += int(adata.obs.memory_usage(deep=True).sum() + adata.var.memory_usage(deep=True).sum())
    return int(total * 1.1) + (1 << 20)


def disk_full_error(error: BaseException, where: str | Path) -> OutputSpaceError | None:
    """An :class:`OutputSpaceError` for a write that failed because the disk is full, else None."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            break
        text = str(seen)
        if (
            isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS
        ) or "No space left on device" in text:
            return OutputSpaceError(
                f"the disk holding {where} is full (no space left on device) while writing it; nothing "
                "half-written was kept. Free some space there or choose another --results-dir."
            )
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def full_disk_as_error(
    where: str | Path, errors: tuple[type[BaseException], ...] = (OSError,)
) -> Iterator[None]:
    """Re-raise a write that failed on a full disk as one :class:`OutputSpaceError` naming
    ``where`` (HDF5 reports it as a RuntimeError: pass it in ``errors``); other errors pass."""
    try:
        yield
    except errors as err:
        full = disk_full_error(err, where)
        if full is not None:
            raise full from None
        raise


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


#: The lock file inside a folder written in place (:func:`exclusive_lock` with ``inside``).
INSIDE_LOCK = ".lock"


def lock_path(target: str | Path, inside: bool = False) -> Path:
    """The lock file of an output folder or file: ``.<name>.lock`` beside it, or ``.lock`` inside
    a folder that is written in place (a training run: the user's own folder stays uncluttered)."""
    target = Path(target)
    return target / INSIDE_LOCK if inside else target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(target: str | Path, inside: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``target`` (an output folder) while the block runs.

    ``inside`` keeps the lock file in ``target`` itself (created when missing), for a folder that is
    written in place rather than renamed into place; the default, beside it, survives a rename.

    Two processes that build the same content-addressed output (two workflow runs sharing a
    redun database, two sweeps sharing a point) take turns instead of writing into it at once:
    the second waits, then finds the first one's complete output and reuses it. The lock is an
    advisory ``flock`` on :func:`lock_path` (works on local disks and NFSv4; released by the
    kernel when a holder dies, even by SIGKILL). The file holds the holder's pid and host, for
    the message that a waiter prints. Lock files are left in place: deleting one could let a
    third process lock a different file.
    """
    path = lock_path(target, inside)
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
    """Write ``text`` through a temporary file in the same folder and a rename, so a reader (or a
    concurrent writer) never sees a half-written file; a full disk is an :class:`OutputSpaceError`."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """:func:`write_text_atomic` for bytes."""
    path = Path(path)
    tmp = temp_sibling(path, is_dir=False, suffix=".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        full = disk_full_error(err, path)
        if full is not None:
            raise full from err
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file (``"a folder, not a file"``, ``"no such file"``,
    naming the first missing folder above it), or None when it is a file."""
    path = Path(path)
    if path.is_file():
        return None
    if path.is_dir():
        return "a folder, not a file"
    missing = [folder for folder in path.absolute().parents if not folder.exists()]
    if missing:
        return f"no such file (the folder {missing[-1]} does not exist)"
    return "no such file"


def read_json(path: str | Path, fix: str = "restore it, or delete it and run again") -> Any:
    """The JSON in ``path``; a file that is not valid JSON is a :class:`DamagedFileError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DamagedFileError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); {fix}."
        ) from None
    except UnicodeDecodeError:
        raise DamagedFileError(f"{path}: not a text file; {fix}.") from None


def write_json_atomic(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` as indented JSON through a temporary file and a rename."""
    return write_text_atomic(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", path)


def file_identity(path: str | Path) -> tuple[str, int, int, int, int]:
    """(resolved path, device, inode, size, modification time in ns): a file rewritten or
    replaced in place gets another identity (the test redun's own file hashing makes)."""
    path = Path(path).resolve()
    info = path.stat()
    return str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


_MISSING = object()


class FileMemo:
    """Values computed from files, remembered while each file is unchanged in this process.

    A value is looked up by the file's :func:`file_identity` and a ``variant`` (what else it
    depends on: a layout, say) and kept only when the file did not change while it was computed.
    At most ``max_files`` files are remembered (the one used longest ago is forgotten first, with
    all its variants). Threads of one process share it (the workflow's stages run as threads).
    """

    def __init__(self, max_files: int) -> None:
        if max_files < 1:
            raise ValueError(f"max_files must be ≥ 1, got {max_files}")
        self.max_files = max_files
        self._files: dict[tuple[str, int, int, int, int], dict[Any, Any]] = {}
        self._lock = threading.Lock()

    def recall(
        self,
        path: str | Path,
        compute: Callable[[], T],
        variant: Any = None,
        keep: Callable[[T], bool] | None = None,
        aliases: Callable[[T], Iterable[Any]] | None = None,
    ) -> T:
        """The value remembered for ``path`` and ``variant``, else ``compute()``, remembered.

        ``keep(value)`` False: not remembered. ``aliases(value)``: more variants that give the
        same value (remembered under each). A path that cannot be stat'ed is computed and not
        remembered (``compute`` raises the error a user should read).
        """
        try:
            identity = file_identity(path)
        except OSError:
            return compute()
        with self._lock:
            entries = self._files.pop(identity, None)
            if entries is not None:
                self._files[identity] = entries  # used now: forgotten last
                found = entries.get(variant, _MISSING)
                if found is not _MISSING:
                    return found
        value = compute()
        try:
            unchanged = file_identity(path) == identity
        except OSError:
            unchanged = False
        if unchanged and (keep is None or keep(value)):
            variants = [variant, *(aliases(value) if aliases else ())]
            with self._lock:
                entries = self._files.pop(identity, {})
                entries.update(dict.fromkeys(variants, value))
                self._files[identity] = entries
                while len(self._files) > self.max_files:
                    self._files.pop(next(iter(self._files)))
        return value

    def clear(self) -> None:
        """Forget every file."""
        with self._lock:
            self._files.clear()


#: Digests of files already read in this process: a run hashes a multi-GB screen once, not at
#: every stage that records it.
_DIGESTS = FileMemo(max_files=256)


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks; a file unchanged since this process hashed it
    (:func:`file_identity`) is not read again."""

    def digest() -> str:
        hashed = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(chunk_size):
                hashed.update(block)
        return hashed.hexdigest()

    return _DIGESTS.recall(path, digest)


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
    root = Path(__file__).resolve().parents[1]
    try:
        commit = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"


def provenance(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record an artifact carries: config, code and package versions, Python, platform."""
    return {
        "config": config or {},
        "code_version": code_version(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
