"""Fetch and unpack published archives (gdown), never leaving a partial file behind.

Every step writes to a temporary path beside its target and renames it into place, so an
interrupted download or extraction leaves nothing that a later run could take as complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from gpo_vae.errors import UserError
from gpo_vae.io import folder_swapped_in, remove_stale_temps, sha256_of, temp_sibling

logger = logging.getLogger(__name__)

GDRIVE_URL = "https://drive.google.com/uc?id={id}"
COMPLETE_MARKER = ".complete"


class DownloadError(UserError, RuntimeError):
    """A download failed; the message says what to fetch by hand and where to put it."""


def default_cache_dir() -> Path:
    """The data cache: ``$GPO_VAE_CACHE``, else ``$XDG_CACHE_HOME/gpo_vae``, else ``~/.cache/gpo_vae``."""
    if os.environ.get("GPO_VAE_CACHE"):
        return Path(os.environ["GPO_VAE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gpo_vae"


def _gdown_fetch(url: str, output: Path, quiet: bool) -> None:
    import gdown  # imported here: only downloads need it, and it pulls in requests/bs4

    result = gdown.download(url=url, output=str(output), quiet=quiet, resume=False)
    if result is None:
        raise DownloadError(f"gdown returned no file for {url}")


def manual_download_hint(url: str, filename: str, dest: Path, searched: Path | None = None) -> str:
    """The sentence telling a user how to place a file by hand (``searched``: the --data-dir
    that was given and searched in vain)."""
    where = (
        f"or put {filename} or its extracted contents in {searched} (the --data-dir searched, which "
        "holds neither)"
        if searched is not None
        else f"or pass --data-dir pointing at a folder that holds {filename} or its extracted contents"
    )
    return (
        f"Download {filename} by hand from {url} (in a browser, or `gdown {url}` on a machine "
        f"with internet) and put it at {dest}; {where}."
    )


def download_file(
    url: str,
    dest: Path,
    sha256: str | None = None,
    quiet: bool = False,
    fetch: Callable[[str, Path, bool], None] = _gdown_fetch,
    searched: Path | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its SHA-256 when one is given.

    ``searched`` is the ``--data-dir`` already searched for the file (the hint then says so).

    Returns ``dest`` immediately when it already exists (and matches ``sha256``). The bytes
    go to a temporary file in ``dest``'s directory, renamed into place only after the
    transfer finished and the checksum matched.

    Raises
    ------
    DownloadError
        When the transfer fails (offline, bad id, interrupted) or the checksum differs; the
        message says what to download by hand and where to put it.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is None or sha256_of(dest) == sha256:
            return dest
        raise DownloadError(
            f"{dest} exists but its SHA-256 is {sha256_of(dest)}, expected {sha256}. "
            "Delete it and run again, or replace it with an intact copy."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A private directory, not a temp file: gdown writes its own `.part` files beside its
    # output, and removing the directory removes whatever an interrupted transfer left.
    remove_stale_temps(dest.parent)
    tmp_dir = temp_sibling(dest, is_dir=True)
    tmp = tmp_dir / dest.name
    hint = manual_download_hint(url, dest.name, dest, searched)
    try:
        try:
            fetch(url, tmp, quiet)
        except DownloadError:
            raise
        except Exception as err:  # requests, gdown and OS errors all mean "no file"
            reason = str(err) if len(str(err)) <= 200 else str(err)[:200] + "…"
            raise DownloadError(f"Could not download {url} ({type(err).__name__}: {reason}). {hint}") from err
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise DownloadError(f"Downloading {url} produced an empty file. {hint}")
        if sha256 is not None:
            got = sha256_of(tmp)
            if got != sha256:
                raise DownloadError(
                    f"Checksum mismatch for {url}: got SHA-256 {got}, expected {sha256} "
                    f"(a truncated or changed file). {hint}"
                )
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logger.info("downloaded %s -> %s", url, dest)
    return dest


def extract_tarball(archive: Path, dest_dir: Path) -> Path:
    """Extract ``archive`` into ``dest_dir`` atomically; return ``dest_dir``.

    Extraction happens in a temporary sibling directory, which is renamed to ``dest_dir``
    only once every member is written, and a ``.complete`` marker is left inside. An
    existing ``dest_dir`` with the marker is returned as is.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if (dest_dir / COMPLETE_MARKER).exists():
        return dest_dir
    with folder_swapped_in(dest_dir) as tmp_dir:
        try:
            with tarfile.open(archive, "r:*") as tar:
                # The "data" filter refuses absolute paths, links outside the tree and devices.
                tar.extractall(tmp_dir, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            raise DownloadError(
                f"{archive} is not a complete tar archive ({type(err).__name__}: {err}). "
                "Delete it and download it again."
            ) from err
        (tmp_dir / COMPLETE_MARKER).write_text(archive.name + "\n")
    return dest_dir
