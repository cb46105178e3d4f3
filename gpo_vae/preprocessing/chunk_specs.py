"""What the chunked stages (:mod:`~gpo_vae.preprocessing.deg_chunks`,
:mod:`~gpo_vae.preprocessing.pair_chunks`, :mod:`~gpo_vae.preprocessing.doublet_chunks`) share:
a chunk's spec saved under its fingerprint and read back by its job, the rows of a view of the
counts, and the cells grouped by label."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gpo_vae.data.on_disk import CountsOnDisk
from gpo_vae.io import write_bytes_atomic


def save_spec(spec: dict[str, Any], out_dir: Path, fingerprint: str) -> Path:
    """Write ``spec`` to ``out_dir/<fingerprint>.pkl`` (atomically) and return the path."""
    path = Path(out_dir) / f"{fingerprint}.pkl"
    write_bytes_atomic(pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL), path)
    return path


def load_spec(spec_path: str | Path, what: str) -> dict[str, Any]:
    """A chunk's spec; a spec that is gone is named with the way back (``what``: the stage)."""
    if not Path(spec_path).is_file():
        raise FileNotFoundError(
            f"{spec_path}: the spec of this {what} chunk is gone (its results folder was cleaned after "
            "the plan was cached); run the same command again with `redun run --no-cache ...`"
        )
    return pickle.loads(Path(spec_path).read_bytes())


def counts_spec(view: CountsOnDisk) -> dict[str, Any]:
    """The fields that reopen ``view`` (a chunk's rows of the screen file) in a job:
    ``CountsOnDisk(**counts_spec(view))``."""
    return {
        "path": str(view.path),
        "element": view.element,
        "rows": view.file_rows(slice(None)),
        "columns": view.columns,
        "block_cells": view.block_cells,
    }


def perturbation_chunks(
    labels: np.ndarray,
    control_label: str,
    perturbations_per_chunk: int,
    shared: Any,
    add_cells: Callable[[Any, np.ndarray], None],
) -> Iterator[tuple[list[str], str]]:
    """The perturbations (sorted) in chunks of ``perturbations_per_chunk``, each with its
    fingerprint: the ``shared`` hash (what every chunk depends on) updated with each of its
    perturbations' label and, through ``add_cells(digest, rows)``, its cells (rows in file order)."""
    groups, order, bounds = rows_by_label(labels, control_label)
    for left in range(0, len(groups), perturbations_per_chunk):
        chunk = groups[left : left + perturbations_per_chunk]
        digest = shared.copy()
        for i, group in enumerate(chunk, start=left + 1):
            digest.update(b"\0" + group.encode() + b"\0")
            add_cells(digest, order[bounds[i] : bounds[i + 1]])
        yield chunk, digest.hexdigest()[:24]


def rows_by_label(labels: np.ndarray, control_label: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The perturbations (sorted) and the cells grouped by label, controls first, each group in
    file order: ``(groups, order, bounds)``, group ``i`` (0 the controls, ``i`` the ``i``-th
    perturbation) being ``order[bounds[i] : bounds[i + 1]]``. One sort, no scan per group."""
    groups = sorted(set(labels.tolist()) - {control_label})
    codes = pd.Categorical(labels, categories=[control_label, *groups]).codes
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(groups) + 2))
    return groups, order, bounds
